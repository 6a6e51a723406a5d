"""Diagnosis from a differential count: features, classifiers, a transparent rule baseline, persistence.

All estimators follow the scikit-learn contract (``__init__`` stores parameters only, fitted attributes
end in ``_``, ``fit`` returns ``self``, ``classes_`` orders ``predict_proba``) and pass
``sklearn.utils.estimator_checks``. ``X`` is a table with one column of raw cell COUNTS per label
(column names = taxonomy labels) and, optionally, lab columns (:data:`LAB_COLUMNS`) and demographics
(:data:`DEMOGRAPHIC_COLUMNS`). A plain array is accepted too (all columns are then generic counts).

Why scikit-learn's HistGradientBoosting rather than LightGBM / xgboost: it is already a dependency, is
as accurate on a few dozen features and a few hundred patients, handles missing values natively, and
its fitted models serialise with skops without extra trusted types; LightGBM/xgboost would add a
package for no measurable gain at this data size.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin
from sklearn.impute import SimpleImputer
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data
from threadpoolctl import threadpool_limits

from marrowscope import counting, taxonomy
from marrowscope.errors import InputError
from marrowscope.io.counts import CLINICAL_COLUMNS, DEMOGRAPHIC_COLUMNS, LAB_COLUMNS

log = logging.getLogger(__name__)

# LAB_COLUMNS: the pediatric dataset's lab values (dataset.md §4); DEMOGRAPHIC_COLUMNS: age in months
# (age group) and sex (1 = male, 0 = female, NaN = other/unknown).

__all__ = [
    "CLINICAL_COLUMNS", "DEMOGRAPHIC_COLUMNS", "ESTIMATORS", "LAB_COLUMNS", "CountFeatures",
    "DiagnosisClassifier", "DiagnosisModel", "RuleBaseline", "RuleDecision", "SUGGESTION_CONFIDENCE",
    "outcome_classes", "load_diagnosis_model", "save_diagnosis_model",
]
ESTIMATORS: tuple[str, ...] = ("logreg", "rf", "gbm")
#: Below this top probability a suggestion is reported as "uncertain between" the two most likely
#: diagnoses. Chosen from out-of-fold predictions on synthetic patients (benchmarks/diagnosis_confidence.py,
#: docs/diagnosis.md "When is a suggestion uncertain"): see there for the measured accuracy per band.
SUGGESTION_CONFIDENCE = 0.85


def _column_names(est: BaseEstimator, n: int) -> list[str]:
    names = getattr(est, "feature_names_in_", None)
    return [str(c) for c in names] if names is not None else [f"x{i}" for i in range(n)]


def _is_label(name: str) -> bool:
    if name in taxonomy.LABELS:
        return True
    try:
        taxonomy.normalise_label(name)
    except Exception:  # noqa: BLE001 - UnknownLabelError or anything else: not a label column
        return False
    return True


def _canonical(name: str) -> str | None:
    """Canonical taxonomy label of a count column, None for a generic column."""
    if name in taxonomy.LABELS:
        return name
    return taxonomy.normalise_label(name) if _is_label(name) else None


def _split_columns(
    names: Sequence[str], count_columns: Sequence[str] | None, include_labs: bool,
    lab_columns: Sequence[str] | None,
) -> tuple[list[int], list[int]]:
    """Indices of count columns and of the clinical columns used."""
    pos = {n: i for i, n in enumerate(names)}
    labs = list(lab_columns) if lab_columns is not None else [c for c in CLINICAL_COLUMNS if c in pos]
    if lab_columns is not None:
        missing = [c for c in labs if c not in pos]
        if missing:
            raise ValueError(f"lab columns not in X: {missing}")
    if count_columns is not None:
        missing = [c for c in count_columns if c not in pos]
        if missing:
            raise ValueError(f"count columns not in X: {missing}")
        counts = [pos[c] for c in count_columns]
    else:
        known = set(CLINICAL_COLUMNS) | set(labs)
        counts = [i for i, n in enumerate(names) if n not in known]
    if not counts:
        raise ValueError("X has no count columns")
    return counts, ([pos[c] for c in labs] if include_labs else [])


class CountFeatures(TransformerMixin, BaseEstimator):
    """Raw label counts (+ optional labs) -> compositional features.

    Features: proportion of each countable label over the countable cells (non-countable columns stay
    out of the denominator), lineage proportions, blast % with blast equivalents (total, lymphoid,
    myeloid, unknown, leukemic only), eosinophil and basophil %, log M:E ratio and log maturation
    indices (I:Mg, I:Me; add-one smoothed) and, when ``include_labs`` the lab and
    demographic columns, median-imputed with missing-value indicators. The number of cells counted is
    deliberately not a feature: it reflects the counting method (expert sample vs whole-slide pipeline),
    not the disease.
    """

    def __init__(
        self,
        count_columns: Sequence[str] | None = None,
        include_labs: bool = False,
        lab_columns: Sequence[str] | None = None,
        add_indicator: bool = True,
    ) -> None:
        self.count_columns = count_columns
        self.include_labs = include_labs
        self.lab_columns = lab_columns
        self.add_indicator = add_indicator

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.positive_only = True
        return tags

    def _validate(self, X: Any, reset: bool) -> np.ndarray:
        # NaN is allowed by the array check and then refused in count columns (_check_counts);
        # lab columns may be missing (imputed), unused columns are ignored.
        arr: np.ndarray = validate_data(self, X, reset=reset, dtype=np.float64, ensure_all_finite="allow-nan")
        return arr

    def fit(self, X: Any, y: Any = None) -> CountFeatures:
        arr = self._validate(X, reset=True)
        names = _column_names(self, arr.shape[1])
        idx_counts, idx_labs = _split_columns(names, self.count_columns, self.include_labs, self.lab_columns)
        self._check_counts(arr[:, idx_counts])
        self.count_index_ = np.asarray(idx_counts, dtype=np.intp)
        self.lab_index_ = np.asarray(idx_labs, dtype=np.intp)
        self.count_labels_ = tuple(names[i] for i in idx_counts)
        canon = [_canonical(n) for n in self.count_labels_]
        self.countable_ = np.array([c is None or taxonomy.is_countable(c) for c in canon], dtype=bool)
        self.aggregates_ = self._aggregate_matrix(canon)
        if idx_labs:
            self.imputer_: SimpleImputer | None = SimpleImputer(
                strategy="median", add_indicator=self.add_indicator, keep_empty_features=True
            ).fit(arr[:, idx_labs])
            lab_names = [names[i] for i in idx_labs]
            imputed = list(lab_names)
            if self.add_indicator and self.imputer_.indicator_ is not None:
                imputed += [f"missing_{lab_names[i]}" for i in self.imputer_.indicator_.features_]
        else:
            self.imputer_ = None
            imputed = []
        prop_names = [f"prop_{n}" for n, c in zip(self.count_labels_, self.countable_, strict=True) if c]
        self.feature_names_out_ = np.asarray(
            prop_names + [f"agg_{a}" for a in self.aggregate_names_] + list(_LOG_RATIOS)
            + imputed, dtype=object,
        )
        return self

    @staticmethod
    def _check_counts(counts: np.ndarray) -> None:
        if not np.all(np.isfinite(counts)):
            raise ValueError("Input X contains NaN or infinity in count columns (use 0 for no cells)")
        if np.any(counts < 0):
            raise ValueError("Negative values in data passed to a count column (counts must be >= 0)")

    def _aggregate_matrix(self, canon: Sequence[str | None]) -> np.ndarray:
        lineages = sorted({taxonomy.lineage_of(c) for c, ok in zip(canon, self.countable_, strict=True)
                           if c is not None and ok})
        groups: list[tuple[str, frozenset[str] | str]] = [(f"lineage_{lin}", lin) for lin in lineages]
        groups += list(_AGGREGATE_SETS.items())
        mat = np.zeros((len(canon), len(groups)), dtype=np.float64)
        for j, (_, members) in enumerate(groups):
            for i, c in enumerate(canon):
                if c is None or not self.countable_[i]:
                    continue
                if isinstance(members, str):
                    mat[i, j] = float(taxonomy.lineage_of(c) == members)
                else:
                    mat[i, j] = float(c in members)
        self.aggregate_names_ = tuple(name for name, _ in groups)
        return mat

    def transform(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "feature_names_out_")
        arr = self._validate(X, reset=False)
        counts = arr[:, self.count_index_]
        self._check_counts(counts)
        countable = counts[:, self.countable_]
        n = countable.sum(axis=1, keepdims=True)
        safe_n = np.where(n > 0, n, 1.0)
        props = countable / safe_n
        agg = (counts @ self.aggregates_) / safe_n
        ratios = []
        for num, den in _LOG_RATIOS.values():
            a = counts @ _member_vector(self.count_labels_, self.countable_, num)
            b = counts @ _member_vector(self.count_labels_, self.countable_, den)
            ratios.append(np.log((a + 1.0) / (b + 1.0)))
        parts = [props, agg, np.column_stack(ratios)]
        if self.imputer_ is not None:
            parts.append(np.asarray(self.imputer_.transform(arr[:, self.lab_index_]), dtype=np.float64))
        return np.hstack(parts)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        check_is_fitted(self, "feature_names_out_")
        return np.asarray(self.feature_names_out_, dtype=object)


_AGGREGATE_SETS: dict[str, frozenset[str]] = {
    "blast_pct": counting.BLAST_LABELS,
    "lymphoid_blast_pct": counting.LYMPHOID_BLASTS,
    "myeloid_blast_pct": counting.MYELOID_BLASTS,
    "unknown_blast_pct": counting.UNKNOWN_BLASTS,
    "leukemic_blast_pct": counting.LEUKEMIC_BLASTS,
    "granulopoiesis_pct": counting.GRANULOPOIESIS,
    "erythropoiesis_pct": counting.ERYTHROPOIESIS,
    "eosinophil_pct": counting.EOSINOPHILS,
    "basophil_pct": counting.BASOPHILS,
}
_LOG_RATIOS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "log_me_ratio": (counting.GRANULOPOIESIS, counting.ERYTHROPOIESIS),
    "log_i_mg": (counting.IMMATURE_GRANULOPOIESIS, counting.MATURE_GRANULOPOIESIS),
    "log_i_me": (counting.IMMATURE_ERYTHROPOIESIS, counting.MATURE_ERYTHROPOIESIS),
}


def _member_vector(labels: Sequence[str], countable: np.ndarray, members: frozenset[str]) -> np.ndarray:
    out = np.zeros(len(labels), dtype=np.float64)
    for i, n in enumerate(labels):
        c = _canonical(n)
        out[i] = float(bool(countable[i]) and c is not None and c in members)
    return out


def _as_named(est: BaseEstimator, arr: np.ndarray) -> Any:
    """Re-attach the column names seen in ``fit`` so inner steps find the count/lab columns."""
    names = getattr(est, "feature_names_in_", None)
    if names is None:
        return arr
    import pandas as pd

    return pd.DataFrame(arr, columns=list(names))


class DiagnosisClassifier(ClassifierMixin, BaseEstimator):
    """Count features -> ``estimator`` ("logreg" | "rf" | "gbm"), calibrated when the data allow.

    ``calibration``: "auto" (sigmoid calibration with ``CalibratedClassifierCV`` when every class has at
    least ``calibration_min_class`` samples, else the plain model), "sigmoid", "isotonic" or None.
    Calibrating on small cohorts hurts: on 64 synthetic patients (16 per class) sigmoid-calibrated
    logistic regression scored log loss 0.29 / Brier 0.105 on 200 new patients against 0.05 / 0.023
    uncalibrated (docs/diagnosis.md), hence the default of 100 per class.
    """

    def __init__(
        self,
        estimator: str = "logreg",
        include_labs: bool = False,
        count_columns: Sequence[str] | None = None,
        lab_columns: Sequence[str] | None = None,
        calibration: str | None = "auto",
        calibration_cv: int = 3,
        calibration_min_class: int = 100,
        C: float = 1.0,
        n_estimators: int = 200,
        learning_rate: float = 0.1,
        class_weight: str | None = "balanced",
        random_state: int = 0,
    ) -> None:
        self.estimator = estimator
        self.include_labs = include_labs
        self.count_columns = count_columns
        self.lab_columns = lab_columns
        self.calibration = calibration
        self.calibration_cv = calibration_cv
        self.calibration_min_class = calibration_min_class
        self.C = C
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.class_weight = class_weight
        self.random_state = random_state

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.positive_only = True
        # Rows are turned into proportions (compositions) by design, so generic test data lose their
        # scale and the generic accuracy check does not apply.
        tags.classifier_tags.poor_score = True
        return tags

    def _features(self) -> CountFeatures:
        return CountFeatures(self.count_columns, self.include_labs, self.lab_columns)

    def _base(self) -> Any:
        from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import StandardScaler

        if self.estimator == "logreg":
            model: Any = LogisticRegression(C=self.C, class_weight=self.class_weight, max_iter=5000)
            return Pipeline([("features", self._features()), ("scale", StandardScaler()), ("model", model)])
        if self.estimator == "rf":
            model = RandomForestClassifier(
                n_estimators=self.n_estimators, class_weight=self.class_weight,
                random_state=self.random_state, n_jobs=1,
            )
        elif self.estimator == "gbm":
            model = HistGradientBoostingClassifier(
                max_iter=self.n_estimators, learning_rate=self.learning_rate,
                class_weight=self.class_weight, random_state=self.random_state, early_stopping=False,
                min_samples_leaf=5,  # the default 20 allows no split at all on a few dozen patients
            )
        else:
            raise ValueError(f"estimator must be one of {ESTIMATORS}, got {self.estimator!r}")
        return Pipeline([("features", self._features()), ("model", model)])

    def fit(self, X: Any, y: Any) -> DiagnosisClassifier:
        arr, y_arr = validate_data(self, X, y, dtype=np.float64, ensure_all_finite="allow-nan")
        check_classification_targets(y_arr)
        enc = LabelEncoder().fit(y_arr)
        self.classes_ = enc.classes_
        if len(self.classes_) < 2:
            raise ValueError("DiagnosisClassifier needs samples of at least 2 classes; got 1 class")
        codes = enc.transform(y_arr)
        Xn = _as_named(self, arr)
        base = self._base()
        min_count = int(np.bincount(codes).min())
        method: str | None
        if self.calibration == "auto":
            enough = min_count >= max(self.calibration_min_class, 2 * self.calibration_cv)
            method = "sigmoid" if enough else None
        elif self.calibration in (None, "none"):
            method = None
        elif self.calibration in ("sigmoid", "isotonic"):
            method = self.calibration
        else:
            raise ValueError(
                f"calibration must be 'auto', 'sigmoid', 'isotonic' or None, got {self.calibration!r}"
            )
        # One thread: the data are tiny, and OpenMP/BLAS threads on a busy machine cost 10-30x more
        # time than they save (HistGradientBoosting on 64 patients: 0.2 s vs 5 s).
        with threadpool_limits(1):
            if method is not None:
                from sklearn.calibration import CalibratedClassifierCV
                from sklearn.model_selection import StratifiedKFold

                cv = StratifiedKFold(self.calibration_cv, shuffle=True, random_state=self.random_state)
                self.model_ = CalibratedClassifierCV(base, method=method, cv=cv).fit(Xn, codes)
            else:
                self.model_ = base.fit(Xn, codes)
        self.calibrated_ = method
        feats = self._features().fit(Xn)
        self.feature_names_out_ = feats.get_feature_names_out()
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "model_")
        arr = validate_data(self, X, reset=False, dtype=np.float64, ensure_all_finite="allow-nan")
        with threadpool_limits(1):
            proba = np.asarray(self.model_.predict_proba(_as_named(self, arr)), dtype=np.float64)
        out = np.zeros((proba.shape[0], len(self.classes_)), dtype=np.float64)
        out[:, np.asarray(self.model_.classes_, dtype=np.intp)] = proba
        return out

    def predict(self, X: Any) -> np.ndarray:
        proba = self.predict_proba(X)
        return np.asarray(self.classes_[np.argmax(proba, axis=1)])


RULE_OUTCOMES: tuple[str, ...] = ("ALL", "AML", "CML", "other")


@dataclass(frozen=True)
class RuleDecision:
    """What :meth:`RuleBaseline.explain` decided on one differential, and why.

    ``values``: the fractions the rules tested (``lymphoid_blasts_with_unknown`` = lymphoid blasts plus
    the unassigned blasts when lymphoid >= myeloid, :func:`marrowscope.counting.assign_unknown_blasts`);
    ``thresholds``: the rule's own parameters; ``reason``: a sentence built from both."""

    outcome: str  # one of RULE_OUTCOMES
    values: Mapping[str, float]
    thresholds: Mapping[str, float]
    reason: str


def _p(x: float) -> str:
    return f"{100 * x:.1f} %"


def _cmp(value: float, threshold: float, pct: bool = True) -> str:
    """``value ≥ threshold`` or ``value < threshold``, whichever is true (the rules test ``>=``)."""
    op = "≥" if value >= threshold else "<"
    return f"{_p(value)} {op} {_p(threshold)}" if pct else f"{value:.2f} {op} {threshold:.2f}"


def _reason(outcome: str, q: Mapping[str, float], t: Mapping[str, float]) -> str:
    """The decision in words, every comparison stated as it came out (so it cannot contradict it)."""
    lym_u = q["lymphoid_blasts_with_unknown"] - q["lymphoid_blasts"]
    mye_u = q["myeloid_blasts_with_unknown"] - q["myeloid_blasts"]
    lym = (f"lymphoid blasts incl. unassigned {_cmp(q['lymphoid_blasts_with_unknown'], t['all'])} "
           f"(lymphoid {_p(q['lymphoid_blasts'])} + unassigned {_p(lym_u)})")
    mye_eff = _cmp(q["myeloid_blasts_with_unknown"], t["aml"])
    mye = (f"myeloid blasts incl. equivalents and unassigned {mye_eff} "
           f"(myeloid {_p(q['myeloid_blasts'])} + unassigned {_p(mye_u)})")
    blasts_low = q["blasts"] < t["aml"]
    left = q["granulopoiesis"] >= t["cml_granulopoiesis"] and q["i_mg"] >= t["cml_i_mg"]
    baso_eo = q["basophils"] >= t["cml_basophils"] or q["eosinophils"] >= t["cml_eosinophils"]
    cml = (f"all blasts {_cmp(q['blasts'], t['aml'])} (CML needs <), granulopoiesis "
           f"{_cmp(q['granulopoiesis'], t['cml_granulopoiesis'])}, "
           f"I:Mg {_cmp(q['i_mg'], t['cml_i_mg'], False)}, "
           f"basophils {_cmp(q['basophils'], t['cml_basophils'])} or eosinophils "
           f"{_cmp(q['eosinophils'], t['cml_eosinophils'])}")
    if outcome == "ALL":
        return f"ALL: {lym}"
    if outcome == "AML":
        return f"AML: {mye}; {lym}"
    if outcome == "CML":
        return f"CML: {lym}; {mye}; {cml}: all met"
    missing = [what for what, ok in (("blasts below the AML threshold", blasts_low),
                                     ("left-shifted granulopoiesis", left),
                                     ("basophilia or eosinophilia", baso_eo)) if not ok]
    return f"no rule met ('other'): {lym}; {mye}; CML not met ({', '.join(missing)}): {cml}"


def outcome_classes(classes: Sequence[Any], freq: Sequence[int] | None = None,
                    other_class: Any = None) -> dict[str, Any]:
    """Rule outcome -> class: the class whose name equals the outcome or starts with it (case-blind);
    "other" and unmatched outcomes -> ``other_class``, else the most frequent class no outcome names
    (``freq``; without it the first such class in ``classes`` order), else the most frequent class."""
    classes = list(classes)
    counts = list(freq) if freq is not None else [0] * len(classes)
    order = sorted(range(len(classes)), key=lambda i: -counts[i])  # stable: ties keep class order
    mapping: dict[str, Any] = {}
    for outcome in RULE_OUTCOMES[:-1]:
        for c in classes:
            s = str(c).strip().lower()
            if s == outcome.lower() or s.startswith(outcome.lower()):
                mapping[outcome] = c
                break
    if other_class is not None:
        if other_class not in set(classes):
            raise ValueError(f"other_class {other_class!r} is not a training class")
        other = other_class
    else:
        named = set(mapping.values())
        rest = [classes[i] for i in order if classes[i] not in named]
        other = rest[0] if rest else classes[order[0]]
    return {o: mapping.get(o, other) for o in RULE_OUTCOMES}


class RuleBaseline(ClassifierMixin, BaseEstimator):
    """Transparent blast-threshold rules (clinical.md); ``fit`` only learns the class names.

    On the differential over countable cells, with L = lymphoid blasts (``lymphocytic_blast``),
    M = myeloid blasts + equivalents (myelocytic, monocytic blasts, promonocytes) and U = unknown
    blasts (added to the larger of L and M; ties go to L, the common pediatric case):

    1. L >= ``all_threshold`` (25 %, pediatric M3 marrow) -> ALL;
    2. M >= ``aml_threshold`` (20 %, WHO) -> AML;
    3. blasts < 20 % and granulopoiesis >= ``cml_granulocytic_min`` (60 %, myeloid hyperplasia) and
       immature:mature granulopoiesis >= ``cml_left_shift_min`` (0.5, left shift) and
       (basophils >= ``cml_basophil_min`` (2 %) or eosinophils >= ``cml_eosinophil_min`` (6 %)) -> CML;
    4. otherwise -> "other" (control / other diagnosis).

    Outcomes map to the training class whose name equals the outcome or starts with it (case-blind);
    "other" and unmatched outcomes go to ``other_class`` or else the most frequent training class that
    no outcome names (or the most frequent class overall). The CML thresholds are defaults chosen from
    textbook descriptions, not fitted; the blast thresholds are the clinical ones.
    """

    def __init__(
        self,
        all_threshold: float = 0.25,
        aml_threshold: float = 0.20,
        cml_granulocytic_min: float = 0.60,
        cml_left_shift_min: float = 0.5,
        cml_basophil_min: float = 0.02,
        cml_eosinophil_min: float = 0.06,
        count_columns: Sequence[str] | None = None,
        other_class: Any = None,
    ) -> None:
        self.all_threshold = all_threshold
        self.aml_threshold = aml_threshold
        self.cml_granulocytic_min = cml_granulocytic_min
        self.cml_left_shift_min = cml_left_shift_min
        self.cml_basophil_min = cml_basophil_min
        self.cml_eosinophil_min = cml_eosinophil_min
        self.count_columns = count_columns
        self.other_class = other_class

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.positive_only = True
        tags.classifier_tags.poor_score = True  # fixed rules: cannot learn arbitrary data
        return tags

    def fit(self, X: Any, y: Any) -> RuleBaseline:
        arr, y_arr = validate_data(self, X, y, dtype=np.float64, ensure_all_finite="allow-nan")
        check_classification_targets(y_arr)
        self.classes_, freq = np.unique(y_arr, return_counts=True)
        names = _column_names(self, arr.shape[1])
        idx, _ = _split_columns(names, self.count_columns, False, None)
        self.features_ = CountFeatures(count_columns=[names[i] for i in idx]).fit(_as_named(self, arr))
        freq_list = [int(f) for f in freq]
        self.outcome_to_class_ = outcome_classes(list(self.classes_), freq_list, self.other_class)
        return self

    def _quantities(self, feats: np.ndarray, names: Sequence[str]) -> dict[str, np.ndarray]:
        """The values the rules test, per row (fractions; ``i_mg`` add-one smoothed, as the features)."""
        col = {n: i for i, n in enumerate(names)}

        def get(name: str) -> np.ndarray:
            return feats[:, col[name]] if name in col else np.zeros(len(feats))

        lym, mye = get("agg_lymphoid_blast_pct"), get("agg_myeloid_blast_pct")
        unk = get("agg_unknown_blast_pct")
        lym_eff, mye_eff = counting.assign_unknown_blasts(lym, mye, unk)
        return {
            "lymphoid_blasts": np.asarray(lym, dtype=np.float64),
            "myeloid_blasts": np.asarray(mye, dtype=np.float64),
            "unknown_blasts": np.asarray(unk, dtype=np.float64),
            "lymphoid_blasts_with_unknown": np.asarray(lym_eff, dtype=np.float64),
            "myeloid_blasts_with_unknown": np.asarray(mye_eff, dtype=np.float64),
            "blasts": get("agg_blast_pct"),
            "granulopoiesis": get("agg_granulopoiesis_pct"),
            "i_mg": np.exp(get("log_i_mg")) if "log_i_mg" in col else np.zeros(len(feats)),
            "basophils": get("agg_basophil_pct"),
            "eosinophils": get("agg_eosinophil_pct"),
        }

    def _decide(self, q: Mapping[str, np.ndarray]) -> np.ndarray:
        cml = (
            (q["blasts"] < self.aml_threshold)
            & (q["granulopoiesis"] >= self.cml_granulocytic_min)
            & (q["i_mg"] >= self.cml_left_shift_min)
            & ((q["basophils"] >= self.cml_basophil_min) | (q["eosinophils"] >= self.cml_eosinophil_min))
        )
        out = np.full(len(q["blasts"]), "other", dtype=object)
        out[cml] = "CML"
        out[q["myeloid_blasts_with_unknown"] >= self.aml_threshold] = "AML"
        out[q["lymphoid_blasts_with_unknown"] >= self.all_threshold] = "ALL"
        return out

    def rule_outcomes(self, X: Any) -> np.ndarray:
        """The rule that fired per row: "ALL", "AML", "CML" or "other"."""
        check_is_fitted(self, "features_")
        arr = validate_data(self, X, reset=False, dtype=np.float64, ensure_all_finite="allow-nan")
        feats = self.features_.transform(_as_named(self, arr))
        return self._decide(self._quantities(feats, list(self.features_.get_feature_names_out())))

    def explain(self, counts: Mapping[str, float]) -> RuleDecision:
        """Apply the rules to one differential's label counts (no fitting: the rules need no training)
        and say why, from the very values and thresholds the decision used."""
        import pandas as pd

        labels = sorted(counts) or ["lymphocyte"]
        row = pd.DataFrame([{k: float(counts.get(k, 0.0)) for k in labels}])
        feats = CountFeatures(count_columns=labels).fit(row)
        q = {k: float(v[0]) for k, v in self._quantities(
            feats.transform(row), list(feats.get_feature_names_out())).items()}
        outcome = str(self._decide({k: np.asarray([v]) for k, v in q.items()})[0])
        return RuleDecision(outcome, q, self._thresholds(), _reason(outcome, q, self._thresholds()))

    def _thresholds(self) -> dict[str, float]:
        return {"all": self.all_threshold, "aml": self.aml_threshold,
                "cml_granulopoiesis": self.cml_granulocytic_min, "cml_i_mg": self.cml_left_shift_min,
                "cml_basophils": self.cml_basophil_min, "cml_eosinophils": self.cml_eosinophil_min}

    def predict(self, X: Any) -> np.ndarray:
        outcomes = self.rule_outcomes(X)
        return np.asarray([self.outcome_to_class_[o] for o in outcomes], dtype=self.classes_.dtype)

    def predict_proba(self, X: Any) -> np.ndarray:
        pred = self.predict(X)
        return (pred[:, None] == self.classes_[None, :]).astype(np.float64)


# --------------------------------------------------------------------------------------------------
# Persistence (skops)

FORMAT = "marrowscope-diagnosis"
FORMAT_VERSION = 1
#: Types a marrowscope diagnosis file may contain beyond skops' defaults; anything else is refused.
TRUSTED_TYPES: tuple[str, ...] = (
    "marrowscope.models.diagnosis.CountFeatures",
    "marrowscope.models.diagnosis.DiagnosisClassifier",
    "marrowscope.models.diagnosis.RuleBaseline",
    # scikit-learn internals that skops does not trust by default but that these models contain
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.calibration._IsotonicCalibration",
    "sklearn.isotonic.IsotonicRegression",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
    "sklearn.model_selection._split.StratifiedKFold",
    "numpy.dtype",
    "sklearn.tree._tree.Tree",
)


@dataclass(frozen=True)
class DiagnosisModel:
    """A loaded diagnosis model with its contract."""

    estimator: Any
    input_columns: tuple[str, ...]
    classes: tuple[str, ...]
    feature_names: tuple[str, ...]
    training_summary: Mapping[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def predict_proba_table(self, X: Any) -> np.ndarray:
        """Probabilities in ``classes`` order; ``X`` is reindexed to the stored input columns (absent
        count columns = 0 cells, absent lab columns = missing)."""
        import pandas as pd

        if isinstance(X, pd.DataFrame):
            X = _reindex(X, self.input_columns)
        return np.asarray(self.estimator.predict_proba(X))


def _reindex(frame: Any, columns: Sequence[str]) -> Any:
    out = frame.reindex(columns=list(columns))
    for c in columns:
        if c not in frame.columns:
            out[c] = np.nan if c in CLINICAL_COLUMNS else 0.0
    return out.astype(np.float64)


def save_diagnosis_model(
    estimator: BaseEstimator, path: str | Path, training_summary: Mapping[str, Any] | None = None,
    *, sidecar: bool = True,
) -> Path:
    """Write a fitted estimator with its input columns, class order and training summary (skops), and
    (``sidecar``) its sha256 in ``<file>.sha256`` (a bundled model has it in ``meta.json`` instead)."""
    import skops.io as sio

    from marrowscope.io.atomic import atomic_path
    from marrowscope.models.weights import write_sidecar

    check_is_fitted(estimator)
    classes = [str(c) for c in estimator.classes_]  # type: ignore[attr-defined]
    names = getattr(estimator, "feature_names_in_", None)
    feats = getattr(estimator, "feature_names_out_", None)
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "estimator": estimator,
        "input_columns": [str(c) for c in names] if names is not None else [],
        "classes": classes,
        "feature_names": [str(c) for c in feats] if feats is not None else [],
        "training_summary": dict(training_summary or {}),
    }
    with atomic_path(path) as tmp:
        sio.dump(payload, tmp)
    if sidecar:
        write_sidecar(path)
    return Path(path)


def load_diagnosis_model(path: str | Path, sha256: str | None = None) -> DiagnosisModel:
    """Load a model written by :func:`save_diagnosis_model`; refuse any type outside the allow-list.

    The file is checked against ``sha256`` (a bundled model's ``meta.json``) or else its sidecar
    ``<file>.sha256``; a file with neither is refused."""
    import skops.io as sio

    from marrowscope.models.weights import SIDECAR_SUFFIX, check_sha256, read_sidecar

    p = Path(path)
    if not p.is_file():
        raise InputError(p, "diagnosis model file not found")
    expected = sha256 or read_sidecar(p)
    if expected is not None:
        check_sha256(p, expected, what="diagnosis model")
    try:
        untrusted = sio.get_untrusted_types(file=p)
    except Exception as e:  # noqa: BLE001 - not a skops file
        raise InputError(p, f"not a skops diagnosis model ({type(e).__name__}: {e})") from e
    refused = sorted(t for t in untrusted if t not in TRUSTED_TYPES)
    if refused:
        raise InputError(
            p, f"refusing to load untrusted types {refused}; only marrowscope diagnosis models are loaded "
            "(inspect the file with skops.io.get_untrusted_types before trusting it)",
        )
    try:
        payload = sio.load(p, trusted=list(untrusted))
    except Exception as e:  # noqa: BLE001
        raise InputError(p, f"could not load diagnosis model ({type(e).__name__}: {e})") from e
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise InputError(p, "not a marrowscope diagnosis model (missing format marker)")
    if expected is None:
        side = f"{p.name}{SIDECAR_SUFFIX}"
        raise InputError(p, f"diagnosis model carries no sha256 (no {side} sidecar); "
                            f"if you trust it, record one with 'sha256sum {p.name} > {side}'")
    est = payload["estimator"]
    classes = tuple(str(c) for c in payload["classes"])
    if tuple(str(c) for c in est.classes_) != classes:
        raise InputError(p, "stored class order does not match the estimator's classes_")
    return DiagnosisModel(
        estimator=est,
        input_columns=tuple(payload["input_columns"]),
        classes=classes,
        feature_names=tuple(payload["feature_names"]),
        training_summary=dict(payload["training_summary"]),
        path=p,
    )


def train_from_table(
    table: Any,
    *,
    estimator: str = "logreg",
    include_labs: bool = False,
    seed: int = 0,
    **params: Any,
) -> tuple[DiagnosisClassifier, dict[str, Any]]:
    """Fit a :class:`DiagnosisClassifier` on a ``marrowscope.io.counts.CountsTable``.

    Patients without a diagnosis are left out (and named in the summary); the count columns are the
    table's labels plus every original BMDeep label (zero where never seen). Returns the fitted model and
    a training summary (patients per diagnosis, source, settings) to store with it.
    """
    import pandas as pd

    ids = [p for p, d in zip(table.patient_ids, table.diagnoses, strict=True) if d is not None]
    left_out = [p for p in table.patient_ids if p not in set(ids)]
    if len(ids) < 2:
        raise InputError(table.source, f"only {len(ids)} patient(s) with a diagnosis; cannot train")
    # every original label gets a column (0 where never seen), so any fine prediction has a place
    sub = table.subset(ids)
    sub = sub.with_labels(sorted(set(sub.counts.columns) | set(taxonomy.ORIGINAL_LABELS)))
    y = [str(d) for d in sub.diagnoses]
    if len(set(y)) < 2:
        raise InputError(table.source, f"every patient has the diagnosis {y[0]!r}; need at least two")
    clf = DiagnosisClassifier(estimator=estimator, include_labs=include_labs, random_state=seed, **params)
    clf.fit(sub.frame(include_clinical=include_labs), y)
    summary = {
        "source": table.source,
        "n_patients": len(ids),
        "patients_per_diagnosis": {
            str(k): int(v) for k, v in pd.Series(y).value_counts().sort_index().items()
        },
        "left_out_without_diagnosis": left_out,
        "estimator": estimator,
        "include_labs": include_labs,
        "calibration": clf.calibrated_,
        "seed": seed,
        "params": dict(params),
        "problems": list(table.problems),
    }
    return clf, summary
