"""Cell classification with test-time augmentation, temperature-scaled probabilities and an
"uncertain" outcome.

- TTA: the logits are averaged over the 8 rotations/flips of each crop (``tta=8``; 4 = rotations only;
  1 = none).
- Calibration: probabilities are ``softmax(logits / T)`` with ``T`` fitted on validation data by
  :func:`fit_temperature` (minimum negative log-likelihood) and stored in the weights' params.
- Uncertain: a cell whose top calibrated probability is below the threshold gets ``label=None``; the
  report can show it as unidentified. Probabilities are always returned.
- Colour standardisation: weights with ``params['colour_standardise']`` (and a stain basis and colour
  reference, :mod:`marrowscope.data.stain`) get the crops of each call mapped onto the training
  crops' stain statistics first, using the statistics of those crops (a region's cells in ``analyze``,
  a whole set in evaluation); calls with fewer than :data:`MIN_STANDARDISE` crops are left as they are
  (too few cells for stable statistics).
- BatchNorm adaptation: weights with ``params['bn_adapt']`` classify each call's crops (after colour
  standardisation) with a copy of the network whose BatchNorm statistics are re-estimated on those crops
  (AdaBN, Li et al. 2018), under the same :data:`MIN_STANDARDISE` rule; the OOD score keeps the stored
  network (:mod:`marrowscope.engines.ood`), so a foreign slide still looks foreign.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from marrowscope.cells import Box, Cell, CellAnnotations
from marrowscope.data.crops import crops_from_slide
from marrowscope.io.slides.base import SlideReader
from marrowscope.models.classifier import CellClassifier

log = logging.getLogger(__name__)

MIN_STANDARDISE = 32


def standardise_crops(clf: CellClassifier, crops: np.ndarray) -> np.ndarray:
    """``crops`` colour-standardised as the weights ask (unchanged when they do not, or when too few)."""
    p = clf.spec.params
    if not p.get("colour_standardise") or not p.get("stain_basis") or not p.get("colour_reference"):
        return crops
    if len(crops) < MIN_STANDARDISE:
        log.info("%d crops: too few to standardise colour (need %d); left as they are", len(crops),
                 MIN_STANDARDISE)
        return crops
    from marrowscope.data.stain import ColourStats, standardise_to

    basis = np.asarray(p["stain_basis"], dtype=np.float64)
    return standardise_to(crops, basis, ColourStats.from_dict(p["colour_reference"]))


class _StopForward(Exception):
    """Raised by a forward hook to end a statistics-only pass early."""


def adapt_batchnorm(clf: CellClassifier, crops: np.ndarray, batch_size: int = 256, *, fold: bool = False
                    ) -> CellClassifier:
    """``clf`` with its BatchNorm statistics re-estimated on ``crops`` when the weights ask for it
    (``params['bn_adapt']``: ``True`` every BatchNorm layer, an integer ``k`` the first ``k`` in the
    network's order, i.e. the early, colour- and texture-level ones) and there are at least
    :data:`MIN_STANDARDISE` crops; otherwise ``clf``. ``fold``: the adapted copy with its BatchNorm folded
    into the convolutions (:func:`marrowscope.models.inference.fold_batchnorm`), to predict at full speed."""
    want = clf.spec.params.get("bn_adapt")
    if not want:
        return clf
    import contextlib
    import copy
    from dataclasses import replace

    import torch

    if len(crops) < MIN_STANDARDISE:
        log.info("%d crops: too few to re-estimate BatchNorm statistics (need %d); stored ones used",
                 len(crops), MIN_STANDARDISE)
        return clf
    net = copy.deepcopy(clf.net)
    norms = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:  # e.g. an int8 body with BatchNorm folded into its convolutions
        log.info("the network has no BatchNorm layers to adapt (precision %s)", clf.precision)
        return clf
    if want is not True:
        norms = norms[: int(want)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over every batch of the call
        m.train()
    # each pass stops once every adapted layer has run: nothing deeper changes their statistics
    seen: set[int] = set()

    def stop_when_all_seen(module: Any, *_: object) -> None:
        seen.add(id(module))
        if len(seen) == len(norms):
            raise _StopForward

    hooks = [m.register_forward_hook(stop_when_all_seen) for m in norms]
    with torch.no_grad():  # equal-sized batches: the cumulative average weighs every batch alike
        for part in np.array_split(np.arange(len(crops)), -(-len(crops) // batch_size)):
            seen.clear()
            with contextlib.suppress(_StopForward):
                net(clf.to_tensor(crops[part]))
    for h in hooks:
        h.remove()
    net.eval()
    if fold:
        from marrowscope.models.inference import fold_batchnorm

        fold_batchnorm(net)
    return replace(clf, net=net)


@dataclass(frozen=True)
class Classification:
    """Result for N crops: ``probabilities`` (N, C) calibrated, in the order of ``classes``;
    ``labels``: predicted class, or None where the top probability is below ``threshold``."""

    probabilities: np.ndarray
    classes: tuple[str, ...]
    labels: tuple[str | None, ...]
    threshold: float
    temperature: float
    tta: int

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def confidence(self) -> np.ndarray:
        return self.probabilities.max(axis=1) if len(self.labels) else np.zeros(0)

    @property
    def argmax_labels(self) -> tuple[str, ...]:
        """Top class of every crop, uncertain ones included."""
        return tuple(self.classes[int(i)] for i in self.probabilities.argmax(axis=1))

    @property
    def uncertain(self) -> np.ndarray:
        return np.array([lab is None for lab in self.labels], dtype=bool)


def softmax(z: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64) / max(temperature, 1e-6)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=1, keepdims=True))


def tta_logits(clf: CellClassifier, crops: np.ndarray, tta: int = 8, batch_size: int = 256) -> np.ndarray:
    """(N, C) logits averaged over ``tta`` dihedral views (1, 4 or 8) of contract crops (N, S, S, 3)."""
    import torch

    from marrowscope.data.cell_augment import dihedral

    if tta not in (1, 2, 4, 8):
        raise ValueError(f"tta must be 1, 2, 4 or 8, got {tta}")
    views = {1: [0], 2: [0, 4], 4: [0, 1, 2, 3], 8: list(range(8))}[tta]
    n = len(crops)
    out = np.zeros((n, len(clf.classes)), dtype=np.float32)
    clf.net.eval()
    for s in range(0, n, batch_size):
        x = clf.to_tensor(crops[s : s + batch_size])
        acc = None
        with torch.inference_mode():
            for k in views:
                z = clf.net(dihedral(x, k)).float()
                acc = z if acc is None else acc + z
        assert acc is not None
        out[s : s + len(x)] = (acc / len(views)).cpu().numpy()
    return out


def classify_crops(
    clf: CellClassifier, crops: np.ndarray, *, tta: int = 8, threshold: float | None = None,
    temperature: float | None = None, batch_size: int = 256,
) -> Classification:
    """Classify contract crops. ``threshold``/``temperature`` default to the weights' params."""
    t = clf.temperature if temperature is None else float(temperature)
    thr = clf.uncertain_threshold if threshold is None else float(threshold)
    if len(crops) == 0:
        return Classification(np.zeros((0, len(clf.classes))), clf.classes, (), thr, t, tta)
    crops = standardise_crops(clf, crops)
    adapted = adapt_batchnorm(clf, crops, batch_size, fold=True)
    probs = softmax(tta_logits(adapted, crops, tta=tta, batch_size=batch_size), t)
    top = probs.argmax(axis=1)
    conf = probs.max(axis=1)
    labels = tuple(clf.classes[int(k)] if c >= thr else None for k, c in zip(top, conf, strict=True))
    return Classification(probabilities=probs, classes=clf.classes, labels=labels, threshold=thr,
                          temperature=t, tta=tta)


def classify_cells(
    clf: CellClassifier, slide: SlideReader, cells: Iterable[Cell | Box], *, tta: int = 8,
    threshold: float | None = None, batch_size: int = 256,
) -> Classification:
    """Crop each cell at the weights' contract from ``slide`` and classify it."""
    crops = crops_from_slide(slide, list(cells), mpp=clf.mpp, size=clf.input_size)
    return classify_crops(clf, crops, tta=tta, threshold=threshold, batch_size=batch_size)


def label_annotations(ann: CellAnnotations, result: Classification) -> CellAnnotations:
    """``ann`` with each cell's label and probabilities set from ``result`` (same order)."""
    from dataclasses import replace

    if len(ann.cells) != len(result):
        raise ValueError(f"{len(ann.cells)} cells but {len(result)} classifications")
    cells = []
    for c, lab, p in zip(ann.cells, result.labels, result.probabilities, strict=True):
        probs = {k: float(v) for k, v in zip(result.classes, p, strict=True)}
        cells.append(replace(c, label=lab, probabilities=probs))
    return ann.with_cells(cells)


def fit_temperature(
    logits: np.ndarray, targets: np.ndarray, bounds: tuple[float, float] = (0.05, 20.0)
) -> float:
    """Temperature minimising the NLL of ``softmax(logits / T)``; ``targets``: (N,) class indices or
    (N, C) soft/set rows (set rows: NLL of the summed admissible probability)."""
    from scipy.optimize import minimize_scalar

    z = np.asarray(logits, dtype=np.float64)
    if len(z) == 0:
        return 1.0
    tgt = np.asarray(targets)
    if tgt.ndim == 1:
        onehot = np.zeros_like(z)
        onehot[np.arange(len(z)), tgt.astype(np.int64)] = 1.0
        tgt = onehot

    def nll(log_t: float) -> float:
        p = softmax(z, float(np.exp(log_t)))
        return float(-np.mean(np.log(np.clip((p * (tgt > 0)).sum(axis=1), 1e-12, None))))

    res = minimize_scalar(nll, bounds=(np.log(bounds[0]), np.log(bounds[1])), method="bounded")
    return float(np.exp(res.x))


def negative_log_likelihood(probs: np.ndarray, y: Sequence[int] | np.ndarray) -> float:
    yy = np.asarray(y, dtype=np.int64)
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(yy)), yy], 1e-12, None))))
