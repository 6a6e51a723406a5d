"""Diagnosis evaluation, rule baseline and safe persistence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from marrowscope.data.synth_counts import synthetic_counts_table
from marrowscope.errors import InputError
from marrowscope.eval.diagnosis import evaluate_diagnosis, score_predictions
from marrowscope.io.counts import CLINICAL_COLUMNS, make_counts_table
from marrowscope.models import diagnosis as dx


class NotAllowed:
    """A type no marrowscope model contains."""

    def __init__(self) -> None:
        self.x = 1


@pytest.fixture(scope="module")
def table():  # type: ignore[no-untyped-def]
    return synthetic_counts_table(28, seed=11, n_objects=300)


def test_shared_column_names() -> None:
    assert dx.CLINICAL_COLUMNS == CLINICAL_COLUMNS
    assert dx.LAB_COLUMNS == ("blasts", "wbc", "thrombocytes", "ldh", "uric_acid", "hemoglobin")


def test_rule_baseline_rules() -> None:
    rows = pd.DataFrame(
        [
            {"lymphocytic_blast": 30, "lymphocyte": 70},  # ALL
            {"myelocytic_blast": 15, "promonocyte": 10, "segmented_neutrophil": 75},  # AML (with equivalent)
            {"unknown_blast": 15, "myelocytic_blast": 10, "lymphocyte": 75},  # unknown -> myeloid -> AML
            {"segmented_basophil": 4, "neutrophilic_myelocyte": 30, "segmented_neutrophil": 40,
             "myelocytic_blast": 2, "lymphocyte": 24},  # CML
            {"lymphocytic_blast": 20, "lymphocyte": 80},  # 20 % lymphoid blasts: below the ALL threshold
        ]
    ).fillna(0)
    y = ["ALL", "AML", "AML", "CML", "control"]
    rb = dx.RuleBaseline().fit(rows, y)
    assert list(rb.rule_outcomes(rows)) == ["ALL", "AML", "AML", "CML", "other"]
    assert list(rb.predict(rows)) == y
    assert rb.outcome_to_class_["other"] == "control"


def test_score_predictions_interval() -> None:
    y = ["a", "b", "c"] * 10
    perfect = score_predictions(y, np.array([y, y], dtype=object), ["a", "b", "c"], n_boot=200)
    assert perfect.macro_f1 == 1.0 and perfect.ci == (1.0, 1.0)
    noisy = np.array(y, dtype=object)
    noisy[:6] = "c"
    s = score_predictions(y, noisy[None, :], ["a", "b", "c"], n_boot=300)
    assert s.ci[0] < s.macro_f1 < s.ci[1] < 1.0
    assert np.asarray(s.confusion).sum() == 30


def test_evaluation_reports_everyone_it_cannot_score(table) -> None:  # type: ignore[no-untyped-def]
    rows = {p: table.counts.loc[p].to_dict() for p in table.patient_ids}
    diag = dict(zip(table.patient_ids, table.diagnoses, strict=True))
    rows["lonely"] = {"unknown_blast": 60, "lymphocyte": 40}
    diag["lonely"] = "MPAL"  # a single patient: cannot be cross-validated
    rows["no_row"] = {"lymphocyte": 100}
    diag["no_row"] = None  # e.g. missing from the clinical table
    t = make_counts_table(rows, diag, {p: table.clinical.loc[p].to_dict() for p in table.patient_ids})
    ev = evaluate_diagnosis(t, None, n_splits=3, n_repeats=2, n_boot=100,
                            settings=("true_counts",), estimator_params={"calibration": None})
    assert ev.n_patients == 28
    assert set(ev.excluded) == {"lonely", "no_row"}
    assert any("MPAL" in m for m in ev.messages) and any("no diagnosis" in m for m in ev.messages)
    res = ev.settings["true_counts"]
    assert res.classes == ("ALL", "AML", "CML", "control")
    assert res.model.ci[0] <= res.model.macro_f1 <= res.model.ci[1]
    assert res.model.macro_f1 > 0.6  # far above chance (0.25) on this easy synthetic cohort
    m = ev.metrics()
    assert m["macro_f1_true_counts"] == res.model.macro_f1 and "macro_f1_rule_baseline_ci" in m


def test_train_on_true_counts_test_on_predicted(table) -> None:  # type: ignore[no-untyped-def]
    pred = make_counts_table({p: table.counts.loc[p].to_dict() for p in table.patient_ids[:-2]})
    ev = evaluate_diagnosis(table, pred, n_splits=3, n_repeats=1, n_boot=50, train_on="true",
                            settings=("predicted_counts",), estimator_params={"calibration": None})
    assert ev.settings["predicted_counts"].patient_ids == table.patient_ids[:-2]


def test_persistence_round_trip_and_refusals(tmp_path: Path, table) -> None:  # type: ignore[no-untyped-def]
    from marrowscope.models.weights import sha256_file

    clf, summary = dx.train_from_table(table, estimator="gbm", n_estimators=20)
    path = dx.save_diagnosis_model(clf, tmp_path / "m.skops", summary)
    m = dx.load_diagnosis_model(path, sha256=sha256_file(path))
    assert m.classes == ("ALL", "AML", "CML", "control")
    assert m.training_summary["n_patients"] == 28
    assert "agg_blast_pct" in m.feature_names
    assert {"monoblast", "spicule"} <= set(m.input_columns)  # every original label has a column
    X = table.frame().reindex(columns=list(m.input_columns), fill_value=0.0)
    np.testing.assert_allclose(m.estimator.predict_proba(X), clf.predict_proba(X))
    # a row with only its non-zero labels is reindexed to the stored columns (absent labels = 0 cells)
    row = X.iloc[[0]]
    sparse_row = row.loc[:, (row > 0).to_numpy()[0]].iloc[:, ::-1]
    assert sparse_row.shape[1] < row.shape[1]
    np.testing.assert_allclose(m.predict_proba_table(sparse_row), clf.predict_proba(row))
    with pytest.raises(InputError, match="sha256"):
        dx.load_diagnosis_model(path, sha256="0" * 64)
    bad = tmp_path / "bad.skops"
    bad.write_bytes(b"not a zip")
    with pytest.raises(InputError, match="skops"):
        dx.load_diagnosis_model(bad)
    import skops.io as sio

    evil = tmp_path / "evil.skops"
    sio.dump({"format": dx.FORMAT, "estimator": NotAllowed()}, evil)
    with pytest.raises(InputError, match="untrusted.*NotAllowed"):
        dx.load_diagnosis_model(evil)


def test_bundled_model_loads_with_its_hash() -> None:
    from marrowscope.models.registry import resolve_model

    path, sha = resolve_model("diagnosis-synth", task="diagnosis")
    assert sha is not None
    m = dx.load_diagnosis_model(path, sha256=sha)
    assert m.classes == ("ALL", "AML", "CML", "control")
    assert m.training_summary["n_patients"] >= 60
    rows = pd.DataFrame([
        {"lymphocytic_blast": 350, "lymphocyte": 100, "segmented_neutrophil": 30,
         "polychromatic_erythroblast": 20},
        {"segmented_neutrophil": 150, "neutrophilic_band": 60, "neutrophilic_metamyelocyte": 50,
         "polychromatic_erythroblast": 120, "orthochromatic_erythroblast": 60, "lymphocyte": 60},
    ])
    p = m.predict_proba_table(rows.fillna(0))
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    assert m.classes[int(np.argmax(p[0]))] == "ALL"


def test_predicted_counts_without_any_count_column_skip_the_setting(table) -> None:  # type: ignore[no-untyped-def]
    # a pipeline that classified every cell as uncertain gives a table with no count column; this used
    # to crash inside scikit-learn ("at least one array or dtype is required")
    empty = make_counts_table({p: {} for p in table.patient_ids})
    ev = evaluate_diagnosis(table, empty, n_splits=3, n_repeats=1, n_boot=20,
                            settings=("true_counts", "predicted_counts"))
    assert "true_counts" in ev.settings and "predicted_counts" not in ev.settings
    assert any("predicted_counts: the table has no cell counts" in m for m in ev.messages)
