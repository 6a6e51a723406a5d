"""Peak memory and wall time of ``analyze`` on a real-size slide (automatic fields) vs a 16k px slide.

Writes two synthetic slides with the same streamed generator (``SynthConfig(stream=True)``: composed and
written tile by tile), by default 180,000 x 60,000 px (the real dataset's size) and 16,384 x 16,384 px,
then runs ``marrowscope analyze SLIDE --regions auto`` (bundled models, 500-cell differential) on each
in its own process under ``/usr/bin/time -v`` and prints, per slide: write seconds and peak RSS of the
writer, analyze wall seconds, peak RSS, cells counted, fields analysed and the pipeline's own timings.
``--level0-only`` also analyses the big slide from its level-0 instance alone (a slide without
low-resolution levels: the overview is read tile by tile from level 0, warning ``no_low_res_level``).

The slides are deleted at the end unless ``--keep``; ``--reuse`` analyses slides an earlier ``--keep``
run left in ``--work`` instead of writing them again (a 180k x 60k slide takes ~10 min to write).
``--json PATH`` writes the rows and the ratios to a results file.

Run: flock /work/cpu.lock nice -n 10 .venv/bin/python benchmarks/bench_big_slide.py
         [--big 180000x60000] [--small 16384x16384] [--only-big] [--work DIR] [--keep] [--reuse]
         [--level0-only] [--json benchmarks/results/bench_big_slide.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
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
    return {"slide": f"{w}x{h}", "write_s": round(wall, 1), "write_peak_rss_mib": rss,
            "dicom_mb": _dicom_mb(out)}


def _dicom_mb(folder: Path) -> float:
    return round(sum(f.stat().st_size for f in folder.rglob("*.dcm")) / 1e6, 1)


def _level0_only(cohort: Path, out: Path) -> Path:
    """A folder holding (a link to) only the level-0 instance of the slide in ``cohort``."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from marrowscope.io.slides.dicom import find_slide_files

    headers = [h for h in find_slide_files(cohort) if h.is_volume]
    base = max(headers, key=lambda h: h.columns * h.rows)
    out.mkdir(parents=True, exist_ok=True)
    link = out / base.path.name
    if not link.exists():
        link.symlink_to(base.path)
    return out


def _analyze(cohort: Path, out: Path) -> dict[str, object]:
    shutil.rmtree(out, ignore_errors=True)
    wall, rss, _ = _timed([PY, "-m", "marrowscope.cli.main", "analyze", str(cohort), "--out", str(out),
                           "--regions", "auto"])
    (summary,) = out.glob("*/summary.json")
    d = json.loads(summary.read_text())
    return {"analyze_s": round(wall, 1), "analyze_peak_rss_mib": rss,
            "n_counted": d["differential"]["n_counted"], "fields": len(d["regions"]),
            "warnings": sorted({w["code"] for w in d["warnings"]}),
            "timings_s": {k: round(v, 1) for k, v in d["run"]["timings"].items()}}


def _save(path: Path | None, rows: list[dict[str, object]], summary: dict[str, object]) -> None:
    """The rows so far and the summary as JSON at ``path`` (after every slide: a later failure keeps them)."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"command": " ".join(sys.argv), "summary": summary, "rows": rows}, indent=1)
                    + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--big", default="180000x60000")
    ap.add_argument("--small", default="16384x16384")
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the slides (for --reuse)")
    ap.add_argument("--reuse", action="store_true", help="analyse the slides a --keep run left in --work")
    ap.add_argument("--only-big", action="store_true", help="skip the 16k slide (measured before)")
    ap.add_argument("--level0-only", action="store_true",
                    help="also analyse the big slide from its level-0 instance alone")
    ap.add_argument("--json", type=Path, default=None, help="write the rows and ratios here")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_big_"))
    work.mkdir(parents=True, exist_ok=True)
    keep = args.keep or args.reuse
    rows: list[dict[str, object]] = []
    started = datetime.now(UTC).isoformat(timespec="seconds")
    try:
        sizes = (("small", args.small), ("big", args.big))
        for name, size in sizes[1:] if args.only_big else sizes:
            cohort = work / f"{name}_cohort"
            row: dict[str, object] = {"name": name}
            if args.reuse and cohort.is_dir():
                row.update({"slide": size, "write_s": None, "reused": True, "dicom_mb": _dicom_mb(cohort)})
            else:
                shutil.rmtree(cohort, ignore_errors=True)
                row["load_avg_1_5_15_before_write"] = [round(x, 1) for x in os.getloadavg()]
                row.update(_write(size, cohort, seed=11))
            print(json.dumps(row), flush=True)
            variants = [(name, cohort)]
            if name == "big" and args.level0_only:
                variants.append(("big_level0_only", _level0_only(cohort, work / "big_level0_only")))
            for vname, folder in variants:
                r = dict(row, name=vname)
                r["load_avg_1_5_15_before"] = [round(x, 1) for x in os.getloadavg()]
                r.update(_analyze(folder, work / f"{vname}_out"))
                r["load_avg_1_5_15_after"] = [round(x, 1) for x in os.getloadavg()]
                print(json.dumps(r), flush=True)
                rows.append(r)
                _save(args.json, rows, {"started": started, "partial": True})
            if not keep:
                shutil.rmtree(cohort, ignore_errors=True)
        by = {str(r["name"]): r for r in rows}
        summary: dict[str, object] = {"cpus": os.cpu_count(), "machine": platform.platform(),
                                      "python": platform.python_version(), "started": started}
        if "small" in by and "big" in by:
            small_rss, big_rss = by["small"]["analyze_peak_rss_mib"], by["big"]["analyze_peak_rss_mib"]
            summary["rss_ratio_big_vs_small"] = round(int(big_rss) / int(small_rss), 3)  # type: ignore[call-overload]
        for k in ("big", "big_level0_only"):
            if k in by:
                summary[f"{k}_analyze_s"] = by[k]["analyze_s"]
                summary[f"{k}_peak_rss_mib"] = by[k]["analyze_peak_rss_mib"]
        print(json.dumps(summary), flush=True)
        _save(args.json, rows, summary)
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
