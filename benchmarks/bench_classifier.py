"""Cells classified per second by the default classifier, with and without test-time augmentation.

Run: nice -n 10 .venv/bin/python benchmarks/bench_classifier.py [WEIGHTS] [N_CELLS] [THREADS]

WEIGHTS: a bundled name or file (default: ``classifier-pbc`` when bundled, else a randomly initialised
default model, which has the same speed). Times (best of 3) cover classify_crops on ready crops, and
crop extraction from an in-memory slide (crops_from_slide) separately.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from marrowscope.cells import Box
from marrowscope.data.classification_datasets import PBC_CLASSES
from marrowscope.data.crops import crops_from_slide
from marrowscope.engines.classify import classify_crops
from marrowscope.errors import InputError
from marrowscope.io.slides.array import ArraySlide
from marrowscope.models.classifier import (
    DEFAULT_ARCH,
    CellClassifier,
    create_classifier,
    load_classifier,
    make_spec,
)


def best_of(f: Callable[[], Any], n: int = 3) -> tuple[float, float]:
    """Best wall time and best process CPU time (all threads) of ``n`` runs."""
    best, best_cpu = float("inf"), float("inf")
    for _ in range(n):
        start, start_cpu = time.perf_counter(), time.process_time()
        f()
        best = min(best, time.perf_counter() - start)
        best_cpu = min(best_cpu, time.process_time() - start_cpu)
    return best, best_cpu


def bench_args() -> tuple[str, int, int]:
    """``[WEIGHTS] [N_CELLS] [THREADS]`` from the command line (defaults classifier-pbc, 2048, 2); sets the
    torch threads and quiets logging."""
    logging.disable(logging.WARNING)
    weights = sys.argv[1] if len(sys.argv) > 1 else "classifier-pbc"
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 2048
    threads = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    torch.set_num_threads(threads)
    return weights, n, threads


def main() -> None:
    weights, n, threads = bench_args()
    clf: CellClassifier
    try:
        clf = load_classifier(weights, device="cpu")
        name = weights
    except InputError:
        clf = create_classifier(make_spec(PBC_CLASSES))
        name = f"{DEFAULT_ARCH} (random weights)"
    s = clf.input_size
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 255, (n, s, s, 3), dtype=np.uint8)
    classify_crops(clf, crops[:256], tta=1)  # warm-up
    t1 = best_of(lambda: classify_crops(clf, crops, tta=1))
    t8q = best_of(lambda: classify_crops(clf, crops[: n // 4], tta=8))
    t8 = (t8q[0] * 4, t8q[1] * 4)
    slide = ArraySlide(rng.integers(0, 255, (4096, 4096, 3), dtype=np.uint8), mpp=0.11)
    centres = rng.uniform(0, 4096, (n, 2))
    boxes = [Box(x - 40, y - 40, x + 40, y + 40) for x, y in centres]
    tc = best_of(lambda: crops_from_slide(slide, boxes, mpp=clf.mpp, size=s))
    params = sum(p.numel() for p in clf.net.parameters())
    print(f"model {name}: arch {clf.spec.arch}, {params / 1e6:.2f} M parameters, "
          f"input {s} px at {clf.mpp} µm/px, {threads} threads, {n} cells")
    print("| step | cells/s (wall) | cells per CPU-second |")
    print("|---|---|---|")
    print(f"| classify, no TTA | {n / t1[0]:.0f} | {n / t1[1]:.0f} |")
    print(f"| classify, 8-view TTA | {n / t8[0]:.0f} | {n / t8[1]:.0f} |")
    print(f"| crop extraction from a 0.11 µm/px in-memory slide | {n / tc[0]:.0f} | {n / tc[1]:.0f} |")


if __name__ == "__main__":
    main()
