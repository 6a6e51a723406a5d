"""Model cards, meta.json metrics and docs/benchmarks.md accuracy targets are generated from each bundled
model's metrics.json; export writes all of them by code."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from marrowscope.models.cards import (
    BEGIN,
    END,
    load_metrics,
    render_card_block,
    section_from_eval,
    sync_benchmarks_doc,
    sync_bundle,
)
from marrowscope.models.registry import BUNDLED_DIR, list_models

ROOT = Path(__file__).resolve().parents[2]
BUNDLES = sorted(p for p in BUNDLED_DIR.iterdir() if (p / "meta.json").is_file())


@pytest.mark.parametrize("folder", BUNDLES, ids=lambda p: p.name)
def test_each_bundled_card_agrees_with_its_metrics_file(folder: Path) -> None:
    metrics = load_metrics(folder)  # every bundled model has one
    assert metrics["model"] == folder.name and metrics["sections"]
    for s in metrics["sections"]:
        assert s["command"] and s["metrics"], s["id"]
    card = (folder / "card.md").read_text()
    assert render_card_block(metrics).strip() in card
    assert sync_bundle(folder, check=True), f"run benchmarks/render_cards.py ({folder.name} is out of date)"


def test_benchmarks_doc_targets_agree_with_the_metrics_files() -> None:
    assert sync_benchmarks_doc(ROOT / "docs" / "benchmarks.md", BUNDLES, check=True)


def test_an_edited_card_number_is_caught_and_regenerated(tmp_path: Path) -> None:
    from marrowscope.io.atomic import MARKER

    src = BUNDLED_DIR / "detector-synth"
    folder = tmp_path / "detector-synth"
    folder.mkdir()
    shutil.copy(BUNDLED_DIR / MARKER, tmp_path / MARKER)  # bundled/ is marrowscope's own: so is the copy
    for name in ("card.md", "meta.json", "metrics.json"):
        shutil.copy(src / name, folder / name)
    card = (folder / "card.md").read_text()
    a, b = card.index(BEGIN), card.index(END)
    block = card[a:b]
    edited = block.replace("| ap50 | 0.", "| ap50 | 9.", 1)
    assert edited != block
    (folder / "card.md").write_text(card[:a] + edited + card[b:])
    assert not sync_bundle(folder, check=True)
    assert sync_bundle(folder)
    assert (folder / "card.md").read_text() == card
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["metrics"]["test.ap50"] == load_metrics(folder)["sections"][0]["metrics"]["ap50"]


def test_section_from_an_evaluate_metrics_file(tmp_path: Path) -> None:
    import numpy as np

    from marrowscope.cells import Box, Cell, CellAnnotations, Detections
    from marrowscope.eval.detection import evaluate_detections, write_metrics_json

    truth = CellAnnotations(cells=(Cell(Box(0, 0, 10, 10), "cell"),), width=32, height=32)
    det = Detections(np.array([[0.0, 0.0, 10.0, 10.0]]), np.array([0.9]), np.array([0]), ("cell",))
    path = write_metrics_json(evaluate_detections([det], [truth], ("cell",)), tmp_path / "metrics.json",
                              weights="w", dataset="d")
    s = section_from_eval(path, section_id="test", title="t", command="marrowscope evaluate detector ...",
                          reproduced="today", keys=["ap50", "precision", "n_images"],
                          targets=[{"target": "AP ≥ 0.5", "metric": "ap50", "min": 0.5}])
    assert s["metrics"] == {"ap50": pytest.approx(1.0), "precision": pytest.approx(1.0), "n_images": 1}
    with pytest.raises(Exception, match="lacks"):
        section_from_eval(path, section_id="x", title="t", command="c", reproduced=None, keys=["no_such"])


def test_export_writes_weights_meta_metrics_and_card_by_code(tmp_path: Path) -> None:
    from marrowscope.models.classifier import create_classifier, export_classifier, make_spec, save_classifier
    from marrowscope.models.detector import build_detector, detector_spec, export_detector, load_detector
    from marrowscope.models.weights import load_weights, sha256_file

    dspec = detector_spec(["cell"], mpp=0.5, tile_size=128, fpn_channels=16, representation_size=32)
    from marrowscope.models.detector import save_detector

    save_detector(tmp_path / "d.pt", build_detector(dspec), dspec)
    section = {"id": "test", "title": "Test", "command": "marrowscope evaluate detector ...",
               "reproduced": "now", "note": "", "metrics": {"ap50": 0.5}, "targets": []}
    f = export_detector(tmp_path / "d.pt", tmp_path / "b" / "det-x", name="det-x", training_data="synthetic",
                        sections=[section])
    meta = json.loads((f.parent / "meta.json").read_text())
    assert meta["sha256"] == sha256_file(f) and meta["metrics"] == {"test.ap50": 0.5}
    assert "| ap50 | 0.500 |" in (f.parent / "card.md").read_text()
    assert load_weights(f, sha256=meta["sha256"])[1].training_data == "synthetic"
    assert load_detector(f, device="cpu").classes == ("cell",)

    clf = create_classifier(make_spec(["myeloblast", "lymphocyte"], input_size=32))
    save_classifier(tmp_path / "c.pt", clf)
    g = export_classifier(tmp_path / "c.pt", tmp_path / "b" / "clf-x", name="clf-x",
                          training_data="PBC subset")
    meta = json.loads((g.parent / "meta.json").read_text())
    assert meta["task"] == "classifier" and meta["classes"] == ["myeloblast", "lymphocyte"]
    assert meta["sha256"] == sha256_file(g) and meta["training_data"] == "PBC subset"
    assert sync_bundle(g.parent, check=True)
    assert torch.is_tensor(load_weights(g, sha256=meta["sha256"])[0][next(iter(load_weights(g)[0]))])
    assert "training_data_kind" not in meta  # a bare description says nothing about the kind

    from marrowscope.models.provenance import TrainingData, training_data_from_meta

    td = TrainingData("PBC + synthetic", "mixed", ("PBC", "synthetic cohort"))
    h = export_classifier(tmp_path / "c.pt", tmp_path / "b" / "clf-y", name="clf-y", training_data=td)
    meta = json.loads((h.parent / "meta.json").read_text())
    assert training_data_from_meta(meta) == td  # re-exporting from this meta keeps the kind analyze reports
    assert load_weights(h)[1].training_data == "PBC + synthetic"


def test_every_bundled_model_is_listed_with_its_metrics() -> None:
    for m in list_models():
        assert m.metrics and all("." in k for k in m.metrics), m.name


def test_write_generated_block_replaces_only_its_own_block(tmp_path: Path) -> None:
    from marrowscope.models.cards import write_generated_block

    doc = tmp_path / "doc.md"
    a, b = "<!-- BEGIN GENERATED a -->", "<!-- BEGIN GENERATED b -->"
    doc.write_text(f"intro\n\n{a}\nold a\n{END}\n\nmiddle\n\n{b}\nold b\n{END}\n\nend\n", encoding="utf-8")
    write_generated_block(doc, a, "| new | a |\n")
    write_generated_block(doc, a, "| newer | a |")
    text = doc.read_text(encoding="utf-8")
    assert text.count(a) == 1 and "old a" not in text
    assert "| newer | a |" in text and "| new | a |" not in text
    assert "old b" in text and text.startswith("intro") and "middle" in text and text.rstrip().endswith("end")
    write_generated_block(doc, "<!-- BEGIN GENERATED c -->", "c")  # a block not there yet is appended
    assert doc.read_text(encoding="utf-8").rstrip().endswith(END)
