"""Count tables for the diagnosis model: plain CSV, CSV-only cohort folder, pipeline summaries."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from marrowscope.cells import Box, Cell, CellAnnotations
from marrowscope.counting import compute_differential
from marrowscope.errors import InputError
from marrowscope.io.annotations.bmdeep_csv import write_cells_csv
from marrowscope.io.annotations.clinical import ClinicalRecord, write_clinical_csv
from marrowscope.io.counts import (
    age_in_months,
    counts_from_cohort,
    make_counts_table,
    predicted_counts_from_summaries,
    read_counts,
    read_counts_table,
    write_counts_table,
)

PID_A = "A" * 32
PID_B = "B" * 32


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_plain_table_round_trip(tmp_path: Path) -> None:
    p = _write(
        tmp_path / "counts.csv",
        "patient_id;diagnosis;myelocytic_blast;segmented_neutrophil;erythrocyte;wbc;age;sex\n"
        "p1;AML;60;40;12;35.5;042M;F\n"
        "p2;all;0;90;3;;5Y;M\n",
    )
    t = read_counts_table(p)
    assert t.patient_ids == ("p1", "p2")
    assert t.diagnoses == ("AML", "ALL")
    assert t.counts.loc["p1", "myelocytic_blast"] == 60
    assert t.clinical.loc["p1", "wbc"] == 35.5 and math.isnan(t.clinical.loc["p2", "wbc"])
    assert t.clinical.loc["p1", "age_months"] == 42 and t.clinical.loc["p2", "age_months"] == 60
    assert t.clinical.loc["p1", "sex_male"] == 0 and t.clinical.loc["p2", "sex_male"] == 1
    back = read_counts_table(write_counts_table(t, tmp_path / "again.csv"))
    assert back.patient_ids == t.patient_ids and back.diagnoses == t.diagnoses
    assert (back.counts == t.counts).all().all()
    assert read_counts(p).patient_ids == t.patient_ids


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("diagnosis,lymphocyte\nALL,3\n", "patient_id"),
        ("patient_id,lymphocyte\np,3\n", "diagnosis"),
        ("patient_id,diagnosis,banana\np,ALL,3\n", "banana"),
        ("patient_id,diagnosis,lymphocyte\np,ALL,-3\n", ">= 0"),
        ("patient_id,diagnosis,lymphocyte\np,ALL,many\n", "not a count"),
        ("patient_id,diagnosis,lymphocyte\np,ALL,3\np,AML,4\n", "twice"),
    ],
)
def test_plain_table_errors(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(InputError, match=needle):
        read_counts_table(_write(tmp_path / "bad.csv", text))


def test_age_parsing() -> None:
    assert age_in_months("018M") == 18
    assert age_in_months("2Y") == 24
    assert math.isnan(age_in_months("unknown")) and math.isnan(age_in_months(None))


def _cells(slide_id: str, labels: list[str], start: int) -> CellAnnotations:
    cells = tuple(
        Cell(Box(10 * i, 0, 10 * i + 8, 8), label=lab, cell_id=start + i, roi_id=1)
        for i, lab in enumerate(labels)
    )
    return CellAnnotations(cells=cells, slide_id=slide_id)


def test_csv_only_cohort_counts_and_missing_clinical_row(tmp_path: Path) -> None:
    csv = tmp_path / "csv"
    csv.mkdir()
    write_cells_csv(
        [
            _cells(f"{PID_A}_1_bm", ["lymphocytic_blast"] * 3 + ["lymphocyte", "erythrocyte"], 0),
            _cells(f"{PID_B}_1_bm", ["myelocytic_blast", "promyelocyte"], 100),
        ],
        csv / "cells_labelled.csv",
    )
    write_clinical_csv(
        [ClinicalRecord(PID_A, "F", "042M", "ALL", "C3167", {"wbc": 12.0})], csv / "clinical.csv"
    )
    t = counts_from_cohort(tmp_path)
    assert set(t.patient_ids) == {PID_A, PID_B}
    assert t.diagnosis_of(PID_A) == "ALL" and t.diagnosis_of(PID_B) is None
    assert t.counts.loc[PID_A, "lymphocytic_blast"] == 3 and t.counts.loc[PID_A, "erythrocyte"] == 1
    assert t.clinical.loc[PID_A, "wbc"] == 12.0
    assert any(PID_B in line and "clinical" in line for line in t.problems)
    with pytest.raises(InputError, match="not found"):
        counts_from_cohort(tmp_path / "nope")
    assert counts_from_cohort(csv).patient_ids == t.patient_ids  # the csv folder itself works too
    (tmp_path / "other").mkdir()
    with pytest.raises(InputError, match="cells_labelled"):
        counts_from_cohort(tmp_path / "other")


def test_predicted_counts_from_summaries(tmp_path: Path) -> None:
    slides: tuple[tuple[str, list[str | None]], ...] = (
        (PID_A, ["lymphocytic_blast", "lymphocyte", None]), (PID_B, ["monocyte", "smudge_cell"])
    )
    for pid, labels in slides:
        diff = compute_differential(labels, uncertain=2)
        d = tmp_path / pid
        d.mkdir()
        (d / "summary.json").write_text(
            json.dumps({"slide": {"slide_id": f"{pid}_1_bm"}, "differential": diff.to_dict()})
        )
    t = predicted_counts_from_summaries(tmp_path)
    assert set(t.patient_ids) == {PID_A, PID_B}
    assert t.counts.loc[PID_A, "lymphocytic_blast"] == 1
    assert t.counts.loc[PID_B, "smudge_cell"] == 1  # non-countable objects come back from not_counted
    assert "uncertain" not in t.counts.columns and "unlabeled" not in t.counts.columns
    assert t.diagnoses == (None, None)
    truth = make_counts_table({PID_A: {"lymphocyte": 5}}, {PID_A: "ALL"})
    joined = t.with_clinical_from(truth)
    assert joined.diagnosis_of(PID_A) == "ALL" and joined.diagnosis_of(PID_B) is None
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="summary.json"):
        predicted_counts_from_summaries(empty)


def test_clinical_from_dicom_header() -> None:
    from pydicom.dataset import Dataset

    from marrowscope.io.counts import clinical_from_header

    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = "C3171", "NCIt", "Acute Myeloid Leukemia"
    ds = Dataset()
    ds.AdmittingDiagnosesCodeSequence = [item]
    ds.PatientAge, ds.PatientSex = "060M", "M"
    rec = clinical_from_header(ds, PID_A)
    assert rec is not None and rec.diagnosis == "AML" and rec.age == "060M" and rec.sex == "M"
    assert clinical_from_header(Dataset(), PID_A) is None
