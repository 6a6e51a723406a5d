"""Peak memory and wall time of ``analyze`` on a real-size slide (automatic fields) vs a 16k px slide.

Writes two synthetic slides with the same streamed generator (``SynthConfig(stream=True)``: composed and
written tile by tile), by default 180,000 x 60,000 px (the real dataset's size) and 16,384 x 16,384 px,
then runs ``marrowscope analyze SLIDE --regions auto`` (bundled models, 500-cell differential) on each
in its own process under ``/usr/bin/time -v`` and prints, per slide: write seconds and peak RSS of the
writer, analyze wall seconds, peak RSS, cells counted, fields analysed and the pipeline's own timings.
The slides are deleted at the end (``--keep`` keeps them).

Run: flock /work/cpu.lock nice -n 10 .venv/bin/python benchmarks/bench_big_slide.py
         [--big 180000x60000] [--small 16384x16384] [--only-big] [--work DIR] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PY = sys.executable


def _timed(cmd: list[str]) -> tuple[float, int, str]:
    """(wall s, peak RSS MiB, output) of ``cmd`` run under /usr/bin/time -v."""
    t0 = time.perf_counter()
    p = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}")
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr)
    return wall, int(m.group(1)) // 1024 if m else -1, p.stdout


def _write(size: str, out: Path, seed: int) -> dict[str, object]:
    w, h = (int(v) for v in size.lower().split("x"))
    code = ("import sys; from marrowscope.data.synth.cohort import SynthConfig, generate_cohort; "
            f"generate_cohort(SynthConfig(n_patients=1, seed={seed}, slide_size={w}, slide_height={h}, "
            f"n_rois=0, stream=True, kind_weights={{'roi_only': 1.0}}), sys.argv[1])")
    wall, rss, _ = _timed([PY, "-c", code, str(out)])
    size_mb = sum(f.stat().st_size for f in out.rglob("*.dcm")) / 1e6
    return {"slide": f"{w}x{h}", "write_s": round(wall, 1), "write_peak_rss_mib": rss,
            "dicom_mb": round(size_mb, 1)}


def _analyze(cohort: Path, out: Path) -> dict[str, object]:
    wall, rss, _ = _timed([PY, "-m", "marrowscope.cli.main", "analyze", str(cohort), "--out", str(out),
                           "--regions", "auto"])
    (summary,) = out.glob("*/summary.json")
    d = json.loads(summary.read_text())
    return {"analyze_s": round(wall, 1), "analyze_peak_rss_mib": rss,
            "n_counted": d["differential"]["n_counted"], "fields": len(d["regions"]),
            "timings_s": {k: round(v, 1) for k, v in d["run"]["timings"].items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--big", default="180000x60000")
    ap.add_argument("--small", default="16384x16384")
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--only-big", action="store_true", help="skip the 16k slide (measured before)")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_big_"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        sizes = (("small", args.small), ("big", args.big))
        for name, size in sizes[1:] if args.only_big else sizes:
            load = [round(x, 1) for x in os.getloadavg()]
            row: dict[str, object] = {"name": name, "load_avg_1_5_15_before": load}
            row.update(_write(size, work / f"{name}_cohort", seed=11))
            print(json.dumps(row), flush=True)
            row.update(_analyze(work / f"{name}_cohort", work / f"{name}_out"))
            row["load_avg_1_5_15_after"] = [round(x, 1) for x in os.getloadavg()]
            print(json.dumps(row), flush=True)
            rows.append(row)
            if not args.keep:
                shutil.rmtree(work / f"{name}_cohort", ignore_errors=True)
        if len(rows) < 2:
            return
        small, big = rows
        print(json.dumps({
            "rss_ratio_big_vs_small": round(int(big["analyze_peak_rss_mib"]) /  # type: ignore[call-overload]
                                            int(small["analyze_peak_rss_mib"]), 3),  # type: ignore[call-overload]
            "big_analyze_s": big["analyze_s"], "big_peak_rss_mib": big["analyze_peak_rss_mib"],
            "cpus": os.cpu_count(),
        }), flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
