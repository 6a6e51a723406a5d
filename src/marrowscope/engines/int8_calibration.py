"""``marrowscope quantize``: calibrate a trained classifier's int8 activation ranges on its own
training crops and write the weights with them (:mod:`marrowscope.models.quantize`).

The datasets are read and split exactly as ``train classifier`` reads and splits them (same validation
fraction and seed), and only the **training** parts are used, so a model's validation and held-out
numbers stay untouched by the calibration. Up to ``max_crops`` crops are drawn, seeded, in proportion to
each part's size; each is the contract-size centre view.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from marrowscope.errors import InputError


@dataclass(frozen=True)
class Int8Calibration:
    weights: Path  # the written file
    n_crops: int
    per_dataset: dict[str, int]  # crops drawn from each dataset's training part
    n_ranges: int  # activations calibrated
    description: str  # as stored in params['int8']['calibration']


def _centre_views(images: np.ndarray, size: int) -> np.ndarray:
    h = images.shape[1]
    top = (h - size) // 2
    return np.ascontiguousarray(images[:, top : top + size, top : top + size])


def calibrate_weights(
    weights: str | Path, datasets: Sequence[str], out: str | Path, *, max_crops: int = 2048,
    val_fraction: float = 0.2, split_seed: int = 0, seed: int = 0, cache_dir: Path | None = None,
    progress: bool = True, batch_size: int = 128,
) -> Int8Calibration:
    """Calibrate ``weights`` (a bundled name or a file) on the training parts of ``datasets`` and write
    them, with ``params['int8']``, to ``out`` (never over ``weights`` itself)."""
    from marrowscope.data.classification_datasets import scheme_of_spec
    from marrowscope.engines.train_classifier import load_dataset_parts, split_parts
    from marrowscope.models.classifier import load_classifier, save_classifier
    from marrowscope.models.quantize import BACKEND, PARAM, calibrate_int8
    from marrowscope.models.registry import resolve_model
    from marrowscope.models.weights import load_weights

    if not datasets:
        raise InputError("--dataset", "no dataset given: calibrate on the datasets the model was trained on")
    if max_crops < 64:
        raise InputError("--max-crops", f"{max_crops} is too few for stable activation ranges (use >= 64)")
    src, _ = resolve_model(weights, task="classifier")
    dst = Path(out)
    if dst.exists() and dst.resolve() == Path(src).resolve():
        raise InputError(str(out), "--out is the input weights file; write the calibrated weights elsewhere")
    clf = load_classifier(weights, device="cpu")
    parts = load_dataset_parts(datasets, clf.classes, scheme_of_spec(clf.spec), mpp=clf.mpp,
                               size=clf.input_size, cache_dir=cache_dir, progress=progress)
    trains = [t for t, _ in split_parts(parts, val_fraction, split_seed)]
    total = sum(len(t) for t in trains)
    if total == 0:
        raise InputError(",".join(datasets), "no training crops in these datasets")
    rng = np.random.default_rng(seed)
    picked: list[np.ndarray] = []
    per: dict[str, int] = {}
    for (name, _f, _d, _u), t in zip(parts, trains, strict=True):
        k = min(len(t), max(1, round(max_crops * len(t) / total))) if len(t) else 0
        idx = np.sort(rng.choice(len(t), k, replace=False)) if k else np.zeros(0, dtype=int)
        picked.append(_centre_views(t.images[idx], clf.input_size))
        per[name] = int(k)
    crops = np.concatenate(picked)
    batches = (clf.to_tensor(crops[s : s + batch_size]) for s in range(0, len(crops), batch_size))
    ranges = calibrate_int8(clf.net, batches)
    desc = (f"{len(crops)} training-part crops ({', '.join(f'{n}: {k}' for n, k in per.items())}; grouped "
            f"split, validation fraction {val_fraction}, seed {split_seed}; draw seed {seed}), x86 histogram "
            "observers")
    _, _, extra = load_weights(src, task="classifier")
    calibrated = clf.with_params(**{PARAM: {"backend": BACKEND, "calibration": desc, "ranges": ranges}})
    save_classifier(dst, calibrated, extra=extra)
    return Int8Calibration(weights=dst, n_crops=len(crops), per_dataset=per, n_ranges=len(ranges),
                           description=desc)

