"""Study building blocks: patient splits, the fingerprinted stage runner, input checks."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from marrowscope.errors import InputError
from marrowscope.study.runner import StageRunner, fingerprint
from marrowscope.study.splits import PatientSplit, SplitConfig, read_splits, split_patients, write_splits


def _cohort(n_per: dict[str, int]) -> dict[str, str]:
    return {f"{dx}{i:02d}": dx for dx, n in n_per.items() for i in range(n)}


def test_split_is_patient_level_stratified_and_seeded() -> None:
    dx = _cohort({"AML": 40, "ALL": 20, "CML": 8, "control": 12})
    a = split_patients(dx, SplitConfig(test_fraction=0.25, val_fraction=0.125, seed=1))
    assert a == split_patients(dx, SplitConfig(test_fraction=0.25, val_fraction=0.125, seed=1))
    assert a != split_patients(dx, SplitConfig(test_fraction=0.25, val_fraction=0.125, seed=2))
    assert set(a.assignment) == set(dx)  # every patient on exactly one side
    assert a.sizes() == {"train": 50, "val": 10, "test": 20}
    for d, sizes in a.sizes_by_diagnosis().items():  # each diagnosis gets its share (within one patient)
        n = sum(sizes.values())
        assert abs(sizes["test"] - 0.25 * n) <= 1, (d, sizes)
        assert abs(sizes["val"] - 0.125 * n) <= 1, (d, sizes)


def test_split_file_round_trip_and_errors(tmp_path: Path) -> None:
    dx = _cohort({"AML": 4, "ALL": 4})
    s = split_patients(dx)
    path = write_splits(s, tmp_path / "splits.csv")
    assert read_splits(path, known=dx) == s
    with pytest.raises(InputError, match="patient AML00 is not in the cohort"):
        read_splits(path, known={k: v for k, v in dx.items() if k != "AML00"})
    bad = tmp_path / "bad.csv"
    bad.write_text("patient_id,diagnosis,split\nGHOST,AML,train\n")
    with pytest.raises(InputError, match="patient GHOST is not in the cohort"):
        read_splits(bad, known=dx)
    bad.write_text("patient_id,diagnosis,split\nAML00,AML,holdout\n")
    with pytest.raises(InputError, match="split must be one of train, val, test"):
        read_splits(bad)


def test_empty_split_is_a_clear_error() -> None:
    s = PatientSplit({"a": "train", "b": "train"}, {"a": "AML", "b": "ALL"})
    with pytest.raises(InputError, match="the val split is empty .*add patients"):
        s.check()


def test_runner_skips_unchanged_and_keeps_changed_apart(tmp_path: Path) -> None:
    calls: list[Path] = []

    def stage(folder: Path) -> dict[str, int]:
        calls.append(folder)
        (folder / "out.txt").write_text("x")
        return {"value": len(calls)}

    r = StageRunner(tmp_path)
    first = r.run("s", {"config": {"lr": 1}}, stage)
    again = StageRunner(tmp_path).run("s", {"config": {"lr": 1}}, stage)
    assert again.skipped and again.result == {"value": 1} and len(calls) == 1
    changed = StageRunner(tmp_path).run("s", {"config": {"lr": 2}}, stage)
    assert not changed.skipped and changed.folder != first.folder and len(calls) == 2
    assert (Path(first.folder) / "out.txt").is_file()  # nothing computed before is lost
    index = json.loads((tmp_path / "stages.json").read_text())
    assert index["s"]["fingerprint"] == changed.fingerprint
    assert fingerprint({"a": 1, "b": [1, 2]}) == fingerprint({"b": [1, 2], "a": 1})


def test_runner_resumes_an_interrupted_stage_in_its_folder(tmp_path: Path) -> None:
    def crash(folder: Path) -> dict[str, int]:
        (folder / "checkpoint").write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        StageRunner(tmp_path).run("s", {"k": 1}, crash)

    def finish(folder: Path) -> dict[str, str]:
        return {"found": (folder / "checkpoint").read_text()}

    rec = StageRunner(tmp_path).run("s", {"k": 1}, finish)
    assert rec.resumed and rec.result == {"found": "half"}


@pytest.fixture(scope="module")
def tiny_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from marrowscope.data.synth.cohort import SynthConfig, generate_cohort

    out = tmp_path_factory.mktemp("study") / "cohort"
    generate_cohort(
        SynthConfig(n_patients=3, seed=5, slide_size=768, roi_size=256, n_rois=1, cells_per_roi=8), out
    )
    return out


def _entries(root: Path) -> list[tuple[str, Path]]:
    """(patient id, study folder) of each synthetic patient."""
    return [(p.name, next(p.iterdir())) for p in sorted((root / "dicom").iterdir())]


def test_inputs_name_each_patient_with_something_missing(
    tiny_cohort: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from marrowscope.study.inputs import inspect_inputs

    root = tmp_path / "c"
    shutil.copytree(tiny_cohort, root)
    (p0, s0), (p1, s1), (p2, _) = _entries(root)
    full = inspect_inputs(tiny_cohort)
    assert set(full.diagnoses) == {p0, p1, p2} and not full.warnings
    for f in s0.glob("ANN_*"):  # a slide without its annotation series
        shutil.rmtree(f)
    for f in s1.glob("SM_*"):  # annotation series without their slide
        shutil.rmtree(f)
    clinical = root / "csv" / "clinical.csv"  # a patient absent from the clinical table
    clinical.write_text(
        "".join(line for line in clinical.read_text().splitlines(keepends=True) if not line.startswith(p2))
    )
    csv_rows = root / "csv"
    for name in ("cells_labelled.csv", "cells_detection_only.csv", "rois.csv"):  # CSVs would stand in for ANN
        (csv_rows / name).unlink(missing_ok=True)
    with caplog.at_level(logging.WARNING), pytest.raises(InputError, match="no patient has a slide"):
        inspect_inputs(root)
    text = "\n".join(caplog.messages)
    assert f"patient {p0}: slide without annotation series" in text
    assert f"patient {p1}: roi annotation series" in text and "without its slide" in text
    assert f"patient {p2}: no row in the clinical table" in text
