"""Clinical / lab table: semicolon CSV indexed by patient_id."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from marrowscope.errors import InputError
from marrowscope.io.annotations.clinical import (
    LAB_COLUMNS,
    ClinicalRecord,
    match_patients,
    read_clinical_csv,
    write_clinical_csv,
)

TABLE = """patient_id;gender;age;ncit_concept_code;diagnosis;blasts;wbc;thrombocytes;ldh;uric_acid;hemoglobin
AAA;M;042M;C3167;ALL;85;120.5;23;1450;6.1;7.9
BBB;F;204M;C3182;;40;15;30;800;4.0;9.1
CCC;O;018M;C14165;control;0;8.2;250;;3.5;12.4
"""


def test_read_clinical(tmp_path: Path) -> None:
    (tmp_path / "clinical.csv").write_text(TABLE)
    recs = read_clinical_csv(tmp_path / "clinical.csv")
    assert list(recs) == ["AAA", "BBB", "CCC"]
    a = recs["AAA"]
    assert (a.sex, a.age, a.ncit_code, a.diagnosis) == ("M", "042M", "C3167", "ALL")
    assert a.labs["wbc"] == 120.5 and set(a.labs) == set(LAB_COLUMNS)
    assert recs["BBB"].diagnosis == "AML"  # APL NCIt code, diagnosis derived
    assert recs["CCC"].labs["ldh"] is None and recs["CCC"].diagnosis == "control"


def test_round_trip(tmp_path: Path) -> None:
    recs = {
        "P1": ClinicalRecord("P1", "F", "150M", "CML", "C3174",
                             {"blasts": 2.0, "wbc": 310.25, "thrombocytes": 650.0, "ldh": 900.0,
                              "uric_acid": None, "hemoglobin": 10.1}),
        "P2": ClinicalRecord("P2", None, None, "AML", "C3171", {c: None for c in LAB_COLUMNS},
                             extra={"site": "Erlangen"}),
    }
    write_clinical_csv(recs, tmp_path / "c.csv")
    assert (tmp_path / "c.csv").read_text().splitlines()[0].startswith("patient_id;gender;age;")
    assert read_clinical_csv(tmp_path / "c.csv") == recs


def test_bad_tables(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "a.csv").write_text("patient_id;age;diagnosis\nX;042M;ALL\n")
    with pytest.raises(InputError, match="gender"):
        read_clinical_csv(tmp_path / "a.csv")
    (tmp_path / "b.csv").write_text("patient_id,gender,age\nX,M,042M\n")
    with pytest.raises(InputError, match="semicolon"):
        read_clinical_csv(tmp_path / "b.csv")
    (tmp_path / "c.csv").write_text("patient_id;gender;age\nX;M;042M\n")
    with pytest.raises(InputError, match="diagnosis column"):
        read_clinical_csv(tmp_path / "c.csv")
    (tmp_path / "d.csv").write_text("patient_id;gender;age;diagnosis\nX;M;042M;ALL\nX;F;018M;AML\n")
    with pytest.raises(InputError, match="twice"):
        read_clinical_csv(tmp_path / "d.csv")
    (tmp_path / "e.csv").write_text("patient_id;gender;age;diagnosis;wbc\nX;Q;042M;ALL;1\n")
    with pytest.raises(InputError, match="gender"):
        read_clinical_csv(tmp_path / "e.csv")
    (tmp_path / "f.csv").write_text("patient_id;gender;age;diagnosis;wbc\nX;M;042M;ALL;lots\n")
    with pytest.raises(InputError, match="wbc"):
        read_clinical_csv(tmp_path / "f.csv")
    (tmp_path / "g.csv").write_text("patient_id;gender;age;diagnosis;wbc\nX;M;042M;ALL;12,5\n")
    with caplog.at_level(logging.WARNING):
        rec = read_clinical_csv(tmp_path / "g.csv")["X"]
    assert rec.labs["wbc"] == 12.5 and rec.labs["ldh"] is None
    assert "ldh" in caplog.text
    with caplog.at_level(logging.WARNING):
        got = match_patients({"X": rec}, ["X", "Y"])
    assert got == {"X": rec, "Y": None} and "Y" in caplog.text
