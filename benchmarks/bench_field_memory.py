"""Peak memory of automatic field selection on a flat (single-level) tiled TIFF of any size.

Writes a SIZE x SIZE px RGB TIFF with only level 0 (tifffile, tile by tile from a generator: the slide is
never held in memory; JPEG tiles; a synthetic smear: background, a thick band, a monolayer band of red
cells and nucleated cells, a sparse feathered edge), then runs ``select_regions`` on it in a child process
under ``/usr/bin/time -v`` and reports the child's peak RSS ("Maximum resident set size"), wall time and
the fields found. The TIFF is deleted afterwards unless ``--keep``.

Run (CPU-heavy: a few minutes at 40,000 px):
    flock /work/cpu.lock nice -n 10 .venv/bin/python benchmarks/bench_field_memory.py \
        --sizes 8192,16384,40000 --json benchmarks/results/field_memory.json
Target (issue 15): peak RSS <= 2 GB for 40,000 x 40,000 px. ``--baseline-src OLD/src`` also measures
another source tree on the same file (only for sizes the old code can hold in memory).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

TILE = 512
BG = (236, 233, 240)
RBC = (222, 150, 160)
NUC = (95, 50, 150)


def _disk_mask(r: int) -> np.ndarray:
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return np.asarray(xx * xx + yy * yy <= r * r)


def _pattern(density: float, seed: int) -> np.ndarray:
    """One TILE x TILE smear tile: red cells covering about ``density`` of it, nuclei among them."""
    rng = np.random.default_rng(seed)
    tile = np.full((TILE, TILE, 3), BG, np.uint8)
    if density <= 0:
        return tile
    if density >= 1:  # thick area: everything covered, dark
        tile[:] = (150, 90, 150)
        density = 0.5
    rbc, nuc = _disk_mask(12), _disk_mask(10)
    n_rbc = int(density * TILE * TILE / rbc.sum())
    for _ in range(n_rbc):
        cx, cy = rng.integers(12, TILE - 12, 2)
        tile[cy - 12 : cy + 13, cx - 12 : cx + 13][rbc] = RBC
    for _ in range(max(1, n_rbc // 12)):
        cx, cy = rng.integers(10, TILE - 10, 2)
        tile[cy - 10 : cy + 11, cx - 10 : cx + 11][nuc] = NUC
    return tile


def _tiles(size: int) -> Iterator[np.ndarray]:
    """Row-major tiles of the slide: a smear band across the middle third of the height, thick at the
    left (feathered edge at the right), monolayer in between; a few patterns repeated."""
    patterns = {d: [_pattern(d, 10 * i + int(100 * d)) for i in range(4)]
                for d in (0.0, 0.06, 0.25, 0.4, 1.0)}
    n = (size + TILE - 1) // TILE
    for j in range(n):
        in_band = n / 3 <= j < 2 * n / 3
        for i in range(n):
            if not in_band:
                d = 0.0
            else:
                u = i / max(n - 1, 1)
                d = 1.0 if u < 0.2 else 0.4 if u < 0.5 else 0.25 if u < 0.8 else 0.06
            yield patterns[d][(i * 7 + j * 3) % 4]


def write_flat_tiff(path: Path, size: int, mpp: float) -> float:
    """Write the slide; returns seconds taken."""
    import tifffile

    t0 = time.perf_counter()
    res = (1e4 / mpp, 1e4 / mpp)
    tifffile.imwrite(path, _tiles(size), shape=(size, size, 3), dtype=np.uint8, tile=(TILE, TILE),
                     photometric="rgb", compression="jpeg", compressionargs={"level": 90},
                     resolution=res, resolutionunit="CENTIMETER", bigtiff=True)
    return time.perf_counter() - t0


def measure(path: Path) -> None:
    """Child process: open the slide and select fields; print one JSON line."""
    import logging

    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)
    from marrowscope.data import regions
    from marrowscope.io.slides import open_slide

    t0 = time.perf_counter()
    with open_slide(path) as slide:
        info = slide.info
        chosen = regions.select_regions(slide)
        plan = getattr(regions, "plan_overview", None)
        note = plan(slide).note if plan is not None else None
    print(json.dumps({
        "reader": type(slide).__name__, "width": info.width, "height": info.height, "mpp": info.mpp,
        "levels": len(info.levels), "fields_chosen": len(chosen),
        "top_fields": [list(f.region.box.as_tuple()) for f in chosen[:3]],
        "seconds_in_child": round(time.perf_counter() - t0, 2), "note": note,
    }))


def _time_v(path: Path, src: Path | None = None) -> dict[str, object]:
    cmd = ["/usr/bin/time", "-v", sys.executable, __file__, "--measure", str(path)]
    env = dict(os.environ)
    if src is not None:  # another source tree (e.g. the code before a change), for a side-by-side number
        env["PYTHONPATH"] = str(src)
    p = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if p.returncode != 0:
        raise SystemExit(f"measurement failed ({p.returncode}):\n{p.stderr[-3000:]}")
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr).group(1))  # type: ignore[union-attr]
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", p.stderr).group(1)  # type: ignore[union-attr]
    cpu = re.search(r"Percent of CPU this job got: (\S+)", p.stderr).group(1)  # type: ignore[union-attr]
    out: dict[str, object] = json.loads(p.stdout.strip().splitlines()[-1])
    out.update({"peak_rss_mib": round(rss_kb / 1024, 1), "wall": wall, "cpu": cpu})
    return out


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="40000", help="comma-separated slide sides in px (default 40000)")
    ap.add_argument("--mpp", type=float, default=0.25, help="pixel size written into the TIFF")
    ap.add_argument("--dir", type=Path, default=None, help="where to write the TIFF (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the TIFF files")
    ap.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    ap.add_argument("--baseline-src", type=Path, default=None,
                    help="also measure with this source tree (e.g. a checkout of the code before the change)")
    ap.add_argument("--measure", type=Path, default=None, help=argparse.SUPPRESS)  # child mode
    args = ap.parse_args()
    if args.measure is not None:
        measure(args.measure)
        return
    work = Path(tempfile.mkdtemp(prefix="bench_field_memory_", dir=args.dir))
    results = []
    load_before = os.getloadavg()
    try:
        for size in (int(s) for s in args.sizes.split(",")):
            path = work / f"flat_{size}.tif"
            t_write = write_flat_tiff(path, size, args.mpp)
            r = {"size": size, "file_mib": round(path.stat().st_size / 2**20, 1),
                 "write_seconds": round(t_write, 1), **_time_v(path)}
            if args.baseline_src is not None:
                r["baseline"] = {"src": str(args.baseline_src), **_time_v(path, args.baseline_src)}
            print(json.dumps(r), flush=True)
            results.append(r)
            if not args.keep:
                path.unlink()
    finally:
        if not args.keep:
            for p in work.glob("*.tif"):
                p.unlink()
            work.rmdir()
    summary = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": f"{_cpu_model()}, {os.cpu_count()} CPUs, {platform.machine()}",
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "results": results,
    }
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "results"}))


if __name__ == "__main__":
    main()
