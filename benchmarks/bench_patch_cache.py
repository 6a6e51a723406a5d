"""Bytes read (and seconds) per training epoch: ROI patch cache vs reading the ROIs from the slides.

An "epoch" here is what a training stage reads when its data does not stay in memory: every ROI once
at the detector's scale (0.25 µm/px) and a classifier crop (80 px at 0.45 µm/px) around every labelled
cell. Slides: the loaders the detector and classifier use (``cohort_samples`` ROI loader and
``crops_from_slide``, which open the DICOM slide and decode its frames). Cache: the same data from
``data/patches.py`` (built once; its build cost is printed too). Bytes are the process' ``rchar`` from
``/proc/self/io`` (every byte read through read()/pread(), page-cache hits included) plus, for the
memory-mapped cache, the patch bytes touched (``PatchStore.bytes_read``, an upper bound).

Run: .venv/bin/python benchmarks/bench_patch_cache.py [--cohort DIR] [--patients 4] [--slide-size 6144]
Without --cohort it writes a synthetic cohort (ROIs of 2048 px at 0.11 µm/px, as in the real data).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path


def rchar() -> int:
    with open("/proc/self/io") as f:
        for line in f:
            if line.startswith("rchar"):
                return int(line.split()[1])
    raise RuntimeError("no rchar in /proc/self/io")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cohort", type=Path, default=None)
    ap.add_argument("--patients", type=int, default=4)
    ap.add_argument("--slide-size", type=int, default=6144)
    ap.add_argument("--cells-per-roi", type=int, default=120)
    args = ap.parse_args()

    from marrowscope import taxonomy
    from marrowscope.data.classification_datasets import load_slide_dataset
    from marrowscope.data.detection_datasets import cohort_samples
    from marrowscope.data.patches import build_roi_cache, cache_summary
    from marrowscope.io.cohort import discover_cohort

    tmp = Path(tempfile.mkdtemp(prefix="bench_patch_"))
    cohort = args.cohort
    if cohort is None:
        from marrowscope.data.synth.cohort import SynthConfig, generate_cohort

        cohort = tmp / "cohort"
        generate_cohort(
            SynthConfig(
                n_patients=args.patients,
                seed=11,
                slide_size=args.slide_size,
                roi_size=2048,
                n_rois=2,
                cells_per_roi=args.cells_per_roi,
            ),
            cohort,
        )
    sch = taxonomy.load_scheme("bmdeep33")
    entries = discover_cohort(cohort).patients
    slide_bytes = sum(os.path.getsize(f) for e in entries for f in e.slide_files)

    def epoch(cache: object) -> tuple[int, float, int]:
        r0, t0 = rchar(), time.perf_counter()
        samples = cohort_samples(
            cohort, ("cell",), cache=cache, cache_mpp=0.25 if cache is not None else None
        )
        pixels = 0
        for s in samples:
            pixels += s.load().size
        data, _ = load_slide_dataset(
            "cohort", cohort, sch.classes, mpp=0.45, size=80, scheme=sch, cache=cache
        )
        return rchar() - r0, time.perf_counter() - t0, len(samples) + len(data)

    epoch(None)  # warm imports and the page cache, so both sides are measured warm
    slide_b, slide_s, n_items = epoch(None)
    r0, t0 = rchar(), time.perf_counter()
    store = build_roi_cache(entries, tmp / "patches", mpps=(0.25, 0.45))
    build_b, build_s = rchar() - r0, time.perf_counter() - t0
    epoch(store)
    store.bytes_read = 0
    cache_b, cache_s, _ = epoch(store)
    touched = store.bytes_read
    out = {
        "cohort": str(cohort),
        "slides": len(entries),
        "slide_bytes": slide_bytes,
        "items_per_epoch": n_items,
        "slides_epoch_bytes": slide_b,
        "slides_epoch_s": round(slide_s, 2),
        "cache_epoch_bytes_rchar": cache_b,
        "cache_epoch_patch_bytes": touched,
        "cache_epoch_s": round(cache_s, 2),
        "ratio_bytes": round(slide_b / max(1, cache_b + touched), 2),
        "ratio_time": round(slide_s / cache_s, 2),
        "cache_build_bytes": build_b,
        "cache_build_s": round(build_s, 2),
        "cache": dict(cache_summary(store)),
        "machine": platform.platform(),
        "load_1min": os.getloadavg()[0],
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
