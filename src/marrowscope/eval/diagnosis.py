"""Patient-level evaluation of the diagnosis model: repeated grouped cross-validation, macro F1 with a
95 % interval, per-diagnosis F1 and confusion matrices, the rule baseline beside every model.

Settings (each with and without lab values): counts from the experts' labels ("true counts") and
counts from the detector + classifier pipeline ("predicted counts"). Cross-validation is
``StratifiedGroupKFold`` grouped by patient, repeated with different seeds; every patient gets one
out-of-fold prediction per repeat. The point estimate is the mean over repeats of the macro F1 of the
out-of-fold predictions; its 95 % interval is a **percentile bootstrap over patients** (resampling
patients with replacement, each resample scored on one repeat's predictions, cycling through the
repeats), so it reflects both the finite cohort and the split-to-split variation. The spread across
repeats alone is reported as ``*_repeat_sd``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix, f1_score
from sklearn.model_selection import StratifiedGroupKFold

from marrowscope.io.counts import CountsTable
from marrowscope.io.csvsafe import escape_frame
from marrowscope.models.diagnosis import DiagnosisClassifier, DiagnosisModel, RuleBaseline

log = logging.getLogger(__name__)

SETTINGS: tuple[str, ...] = ("true_counts", "true_counts_labs", "predicted_counts", "predicted_counts_labs")


@dataclass(frozen=True)
class ScoreSummary:
    """Macro F1 (mean over repeats) with its bootstrap interval, per-class F1 and confusion matrix."""

    macro_f1: float
    ci: tuple[float, float]
    repeat_sd: float
    per_class_f1: Mapping[str, float]
    confusion: tuple[tuple[int, ...], ...]  # rows = true, columns = predicted, in ``classes`` order

    def to_dict(self) -> dict[str, Any]:
        return {
            "macro_f1": self.macro_f1,
            "ci": list(self.ci),
            "repeat_sd": self.repeat_sd,
            "per_class_f1": dict(self.per_class_f1),
            "confusion": [list(r) for r in self.confusion],
        }


@dataclass(frozen=True)
class SettingResult:
    """One setting: the model and the rule baseline on the same patients."""

    name: str
    estimator: str
    classes: tuple[str, ...]
    patient_ids: tuple[str, ...]
    model: ScoreSummary
    rules: ScoreSummary
    predictions: Mapping[str, str]  # patient -> model prediction (first repeat)
    rule_predictions: Mapping[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "estimator": self.estimator,
            "classes": list(self.classes),
            "n_patients": len(self.patient_ids),
            "model": self.model.to_dict(),
            "rule_baseline": self.rules.to_dict(),
        }


@dataclass(frozen=True)
class DiagnosisEvaluation:
    settings: Mapping[str, SettingResult]
    n_patients: int
    excluded: Mapping[str, str]  # patient -> why it is not in the metrics
    config: Mapping[str, Any] = field(default_factory=dict)
    messages: tuple[str, ...] = ()

    def metrics(self) -> dict[str, Any]:
        """The flat ``metrics.json`` content (keys documented in docs/diagnosis.md)."""
        out: dict[str, Any] = {"n_patients": self.n_patients}
        for name, res in self.settings.items():
            suffix = "" if name == "true_counts" else f"_{name}"
            key = "true_counts" if name == "true_counts" else name
            out[f"macro_f1_{key}"] = res.model.macro_f1
            out[f"macro_f1_{key}_ci"] = list(res.model.ci)
            out[f"per_class_f1_{key}"] = dict(res.model.per_class_f1)
            out[f"macro_f1_rule_baseline{suffix}"] = res.rules.macro_f1
            out[f"macro_f1_rule_baseline{suffix}_ci"] = list(res.rules.ci)
            out[f"per_class_f1_rule_baseline{suffix}"] = dict(res.rules.per_class_f1)
        out["settings"] = {k: v.to_dict() for k, v in self.settings.items()}
        out["excluded"] = dict(self.excluded)
        out["messages"] = list(self.messages)
        out["config"] = dict(self.config)
        return out


def _bootstrap_macro_f1(
    y: np.ndarray, preds: np.ndarray, classes: Sequence[str], n_boot: int, seed: int
) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    n = len(y)
    scores = np.empty(n_boot)
    for b in range(n_boot):
        idx = rng.integers(0, n, n)
        scores[b] = f1_score(y[idx], preds[b % len(preds)][idx], labels=list(classes), average="macro",
                             zero_division=0)
    lo, hi = np.percentile(scores, [2.5, 97.5])
    return float(lo), float(hi)


def score_predictions(
    y: Sequence[str], preds: np.ndarray, classes: Sequence[str], n_boot: int = 1000, seed: int = 0
) -> ScoreSummary:
    """Summarise ``preds`` (shape (repeats, patients)) against ``y``."""
    y_arr = np.asarray(y, dtype=object)
    preds = np.atleast_2d(np.asarray(preds, dtype=object))
    cls = list(classes)
    per_repeat = [f1_score(y_arr, p, labels=cls, average="macro", zero_division=0) for p in preds]
    per_class = np.mean(
        [f1_score(y_arr, p, labels=cls, average=None, zero_division=0) for p in preds], axis=0
    )
    conf = sum(confusion_matrix(y_arr, p, labels=cls) for p in preds)
    return ScoreSummary(
        macro_f1=float(np.mean(per_repeat)),
        ci=_bootstrap_macro_f1(y_arr, preds, cls, n_boot, seed),
        repeat_sd=float(np.std(per_repeat)),
        per_class_f1={c: float(v) for c, v in zip(cls, per_class, strict=True)},
        confusion=tuple(tuple(int(v) for v in row) for row in np.asarray(conf)),
    )


def cross_val_predict_repeated(
    make_estimator: Callable[[], Any],
    X_train: pd.DataFrame,
    y: Sequence[str],
    groups: Sequence[str],
    *,
    X_test: pd.DataFrame | None = None,
    n_splits: int = 5,
    n_repeats: int = 5,
    seed: int = 0,
) -> np.ndarray:
    """Out-of-fold predictions, shape (n_repeats, n): fit on ``X_train`` rows, predict ``X_test`` rows
    (same patients, e.g. predicted counts) of the held-out fold. Folds: StratifiedGroupKFold by patient."""
    y_arr = np.asarray(y, dtype=object)
    X_eval = X_train if X_test is None else X_test
    out = np.empty((n_repeats, len(y_arr)), dtype=object)
    for r in range(n_repeats):
        cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed + r)
        for train, test in cv.split(X_train, y_arr, groups):
            est = make_estimator().fit(X_train.iloc[train], y_arr[train])
            out[r, test] = est.predict(X_eval.iloc[test])
    return out


def _usable(table: CountsTable, min_per_class: int) -> tuple[list[str], dict[str, str], list[str]]:
    """Patients usable for cross-validation, the excluded ones with reasons, and messages."""
    excluded: dict[str, str] = {}
    with_dx = []
    for pid, dx in zip(table.patient_ids, table.diagnoses, strict=True):
        if dx is None:
            excluded[pid] = "no diagnosis (not in the clinical table, or the row has none)"
        else:
            with_dx.append(pid)
    counts = pd.Series([table.diagnosis_of(p) for p in with_dx]).value_counts()
    rare = {str(d) for d, n in counts.items() if n < min_per_class}
    messages = []
    for d in sorted(rare):
        n = int(counts[d])
        messages.append(
            f"diagnosis {d!r} has only {n} patient(s) (< {min_per_class}): it cannot be learned and "
            "scored by cross-validation; those patients are left out"
        )
    keep = []
    for p in with_dx:
        if table.diagnosis_of(p) in rare:
            excluded[p] = f"diagnosis {table.diagnosis_of(p)!r} has too few patients to cross-validate"
        else:
            keep.append(p)
    n_missing = sum(1 for v in excluded.values() if v.startswith("no diagnosis"))
    if n_missing:
        messages.append(f"{n_missing} patient(s) have no diagnosis and are left out of the metrics")
    return keep, excluded, messages


def evaluate_diagnosis(
    true_counts: CountsTable | None,
    predicted_counts: CountsTable | None = None,
    *,
    estimator: str = "logreg",
    n_splits: int = 5,
    n_repeats: int = 5,
    seed: int = 0,
    train_on: str = "matched",
    n_boot: int = 1000,
    settings: Sequence[str] = SETTINGS,
    estimator_params: Mapping[str, Any] | None = None,
) -> DiagnosisEvaluation:
    """Cross-validate the diagnosis model (and the rule baseline) in every setting the inputs allow.

    ``predicted_counts`` without diagnoses takes them (and the lab values) from ``true_counts``.
    ``train_on``: for the predicted-count settings, "matched" trains on predicted counts too (the
    model learns the pipeline's biases); "true" trains on the experts' counts of the training patients
    and tests on the pipeline's counts of the held-out ones (only patients with both).
    """
    if true_counts is None and predicted_counts is None:
        raise ValueError("give true counts, predicted counts or both")
    if train_on not in ("matched", "true"):
        raise ValueError("train_on must be 'matched' or 'true'")
    if predicted_counts is not None and true_counts is not None:
        predicted_counts = predicted_counts.with_clinical_from(true_counts)
    params = dict(estimator_params or {})
    messages: list[str] = []
    excluded: dict[str, str] = {}
    results: dict[str, SettingResult] = {}
    all_ids: set[str] = set()
    for name in settings:
        labs = name.endswith("_labs")
        is_pred = name.startswith("predicted")
        table = predicted_counts if is_pred else true_counts
        if table is None:
            continue
        if is_pred and train_on == "true":
            if true_counts is None:
                raise ValueError("train_on='true' needs the experts' counts too")
            shared = [p for p in table.patient_ids if p in set(true_counts.patient_ids)]
            for p in table.patient_ids:
                if p not in set(shared):
                    excluded.setdefault(p, "predicted counts but no expert counts to train on")
            table = table.subset(shared)
        if table.counts.shape[1] == 0 and not labs:
            messages.append(f"{name}: the table has no cell counts (no countable cell was found); "
                            "setting skipped")
            continue
        ids, exc, msgs = _usable(table, min_per_class=2)
        for pid, why in exc.items():
            excluded.setdefault(pid, why)
        for m in msgs:
            if m not in messages:
                messages.append(m)
        if len(ids) < 4:
            messages.append(f"{name}: only {len(ids)} usable patient(s); setting skipped")
            continue
        sub = table.subset(ids)
        y = [str(d) for d in sub.diagnoses]
        min_count = int(pd.Series(y).value_counts().min())
        k = max(2, min(n_splits, min_count))
        if k < n_splits:
            messages.append(
                f"{name}: {k}-fold instead of {n_splits}-fold (smallest diagnosis has {min_count})"
            )
        classes = tuple(sorted(set(y)))
        X = sub.frame(include_clinical=labs)
        X_train = X
        if is_pred and train_on == "true":
            assert true_counts is not None
            cols = sorted(set(sub.counts.columns) | set(true_counts.counts.columns))
            X_train = true_counts.subset(ids).with_labels(cols).frame(include_clinical=labs)
            X = sub.with_labels(cols).frame(include_clinical=labs)

        def make(labs: bool = labs) -> DiagnosisClassifier:
            return DiagnosisClassifier(estimator=estimator, include_labs=labs, random_state=seed, **params)

        log.info("%s: %d patients, %d-fold x %d repeats", name, len(ids), k, n_repeats)
        preds = cross_val_predict_repeated(make, X_train, y, ids, X_test=X, n_splits=k, n_repeats=n_repeats,
                                           seed=seed)
        rules = RuleBaseline().fit(X_train, y)  # fit only learns the class names
        rule_pred = np.asarray(rules.predict(X), dtype=object)[None, :]
        results[name] = SettingResult(
            name=name,
            estimator=estimator,
            classes=classes,
            patient_ids=tuple(ids),
            model=score_predictions(y, preds, classes, n_boot=n_boot, seed=seed),
            rules=score_predictions(y, rule_pred, classes, n_boot=n_boot, seed=seed),
            predictions={p: str(v) for p, v in zip(ids, preds[0], strict=True)},
            rule_predictions={p: str(v) for p, v in zip(ids, rule_pred[0], strict=True)},
        )
        all_ids.update(ids)
    for m in messages:
        log.warning("%s", m)
    return DiagnosisEvaluation(
        settings=results,
        n_patients=len(all_ids),
        excluded={k: v for k, v in excluded.items() if k not in all_ids},
        config={"estimator": estimator, "n_splits": n_splits, "n_repeats": n_repeats, "seed": seed,
                "train_on": train_on, "n_boot": n_boot, "ci": "percentile bootstrap over patients",
                "cv": "StratifiedGroupKFold by patient, repeated with seeds seed..seed+n_repeats-1",
                **({"estimator_params": params} if params else {})},
        messages=tuple(messages),
    )


@dataclass(frozen=True)
class ExternalResult:
    """A trained model applied to a cohort: predictions for everyone, metrics on the scorable ones."""

    predictions: pd.DataFrame  # patient_id, diagnosis, predicted, rule, p_<class>...
    scored: ScoreSummary | None
    rules: ScoreSummary | None
    messages: tuple[str, ...]


def evaluate_trained_model(model: DiagnosisModel, table: CountsTable, n_boot: int = 1000,
                           seed: int = 0) -> ExternalResult:
    """Apply ``model`` to every patient of ``table``; score those whose diagnosis the model knows.

    Patients without a diagnosis and patients whose diagnosis was never seen in training still get a
    prediction; they are named in ``messages`` and left out of the F1.
    """
    labs = any(c in table.clinical.columns for c in model.input_columns)
    X = table.frame(include_clinical=labs)
    proba = model.predict_proba_table(X)
    pred = [model.classes[i] for i in np.argmax(proba, axis=1)]
    # the rules only learn the class names: fit them on one (any) row per class
    rules = RuleBaseline().fit(X.iloc[[0] * len(model.classes)], list(model.classes))
    rule_pred = [str(v) for v in rules.predict(X)]
    df = pd.DataFrame({"patient_id": list(table.patient_ids),
                       "diagnosis": [d or "" for d in table.diagnoses],
                       "predicted": pred, "rule": rule_pred})
    for j, c in enumerate(model.classes):
        df[f"p_{c}"] = proba[:, j]
    messages = []
    no_dx = [p for p, d in zip(table.patient_ids, table.diagnoses, strict=True) if d is None]
    if no_dx:
        messages.append(f"{len(no_dx)} patient(s) have no diagnosis (predicted, not scored): "
                        + ", ".join(no_dx[:5]))
    unseen = sorted({d for d in table.diagnoses if d is not None and d not in model.classes})
    for d in unseen:
        n = sum(1 for x in table.diagnoses if x == d)
        messages.append(f"diagnosis {d!r} ({n} patient(s)) was never seen in training "
                        f"(model classes: {', '.join(model.classes)}); predicted, not scored")
    mask = np.array([d is not None and d in model.classes for d in table.diagnoses])
    for m in messages:
        log.warning("%s", m)
    if not mask.any():
        return ExternalResult(df, None, None, tuple(messages))
    y = [str(d) for d in np.asarray(table.diagnoses, dtype=object)[mask]]
    scored = score_predictions(y, np.asarray(pred, dtype=object)[mask][None, :], model.classes, n_boot, seed)
    rscored = score_predictions(y, np.asarray(rule_pred, dtype=object)[mask][None, :], model.classes,
                                n_boot, seed)
    return ExternalResult(df, scored, rscored, tuple(messages))


def write_evaluation(
    out_dir: str | Path,
    evaluation: DiagnosisEvaluation | None = None,
    external: ExternalResult | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``metrics.json`` (and ``predictions.csv``) into ``out_dir``; returns the metrics path."""
    import json

    from marrowscope.io.atomic import write_text_atomic

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics: dict[str, Any] = {}
    frames = []
    if evaluation is not None:
        metrics.update(evaluation.metrics())
        for name, res in evaluation.settings.items():
            frames.append(pd.DataFrame({
                "setting": name, "patient_id": list(res.patient_ids),
                "predicted": [res.predictions[p] for p in res.patient_ids],
                "rule": [res.rule_predictions[p] for p in res.patient_ids],
            }))
    if external is not None:
        if external.scored is not None and external.rules is not None:
            metrics.update({
                "macro_f1_true_counts": external.scored.macro_f1,
                "macro_f1_true_counts_ci": list(external.scored.ci),
                "per_class_f1_true_counts": dict(external.scored.per_class_f1),
                "macro_f1_rule_baseline": external.rules.macro_f1,
                "macro_f1_rule_baseline_ci": list(external.rules.ci),
                "confusion_true_counts": [list(r) for r in external.scored.confusion],
                "n_patients": int(sum(sum(r) for r in external.scored.confusion)),
            })
        else:
            metrics.setdefault("n_patients", 0)
        metrics["messages"] = list(metrics.get("messages", [])) + list(external.messages)
        frames.append(external.predictions.assign(setting="trained_model"))
    metrics.update(dict(extra or {}))
    if frames:
        table = pd.concat(frames, ignore_index=True)
        from marrowscope.io.atomic import atomic_path

        with atomic_path(out / "predictions.csv") as tmp:
            escape_frame(table).to_csv(tmp, index=False)
    path = out / "metrics.json"
    write_text_atomic(path, json.dumps(metrics, indent=2, sort_keys=True, default=str) + "\n")
    return path


def evaluate_model_file(
    model: str | Path, truth: CountsTable, out_dir: str | Path, *, predicted: CountsTable | None = None,
    seed: int = 0,
) -> tuple[Path, tuple[str, ...]]:
    """Score a trained diagnosis model (file or bundled name, hash-checked) on ``truth`` and, when given,
    on the pipeline's ``predicted`` counts of the same patients; write ``out_dir/metrics.json``.
    Returns the metrics path and the notes for the user."""
    from marrowscope.models.diagnosis import load_diagnosis_model
    from marrowscope.models.registry import resolve_model

    path, sha = resolve_model(model, task="diagnosis")
    m = load_diagnosis_model(path, sha256=sha)
    ext = evaluate_trained_model(m, truth, seed=seed)
    extra: dict[str, Any] = {"model": str(model), "model_classes": list(m.classes)}
    if predicted is not None:
        pext = evaluate_trained_model(m, predicted.with_clinical_from(truth), seed=seed)
        if pext.scored is not None:
            extra["macro_f1_predicted_counts"] = pext.scored.macro_f1
            extra["macro_f1_predicted_counts_ci"] = list(pext.scored.ci)
    return write_evaluation(out_dir, external=ext, extra=extra), tuple(ext.messages)
