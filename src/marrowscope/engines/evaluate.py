"""Evaluating a model on a dataset: run the model (the engines' inference), then score it with the
metrics of :mod:`marrowscope.eval` and write ``metrics.json`` and figures. The metrics modules never run a
model themselves (``eval`` does not import ``engines``); ``marrowscope evaluate`` calls these functions.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from marrowscope.cells import CellAnnotations, Detections
from marrowscope.engines.classify import classify_crops
from marrowscope.engines.detect import detect_image
from marrowscope.eval.classification import (
    ClassificationReport,
    macro_f1_over,
    score_predictions,
    write_report,
)
from marrowscope.eval.detection import (
    DetectionMetrics,
    bootstrap_ap,
    draw_boxes,
    evaluate_detections,
    input_mpp,
    plot_pr_curve,
    write_metrics_json,
)
from marrowscope.io.atomic import write_text_atomic
from marrowscope.io.csvsafe import escape_row

log = logging.getLogger(__name__)


def evaluate_detector(
    detector: Any,
    samples: Sequence[Any],
    out_dir: str | Path | None = None,
    *,
    threshold: float | None = None,
    mpp: float | None = None,
    batch_size: int = 4,
    n_examples: int = 4,
    progress: bool = False,
    context: dict[str, Any] | None = None,
    ci_groups: Sequence[str] | None = None,
    n_boot: int = 200,
    seed: int = 0,
) -> DetectionMetrics:
    """Run ``detector`` (a :class:`marrowscope.models.detector.Detector`) on every
    :class:`~marrowscope.data.detection_datasets.DetectionSample` and score it.

    ``mpp`` overrides the images' scale. ``ci_groups`` (one group, e.g. the patient, per sample) adds
    percentile-bootstrap intervals over groups (``n_boot`` resamples). With ``out_dir``:
    ``metrics.json``, ``pr_curve.png`` and ``examples/*.png`` (true boxes green, predictions in class
    colours)."""
    spec = detector.spec
    thr = float(threshold if threshold is not None else spec.params.get("operating_threshold", 0.5))
    preds: list[Detections] = []
    truths: list[CellAnnotations] = []
    examples: list[tuple[np.ndarray, CellAnnotations, Detections, str]] = []
    it: Any = samples
    if progress:
        from tqdm import tqdm

        it = tqdm(samples, desc="evaluate", unit="img", mininterval=5)
    for s in it:
        image = s.load()
        m = mpp if mpp is not None else input_mpp(s.mpp, spec.params, detector.mpp)
        det = detect_image(image, detector, mpp=m, batch_size=batch_size)
        truth = s.annotations
        if truth.width is None or truth.height is None:
            from dataclasses import replace

            truth = replace(truth, width=image.shape[1], height=image.shape[0])
        preds.append(det)
        truths.append(truth)
        if len(examples) < n_examples:
            examples.append((image, truth, det, s.image_id))
    metrics = evaluate_detections(preds, truths, detector.classes, threshold=thr)
    if ci_groups is not None:
        from dataclasses import replace as _replace

        ci50, ci = bootstrap_ap(preds, truths, detector.classes, ci_groups, n_boot=n_boot, seed=seed)
        metrics = _replace(metrics, ap50_ci=ci50, ap_ci=ci)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_metrics_json(metrics, out / "metrics.json", **(context or {}))
        plot_pr_curve(metrics, out / "pr_curve.png")
        for image, truth, det, image_id in examples:
            safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in image_id)[:80]
            draw_boxes(image, truth, det, thr, out / "examples" / f"{safe}.png")
    return metrics


def evaluate_classifier(
    weights: str | Path, dataset: str, out_dir: str | Path | None = None, *, tta: int = 8,
    eval_scheme: str | None = None, src_mpp: float | None = None, threshold: float | None = None,
    batch_size: int = 256, progress: bool = False, precision: str = "fp32",
) -> ClassificationReport:
    """Evaluate classifier ``weights`` (bundled name or file) on ``dataset`` (``FORMAT:PATH``), run at
    ``precision`` (``fp32``, or ``bf16`` / ``int8`` / ``auto`` to score the fast paths analyze uses).

    ``pbc``: the ground truth is the ``label`` column (PBC's 8 groups) and predictions are summed
    into them through scheme ``pbc8`` unless ``eval_scheme`` says otherwise; ``imagefolder``: labels
    are taxonomy names or aliases; ``synth``/``cohort``: consensus-labelled cells cropped from slides.
    Writes ``metrics.json`` and ``confusion.png`` to ``out_dir`` when given.
    """
    from marrowscope.data.classification_datasets import (
        imagefolder_to_taxonomy,
        parse_dataset_arg,
        pbc_to_taxonomy,
        scheme_of_spec,
    )
    from marrowscope.data.crops import PBC_MPP, images_to_contract
    from marrowscope.io.annotations.imagefolder import LabelledImage, read_image_folder
    from marrowscope.models.classifier import load_classifier

    clf = load_classifier(weights, precision=precision, optimise=precision != "fp32")
    fmt, root = parse_dataset_arg(dataset)
    model_scheme = scheme_of_spec(clf.spec)
    from marrowscope.data.ood_datasets import load_eval_crops, parse_ood_arg

    if parse_ood_arg(dataset) is not None:  # bccd-wbc:, matek:, txl-pbc: (out-of-domain crop sets)
        ec = load_eval_crops(dataset, mpp=clf.mpp, size=clf.input_size, src_mpp=src_mpp)
        crops, truth, ids = ec.images, list(ec.labels), list(ec.ids)
    elif fmt in ("pbc", "imagefolder"):
        items = read_image_folder(root)
        if fmt == "pbc":
            eval_scheme = eval_scheme or "pbc8"
            # score against the dataset's own classes: the group label, not the finer file-name prefix
            truth = [pbc_to_taxonomy(LabelledImage(it.path, it.label, None)) for it in items]
            s_mpp: float | None = src_mpp or PBC_MPP
        else:
            truth = [imagefolder_to_taxonomy(it) for it in items]
            s_mpp = src_mpp
        crops = images_to_contract([it.path for it in items], src_mpp=s_mpp, mpp=clf.mpp,
                                   size=clf.input_size, progress=progress)
        ids = [str(it.path) for it in items]
    else:
        from marrowscope.data.classification_datasets import load_slide_dataset

        cs, _ = load_slide_dataset(fmt, root, clf.classes, mpp=clf.mpp, size=clf.input_size,
                                   scheme=model_scheme, progress=progress, keep_all=True)
        crops, truth, ids = cs.images, list(cs.labels), list(cs.ids)
    res = classify_crops(clf, crops, tta=tta, threshold=threshold, batch_size=batch_size)
    report = score_predictions(res.probabilities, clf.classes, truth, eval_scheme=eval_scheme,
                               model_scheme=model_scheme, uncertain=res.uncertain)
    from dataclasses import replace

    report = replace(report, extra={
        **dict(report.extra), "weights": str(weights), "weights_sha256": clf.sha256, "dataset": dataset,
        "tta": tta, "precision": clf.precision, "temperature": res.temperature,
        "uncertain_threshold": res.threshold, "macro_f1_min_support": macro_f1_over(report, 10),
        "min_support": 10,
        "n_correct": int(np.trace(report.confusion)),
        "model_classes": list(clf.classes), "contract": {"input_size": clf.input_size, "mpp": clf.mpp},
    })
    if out_dir is not None:
        write_report(report, out_dir)
        _write_predictions(Path(out_dir) / "predictions.csv", ids, truth, res)
    return report


def _write_predictions(path: Path, ids: Sequence[str], truth: Sequence[str], res: Any) -> None:
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["id", "truth", "predicted", "confidence", *res.classes])
    for i, (k, t) in enumerate(zip(ids, truth, strict=True)):
        lab = res.labels[i]
        probs = res.probabilities[i]
        w.writerow(escape_row([k, t, lab if lab is not None else "uncertain", f"{probs.max():.4f}",
                               *(f"{p:.4f}" for p in probs)]))
    write_text_atomic(path, buf.getvalue())
