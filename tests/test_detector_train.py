"""The detector training loop on tiny generated images: checkpoints, resume, determinism."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from marrowscope.cells import Box, Cell, CellAnnotations
from marrowscope.data.detection_datasets import DetectionSample
from marrowscope.engines.train_detector import DetectorTrainConfig, train_detector
from marrowscope.models.detector import load_detector


def _samples(n: int) -> list[DetectionSample]:
    out = []
    for i in range(n):
        img = np.full((64, 64, 3), 230, np.uint8)
        img[10 + i : 30 + i, 12:34] = (120, 40, 150)
        ann = CellAnnotations((Cell(Box(12, 10 + i, 34, 30 + i), "cell"),), width=64, height=64)
        out.append(DetectionSample(f"s{i}", ann, group=f"g{i}", mpp=0.3, loader=lambda img=img: img))
    return out


def _config(**kw: object) -> DetectorTrainConfig:
    base: dict[str, object] = {"classes": ("cell",), "mpp": 0.3, "tile_size": 64, "crop_size": 64,
                               "epochs": 1, "batch_size": 2, "warmup_iters": 1, "seed": 3}
    base.update(kw)
    return DetectorTrainConfig(**base)  # type: ignore[arg-type]


def test_train_checkpoint_resume_and_determinism(tmp_path: Path) -> None:
    train, val = _samples(4), _samples(1)
    r1 = train_detector(train, val, _config(), tmp_path / "a", progress=False)
    assert r1.finished and r1.best_weights is not None and r1.last_checkpoint.is_file()
    assert len(r1.history) == 1 and r1.history[0].val_ap50 is not None
    det = load_detector(r1.best_weights, device="cpu")
    assert det.classes == ("cell",) and det.mpp == 0.3 and det.tile_size == 64
    # a finished run resumes to "nothing to do"
    again = train_detector(train, val, _config(), tmp_path / "a", progress=False)
    assert again.finished and len(again.history) == 1
    # same seed, same data -> the same weights
    r2 = train_detector(train, val, _config(), tmp_path / "b", progress=False)
    assert r2.best_weights is not None
    sd1 = torch.load(r1.best_weights, weights_only=True)["state_dict"]
    sd2 = torch.load(r2.best_weights, weights_only=True)["state_dict"]
    assert all(torch.equal(sd1[k], sd2[k]) for k in sd1)


def test_stop_and_resume_gives_the_same_weights(tmp_path: Path) -> None:
    train = _samples(4)
    full = train_detector(train, [], _config(epochs=2), tmp_path / "full", progress=False)
    part = train_detector(train, [], _config(epochs=2, max_minutes=0.0), tmp_path / "part", progress=False)
    assert not part.finished  # stopped after its first step
    done = train_detector(train, [], _config(epochs=2), tmp_path / "part", progress=False)
    assert done.finished and full.best_weights and done.best_weights
    sd1 = torch.load(full.best_weights, weights_only=True)["state_dict"]
    sd2 = torch.load(done.best_weights, weights_only=True)["state_dict"]
    assert all(torch.allclose(sd1[k], sd2[k]) for k in sd1)


def test_recalibrate_bn_sets_statistics_without_drawing_random_numbers() -> None:
    from marrowscope.engines.train_detector import recalibrate_bn
    from marrowscope.models.detector import build_detector, detector_spec

    torch.manual_seed(0)
    model = build_detector(detector_spec(("cell",), mpp=0.3, tile_size=64)).eval()
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert torch.all(bn.running_var == 1)
    state = torch.get_rng_state()
    images = [np.full((64, 64, 3), v, np.uint8) for v in (40, 120, 200)]
    assert recalibrate_bn(model, images, "cpu", batch_size=2) == 3
    assert torch.equal(state, torch.get_rng_state())
    assert not torch.all(bn.running_var == 1) and not model.training
    assert bn.momentum is not None  # restored


def test_init_weights_must_match_the_contract(tmp_path: Path) -> None:
    import pytest

    from marrowscope.errors import InputError
    from marrowscope.models.detector import build_detector, detector_spec, save_detector

    spec = detector_spec(("cell",), mpp=0.3, tile_size=64)
    torch.manual_seed(5)
    init = tmp_path / "init.pt"
    save_detector(init, build_detector(spec), spec, half=False)
    r = train_detector(_samples(2), [], _config(init_weights=str(init)), tmp_path / "ok", progress=False)
    assert r.finished
    other = detector_spec(("cell",), mpp=0.5, tile_size=64)
    bad = tmp_path / "bad.pt"
    save_detector(bad, build_detector(other), other)
    with pytest.raises(InputError, match="architecture"):
        train_detector(_samples(2), [], _config(init_weights=str(bad)), tmp_path / "bad", progress=False)


def test_init_weights_with_other_classes_keep_all_but_the_box_predictor(tmp_path: Path) -> None:
    from marrowscope.engines.train_detector import BOX_PREDICTOR
    from marrowscope.models.detector import build_detector, detector_spec, save_detector

    spec = detector_spec(("cell",), mpp=0.3, tile_size=64)
    torch.manual_seed(5)
    init = tmp_path / "init.pt"
    save_detector(init, build_detector(spec), spec, half=False)
    cfg = _config(classes=("cell", "red_cell"), init_weights=str(init), lr=0.0, warmup_iters=0)
    r = train_detector(_samples(2), [], cfg, tmp_path / "two", progress=False)
    assert r.finished and r.best_weights is not None
    det = load_detector(r.best_weights, device="cpu")
    assert det.classes == ("cell", "red_cell")
    before = torch.load(init, weights_only=True)["state_dict"]
    after = torch.load(r.best_weights, weights_only=True)["state_dict"]
    # lr 0: the loaded layers are the initial ones (BatchNorm statistics aside); the predictor is new
    convs = [k for k in before if k.endswith("weight") and "bn" not in k and not k.startswith(BOX_PREDICTOR)]
    assert convs and all(torch.equal(before[k], after[k]) for k in convs)
    assert after[BOX_PREDICTOR + "cls_score.weight"].shape[0] == 3  # background + two classes


def test_dataloader_workers_give_the_same_training(tmp_path: Path) -> None:
    # augmentation in 2 DataLoader worker processes draws exactly what the in-loop path draws
    train = _samples(4)
    a = train_detector(train, [], _config(epochs=2), tmp_path / "a", progress=False)
    b = train_detector(train, [], _config(epochs=2, workers=2), tmp_path / "b", progress=False)
    assert [h.loss for h in a.history] == [h.loss for h in b.history]
    assert a.best_weights is not None and b.best_weights is not None
    sd1 = torch.load(a.best_weights, weights_only=True)["state_dict"]
    sd2 = torch.load(b.best_weights, weights_only=True)["state_dict"]
    assert all(torch.equal(sd1[k], sd2[k]) for k in sd1)


def test_romanowsky_training_writes_its_stain_basis_and_is_deterministic(tmp_path: Path) -> None:
    import json

    from marrowscope.data.augment import AugmentConfig

    cfg = _config(augment=AugmentConfig(romanowsky=True))
    r1 = train_detector(_samples(4), [], cfg, tmp_path / "a", progress=False)
    r2 = train_detector(_samples(4), [], cfg, tmp_path / "b", progress=False)
    basis = json.loads((tmp_path / "a" / "stain_basis.json").read_text())["stain_basis"]
    assert np.asarray(basis).shape == (3, 3)
    assert r1.best_weights is not None and r2.best_weights is not None
    sd1 = torch.load(r1.best_weights, weights_only=True)["state_dict"]
    sd2 = torch.load(r2.best_weights, weights_only=True)["state_dict"]
    assert all(torch.equal(sd1[k], sd2[k]) for k in sd1)
    plain = train_detector(_samples(4), [], _config(), tmp_path / "c", progress=False)
    assert not (tmp_path / "c" / "stain_basis.json").exists() and plain.best_weights is not None


def test_best_epoch_is_picked_on_the_selected_classes() -> None:
    from types import SimpleNamespace

    from marrowscope.engines.train_detector import _selection_ap

    m = SimpleNamespace(ap50=0.7, ap50_per_class={"cell": 0.9, "red_cell": 0.5})
    assert _selection_ap(m, None) == 0.7  # every class
    assert _selection_ap(m, ("cell",)) == 0.9  # the counted class alone
    nan = SimpleNamespace(ap50=0.6, ap50_per_class={"cell": float("nan"), "red_cell": 0.6})
    assert _selection_ap(nan, ("cell",)) == 0.6  # no cell truth in validation: the mean over classes
