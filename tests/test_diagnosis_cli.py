"""End-to-end: ``marrowscope train diagnosis`` and ``marrowscope evaluate diagnosis`` on small tables."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from marrowscope.cli.main import main
from marrowscope.data.synth_counts import synthetic_counts_table
from marrowscope.io.counts import make_counts_table, read_counts_table, write_counts_table


@pytest.fixture(scope="module")
def table_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("dx")
    return write_counts_table(synthetic_counts_table(32, seed=3, n_objects=300), d / "counts.csv")


def test_train_then_score_with_unknown_patient_and_unseen_diagnosis(
    tmp_path: Path, table_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "dx.skops"
    assert main(["train", "diagnosis", "--cohort", str(table_csv), "--out", str(model)]) == 0
    assert model.is_file()
    # a new cohort: one patient without a diagnosis (no clinical row), one with a diagnosis never trained on
    t = read_counts_table(table_csv)
    extra = make_counts_table(
        {"nodx": {"lymphocytic_blast": 50, "lymphocyte": 50},
         "mpal": {"unknown_blast": 80, "lymphocyte": 20}},
        {"nodx": None, "mpal": "MPAL"},
    )
    merged = make_counts_table(
        {**{p: t.counts.loc[p].to_dict() for p in t.patient_ids},
         **{p: extra.counts.loc[p].to_dict() for p in extra.patient_ids}},
        {**dict(zip(t.patient_ids, t.diagnoses, strict=True)),
         **dict(zip(extra.patient_ids, extra.diagnoses, strict=True))},
    )
    new = write_counts_table(merged, tmp_path / "new.csv")
    out = tmp_path / "scored"
    capsys.readouterr()
    rc = main(["evaluate", "diagnosis", "--cohort", str(new), "--out", str(out), "--model", str(model)])
    assert rc == 0
    err = capsys.readouterr().err
    assert "'MPAL'" in err and "never seen in training" in err and "no diagnosis" in err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_patients"] == 32  # everyone with a known diagnosis is scored
    assert 0.0 <= metrics["macro_f1_true_counts"] <= 1.0
    lo, hi = metrics["macro_f1_true_counts_ci"]
    assert lo <= metrics["macro_f1_true_counts"] <= hi
    preds = pd.read_csv(out / "predictions.csv")
    assert {"nodx", "mpal"} <= set(preds["patient_id"])  # ... and everyone gets a prediction


def test_cross_validated_evaluation_writes_metrics(
    tmp_path: Path, table_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cv"
    rc = main(["evaluate", "diagnosis", "--cohort", str(table_csv), "--out", str(out),
               "--predicted-counts", str(table_csv), "--folds", "3", "--repeats", "1"])
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())
    for key in ("macro_f1_true_counts", "macro_f1_predicted_counts", "macro_f1_rule_baseline",
                "macro_f1_true_counts_labs", "macro_f1_predicted_counts_labs", "n_patients",
                "macro_f1_true_counts_ci", "macro_f1_rule_baseline_ci", "per_class_f1_true_counts"):
        assert key in m, key
    assert m["n_patients"] == 32
    # identical tables: predicted-count results equal true-count results
    assert m["macro_f1_predicted_counts"] == pytest.approx(m["macro_f1_true_counts"])
    assert set(m["per_class_f1_true_counts"]) == {"ALL", "AML", "CML", "control"}


def test_bad_estimator_is_one_line_error(tmp_path: Path, table_csv: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["train", "diagnosis", "--cohort", str(table_csv), "--out", str(tmp_path / "m.skops"),
               "--estimator", "svm"])
    assert rc != 0
    assert "svm" in capsys.readouterr().err


def test_cohort_folder_with_a_patient_missing_from_the_clinical_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from marrowscope.cells import Box, Cell, CellAnnotations
    from marrowscope.io.annotations.bmdeep_csv import write_cells_csv
    from marrowscope.io.annotations.clinical import ClinicalRecord, write_clinical_csv

    t = synthetic_counts_table(16, seed=5, n_objects=120)
    anns, records, cid = [], [], 0
    for pid, dx in zip(t.patient_ids, t.diagnoses, strict=True):
        cells = []
        for label, n in t.counts.loc[pid].items():
            for _ in range(int(n)):
                box = Box(cid % 1000, 0, cid % 1000 + 9, 9)
                cells.append(Cell(box, label=str(label), cell_id=cid, roi_id=1))
                cid += 1
        anns.append(CellAnnotations(cells=tuple(cells), slide_id=f"{pid}_1_bm"))
        records.append(ClinicalRecord(pid, "F", "060M", dx, None, {"wbc": 10.0}))
    (tmp_path / "cohort" / "csv").mkdir(parents=True)
    write_cells_csv(anns, tmp_path / "cohort" / "csv" / "cells_labelled.csv")
    missing = t.patient_ids[0]
    write_clinical_csv(records[1:], tmp_path / "cohort" / "csv" / "clinical.csv")
    out = tmp_path / "eval"
    rc = main(["evaluate", "diagnosis", "--cohort", str(tmp_path / "cohort"), "--out", str(out),
               "--folds", "3", "--repeats", "1"])
    assert rc == 0
    err = capsys.readouterr().err
    assert missing in err and "clinical" in err
    m = json.loads((out / "metrics.json").read_text())
    assert m["n_patients"] == 15 and missing in m["excluded"]
    assert 0.0 <= m["macro_f1_true_counts"] <= 1.0
