"""Weights carry and check their whole contract: hashes (bundled, sidecar, embedded), a validated spec,
the training data and OOD statistics; every bundled detector and classifier loads and runs."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from marrowscope.errors import InputError
from marrowscope.models.classifier import load_classifier
from marrowscope.models.detector import detector_spec, load_detector
from marrowscope.models.registry import list_models, resolve_model
from marrowscope.models.weights import (
    WeightsSpec,
    WeightsSpecError,
    load_weights,
    read_sidecar,
    save_weights,
    sha256_file,
    sidecar_path,
)

BUNDLED = list_models()


def _spec(**kw: object) -> WeightsSpec:
    base: dict[str, object] = dict(task="classifier", arch="msresnet_s", classes=("a", "b"), mpp=0.45,
                                   input_size=64)
    base.update(kw)
    return WeightsSpec(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize("m", [m for m in BUNDLED if m.task == "detector"], ids=lambda m: m.name)
def test_bundled_detector_loads_and_runs(m: object) -> None:
    det = load_detector(m.name, device="cpu")  # type: ignore[attr-defined]
    assert det.classes == m.classes  # type: ignore[attr-defined]
    preds = det([np.full((64, 64, 3), 230, np.uint8)])
    assert len(preds) == 1 and preds[0].boxes.shape[1] == 4
    assert preds[0].labels.dtype == np.int64 and len(preds[0].scores) == len(preds[0].boxes)


@pytest.mark.parametrize("m", [m for m in BUNDLED if m.task == "classifier"], ids=lambda m: m.name)
def test_bundled_classifier_loads_and_runs(m: object) -> None:
    clf = load_classifier(m.name, device="cpu")  # type: ignore[attr-defined]
    assert clf.classes == m.classes  # type: ignore[attr-defined]
    s = clf.input_size
    crops = np.random.default_rng(0).integers(0, 255, (2, s, s, 3), dtype=np.uint8)
    logits = clf.logits(clf.to_tensor(crops))
    assert tuple(logits.shape) == (2, len(clf.classes)) and torch.isfinite(logits).all()


def test_bundled_file_given_by_path_is_checked_against_its_meta() -> None:
    m = next(m for m in BUNDLED if m.task == "detector")
    path, sha = resolve_model(m.path, task="detector")
    assert sha == m.sha256 == sha256_file(path)


def test_spec_is_validated_without_silent_defaults() -> None:
    d = _spec().to_dict()
    for key in ("mpp", "input_size", "classes", "mean", "std", "arch"):
        bad = {k: v for k, v in d.items() if k != key}
        with pytest.raises(WeightsSpecError, match=key):
            WeightsSpec.from_dict(bad)
    with pytest.raises(WeightsSpecError, match="mpp"):
        _spec(mpp=None)
    with pytest.raises(WeightsSpecError, match="input_size"):
        _spec(input_size=None)
    with pytest.raises(WeightsSpecError, match="std"):
        _spec(std=(0.2, 0.0, 0.2))
    with pytest.raises(WeightsSpecError, match="repeat"):
        _spec(classes=("a", "a"))
    with pytest.raises(WeightsSpecError, match="task"):
        _spec(task="segmenter")
    # a diagnosis model takes counts, not pixels: no scale needed
    assert WeightsSpec(task="diagnosis", arch="logreg", classes=("AML", "control")).mpp is None


def test_training_data_and_ood_stats_round_trip(tmp_path: Path) -> None:
    spec = _spec(training_data="synthetic only (marrowscope synth, seed 1)",
                 params={"ood": {"mean_rgb": [200.0, 150.0, 190.0], "n": 12}})
    p = tmp_path / "w.pt"
    save_weights(p, {"w": torch.ones(3)}, spec)
    _, loaded, _ = load_weights(p, task="classifier")
    assert loaded == spec and loaded.training_data.startswith("synthetic")  # type: ignore[union-attr]
    assert dict(loaded.ood_stats or {})["n"] == 12
    with pytest.raises(WeightsSpecError, match="ood"):
        _spec(params={"ood": [1, 2]})


def test_save_writes_a_sidecar_that_is_checked(tmp_path: Path) -> None:
    p = tmp_path / "w.pt"
    sha = save_weights(p, {"w": torch.arange(10.0)}, _spec(), sidecar=True)
    assert read_sidecar(p) == sha == sha256_file(p)
    assert resolve_model(p) == (p, sha)
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(InputError, match="sha256"):
        load_weights(p)


def test_truncated_file_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "w.pt"
    save_weights(p, {"w": torch.arange(1000.0)}, _spec())
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    with pytest.raises(InputError, match="truncated"):
        load_weights(p)


def test_edited_tensor_is_caught_by_the_embedded_digest(tmp_path: Path) -> None:
    p = tmp_path / "w.pt"
    save_weights(p, {"w": torch.arange(10.0)}, _spec())
    assert read_sidecar(p) is None  # our own files carry their digest inside
    ckpt = torch.load(p, weights_only=True)
    ckpt["state_dict"]["w"][3] = 99.0  # keep the old embedded digest
    torch.save(ckpt, p)
    with pytest.raises(InputError, match="embedded sha256"):
        load_weights(p)
    ckpt["spec"]["mpp"] = 0.9  # a changed contract too
    ckpt["state_dict"]["w"][3] = 3.0
    torch.save(ckpt, p)
    with pytest.raises(InputError, match="embedded sha256"):
        load_weights(p)


def test_file_without_any_hash_is_refused_with_the_fix(tmp_path: Path) -> None:
    p = tmp_path / "legacy.pt"
    torch.save({"spec": _spec().to_dict(), "state_dict": {"w": torch.zeros(2)}, "extra": {}}, p)
    with pytest.raises(InputError, match="sha256sum legacy.pt > legacy.pt.sha256"):
        load_weights(p)
    sidecar_path(p).write_text(f"{sha256_file(p)}  legacy.pt\n")
    _, spec, _ = load_weights(p)
    assert spec.training_data is None  # not recorded: stays unknown, never invented


def test_spec_missing_its_scale_in_a_file_is_a_clear_error(tmp_path: Path) -> None:
    p = tmp_path / "old.pt"
    d = detector_spec(("cell",), mpp=0.25, tile_size=128).to_dict()
    del d["mpp"]
    torch.save({"spec": d, "state_dict": {}, "extra": {}}, p)
    sidecar_path(p).write_text(f"{sha256_file(p)}  old.pt\n")
    with pytest.raises(InputError, match="spec breaks the contract: spec lacks mpp"):
        load_detector(p, device="cpu")


def test_diagnosis_model_by_path_needs_a_hash(tmp_path: Path) -> None:
    from marrowscope.models.diagnosis import load_diagnosis_model

    m = next(m for m in BUNDLED if m.task == "diagnosis")
    p = tmp_path / "dx.skops"
    shutil.copy(m.path, p)
    with pytest.raises(InputError, match="no sha256"):
        load_diagnosis_model(*resolve_model(p, task="diagnosis"))
    sidecar_path(p).write_text(f"{sha256_file(p)}  dx.skops\n")
    assert load_diagnosis_model(*resolve_model(p, task="diagnosis")).classes == m.classes
    p.write_bytes(p.read_bytes()[:-10])
    with pytest.raises(InputError, match="sha256"):
        load_diagnosis_model(*resolve_model(p, task="diagnosis"))
