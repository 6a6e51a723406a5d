"""``marrowscope train/evaluate detector`` and ``marrowscope models`` on tiny generated data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from marrowscope.cli.main import main
from marrowscope.models.detector import build_detector, detector_spec, save_detector


def _yolo(root: Path, split: str | None = None) -> Path:
    img_dir = root / "images" / split if split else root / "images"
    lbl_dir = root / "labels" / split if split else root / "labels"
    img_dir.mkdir(parents=True)
    lbl_dir.mkdir(parents=True)
    for i in range(3):
        img = np.full((64, 72, 3), 225, np.uint8)
        img[10:34, 20 + i : 44 + i] = (110, 40, 140)
        Image.fromarray(img).save(img_dir / f"im{i}.png")
        line = f"0 {(32 + i) / 72:.5f} {22 / 64:.5f} {24 / 72:.5f} {24 / 64:.5f}\n"
        (lbl_dir / f"im{i}.txt").write_text(line)
    (root / "classes.txt").write_text("WBC\n")
    return root


@pytest.mark.parametrize("split", [None, "test"])
def test_evaluate_detector_writes_metrics(tmp_path: Path, split: str | None,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    torch.manual_seed(0)
    spec = detector_spec(("WBC", "RBC"), mpp=0.15, tile_size=128)
    weights = tmp_path / "w.pt"
    save_detector(weights, build_detector(spec), spec)
    data = _yolo(tmp_path / "yolo", split)
    out = tmp_path / "eval"
    rc = main(["evaluate", "detector", "--weights", str(weights), "--dataset", f"yolo:{data}",
               "--out", str(out), "--examples", "1"])
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["n_images"] == 3 and set(m["ap50_per_class"]) == {"WBC", "RBC"}
    assert m["ap50_per_class"]["RBC"] is None and 0.0 <= m["ap50"] <= 1.0
    assert (out / "pr_curve.png").is_file() and len(list((out / "examples").glob("*.png"))) == 1
    assert "AP@0.5" in capsys.readouterr().out


def test_evaluate_detector_bad_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["evaluate", "detector", "--weights", "no-such-model", "--dataset", f"yolo:{tmp_path}",
               "--out", str(tmp_path / "o")])
    assert rc != 0 and "no-such-model" in capsys.readouterr().err


def test_train_detector_cli_tiny(tmp_path: Path) -> None:
    data = _yolo(tmp_path / "yolo")
    out = tmp_path / "run"
    rc = main(["train", "detector", "--dataset", f"yolo:{data}", "--out", str(out), "--epochs", "1",
               "--batch-size", "2", "--val-fraction", "0.34", "--model-mpp", "0.3"])
    assert rc == 0
    assert (out / "best.pt").is_file() and (out / "last.pt").is_file()
    hist = json.loads((out / "history.json").read_text())
    assert len(hist) == 1 and hist[0]["val_ap50"] is not None


def test_models_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert isinstance(rows, list)
    for r in rows:
        assert {"name", "task", "classes", "training_data", "size_bytes"} <= set(r)
