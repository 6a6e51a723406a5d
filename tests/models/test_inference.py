"""Inference speed-ups keep the outputs: BatchNorm folding, precision choice, proposal caps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from marrowscope.errors import InputError
from marrowscope.models.classifier import create_classifier, make_spec
from marrowscope.models.inference import cpu_has_bf16, fold_batchnorm, resolve_precision


def _trained_bn_classifier() -> torch.nn.Module:
    clf = create_classifier(make_spec(("a", "b", "c")), seed=0)
    net = clf.net.train()
    with torch.no_grad():  # give BatchNorm non-trivial running statistics
        for _ in range(3):
            net(torch.rand(16, 3, 64, 64) * 2 + 0.3)
    return net.eval()


def test_fold_batchnorm_keeps_outputs() -> None:
    net = _trained_bn_classifier()
    x = torch.rand(8, 3, 64, 64)
    with torch.inference_mode():
        before = net(x)
    n = fold_batchnorm(net)
    with torch.inference_mode():
        after = net(x)
    assert n > 5
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    assert torch.allclose(before, after, atol=1e-4, rtol=1e-4)


def test_fold_batchnorm_leaves_training_modules_alone() -> None:
    net = _trained_bn_classifier().train()
    assert fold_batchnorm(net) == 0


def test_precision_choice(tmp_path: Path) -> None:
    plain = tmp_path / "cpuinfo"
    plain.write_text("flags\t\t: fpu sse2 avx2 avx512f\n")
    avx512_bf16 = tmp_path / "cpuinfo-avx512-bf16"  # bf16 instructions without AMX: slower than fp32
    avx512_bf16.write_text("flags\t\t: fpu sse2 avx512f avx512_bf16 avx512_fp16\n")
    amx = tmp_path / "cpuinfo-amx"
    amx.write_text("flags\t\t: fpu sse2 avx512f avx512_bf16 amx_bf16 amx_tile\n")
    assert not cpu_has_bf16(plain) and not cpu_has_bf16(avx512_bf16) and cpu_has_bf16(amx)
    assert not cpu_has_bf16(tmp_path / "missing")
    assert resolve_precision("fp32", "cpu") == "fp32" and resolve_precision("bf16", "cpu") == "bf16"
    assert resolve_precision("auto", "cpu") == ("bf16" if cpu_has_bf16() else "fp32")
    assert resolve_precision("auto", "mps") == "fp32"
    with pytest.raises(InputError, match="unknown precision"):
        resolve_precision("int4", "cpu")


def test_detector_caps_grow_with_the_tile_and_bf16_keeps_boxes_fp32() -> None:
    from marrowscope.models.detector import Detector, build_detector, detector_spec

    spec = detector_spec(("cell",), mpp=0.25, tile_size=256)
    torch.manual_seed(0)
    det = Detector(build_detector(spec), spec, "cpu", tile_size=512, precision="bf16")
    assert det.tile_size == 512 and det.max_tile_size == 640
    assert det.model.roi_heads.detections_per_img == round(300 * (640 / 256) ** 2)
    assert det.model.rpn._post_nms_top_n["testing"] == round(600 * (640 / 256) ** 2)
    assert det.model.rpn._post_nms_top_n["training"] == 500  # training caps untouched
    img = np.random.default_rng(0).integers(0, 255, (300, 300, 3), dtype=np.uint8)
    (pred,) = det([img])
    assert pred.boxes.dtype == np.float32 and pred.scores.dtype == np.float32
    feats = det.model.backbone(torch.rand(1, 3, 64, 64))
    assert all(v.dtype == torch.float32 for v in feats.values())  # heads get fp32 maps
    trained = Detector(build_detector(spec), spec, "cpu", tile_stretch=1.0, optimise=False)
    assert trained.max_tile_size == 256
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in trained.model.modules())


def test_bf16_classifier_agrees_with_fp32(tmp_path: Path) -> None:
    from marrowscope.engines.classify import classify_crops
    from marrowscope.models.classifier import load_classifier, save_classifier

    net = _trained_bn_classifier()
    clf = create_classifier(make_spec(("a", "b", "c")), seed=0)
    clf.net.load_state_dict(net.state_dict())
    path = tmp_path / "c.pt"
    save_classifier(path, clf)
    crops = np.random.default_rng(1).integers(0, 256, (40, 64, 64, 3), dtype=np.uint8)
    ref = classify_crops(load_classifier(path, device="cpu"), crops, tta=1).probabilities
    fast = load_classifier(path, device="cpu", precision="bf16", optimise=True)
    assert fast.precision == "bf16" and fast.to_tensor(crops[:2]).dtype == torch.bfloat16
    got = classify_crops(fast, crops, tta=2).probabilities  # TTA views go through the same cast
    assert got.dtype == np.float64 and got.shape == ref.shape
    assert np.abs(classify_crops(fast, crops, tta=1).probabilities - ref).max() < 0.05
