"""int8 classifier: calibration stored with the weights, quantized loading, precision choice, the
calibration command on a tiny dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from marrowscope.engines.classify import classify_crops
from marrowscope.errors import InputError
from marrowscope.models.classifier import create_classifier, load_classifier, make_spec, save_classifier
from marrowscope.models.inference import resolve_precision
from marrowscope.models.quantize import calibrate_int8, int8_ranges, quantize_int8

CLASSES = ("a", "b", "c")


def _trained_bn_classifier() -> torch.nn.Module:
    clf = create_classifier(make_spec(CLASSES), seed=0)
    net = clf.net.train()
    with torch.no_grad():  # non-trivial BatchNorm statistics, as after training
        for _ in range(3):
            net(torch.rand(16, 3, 64, 64) * 2 + 0.3)
    return net.eval()


def _crops(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 64, 64, 3), dtype=np.uint8)


def _calibrated(tmp_path: Path) -> tuple[Path, Path]:
    """(fp32 weights without calibration, the same weights with one)."""
    clf = create_classifier(make_spec(CLASSES), seed=0)
    clf.net.load_state_dict(_trained_bn_classifier().state_dict())
    plain, calibrated = tmp_path / "plain.pt", tmp_path / "int8.pt"
    save_classifier(plain, clf)
    clf = load_classifier(plain, device="cpu")  # the fp16-stored weights, as inference sees them
    crops = _crops(96, seed=2)
    ranges = calibrate_int8(clf.net, (clf.to_tensor(crops[s : s + 32]) for s in range(0, 96, 32)))
    save_classifier(calibrated, clf.with_params(int8={"backend": "x86", "ranges": ranges}))
    return plain, calibrated


def test_ranges_reproduce_the_histogram_observers_qparams(tmp_path: Path) -> None:
    _, path = _calibrated(tmp_path)
    clf = load_classifier(path, device="cpu")
    ranges = int8_ranges(clf.spec.params)
    assert ranges is not None and len(ranges) > 10
    assert all(lo <= 0.0 <= hi and hi > lo for lo, hi in ranges.values())
    q = load_classifier(path, device="cpu", precision="int8", optimise=True)
    scales = [m.scale for m in q.net.modules() if hasattr(m, "scale") and hasattr(m, "zero_point")]
    assert scales and all(s > 0 for s in scales)
    assert q.precision == "int8" and isinstance(q.net[-1], torch.nn.Linear)  # fp32 head: OOD features


def test_int8_classifier_agrees_with_fp32(tmp_path: Path) -> None:
    from marrowscope.engines.ood import crop_features

    _, path = _calibrated(tmp_path)
    crops = _crops(64)
    ref = classify_crops(load_classifier(path, device="cpu"), crops, tta=1).probabilities
    q = load_classifier(path, device="cpu", precision="int8", optimise=True)
    got = classify_crops(q, crops, tta=2)  # TTA views go through the quantized body too
    assert got.probabilities.shape == ref.shape
    fast = classify_crops(q, crops, tta=1).probabilities
    assert (fast.argmax(1) == ref.argmax(1)).mean() >= 0.9
    assert np.abs(fast - ref).max() < 0.15
    feats = crop_features(q, crops[:5])  # from the fp32 network the OOD statistics were fitted on
    ref_feats = crop_features(load_classifier(path, device="cpu"), crops[:5])
    assert feats.shape == (5, 256) and np.allclose(feats, ref_feats, atol=1e-4)


def test_int8_needs_a_calibration_and_a_cpu(tmp_path: Path) -> None:
    plain, calibrated = _calibrated(tmp_path)
    with pytest.raises(InputError, match="no int8 calibration.*marrowscope quantize"):
        load_classifier(plain, device="cpu", precision="int8")
    assert load_classifier(plain, device="cpu", precision="auto").precision in ("fp32", "bf16")
    assert load_classifier(calibrated, device="cpu", precision="fp32").precision == "fp32"
    with pytest.raises(InputError, match="CPU only"):
        resolve_precision("int8", "cuda", int8=True)
    assert resolve_precision("int8", "cpu") == "fp32"  # a model without int8 (the detector) stays fp32
    assert resolve_precision("int8", "cpu", int8=True) == "int8"
    assert resolve_precision("auto", "mps", int8=True) == "fp32"


def test_auto_picks_int8_without_amx_and_bf16_with_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from marrowscope.models import inference

    monkeypatch.setattr(inference, "cpu_has_bf16", lambda: False)
    assert resolve_precision("auto", "cpu", int8=True) == "int8"
    assert resolve_precision("auto", "cpu") == "fp32"
    monkeypatch.setattr(inference, "cpu_has_bf16", lambda: True)
    assert resolve_precision("auto", "cpu", int8=True) == "bf16"


def test_auto_stays_fp32_where_torch_has_no_x86_engine(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from marrowscope.models import inference, quantize

    _, calibrated = _calibrated(tmp_path)
    monkeypatch.setattr(inference, "cpu_has_bf16", lambda: False)
    monkeypatch.setattr(quantize, "int8_available", lambda: False)  # e.g. an ARM build: qnnpack only
    assert load_classifier(calibrated, device="cpu", precision="auto").precision == "fp32"
    with pytest.raises(InputError, match="no x86 quantized engine"):
        load_classifier(calibrated, device="cpu", precision="int8")


def test_a_calibration_that_does_not_fit_the_network_is_refused() -> None:
    net = _trained_bn_classifier()
    with pytest.raises(InputError, match="does not fit the network"):
        quantize_int8(net, {"activation_post_process_0": [-1.0, 1.0]}, 64)
    with pytest.raises(InputError, match="Sequential network ending in a Linear"):
        calibrate_int8(torch.nn.Conv2d(3, 3, 1), [torch.zeros(1, 3, 8, 8)])
    with pytest.raises(InputError, match="no crops"):
        calibrate_int8(net, [])


def test_quantize_command_uses_only_the_training_part(tmp_path: Path) -> None:
    from PIL import Image

    from marrowscope.cli.main import main

    plain, _ = _calibrated(tmp_path)
    root = tmp_path / "cells"
    rng = np.random.default_rng(0)
    for label in ("lymphocyte", "monocyte", "eosinophil"):
        (root / label).mkdir(parents=True)
        for i in range(12):
            arr = rng.integers(0, 256, (72, 72, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / label / f"{label}_{i}.png")
    spec_classes = ("eosinophil", "lymphocyte", "monocyte")
    clf = create_classifier(make_spec(spec_classes, scheme=None), seed=0)
    weights = tmp_path / "w.pt"
    save_classifier(weights, clf)
    out = tmp_path / "w_int8.pt"
    assert main(["quantize", "--weights", str(weights), "--dataset", f"imagefolder:{root}",
                 "--out", str(out), "--max-crops", "64"]) == 0
    q = load_classifier(out, device="cpu", precision="int8")
    info = q.spec.params["int8"]
    n = int(info["calibration"].split()[0])
    assert 0 < n < 36  # the validation fifth of the 36 images is left out
    assert q.precision == "int8"
    before = weights.read_bytes()
    assert main(["quantize", "--weights", str(weights), "--dataset", f"imagefolder:{root}",
                 "--out", str(weights)]) != 0
    assert weights.read_bytes() == before  # never over its input


def test_analyze_runs_the_bundled_classifier_in_int8_where_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    from marrowscope.engines.pipeline import AnalysisConfig, load_models, precision_label
    from marrowscope.models import inference

    monkeypatch.setattr(inference, "cpu_has_bf16", lambda: False)  # a CPU without AMX
    models = load_models(AnalysisConfig(device="cpu"))  # the real-slide defaults, precision auto
    assert models.classifier.precision == "int8" and models.detector.precision == "fp32"
    assert models.precision == "detector fp32, classifier int8"
    assert load_models(AnalysisConfig(device="cpu", precision="fp32")).precision == "fp32"
    assert precision_label("bf16", "bf16") == "bf16"
