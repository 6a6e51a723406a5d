"""Ray cohort runner vs the serial batch, as a user runs them: identical outputs, and the overhead of Ray.

Writes a synthetic cohort (``--slides`` DICOM slides, one annotated ROI each) and times the command a user
types, each a fresh process (``python -m marrowscope -v analyze COHORT --out OUT ...``) from its start to
its exit, so both paths pay the same Python start, imports and model loads:

- ``serial``: no ``--ray`` (one process, torch's default threads = the machine's ``--cpus`` cores);
- ``ray_cold``: ``--ray local``: a new local Ray instance is started (and stopped) by the command;
- ``ray_warm``: ``--ray auto`` with ``RAY_ADDRESS`` pointing at a local ``--cpus``-CPU instance started
  beforehand (not timed; the usual case on a cluster: ``ray start`` once, many runs).

The three run ``--repeats`` times, interleaved (the order rotates each round), and every ratio is taken
within a round. Once, ``serial_1thread`` (``OMP_NUM_THREADS=1``: one torch thread, as each 1-CPU Ray
worker has) gives the outputs reference: every Ray run's per-slide files must equal it apart from timings
(:func:`marrowscope.engines.ray_runner.comparable_outputs`), else the script exits 1. Against the serial
run with more threads the detector's float sums are added in another order: the largest box-coordinate
and probability differences are printed.

Where the time goes, per run: ``slides_s`` (the sum of the per-slide seconds of batch_summary.json) and
``fixed_s``: for the serial run its wall time outside the slides (Python start, imports, model load, batch
files); for a Ray run the time from the command's start until every worker had loaded its models (Python
start and imports of the driver, Ray's start or connection, the worker processes, their imports and model
loads, in parallel), split into ``ray_ready_s`` (``ray.init``) and the workers' part. ``per_slide_s`` is the
rest of the wall time over the slides (for Ray: the cohort's wall time per slide with all workers going).
Then ``fixed_overhead_s`` and ``per_slide_overhead_s`` are Ray's minus the serial run's, and the overhead
of an N-slide cohort of such slides is extrapolated from them (``extrapolated_overhead_pct``).

Run (idle machine, no nice for timing): flock /work/cpu.lock .venv/bin/python benchmarks/bench_ray.py
[--slides 8] [--cpus 2] [--repeats 3] [--json benchmarks/results/bench_ray_idle.json]
Prints one JSON line per run and a summary line (also written to ``--json``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

#: synthetic slides: the synthetic-only models (analyze's defaults are the real-slide ones)
SYNTHETIC_MODEL_ARGS = ("--detector", "detector-synth", "--classifier", "classifier-synth",
                        "--diagnosis", "diagnosis-synth")

_RAY_LINE = re.compile(r"Ray: (\d+) slide\(s\) in ([\d.]+) s \(Ray ready after ([\d.]+) s, the workers' "
                       r"models after ([\d., -]+) s\)")

_WARM = """
import logging, sys
import ray
ray.init(num_cpus=int(sys.argv[1]), include_dashboard=False, log_to_driver=False,
         object_store_memory=300 * 2**20, logging_level=logging.WARNING)
print(ray.get_runtime_context().gcs_address, flush=True)
sys.stdin.read()
ray.shutdown()
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slides", type=int, default=8)
    ap.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray instance (the cores)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--slide-size", type=int, default=3072)
    ap.add_argument("--roi-size", type=int, default=1024)
    ap.add_argument("--cells-per-roi", type=int, default=60)
    ap.add_argument("--keep", type=Path, default=None, help="keep the cohort and outputs here")
    ap.add_argument("--json", type=Path, default=None, help="also write the summary here")
    args = ap.parse_args()

    from marrowscope.data.synth.cohort import SynthConfig, generate_cohort
    from marrowscope.engines.ray_runner import comparable_outputs

    work = args.keep or Path(tempfile.mkdtemp(prefix="bench_ray_"))
    cohort = work / "cohort"
    if not cohort.exists():
        generate_cohort(SynthConfig(n_patients=args.slides, seed=7, slide_size=args.slide_size,
                                    roi_size=args.roi_size, n_rois=1, cells_per_roi=args.cells_per_roi,
                                    kind_weights={"roi_only": 1.0}), cohort)
    load0 = os.getloadavg()

    def cli(name: str, extra: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
        out = work / name
        shutil.rmtree(out, ignore_errors=True)
        cmd = [sys.executable, "-m", "marrowscope", "-v", "analyze", str(cohort), "--out", str(out),
               *SYNTHETIC_MODEL_ARGS, *extra]
        t0 = time.perf_counter()
        p = subprocess.run(cmd, env={**os.environ, **(env or {})}, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if p.returncode != 0:
            raise SystemExit(f"{name}: exit {p.returncode}: {p.stderr[-2000:]}")
        batch = json.loads((out / "batch_summary.json").read_text(encoding="utf-8"))
        if batch["n_done"] != args.slides:
            raise SystemExit(f"{name}: {batch['n_done']} of {args.slides} slides done: {batch['failures']}")
        slides_s = sum(s["seconds"] for s in batch["slides"])
        rec: dict[str, Any] = {"run": name, "wall_s": wall, "slides_s": slides_s,
                               "load_avg_1": os.getloadavg()[0]}
        m = _RAY_LINE.search(p.stderr)
        if m is not None:  # the runner's own timings (from the call of run_on_ray)
            ray_wall, ready = float(m.group(2)), float(m.group(3))
            loads = [float(x) for x in m.group(4).split(",")]
            before = wall - ray_wall  # the driver's start and imports, and the batch files at the end
            rec.update(ray_run_s=ray_wall, ray_ready_s=ready, workers_ready_s=max(loads),
                       fixed_s=before + max(loads), per_slide_s=(ray_wall - max(loads)) / args.slides)
        elif "--ray" in extra:
            raise SystemExit(f"{name}: the Ray runner's timing line is missing from the log")
        else:
            rec.update(fixed_s=wall - slides_s, per_slide_s=slides_s / args.slides)
        print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in rec.items()}), flush=True)
        return rec

    ref_run = cli("serial_1thread", [], {"OMP_NUM_THREADS": "1"})
    ref = comparable_outputs(work / "serial_1thread")
    rounds: list[dict[str, dict[str, Any]]] = []
    same: dict[str, bool] = {}
    diffs: dict[str, Any] = {}
    names = ["serial", "ray_cold", "ray_warm"]
    for r in range(args.repeats):
        got: dict[str, dict[str, Any]] = {}
        for name in names[r % 3:] + names[:r % 3]:
            if name == "serial":
                got[name] = cli(name, [])
                diffs = _max_diff(work / "serial", work / "serial_1thread")
            elif name == "ray_cold":
                got[name] = cli(name, ["--ray", "local"])
            else:
                with _warm_instance(args.cpus) as address:
                    got[name] = cli(name, ["--ray", "auto"], {"RAY_ADDRESS": address,
                                                                 "RAY_AUTH_MODE": "token"})
            if name != "serial":
                same[f"{name}_{r}"] = comparable_outputs(work / name) == ref
        rounds.append(got)

    def med(run: str, key: str) -> float:
        return round(statistics.median(g[run][key] for g in rounds), 2)

    def pct(a: float, b: float) -> float:
        return round(100 * (a / b - 1), 1)

    summary: dict[str, Any] = {
        "slides": args.slides, "repeats": args.repeats, "files_compared_per_run": len(ref),
        "identical_outputs": all(same.values()), "identical_by_run": same,
        "serial_1thread_wall_s": round(ref_run["wall_s"], 2),
        "overhead_cold_pct_by_round": [pct(g["ray_cold"]["wall_s"], g["serial"]["wall_s"]) for g in rounds],
        "overhead_warm_pct_by_round": [pct(g["ray_warm"]["wall_s"], g["serial"]["wall_s"]) for g in rounds],
    }
    summary["overhead_cold_pct_median"] = statistics.median(summary["overhead_cold_pct_by_round"])
    summary["overhead_warm_pct_median"] = statistics.median(summary["overhead_warm_pct_by_round"])
    for run in names:
        summary[run] = {k: med(run, k) for k in rounds[0][run] if isinstance(rounds[0][run][k], float)}
    s_fixed, s_per = summary["serial"]["fixed_s"], summary["serial"]["per_slide_s"]
    for run in ("ray_cold", "ray_warm"):
        d_fixed = round(summary[run]["fixed_s"] - s_fixed, 2)
        d_per = round(summary[run]["per_slide_s"] - s_per, 3)
        summary[run].update(fixed_overhead_s=d_fixed, per_slide_overhead_s=d_per, extrapolated_overhead_pct={
            n: round(100 * (d_fixed + n * d_per) / (s_fixed + n * s_per), 1) for n in (8, 32, 100, 1000)})
    summary.update({
        "max_abs_diff_serial_2threads_vs_1thread": diffs,
        "cpus": args.cpus, "slide_size": args.slide_size, "roi_size": args.roi_size,
        "load_avg_1_5_15_before": [round(x, 1) for x in load0],
        "load_avg_1_5_15_after": [round(x, 1) for x in os.getloadavg()],
        "machine": f"{platform.machine()} {os.cpu_count()} cores visible",
        "command": " ".join(["benchmarks/bench_ray.py", *sys.argv[1:]]),
    })
    print(json.dumps(summary))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)
    if not all(same.values()):
        raise SystemExit(1)


class _warm_instance:  # noqa: N801 - used as a context manager
    """A local Ray instance of ``cpus`` CPUs in a helper process, for ``RAY_ADDRESS``; started before the
    timed command and shut down after it (never ``ray stop``, which would stop other users' instances)."""

    def __init__(self, cpus: int) -> None:
        self.cpus = cpus

    def __enter__(self) -> str:
        self.p = subprocess.Popen([sys.executable, "-c", _WARM, str(self.cpus)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self.p.stdout is not None
        address = self.p.stdout.readline().strip()
        if not address:
            raise SystemExit("the warm Ray instance did not start")
        time.sleep(3)  # let its own start settle (prestarted workers) before the timed command
        return address

    def __exit__(self, *exc: object) -> None:
        assert self.p.stdin is not None
        self.p.stdin.close()
        try:
            self.p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.p.kill()


def _max_diff(a: Path, b: Path) -> dict[str, float | int]:
    """Largest |difference| of box coordinates and class probabilities between two runs' cell tables,
    and how many cells differ in label or in number."""
    import pandas as pd

    box = prob = 0.0
    labels = count = 0
    for fa in sorted(a.glob("*/cells.parquet")):
        ta, tb = pd.read_parquet(fa), pd.read_parquet(b / fa.parent.name / fa.name)
        if len(ta) != len(tb):
            count += abs(len(ta) - len(tb))
            continue
        box = max(box, float((ta[["x1", "y1", "x2", "y2"]] - tb[["x1", "y1", "x2", "y2"]]).abs().max().max()))
        pc = [c for c in ta.columns if c.startswith("prob_")]
        if pc:
            prob = max(prob, float((ta[pc] - tb[pc]).abs().max().max()))
        labels += int((ta["label"].fillna("") != tb["label"].fillna("")).sum())
    return {"box_px": box, "probability": prob, "cells_with_other_label": labels, "cells_missing": count}


if __name__ == "__main__":
    main()
