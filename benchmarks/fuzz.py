"""The reader fuzz suite with many more examples than the default test run, and fresh randomness.

Runs tests/io/test_fuzz_readers.py (every reader of user files: dataset CSVs, cell table, clinical and
counts tables, GeoJSON, COCO, VOC, YOLO, DICOM ANN, cohort discovery from DICOM headers) with
``--examples`` examples per reader (default 2000; the default test run uses 100, derandomised) and prints
pytest's summary; a failure shows Hypothesis' minimal failing input.

Run: flock /work/cpu.lock nice -n 10 .venv/bin/python benchmarks/fuzz.py [--examples 2000] [-k geojson]
         [--derandomize] [--hang-seconds 20]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=2000, help="examples per reader (default 2000)")
    ap.add_argument("-k", default=None, help="only the readers whose test name matches (pytest -k)")
    ap.add_argument("--derandomize", action="store_true",
                    help="the same examples every run (default: fresh randomness)")
    ap.add_argument("--hang-seconds", type=int, default=20, help="a reader slower than this is a hang")
    args = ap.parse_args()
    env = dict(os.environ)
    env["MARROWSCOPE_FUZZ_EXAMPLES"] = str(args.examples)
    env["MARROWSCOPE_FUZZ_HANG_SECONDS"] = str(args.hang_seconds)
    if not args.derandomize:
        env["MARROWSCOPE_FUZZ_RANDOM"] = "1"
    src = str(REPO / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--durations=0",
           str(REPO / "tests" / "io" / "test_fuzz_readers.py")]
    if args.k:
        cmd += ["-k", args.k]
    print(f"{args.examples} examples per reader, {'derandomised' if args.derandomize else 'random'}",
          flush=True)
    t0 = time.perf_counter()
    rc = subprocess.call(cmd, env=env, cwd=REPO)
    print(f"fuzz run: exit {rc}, {time.perf_counter() - t0:.0f} s")
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
