"""``marrowscope reproduce --quick`` end to end on an 8-patient synthetic cohort (about 2 min on 2 cores)."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import replace
from pathlib import Path

import pytest

from marrowscope.cli.main import main
from marrowscope.errors import InputError
from marrowscope.study.reproduce import ReproduceConfig, reproduce

KEYS = ("detection_ap50", "classification_macro_auc", "classification_macro_f1", "diagnosis_macro_f1_true",
        "diagnosis_macro_f1_predicted", "paper", "n_patients")


@pytest.fixture(scope="module")
def cohort8(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from marrowscope.data.synth.cohort import SynthConfig, generate_cohort

    out = tmp_path_factory.mktemp("repro") / "cohort"
    generate_cohort(SynthConfig(n_patients=8, seed=3, slide_size=1536, roi_size=768, n_rois=1,
                                cells_per_roi=50), out)
    return out


def test_quick_reproduction_table_and_skips(cohort8: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                            ) -> None:
    out = tmp_path / "study"
    t0 = time.perf_counter()
    assert main(["reproduce", "--data", str(cohort8), "--out", str(out), "--quick"]) == 0
    first = time.perf_counter() - t0
    doc = json.loads((out / "reproduction.json").read_text())
    for k in KEYS:
        assert k in doc, k
    assert doc["paper"]["detection_ap50"] == 0.96 and doc["paper"]["diagnosis_macro_f1_predicted"] == 0.90
    assert sum(doc["n_patients"].values()) == 8 and min(doc["n_patients"].values()) >= 1
    assert 0 <= doc["detection_ap50"] <= 1 and len(doc["ci"]["detection_ap50"]) == 2
    assert doc["classification_macro_auc"] is not None and doc["diagnosis_macro_f1_true"] is not None
    assert doc["run"]["device"] == "cpu" and set(doc["run"]["stages"]) == {"split", "detector", "classifier",
                                                                              "diagnosis"}
    assert all(len(w["sha256"]) == 64 for w in doc["run"]["weights"].values())
    md = (out / "reproduction.md").read_text()
    assert "| Detection AP@0.5 (test patients' ROIs) | 0.960 |" in md and "## Run record" in md
    assert (out / "splits.csv").read_text().startswith("patient_id,diagnosis,split\n")
    printed = capsys.readouterr().out
    assert "detection_ap50" in printed and "paper 0.96" in printed

    t0 = time.perf_counter()  # unchanged inputs and config: every stage is skipped
    again = reproduce(cohort8, out, ReproduceConfig.quick_config(), progress=False)
    assert all(r.skipped for r in again.records.values())
    assert time.perf_counter() - t0 < first / 3
    # the same split given as a file: the split stage is new, the model stages keep their results
    reused = reproduce(cohort8, out, ReproduceConfig.quick_config(), splits_file=out / "splits.csv",
                       progress=False)
    assert not reused.records["split"].skipped
    assert all(reused.records[s].skipped for s in ("detector", "classifier", "diagnosis"))


def test_interrupted_training_resumes_and_bad_input_names_the_patient(cohort8: Path, tmp_path: Path) -> None:
    quick = ReproduceConfig.quick_config()
    stopping = replace(quick, detector=replace(quick.detector, max_minutes=0.0))  # stops after one step
    out = tmp_path / "study"
    with pytest.raises(InputError, match="detector training stopped before the end; run the same command"):
        reproduce(cohort8, out, stopping, stages=("detector",), progress=False)
    rec = reproduce(cohort8, out, quick, stages=("detector",), progress=False).records["detector"]
    assert rec.resumed and not rec.skipped and rec.result["epochs"] == 1

    broken = tmp_path / "cohort"  # a patient absent from the clinical table
    shutil.copytree(cohort8, broken)
    clinical = broken / "csv" / "clinical.csv"
    lines = clinical.read_text().splitlines(keepends=True)
    gone = lines[1].split(";")[0]
    clinical.write_text("".join(lines[:1] + lines[2:]))
    res = reproduce(broken, out, quick, stages=("split",), progress=False)
    assert any(w.startswith(f"patient {gone}: no row in the clinical table") for w in res.warnings)
    assert gone not in res.records["split"].result["assignment"]
    assert (Path(rec.folder) / "stage.json").is_file()  # the detector trained before is still there
