"""Out-of-domain scores: classifiers on crop sets from other labs, detectors per source and on crops.

- :func:`score_crops`: a classifier on :class:`~marrowscope.data.ood_datasets.EvalCrops` at the
  dataset's granularity (:func:`~marrowscope.eval.classification.score_predictions`), plus
  ``macro_f1_min_support``: the macro F1 over the truth types with at least ``min_support`` cells
  (BCCD has 3 basophils: a per-class F1 over 3 cells is noise), and ``n_correct``.
- :func:`central_cell_recall`: the fraction of single-cell crops where the detector finds a box of
  a nucleated-cell class covering the crop centre, with a score at or above the operating threshold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from marrowscope.data.ood_datasets import EvalCrops
from marrowscope.eval.classification import ClassificationReport, macro_f1_over, score_predictions


def score_crops(clf: Any, crops: EvalCrops, *, tta: int = 8, min_support: int = 10,
                eval_scheme: str | None = None, batch_size: int = 256) -> ClassificationReport:
    """Score classifier ``clf`` (a ``CellClassifier``) on ``crops`` (at its contract)."""
    from marrowscope.data.classification_datasets import scheme_of_spec
    from marrowscope.engines.classify import classify_crops

    res = classify_crops(clf, crops.images, tta=tta, batch_size=batch_size)
    rep = score_predictions(res.probabilities, clf.classes, list(crops.labels), eval_scheme=eval_scheme,
                            model_scheme=scheme_of_spec(clf.spec), uncertain=res.uncertain)
    n_correct = int(np.trace(rep.confusion))
    return replace(rep, extra={
        **dict(rep.extra), "macro_f1_min_support": macro_f1_over(rep, min_support),
        "min_support": min_support, "n_correct": n_correct, "skipped": dict(crops.skipped),
        "src_mpp": crops.src_mpp,
    })


def central_cell_recall(detector: Any, images: Sequence[np.ndarray], *, mpp: float,
                        threshold: float | None = None, batch_size: int = 4) -> dict[str, float]:
    """Central-cell recall of ``detector`` on single-cell crop images at ``mpp`` µm/px."""
    from marrowscope.engines.detect import detect_image
    from marrowscope.engines.pipeline import nucleated_class_indices

    thr = float(threshold if threshold is not None else detector.spec.params.get("operating_threshold", 0.5))
    keep = nucleated_class_indices(detector.classes)
    hit = 0
    for img in images:
        det = detect_image(img, detector, mpp=mpp, batch_size=batch_size).above(thr)
        h, w = img.shape[:2]
        cx, cy = w / 2.0, h / 2.0
        bx = det.boxes[np.isin(det.labels, keep)] if len(det) else np.zeros((0, 4))
        inside = (bx[:, 0] <= cx) & (cx <= bx[:, 2]) & (bx[:, 1] <= cy) & (cy <= bx[:, 3])
        hit += int(bool(inside.any()))
    n = len(images)
    return {"central_cell_recall": hit / n if n else float("nan"), "n": float(n), "threshold": thr}
