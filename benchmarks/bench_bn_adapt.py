"""What per-call BatchNorm adaptation (``params['bn_adapt']``) costs: cells/s of the same weights with and
without it, loaded as ``analyze`` loads them (``optimise=True``: BatchNorm folded where it is not adapted),
measured in one run, interleaved, best of 3.

Run: .venv/bin/python benchmarks/bench_bn_adapt.py [WEIGHTS] [N_CELLS] [THREADS]

WEIGHTS (default ``classifier-pbc``) is compared with itself under ``bn_adapt`` off; weights without it are
compared with ``bn_adapt = 3``. Prints a markdown table with the ratio.
"""

from __future__ import annotations

import os
from dataclasses import replace

import numpy as np
import torch

from bench_classifier import bench_args, best_of
from marrowscope.engines.classify import classify_crops
from marrowscope.models.classifier import load_classifier


def main() -> None:
    weights, n, threads = bench_args()
    clf = load_classifier(weights, device="cpu", optimise=True)
    k = clf.spec.params.get("bn_adapt") or 3
    # the same file loaded twice: once folded (no adaptation), once unfolded with it
    plain = load_classifier(weights, device="cpu", optimise=False).with_params(bn_adapt=False)
    from marrowscope.models.inference import fold_batchnorm

    fold_batchnorm(plain.net)
    plain = replace(plain, net=plain.net.to(memory_format=torch.channels_last))  # as optimise=True does
    adapt = clf if clf.spec.params.get("bn_adapt") else load_classifier(
        weights, device="cpu", optimise=True).with_params(bn_adapt=k)
    crops = np.random.default_rng(0).integers(0, 255, (n, clf.input_size, clf.input_size, 3), dtype=np.uint8)
    for c in (plain, adapt):
        classify_crops(c, crops[:256], tta=1)  # warm-up
    print(f"{weights}: {n} cells, {threads} threads, bn_adapt {k}, load average {os.getloadavg()[0]:.2f}")
    print("| TTA | cells/s, no adaptation | cells/s, adaptation | ratio |")
    print("|---|---|---|---|")
    for tta, m in ((1, n), (8, n // 4)):
        t_plain = t_adapt = float("inf")
        for _ in range(3):
            t_plain = min(t_plain, best_of(lambda m=m, t=tta: classify_crops(plain, crops[:m], tta=t), 1)[0])
            t_adapt = min(t_adapt, best_of(lambda m=m, t=tta: classify_crops(adapt, crops[:m], tta=t), 1)[0])
        print(f"| {tta} | {m / t_plain:.0f} | {m / t_adapt:.0f} | {t_adapt / t_plain:.2f}x time |")


if __name__ == "__main__":
    main()
