"""Out-of-distribution (OOD) score of a slide from the cell classifier's feature space.

Statistics fitted on the classifier's own training crops travel with its weights
(``params['ood']``): the per-class mean of the penultimate features and a tied within-class
covariance in probabilistic-PCA form (top ``k`` eigenvectors and eigenvalues plus one variance for the
rest of the space). A crop's distance is the smallest Mahalanobis distance to a class mean, divided by
the feature dimension (Lee et al. 2018, "A simple unified framework for detecting out-of-distribution
samples"); in-domain crops sit near 1. A slide's score is the **median** distance over (a seeded sample
of) its cells; above ``slide_threshold`` (the 99.5th percentile of the score of 50-cell in-domain sets,
times a margin of 1.25) the slide is flagged. Colour statistics (stain concentrations in the weights'
Romanowsky basis, :mod:`marrowscope.data.stain`) are reported beside it, as z-scores against the
training crops' reference.

Features are the input of the last linear layer of a ``Sequential`` network (the ``msresnet``
backbones: the pooled 256-d vector; dropout is the identity at inference); other architectures get no
OOD score.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from marrowscope.models.classifier import CellClassifier

log = logging.getLogger(__name__)

SET_SIZE = 50  # cells per in-domain set for the slide threshold
MARGIN = 1.25


@dataclass(frozen=True)
class OODStats:
    class_means: np.ndarray  # (C, D)
    components: np.ndarray  # (K, D) eigenvectors of the within-class covariance
    eigenvalues: np.ndarray  # (K,)
    rest_variance: float  # mean eigenvalue beyond K
    cell_threshold: float  # 99th percentile of in-domain crop distances
    slide_threshold: float

    def to_dict(self) -> dict[str, Any]:
        def r(a: np.ndarray) -> Any:  # 6 significant digits (small eigenvalues keep their precision)
            return np.vectorize(lambda v: float(f"{v:.6g}"))(np.asarray(a, dtype=np.float64)).tolist()

        return {"class_means": r(self.class_means), "components": r(self.components),
                "eigenvalues": r(self.eigenvalues), "rest_variance": float(self.rest_variance),
                "cell_threshold": float(self.cell_threshold), "slide_threshold": float(self.slide_threshold)}

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> OODStats:
        return OODStats(np.asarray(d["class_means"], dtype=np.float64),
                        np.asarray(d["components"], dtype=np.float64),
                        np.asarray(d["eigenvalues"], dtype=np.float64), float(d["rest_variance"]),
                        float(d["cell_threshold"]), float(d["slide_threshold"]))


@dataclass(frozen=True)
class SlideOOD:
    """The OOD verdict of one slide."""

    score: float  # median crop distance (in-domain ~1)
    threshold: float
    flagged: bool
    n_cells: int
    colour_z: tuple[float, float, float] | None  # stain-concentration mean vs the reference, in ref sds

    def message(self) -> str:
        col = ""
        if self.colour_z is not None:
            col = "; stain z-scores " + "/".join(f"{z:+.1f}" for z in self.colour_z)
        return (f"the cells of this slide look unlike the classifier's training data (OOD score "
                f"{self.score:.2f} > {self.threshold:.2f} over {self.n_cells} cells{col}); the "
                "differential may be wrong: check the stain and the pixel size (--mpp), or use a model "
                "trained on data like this slide")

    def to_dict(self) -> dict[str, Any]:
        return {"score": self.score, "threshold": self.threshold, "flagged": self.flagged,
                "n_cells": self.n_cells, "colour_z": None if self.colour_z is None else list(self.colour_z)}


def _feature_net(clf: CellClassifier) -> Any:
    """The network whose features the stored statistics describe: the fp32 one (also under int8)."""
    return clf.net if clf.fp32_net is None else clf.fp32_net


def has_features(clf: CellClassifier) -> bool:
    import torch

    net = _feature_net(clf)
    return isinstance(net, torch.nn.Sequential) and isinstance(net[-1], torch.nn.Linear)


def crop_features(clf: CellClassifier, crops: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """(N, D) penultimate features of contract crops (centre view)."""
    import torch

    if not has_features(clf):
        raise ValueError(f"{clf.spec.arch}: no feature extractor for the OOD score")
    body = _feature_net(clf)[:-1]
    out = []
    with torch.inference_mode():
        for s in range(0, len(crops), batch_size):
            f = body(clf.to_tensor(crops[s : s + batch_size])).float()
            out.append(f.reshape(f.shape[0], -1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


def distances(feats: np.ndarray, st: OODStats) -> np.ndarray:
    """Per-crop min-over-classes Mahalanobis distance / D (probabilistic PCA covariance)."""
    f = np.asarray(feats, dtype=np.float64)
    d = f.shape[1]
    diff = f[:, None, :] - st.class_means[None, :, :]  # (N, C, D)
    proj = diff @ st.components.T  # (N, C, K)
    total = (diff ** 2).sum(axis=2)
    inside = (proj ** 2).sum(axis=2)
    maha = (proj ** 2 / st.eigenvalues).sum(axis=2) + (total - inside).clip(0) / st.rest_variance
    return np.asarray(maha.min(axis=1) / d)


def fit_ood_stats(clf: CellClassifier, crops: np.ndarray, class_index: np.ndarray, *, k: int = 32,
                  val_crops: np.ndarray | None = None, seed: int = 0) -> OODStats:
    """Fit the statistics on (hard-labelled) training crops; thresholds from ``val_crops`` (held-out
    in-domain crops; the training crops when None)."""
    feats = crop_features(clf, crops)
    y = np.asarray(class_index, dtype=np.int64)
    c = len(clf.classes)
    means = np.zeros((c, feats.shape[1]))
    for j in range(c):
        sel = feats[y == j]
        means[j] = sel.mean(axis=0) if len(sel) else feats.mean(axis=0)
    resid = feats - means[y]
    cov = np.cov(resid, rowvar=False) + 1e-6 * np.eye(feats.shape[1])
    w, v = np.linalg.eigh(cov)
    order = np.argsort(w)[::-1]
    w, v = w[order], v[:, order]
    w = np.maximum(w, max(float(w[0]), 1e-12) * 1e-6)
    k = min(k, len(w) - 1)
    rest = float(max(w[k:].mean(), 1e-6))
    partial = OODStats(means, v[:, :k].T, w[:k], rest, 0.0, 0.0)
    ref = distances(crop_features(clf, val_crops) if val_crops is not None else feats, partial)
    rng = np.random.default_rng(seed)
    n = min(SET_SIZE, len(ref))
    sets = [float(np.median(rng.choice(ref, n, replace=True))) for _ in range(2000)]
    return OODStats(means, v[:, :k].T, w[:k], rest, float(np.percentile(ref, 99)),
                    float(np.percentile(sets, 99.5) * MARGIN))


def ood_stats_of(clf: CellClassifier) -> OODStats | None:
    d = clf.spec.params.get("ood")
    return OODStats.from_dict(d) if d else None


def score_crops(clf: CellClassifier, crops: np.ndarray) -> np.ndarray | None:
    """Per-crop OOD distances, or None when the weights carry no OOD statistics."""
    st = ood_stats_of(clf)
    if st is None or not has_features(clf) or not len(crops):
        return None
    return distances(crop_features(clf, crops), st)


def slide_ood(clf: CellClassifier, crops: np.ndarray) -> SlideOOD | None:
    """The OOD verdict of a slide from (a sample of) its cell crops; None without statistics."""
    d = score_crops(clf, crops)
    st = ood_stats_of(clf)
    if d is None or st is None:
        return None
    score = float(np.median(d))
    colour_z = None
    basis, ref = clf.spec.params.get("stain_basis"), clf.spec.params.get("colour_reference")
    if basis and ref:
        from marrowscope.data.stain import ColourStats, colour_stats

        cs, rs = colour_stats(crops, np.asarray(basis)), ColourStats.from_dict(ref)
        colour_z = tuple(float((a - b) / s) for a, b, s in zip(cs.mean, rs.mean, rs.std, strict=True))
    return SlideOOD(score, st.slide_threshold, score > st.slide_threshold, len(d), colour_z)  # type: ignore[arg-type]


def sample_cells(n: int, max_cells: int = 256, seed: int = 0) -> Sequence[int]:
    """A seeded sample of at most ``max_cells`` indices of ``n`` cells, in order."""
    if n <= max_cells:
        return list(range(n))
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(n, max_cells, replace=False))


def with_ood_stats(clf: CellClassifier, train: Any, val: Any | None = None, seed: int = 0) -> CellClassifier:
    """``clf`` with OOD statistics (``params['ood']``) fitted on a training ``CropSet`` (its HARD rows,
    centre views) and thresholds from ``val`` (held-out in-domain crops)."""
    import torch

    from marrowscope.data.cell_augment import center_crop
    from marrowscope.data.classification_datasets import SET

    def centre(images: np.ndarray) -> np.ndarray:
        t = center_crop(torch.from_numpy(images).permute(0, 3, 1, 2), clf.input_size)
        return np.ascontiguousarray(t.permute(0, 2, 3, 1).numpy())

    hard = np.asarray(train.target_kind) != SET
    st = fit_ood_stats(clf, centre(train.images[hard]), train.hard_index()[hard],
                       val_crops=None if val is None or not len(val) else centre(val.images), seed=seed)
    return clf.with_params(ood=st.to_dict())


def attach_ood_stats(weights: str, dataset: str, split_json: str, out: str, *, cache_dir: str | None = None,
                     params: Mapping[str, Any] | None = None) -> OODStats:
    """Fit OOD statistics for trained ``weights`` on the training/validation crops of ``dataset`` listed
    in a training run's ``split.json`` and write the weights with them (and ``params``, e.g.
    ``{"colour_standardise": True}``) to ``out``."""
    import json
    from pathlib import Path

    from marrowscope.data.classification_datasets import load_image_dataset, parse_dataset_arg, scheme_of_spec
    from marrowscope.models.classifier import load_classifier, save_classifier

    clf = load_classifier(weights, device="cpu")
    fmt, root = parse_dataset_arg(dataset)
    ctx = round(clf.input_size * 1.25)
    data, _ = load_image_dataset(fmt, root, clf.classes, mpp=clf.mpp, size=ctx, fit_size=clf.input_size,
                                 cache_dir=Path(cache_dir) if cache_dir else None,
                                 scheme=scheme_of_spec(clf.spec))
    split = json.loads(Path(split_json).read_text(encoding="utf-8"))
    pos = {k: i for i, k in enumerate(data.ids)}
    tr = data.subset(np.array([pos[k] for k in split["train"]]))
    va = data.subset(np.array([pos[k] for k in split["val"]]))
    clf2 = with_ood_stats(clf, tr, va).with_params(**dict(params or {}))
    from marrowscope.models.registry import resolve_model
    from marrowscope.models.weights import load_weights

    _, _, extra = load_weights(resolve_model(weights, task="classifier")[0], task="classifier")
    save_classifier(out, clf2, extra=extra)
    st = ood_stats_of(clf2)
    assert st is not None
    return st


def slide_ood_from_cells(slide: Any, cells: Sequence[Any], clf: CellClassifier, *, max_cells: int = 256,
                         seed: int = 0) -> SlideOOD | None:
    """:func:`slide_ood` of a seeded sample of ``cells`` (``Cell`` objects) cropped from ``slide`` at
    the classifier's contract; None when the classifier carries no OOD statistics."""
    from marrowscope.data.crops import crops_from_slide

    if ood_stats_of(clf) is None or not cells:
        return None
    pick = [cells[i] for i in sample_cells(len(cells), max_cells, seed)]
    return slide_ood(clf, crops_from_slide(slide, pick, mpp=clf.mpp, size=clf.input_size))
