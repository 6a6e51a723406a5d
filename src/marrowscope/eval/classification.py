"""Classification metrics: macro AUC (one-vs-rest), macro F1, balanced accuracy, per-class P/R/F1,
expected calibration error, confusion-matrix plot; scored at the dataset's granularity.

Scoring at the dataset's granularity: when the dataset's labels are coarser than the model's classes
(e.g. PBC's 8 groups against a model with promyelocyte / myelocyte / metamyelocyte), the model's
probabilities are summed into the dataset's classes through a taxonomy class scheme (``pbc8``) and the
argmax of the summed probabilities is the prediction. Model classes that map to none of the dataset's
classes keep their probability mass in an ``(other)`` column: a prediction there counts as wrong and is
reported, never silently dropped. Dataset labels the model cannot produce are reported too.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from marrowscope.errors import InputError
from marrowscope.io.atomic import write_text_atomic

log = logging.getLogger(__name__)

OTHER = "(other)"


@dataclass(frozen=True)
class ClassMetrics:
    precision: float
    recall: float
    f1: float
    support: int
    auc: float | None


@dataclass(frozen=True)
class ClassificationReport:
    classes: tuple[str, ...]  # evaluation classes (dataset granularity), OTHER last when present
    macro_f1: float
    macro_auc: float | None
    balanced_accuracy: float
    accuracy: float
    ece: float
    n_images: int
    per_class: Mapping[str, ClassMetrics]
    confusion: np.ndarray  # (K, K) rows = truth, cols = prediction over ``classes``
    n_uncertain: int = 0
    notes: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "macro_f1": self.macro_f1, "macro_auc": self.macro_auc,
            "balanced_accuracy": self.balanced_accuracy, "accuracy": self.accuracy, "ece": self.ece,
            "n_images": self.n_images, "n_uncertain": self.n_uncertain, "classes": list(self.classes),
            "per_class": {k: {"precision": v.precision, "recall": v.recall, "f1": v.f1,
                              "support": v.support, "auc": v.auc} for k, v in self.per_class.items()},
            "confusion": self.confusion.astype(int).tolist(), "notes": list(self.notes), **dict(self.extra),
        }


def aggregate_probabilities(
    probs: np.ndarray, classes: Sequence[str], target_classes: Sequence[str],
    mapping: Mapping[str, str | None],
) -> tuple[np.ndarray, tuple[str, ...], list[str]]:
    """Sum model probabilities into ``target_classes`` via ``mapping`` (model class -> target or None).

    Returns (probabilities over the target classes plus ``OTHER`` when some mass maps nowhere,
    the column names, notes on unmapped model classes).
    """
    tc = list(target_classes)
    idx = {c: i for i, c in enumerate(tc)}
    unmapped = [c for c in classes if mapping.get(c) not in idx]
    cols = tc + ([OTHER] if unmapped else [])
    out = np.zeros((probs.shape[0], len(cols)), dtype=np.float64)
    for j, c in enumerate(classes):
        t = mapping.get(c)
        out[:, idx[t] if t in idx else len(tc)] += probs[:, j]
    notes = [f"model class {c!r} has no counterpart in the dataset's classes; its probability goes to "
             f"{OTHER!r} (a prediction there counts as an error)" for c in unmapped]
    return out, tuple(cols), notes


def scheme_mapping(classes: Sequence[str], scheme_name: str) -> tuple[tuple[str, ...], dict[str, str | None]]:
    """(scheme classes, model class -> scheme class or None) through the taxonomy."""
    from marrowscope import taxonomy

    scheme = taxonomy.load_scheme(scheme_name)
    mapping: dict[str, str | None] = {}
    for c in classes:
        try:
            mapping[c] = scheme.map_label(c)
        except InputError:
            mapping[c] = None
    return scheme.classes, mapping


def expected_calibration_error(probs: np.ndarray, y: np.ndarray, n_bins: int = 15) -> float:
    """ECE of the top-1 confidence (equal-width bins)."""
    if len(y) == 0:
        return float("nan")
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == y).astype(np.float64)
    bins = np.linspace(0, 1, n_bins + 1)
    ece = 0.0
    for lo, hi in zip(bins[:-1], bins[1:], strict=True):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(ece)


def evaluate_probabilities(
    probs: np.ndarray, y_true: Sequence[str], classes: Sequence[str], *, uncertain: np.ndarray | None = None,
    notes: Sequence[str] = (),
) -> ClassificationReport:
    """Metrics of probabilities (N, K) over ``classes`` against true class names.

    Every true label must be one of ``classes`` (map first). Macro F1, balanced accuracy and the
    macro AUC average over the classes present in the truth; classes never true but predicted still
    lower precision of nothing and are listed with support 0. ``uncertain`` (bool per row) is counted
    only: the argmax is still scored, so that abstaining cannot inflate the numbers.
    """
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_auc_score

    cls = list(classes)
    idx = {c: i for i, c in enumerate(cls)}
    bad = sorted({t for t in y_true if t not in idx})
    if bad:
        raise InputError("labels", f"true labels {bad} are not among the evaluation classes {cls}")
    y = np.array([idx[t] for t in y_true], dtype=np.int64)
    pred = probs.argmax(axis=1)
    present = np.unique(y)
    p, r, f, s = precision_recall_fscore_support(y, pred, labels=np.arange(len(cls)), zero_division=0)
    aucs: dict[int, float | None] = {}
    for k in range(len(cls)):
        pos = y == k
        aucs[k] = float(roc_auc_score(pos, probs[:, k])) if 0 < pos.sum() < len(y) else None
    per = {c: ClassMetrics(float(p[k]), float(r[k]), float(f[k]), int(s[k]), aucs[k])
           for k, c in enumerate(cls)}
    auc_vals = [aucs[int(k)] for k in present if aucs[int(k)] is not None]
    cm = confusion_matrix(y, pred, labels=np.arange(len(cls)))
    return ClassificationReport(
        classes=tuple(cls),
        macro_f1=float(np.mean(f[present])) if len(present) else float("nan"),
        macro_auc=float(np.mean(auc_vals)) if auc_vals else None,  # type: ignore[arg-type]
        balanced_accuracy=float(np.mean(r[present])) if len(present) else float("nan"),
        accuracy=float((pred == y).mean()) if len(y) else float("nan"),
        ece=expected_calibration_error(probs, y),
        n_images=len(y), per_class=per, confusion=cm,
        n_uncertain=int(np.sum(uncertain)) if uncertain is not None else 0, notes=tuple(notes),
    )


def plot_confusion(report: ClassificationReport, path: str | Path, normalise: bool = True) -> Path:
    """Confusion-matrix figure (rows = truth, normalised per row) as PNG."""
    from matplotlib.figure import Figure  # a figure object: no pyplot, no process-wide backend switch

    from marrowscope.io.atomic import atomic_path

    cm = report.confusion.astype(np.float64)
    shown = cm / np.clip(cm.sum(axis=1, keepdims=True), 1, None) if normalise else cm
    k = len(report.classes)
    fig = Figure(figsize=(1.0 + 0.5 * k, 0.8 + 0.5 * k), dpi=110)
    ax = fig.subplots()
    ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalise else None)
    for i in range(k):
        for j in range(k):
            if cm[i, j]:
                ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=7,
                        color="white" if shown[i, j] > 0.5 else "black")
    ax.set_xticks(range(k), report.classes, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(k), report.classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"macro F1 {report.macro_f1:.3f}, n = {report.n_images}", fontsize=9)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)


def write_report(
    report: ClassificationReport, out_dir: str | Path, extra: Mapping[str, Any] | None = None
) -> Path:
    """``out_dir/metrics.json`` and ``out_dir/confusion.png``; returns the metrics path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    d = report.to_dict()
    d.update(dict(extra or {}))
    metrics = write_text_atomic(out / "metrics.json", json.dumps(_clean(d), indent=1) + "\n")
    plot_confusion(report, out / "confusion.png")
    return metrics


def _clean(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    if isinstance(x, float) and not np.isfinite(x):
        return None
    if isinstance(x, np.generic):
        return _clean(x.item())
    return x


# --- scoring at the dataset's granularity ----------------------------------------------------------------
@dataclass(frozen=True)
class LabelAlignment:
    """How model classes and dataset labels meet: both map onto ``eval_classes``."""

    eval_classes: tuple[str, ...]
    model_to_eval: Mapping[str, str | None]
    truth_to_eval: Mapping[str, str | None]
    notes: tuple[str, ...]


def align_labels(
    model_classes: Sequence[str], truth_labels: Sequence[str], *, eval_scheme: str | None = None,
    model_scheme: Any = None,
) -> LabelAlignment:
    """Map model classes and (taxonomy) truth labels onto common evaluation classes.

    With ``eval_scheme`` (e.g. ``pbc8``) both sides go through that taxonomy scheme. Without it: a
    truth label finer than the model's classes goes up to its model class; a truth label coarser than
    the model's classes (e.g. ``neutrophil`` against band/segmented) collects the probability of the
    model classes below it. Truth labels that reach no evaluation class, and model classes that no
    truth label reaches, are named in ``notes`` (reported, never dropped silently).
    """
    from marrowscope import taxonomy
    from marrowscope.data.classification_datasets import HARD, target_for_label

    present = sorted(set(truth_labels))
    notes: list[str] = []
    if eval_scheme is not None:
        sch = taxonomy.load_scheme(eval_scheme)
        eval_classes, m2e = scheme_mapping(model_classes, eval_scheme)
        t2e: dict[str, str | None] = {}
        for t in present:
            try:
                t2e[t] = sch.map_label(t)
            except InputError:
                t2e[t] = None
    else:
        m2e = {c: c for c in model_classes}
        t2e = {}
        for t in present:
            tgt = target_for_label(t, model_classes, model_scheme)
            if tgt is None:
                t2e[t] = None
            elif tgt[1] == HARD:
                t2e[t] = model_classes[int(tgt[0].argmax())]
            else:
                for j in np.nonzero(tgt[0] > 0)[0]:
                    m2e[model_classes[int(j)]] = t
                t2e[t] = t
        # truth that went to a model class later merged into a coarser truth label follows it
        t2e = {t: (m2e.get(e, e) if e is not None else None) for t, e in t2e.items()}
        eval_classes = tuple(dict.fromkeys(v for v in m2e.values() if v is not None))
    unknown = [t for t in present if t2e.get(t) is None]
    if unknown:
        notes.append(f"dataset labels the model cannot express (excluded from the scores, counted in "
                     f"'excluded'): {unknown}")
    reached = {t2e[t] for t in present} - {None}
    silent = [c for c in model_classes if m2e.get(c) not in reached]
    if silent:
        notes.append(f"model classes absent from this dataset (predictions there count as errors): {silent}")
    return LabelAlignment(tuple(eval_classes), dict(m2e), t2e, tuple(notes))


def score_predictions(
    probs: np.ndarray, model_classes: Sequence[str], truth_labels: Sequence[str], *,
    eval_scheme: str | None = None, model_scheme: Any = None, uncertain: np.ndarray | None = None,
) -> ClassificationReport:
    """Metrics of model probabilities against taxonomy truth labels at the dataset's granularity."""
    al = align_labels(model_classes, truth_labels, eval_scheme=eval_scheme, model_scheme=model_scheme)
    agg, cols, agg_notes = aggregate_probabilities(probs, model_classes, al.eval_classes, al.model_to_eval)
    keep = np.array([al.truth_to_eval.get(t) is not None for t in truth_labels], dtype=bool)
    excluded: dict[str, int] = {}
    for t, k in zip(truth_labels, keep, strict=True):
        if not k:
            excluded[t] = excluded.get(t, 0) + 1
    truth = [str(al.truth_to_eval[t]) for t, k in zip(truth_labels, keep, strict=True) if k]
    unc = None if uncertain is None else uncertain[keep]
    rep = evaluate_probabilities(agg[keep], truth, cols, uncertain=unc, notes=(*al.notes, *agg_notes))
    from dataclasses import replace

    return replace(rep, extra={"excluded": excluded, "eval_scheme": eval_scheme,
                               "model_to_eval": dict(al.model_to_eval)})
