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
    captured = capsys.readouterr()
    printed = captured.out
    assert "detection_ap50" in printed and "paper 0.96" in printed
    # a diagnosis with fewer patients than folds: a warning naming them (8 patients, 4 diagnoses, 3 folds)
    assert "only 2 patient(s) (" in captured.err and "for 3 cross-validation folds; fewer folds are used" \
        in captured.err

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


_KILL_AFTER_FIRST_CHECKPOINT = """
import os, signal
_replace = os.replace
def replace(src, dst, *a, **k):
    _replace(src, dst, *a, **k)
    if str(dst).endswith("checkpoint.pt") and os.environ.get("RANK") == "0":
        os.kill(os.getpid(), signal.SIGKILL)  # rank 0 dies right after the classifier's first checkpoint
os.replace = replace
"""


def test_torchrun_trains_the_models_with_two_gloo_processes(cohort8: Path, tmp_path: Path) -> None:
    """``torchrun --nproc_per_node 2 -m marrowscope reproduce``: both ranks train each model stage (DDP,
    gloo on the CPU) with the optimizer steps of one process; rank 0 evaluates and writes. Rank 0
    SIGKILLed after the classifier's first epoch: the rerun resumes there on both ranks; a third skips."""
    import os
    import subprocess
    import sys

    import torch

    repo = Path(__file__).resolve().parents[1]
    out = tmp_path / "study"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "marrowscope", "reproduce", "--data", str(cohort8), "--out", str(out), "--quick",
           "--stages", "detector,classifier", "--device", "cpu"]
    env = {**os.environ, "PYTHONPATH": str(repo / "src"), "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(_KILL_AFTER_FIRST_CHECKPOINT)
    killed = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path,
                            env={**env, "PYTHONPATH": f"{hook}{os.pathsep}{env['PYTHONPATH']}"})
    assert killed.returncode != 0 and "SIGKILL" in killed.stderr, killed.stderr[-3000:]
    ck_path = next((out / "classifier").glob("*/train/checkpoint.pt"))
    before = torch.load(ck_path, map_location="cpu", weights_only=False)
    assert before["epoch"] == 1 and not list((out / "classifier").glob("*/stage.json"))

    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("wrote ") == 1  # rank 0 alone reports (and writes the tables)
    quick = ReproduceConfig.quick_config()
    det = json.loads(next((out / "detector").glob("*/stage.json")).read_text())["result"]
    stage = json.loads(next((out / "classifier").glob("*/stage.json")).read_text())
    clf = stage["result"]
    assert det["train_processes"] == 2 and clf["train_processes"] == 2 and stage["resumed"]
    det_dir = next((out / "detector").glob("*/train"))
    last = torch.load(det_dir / "last.pt", map_location="cpu", weights_only=False)
    d = quick.detector
    assert last["global_step"] == max(1, det["n_images"]["train"] * d.repeats // d.batch_size) * d.epochs
    best = torch.load(det_dir / "best.pt", map_location="cpu", weights_only=False)
    assert best["extra"]["run"]["world_size"] == 2  # written by rank 0 of the two
    ck = torch.load(ck_path, map_location="cpu", weights_only=False)
    c = quick.classifier
    assert ck["epoch"] == 2 and ck["history"][0] == before["history"][0]  # resumed, not restarted
    assert int(ck["opt"]["state"][0]["step"]) == max(1, clf["n_cells"]["train"] // c.batch_size) * c.epochs
    doc = json.loads((out / "reproduction.json").read_text())
    assert doc["detection_ap50"] is not None and doc["classification_macro_f1"] is not None

    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "stage detector    skipped" in again.stdout and "stage classifier  skipped" in again.stdout
