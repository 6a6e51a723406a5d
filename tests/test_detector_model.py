"""Detector model contract with random weights on tiny images (no downloads)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from marrowscope.errors import InputError
from marrowscope.models.detector import (
    Detector,
    anchor_sizes_px,
    build_detector,
    detector_spec,
    load_detector,
    save_detector,
)
from marrowscope.models.weights import WeightsSpec, save_weights

CLASSES = ("WBC", "RBC", "Platelet")


def _tiny_batch() -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 96, 128, generator=g), torch.rand(3, 64, 64, generator=g)]
    targets = [
        {"boxes": torch.tensor([[10.0, 12.0, 40.0, 44.0], [60.0, 20.0, 90.0, 52.0]]),
         "labels": torch.tensor([1, 2])},
        {"boxes": torch.zeros((0, 4)), "labels": torch.zeros(0, dtype=torch.int64)},  # no boxes
    ]
    return images, targets


@pytest.mark.parametrize("arch", ["fasterrcnn_mobilenet_v3_fpn", "fasterrcnn_resnet50_fpn"])
def test_train_returns_losses_and_eval_returns_boxes(arch: str) -> None:
    torch.manual_seed(0)
    spec = detector_spec(CLASSES, arch=arch, mpp=0.15, tile_size=128)
    model = build_detector(spec)
    images, targets = _tiny_batch()
    model.train()
    losses = model(images, targets)
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    model.eval()
    with torch.no_grad():
        out = model(images)
    assert len(out) == 2
    for o, img in zip(out, images, strict=True):
        assert set(o) == {"boxes", "labels", "scores"}
        assert o["boxes"].shape[1] == 4
        if len(o["labels"]):
            assert int(o["labels"].min()) >= 1 and int(o["labels"].max()) <= len(CLASSES)
            assert float(o["boxes"][:, 2].max()) <= img.shape[2] + 1e-3


def test_model_does_not_resize() -> None:
    spec = detector_spec(CLASSES, tile_size=128)
    model = build_detector(spec).eval()
    images, _ = _tiny_batch()
    batch, _ = model.transform(images)
    assert batch.image_sizes == [(96, 128), (64, 64)]


def test_test_time_rpn_settings_travel_in_the_contract(tmp_path: Path) -> None:
    default = build_detector(detector_spec(CLASSES, tile_size=128))
    assert default.rpn.score_thresh == 0.0 and default.rpn._post_nms_top_n["testing"] == 600
    spec = detector_spec(CLASSES, tile_size=128, rpn_pre_nms_test=500, rpn_post_nms_test=200,
                         rpn_score_thresh=0.1)
    save_detector(tmp_path / "d.pt", build_detector(spec), spec)
    det = load_detector(tmp_path / "d.pt", device="cpu")
    rpn = det.model.rpn
    assert rpn.score_thresh == 0.1
    assert rpn._pre_nms_top_n["trained_testing"] == 500 and rpn._post_nms_top_n["trained_testing"] == 200
    assert rpn._post_nms_top_n["training"] == 500  # training is unchanged


def test_anchor_sizes_follow_mpp() -> None:
    fine = anchor_sizes_px("fasterrcnn_mobilenet_v3_fpn", 0.1)
    coarse = anchor_sizes_px("fasterrcnn_mobilenet_v3_fpn", 0.2)
    assert len(fine) == 3
    assert all(f > c for lf, lc in zip(fine, coarse, strict=True) for f, c in zip(lf, lc, strict=True))
    assert len(anchor_sizes_px("fasterrcnn_resnet50_fpn", 0.15)) == 5


def test_weights_round_trip_and_contract(tmp_path: Path) -> None:
    torch.manual_seed(1)
    spec = detector_spec(CLASSES, mpp=0.2, tile_size=128)
    model = build_detector(spec)
    path = tmp_path / "det.pt"
    save_detector(path, model, spec, half=True)
    det = load_detector(path, device="cpu", optimise=False)  # optimise folds BatchNorm: other weights
    assert isinstance(det, Detector)
    assert det.classes == CLASSES and det.mpp == 0.2 and det.tile_size == 128
    ref = model.state_dict()
    for k, v in det.model.state_dict().items():
        if v.is_floating_point():
            assert torch.allclose(v, ref[k].half().float())
    preds = det([np.full((64, 80, 3), 255, np.uint8)])
    assert preds[0].boxes.shape[1] == 4 and preds[0].labels.dtype == np.int64
    assert (path.stat().st_size) < 25e6


def test_load_rejects_classifier_weights(tmp_path: Path) -> None:
    p = tmp_path / "cls.pt"
    save_weights(p, {"w": torch.zeros(1)}, WeightsSpec(task="classifier", arch="x", classes=("a",),
                                                          mpp=0.5, input_size=64))
    with pytest.raises(InputError, match="classifier"):
        load_detector(p)


def test_unknown_arch_is_an_input_error() -> None:
    with pytest.raises(InputError, match="architecture"):
        detector_spec(CLASSES, arch="yolo")
