"""Detection metrics through pycocotools: AP@0.5 (the paper's metric), COCO AP@[.5:.95], per class,
precision and recall at the operating threshold, the PR curve, and figures.

``evaluate_detections(predictions, truths, classes)`` compares per-image :class:`Detections` with
:class:`CellAnnotations` whose labels are the model's class names; :func:`write_detection_report` writes
``metrics.json``, ``pr_curve.png`` and a few example images into a folder.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from marrowscope.cells import CellAnnotations, Detections

logger = logging.getLogger(__name__)

MAX_DETS = 1000


@dataclass(frozen=True)
class DetectionMetrics:
    """AP values are ``nan`` where no image has a true box of that class."""

    ap50: float
    ap: float
    ap75: float
    ap50_per_class: dict[str, float]
    ap_per_class: dict[str, float]
    precision: float
    recall: float
    precision_per_class: dict[str, float]
    recall_per_class: dict[str, float]
    threshold: float
    n_images: int
    n_true: dict[str, int]
    n_predicted: dict[str, int]
    recall_thresholds: tuple[float, ...] = ()
    #: class -> precision at each of ``recall_thresholds`` (IoU 0.5)
    pr_curve_50: dict[str, list[float]] = field(default_factory=dict)
    #: 95 % percentile-bootstrap intervals over groups (patients), when asked for
    ap50_ci: tuple[float, float] | None = None
    ap_ci: tuple[float, float] | None = None

    def to_json_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["recall_thresholds"] = list(self.recall_thresholds)
        for k in ("ap50_ci", "ap_ci"):
            d[k] = list(d[k]) if d[k] is not None else None

        def clean(v: Any) -> Any:
            if isinstance(v, float) and not np.isfinite(v):
                return None
            if isinstance(v, dict):
                return {k: clean(x) for k, x in v.items()}
            if isinstance(v, list):
                return [clean(x) for x in v]
            return v

        return {k: clean(v) for k, v in d.items()}


def _coco_objects(predictions: Sequence[Detections], truths: Sequence[CellAnnotations],
                  classes: Sequence[str]) -> tuple[Any, Any]:
    from pycocotools.coco import COCO

    cat = {c: i + 1 for i, c in enumerate(classes)}
    images: list[dict[str, Any]] = []
    gts: list[dict[str, Any]] = []
    dts: list[dict[str, Any]] = []
    for img_id, (pred, truth) in enumerate(zip(predictions, truths, strict=True), start=1):
        images.append({"id": img_id, "width": int(truth.width or 0), "height": int(truth.height or 0)})
        for c in truth.cells:
            if c.label is None or c.label not in cat:
                continue
            b = c.box
            gts.append({"id": len(gts) + 1, "image_id": img_id, "category_id": cat[c.label],
                        "bbox": [b.x1, b.y1, b.width, b.height], "area": b.width * b.height, "iscrowd": 0})
        for bx, s, lab in zip(pred.boxes, pred.scores, pred.labels, strict=True):
            name = pred.classes[int(lab)]
            if name not in cat:
                continue
            x1, y1, x2, y2 = (float(v) for v in bx)
            dts.append({"id": len(dts) + 1, "image_id": img_id, "category_id": cat[name],
                        "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "score": float(s)})
    categories = [{"id": i, "name": c} for c, i in cat.items()]
    gt = COCO()
    gt.dataset = {"images": images, "annotations": gts, "categories": categories}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    dt = COCO()
    dt.dataset = {"images": images, "annotations": dts, "categories": categories}
    with contextlib.redirect_stdout(io.StringIO()):
        dt.createIndex()
    return gt, dt


def _matched(predictions: Sequence[Detections], truths: Sequence[CellAnnotations],
             classes: Sequence[str]) -> Any:
    """A ``COCOeval`` with the per-image matching done (``evaluate``), not yet accumulated."""
    from pycocotools.cocoeval import COCOeval

    if len(predictions) != len(truths):
        raise ValueError(f"{len(predictions)} predictions for {len(truths)} images")
    gt, dt = _coco_objects(predictions, truths, classes)
    ev = COCOeval(gt, dt, "bbox")
    ev.params.maxDets = [1, 100, MAX_DETS]
    ev.params.areaRng = [ev.params.areaRng[0]]
    ev.params.areaRngLbl = ["all"]
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
    return ev


def _ap_of(p: np.ndarray) -> float:
    v = p[p > -1]
    return float(v.mean()) if v.size else float("nan")


def _class_mean_aps(prec: np.ndarray, classes: Sequence[str]
                    ) -> tuple[float, float, dict[str, float], dict[str, float]]:
    """(AP@0.5, AP@[.5:.95], per class of each) from COCO's precision array [T, R, K, A, M]: the mean over
    the classes that have ground truth."""
    ap50_c = {c: _ap_of(prec[0, :, k, 0, -1]) for k, c in enumerate(classes)}
    ap_c = {c: _ap_of(prec[:, :, k, 0, -1]) for k, c in enumerate(classes)}
    valid = [c for c in classes if np.isfinite(ap50_c[c])]
    ap50 = float(np.mean([ap50_c[c] for c in valid])) if valid else float("nan")
    ap = float(np.mean([ap_c[c] for c in valid])) if valid else float("nan")
    return ap50, ap, ap50_c, ap_c


def evaluate_detections(predictions: Sequence[Detections], truths: Sequence[CellAnnotations],
                        classes: Sequence[str], threshold: float = 0.5) -> DetectionMetrics:
    """COCO-style evaluation (101-point interpolated AP, up to 1000 detections per image)."""
    ev = _matched(predictions, truths, classes)
    with contextlib.redirect_stdout(io.StringIO()):
        ev.accumulate()
    prec = ev.eval["precision"]  # [T, R, K, A, M]
    ap50, ap, ap50_c, ap_c = _class_mean_aps(prec, classes)
    curves = {c: [float(max(v, 0.0)) for v in prec[0, :, k, 0, -1]] for k, c in enumerate(classes)}
    ap75 = _ap_of(prec[5, :, :, 0, -1]) if prec.shape[0] > 5 else float("nan")

    # precision / recall at the operating threshold, from COCO's own matches at IoU 0.5
    tp = dict.fromkeys(classes, 0)
    npred = dict.fromkeys(classes, 0)
    ntrue = dict.fromkeys(classes, 0)
    cat_name = {i + 1: c for i, c in enumerate(classes)}
    for e in ev.evalImgs:
        if e is None:
            continue
        c = cat_name[e["category_id"]]
        ntrue[c] += int(np.sum(np.asarray(e["gtIgnore"]) == 0))
        scores = np.asarray(e["dtScores"], dtype=float)
        above = scores >= threshold
        npred[c] += int(above.sum())
        tp[c] += int(np.sum((np.asarray(e["dtMatches"])[0] > 0) & above))
    p_c = {c: (tp[c] / npred[c] if npred[c] else float("nan")) for c in classes}
    r_c = {c: (tp[c] / ntrue[c] if ntrue[c] else float("nan")) for c in classes}
    all_tp, all_pred, all_true = sum(tp.values()), sum(npred.values()), sum(ntrue.values())
    return DetectionMetrics(
        ap50=ap50, ap=ap, ap75=ap75, ap50_per_class=ap50_c, ap_per_class=ap_c,
        precision=all_tp / all_pred if all_pred else float("nan"),
        recall=all_tp / all_true if all_true else float("nan"),
        precision_per_class=p_c, recall_per_class=r_c, threshold=threshold, n_images=len(truths),
        n_true=ntrue, n_predicted=npred, recall_thresholds=tuple(float(r) for r in ev.params.recThrs),
        pr_curve_50=curves,
    )


def bootstrap_ap(predictions: Sequence[Detections], truths: Sequence[CellAnnotations],
                 classes: Sequence[str], groups: Sequence[str], *, n_boot: int = 200, seed: int = 0
                 ) -> tuple[tuple[float, float], tuple[float, float]]:
    """95 % percentile-bootstrap intervals of AP@0.5 and AP@[.5:.95], resampling ``groups`` (patients:
    all images of a drawn patient come along) with replacement. Returns (ap50_ci, ap_ci).

    The images are matched once (COCO's per-image ``evaluate``, the slow part); each resample only
    accumulates the drawn images' matches, which gives the same numbers as evaluating the resampled set
    from scratch (a drawn image's matches do not depend on the other images)."""
    import copy

    if len(groups) != len(truths):
        raise ValueError(f"{len(groups)} groups for {len(truths)} images")
    names = sorted(set(groups))
    members = {g: [i for i, x in enumerate(groups) if x == g] for g in names}
    rng = np.random.default_rng([seed, 2203])
    ev = _matched(predictions, truths, classes)
    n_img, n_area, n_cat = len(ev.params.imgIds), len(ev.params.areaRng), len(ev.params.catIds)
    ap50s, aps = [], []
    for _ in range(n_boot):
        idx = [i for k in rng.integers(0, len(names), len(names)) for i in members[names[int(k)]]]
        sub = copy.copy(ev)
        sub.params = copy.deepcopy(ev.params)
        sub.params.imgIds = list(range(len(idx)))
        sub._paramsEval = copy.deepcopy(sub.params)
        sub.evalImgs = [ev.evalImgs[(k * n_area + a) * n_img + i]
                        for k in range(n_cat) for a in range(n_area) for i in idx]
        with contextlib.redirect_stdout(io.StringIO()):
            sub.accumulate()
        ap50, ap, _, _ = _class_mean_aps(sub.eval["precision"], classes)
        if np.isfinite(ap50):
            ap50s.append(ap50)
            aps.append(ap)
    if not ap50s:
        nan = float("nan")
        return (nan, nan), (nan, nan)
    q = (2.5, 97.5)
    lo50, hi50 = np.percentile(ap50s, q)
    lo, hi = np.percentile(aps, q)
    return (float(lo50), float(hi50)), (float(lo), float(hi))


def plot_pr_curve(metrics: DetectionMetrics, path: str | Path) -> Path:
    from matplotlib.figure import Figure  # a figure object: no pyplot, no process-wide backend switch

    from marrowscope.io.atomic import atomic_path

    fig = Figure(figsize=(5, 4), dpi=100)
    ax = fig.subplots()
    for c, curve in metrics.pr_curve_50.items():
        ap = metrics.ap50_per_class.get(c, float("nan"))
        if np.isfinite(ap):
            ax.plot(metrics.recall_thresholds, curve, label=f"{c} (AP50 {ap:.3f})")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title(f"PR at IoU 0.5 — mean AP50 {metrics.ap50:.3f}")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower left", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)


def draw_boxes(image: np.ndarray, truth: CellAnnotations, pred: Detections, threshold: float,
               path: str | Path) -> Path:
    """Save ``image`` with true boxes (green, thin) and predictions ≥ threshold (class colour)."""
    from PIL import Image, ImageDraw

    from marrowscope.io.atomic import atomic_path

    palette = [(230, 25, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240), (240, 50, 230)]
    im = Image.fromarray(np.ascontiguousarray(image)).convert("RGB")
    d = ImageDraw.Draw(im)
    for c in truth.cells:
        d.rectangle(c.box.as_tuple(), outline=(0, 200, 0), width=1)
    p = pred.above(threshold)
    for b, lab in zip(p.boxes, p.labels, strict=True):
        d.rectangle(tuple(float(v) for v in b), outline=palette[int(lab) % len(palette)], width=2)
        d.text((float(b[0]) + 2, float(b[1]) + 1), p.classes[int(lab)], fill=palette[int(lab) % len(palette)])
    with atomic_path(path) as tmp:
        im.save(tmp, format="PNG")
    return Path(path)


def write_metrics_json(metrics: DetectionMetrics, path: str | Path, **context: Any) -> Path:
    from marrowscope.io.atomic import write_text_atomic

    d = metrics.to_json_dict()
    d.update(context)
    return write_text_atomic(path, json.dumps(d, indent=2, sort_keys=True) + "\n")


def input_mpp(sample_mpp: float | None, spec_params: dict[str, Any] | Any, model_mpp: float) -> float:
    """The scale to assume for an image: its own mpp, else the weights' ``default_input_mpp`` (e.g. the
    blood-field scale of ``detector-blood``), else the model's mpp (no resampling)."""
    if sample_mpp is not None:
        return float(sample_mpp)
    default = spec_params.get("default_input_mpp") if hasattr(spec_params, "get") else None
    return float(default) if default is not None else float(model_mpp)
