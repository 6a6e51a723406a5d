"""Seconds per 2048 x 2048 ROI at 0.11 µm/px for the detectors (random weights: speed only).

For each architecture and model scale, builds a detector with random weights (or loads the weights
given), runs ``detect_region`` on a synthetic 2048 x 2048 ROI (an :class:`ArraySlide` at 0.11 µm/px,
resampled to the model's mpp, 512 px tiles with 128 px overlap), once to warm up and then ``--runs``
times, and prints the median. With ``--history RUN/last.pt`` it also prints the training time recorded
in a training checkpoint.

Run: .venv/bin/python benchmarks/bench_detector.py [--threads 2] [--runs 3]
         [--config fasterrcnn_mobilenet_v3_fpn@0.25 ...] [--weights NAME|PATH ...] [--history RUN/last.pt ...]
Prints one JSON line per configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import numpy as np

DEFAULT_CONFIGS = (
    "fasterrcnn_mobilenet_v3_fpn@0.25",
    "fasterrcnn_mobilenet_v3_fpn@0.15",
    "fasterrcnn_resnet50_fpn@0.25",
)


def _roi(seed: int = 0) -> np.ndarray:
    """A 2048 px field with ~150 dark round 'cells' on a pale background (content barely matters)."""
    rng = np.random.default_rng(seed)
    img = np.full((2048, 2048, 3), 225, np.uint8)
    yy, xx = np.mgrid[0:2048, 0:2048]
    for _ in range(150):
        cx, cy, r = rng.integers(60, 1988), rng.integers(60, 1988), rng.integers(35, 90)
        sl = (slice(max(0, cy - r), cy + r), slice(max(0, cx - r), cx + r))
        mask = (yy[sl] - cy) ** 2 + (xx[sl] - cx) ** 2 < r * r
        img[sl][mask] = rng.integers(60, 160, 3)
    return img


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--config", action="append", default=None, help="ARCH@MPP (random weights)")
    ap.add_argument("--weights", action="append", default=[], help="a weights file or bundled model name")
    ap.add_argument("--history", action="append", default=[], help="a training run's last.pt")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from marrowscope.engines.detect import detect_region
    from marrowscope.io.slides.array import ArraySlide
    from marrowscope.models.detector import Detector, build_detector, detector_spec, load_detector

    machine = {"cpu_count": os.cpu_count(), "threads": args.threads, "python": platform.python_version(),
               "torch": torch.__version__, "load_avg_start": os.getloadavg()[0]}
    slide = ArraySlide(_roi(), mpp=0.11)
    dets: list[tuple[str, Detector]] = []
    for c in args.config or ([] if args.weights else list(DEFAULT_CONFIGS)):
        arch, _, mpp = c.partition("@")
        torch.manual_seed(0)
        spec = detector_spec(("cell",), arch=arch, mpp=float(mpp or 0.25), tile_size=512)
        dets.append((f"{arch}@{spec.mpp} (random weights)", Detector(build_detector(spec), spec, "cpu")))
    for w in args.weights:
        d = load_detector(w, device="cpu")
        dets.append((f"{w} ({d.spec.arch}@{d.mpp})", d))
    for name, det in dets:
        detect_region(slide, (0, 0, 2048, 2048), det, batch_size=4)  # warm-up
        times = []
        n = 0
        for _ in range(args.runs):
            t0 = time.perf_counter()
            out = detect_region(slide, (0, 0, 2048, 2048), det, batch_size=4)
            times.append(time.perf_counter() - t0)
            n = len(out)
        side = round(2048 * 0.11 / det.mpp)
        print(json.dumps({"model": name, "roi": "2048x2048 @ 0.11 um/px", "model_input_px": side,
                          "seconds_per_roi_median": round(statistics.median(times), 3),
                          "seconds_all": [round(t, 3) for t in times], "boxes": n,
                          "load_avg_end": os.getloadavg()[0], **machine}), flush=True)
    from marrowscope.engines.checkpoints import load_checkpoint

    for h in args.history:
        ck = load_checkpoint(h)  # weights_only: a planted pickle is refused, never run
        print(json.dumps({"training_run": h, "train_minutes": round(ck["seconds"] / 60, 1),
                          "epochs_done": ck["epoch"], "steps": ck["global_step"],
                          "history": ck["history"]}), flush=True)


if __name__ == "__main__":
    main()
