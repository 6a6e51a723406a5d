"""Augmentations, dataset adapters, class mapping and grouped splits for the detector."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from marrowscope.cells import Box, Cell, CellAnnotations
from marrowscope.data.augment import AugmentConfig, Augmenter, hflip, rot90, vflip
from marrowscope.data.detection_datasets import (
    DetectionSample,
    class_mapping,
    load_detection_dataset,
    map_annotations,
    parse_dataset_arg,
    split_by_group,
)
from marrowscope.errors import InputError


def _blob_box(img: np.ndarray) -> list[int]:
    ys, xs = np.nonzero(img[..., 0] > 0)
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def test_geometric_augmentations_move_boxes_with_pixels() -> None:
    img = np.zeros((30, 40, 3), np.uint8)
    img[5:12, 20:31] = 255
    boxes = np.array([[20.0, 5.0, 31.0, 12.0]])
    for k in range(4):
        out, b = rot90(img, boxes, k)
        assert _blob_box(out) == b[0].astype(int).tolist()
    for f in (hflip, vflip):
        out, b = f(img, boxes)
        assert _blob_box(out) == b[0].astype(int).tolist()


def test_augmenter_is_deterministic_and_keeps_dtype() -> None:
    rng_img = np.random.default_rng(3)
    img = rng_img.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    boxes = np.array([[4.0, 4.0, 20.0, 24.0]])
    aug = Augmenter(AugmentConfig(stain=1.0, color=1.0, blur=1.0))
    a1, b1 = aug.image_boxes(img, boxes, np.random.default_rng(7))
    a2, b2 = aug.image_boxes(img, boxes, np.random.default_rng(7))
    assert a1.dtype == np.uint8 and np.array_equal(a1, a2) and np.array_equal(b1, b2)
    assert not np.array_equal(a1, aug.image_boxes(img, boxes, np.random.default_rng(8))[0])
    crop = aug.image(img[:32, :32], np.random.default_rng(0))
    assert crop.shape == (32, 32, 3) and crop.flags["C_CONTIGUOUS"]


def test_romanowsky_augmenter_keeps_shapes_ranges_boxes_and_is_seeded() -> None:
    from marrowscope.data.augment import stain_basis_of

    img = np.full((40, 56, 3), 235, np.uint8)
    img[8:24, 10:30] = (110, 50, 150)  # a purple nucleus
    img[26:38, 30:50] = (215, 150, 160)  # a pink red cell
    basis = stain_basis_of([img, img[:20]], seed=0)
    assert basis.shape == (3, 3) and np.allclose(np.linalg.norm(basis, axis=1), 1.0)
    assert basis[0, 0] / np.linalg.norm(basis[0]) >= basis[1, 0] / np.linalg.norm(basis[1])  # blue dye first
    boxes = np.array([[10.0, 8.0, 30.0, 24.0]])
    aug = Augmenter(AugmentConfig(romanowsky=True, rot90=False, hflip=0, vflip=0, scale_range=(1, 1)),
                    stain_basis=basis)
    a1, b1 = aug.image_boxes(img, boxes, np.random.default_rng(5))
    a2, _ = aug.image_boxes(img, boxes, np.random.default_rng(5))
    assert a1.dtype == np.uint8 and a1.shape == img.shape and np.array_equal(a1, a2)
    assert np.array_equal(b1, boxes)  # photometry only
    draws = [aug.image_boxes(img, boxes, np.random.default_rng(k))[0] for k in range(6)]
    assert len({d.tobytes() for d in draws}) == 6
    # the nucleus stays darker than the background under every draw (stain jitter, not a colour scramble)
    assert all(d[10:22, 12:28].mean() < d[:4, :].mean() for d in draws)
    # and the basic photometry is a different recipe
    basic = Augmenter(AugmentConfig(rot90=False, hflip=0, vflip=0, scale_range=(1, 1)))
    assert not np.array_equal(basic.image_boxes(img, boxes, np.random.default_rng(5))[0], a1)


def test_class_mapping_rules() -> None:
    assert class_mapping(["WBC", "Platelets", "rbc"], ("WBC", "RBC", "Platelet")) == {
        "WBC": "WBC", "Platelets": "Platelet", "rbc": "RBC"}
    assert class_mapping(["x", "y"], ("cell",)) == {"x": "cell", "y": "cell"}
    assert class_mapping(["PC"], ("Platelet",), {"PC": "Platelet"}) == {"PC": "Platelet"}
    with pytest.raises(InputError, match="PC"):
        class_mapping(["PC", "WBC"], ("WBC", "RBC"))
    ann = CellAnnotations((Cell(Box(0, 0, 5, 5), None), Cell(Box(1, 1, 6, 6), "lymphoblast")))
    assert [c.label for c in map_annotations(ann, ("cell",))] == ["cell", "cell"]
    with pytest.raises(InputError, match="one-class"):
        map_annotations(ann, ("a", "b"), {"lymphoblast": "a"})


def test_split_keeps_groups_together() -> None:
    samples = [DetectionSample(f"i{i}", CellAnnotations(()), group=f"g{i // 3}") for i in range(30)]
    train, val = split_by_group(samples, 0.2, seed=1)
    assert len(train) + len(val) == 30 and val
    assert not {s.group for s in train} & {s.group for s in val}
    assert split_by_group(samples, 0.2, seed=1) == (train, val)


def _yolo_folder(root: Path) -> Path:
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        Image.fromarray(np.full((40, 50, 3), 200, np.uint8)).save(root / "images" / split / f"{split}1.jpg")
        (root / "labels" / split / f"{split}1.txt").write_text("0 0.5 0.5 0.2 0.25\n1 0.2 0.2 0.1 0.1\n")
    (root / "labels" / "classes.txt").write_text("WBC\nPlatelets\n")
    return root


def test_yolo_dataset_arg(tmp_path: Path) -> None:
    root = _yolo_folder(tmp_path / "yolo")
    assert parse_dataset_arg(f"yolo:{root}:val") == ("yolo", str(root), "val")
    samples = load_detection_dataset(f"yolo:{root}", ("WBC", "RBC", "Platelet"))
    assert len(samples) == 2
    s = samples[0]
    assert [c.label for c in s.annotations] == ["WBC", "Platelet"]
    assert s.annotations.boxes_array()[0].tolist() == pytest.approx([20, 15, 30, 25])
    assert s.load().shape == (40, 50, 3)
    with pytest.raises(InputError, match="FORMAT"):
        parse_dataset_arg(f"png:{root}")


def test_detector_run_takes_the_photometric_augmentation(tmp_path: Path) -> None:
    from marrowscope.engines.detector_runs import DetectorRunRequest, prepare_detector_run

    root = _yolo_folder(tmp_path / "yolo")
    req = DetectorRunRequest(datasets=(f"yolo:{root}",), val_datasets=(f"yolo:{root}:val",))
    assert not prepare_detector_run(req).config.augment.romanowsky
    rom = prepare_detector_run(replace(req, augment="romanowsky")).config
    assert rom.augment.romanowsky and rom.augment.scale_range == AugmentConfig().scale_range
    assert not prepare_detector_run(replace(req, augment="basic")).config.augment.romanowsky
    with pytest.raises(InputError, match="unknown augmentation"):
        prepare_detector_run(replace(req, augment="hed"))


def _blood_root(root: Path) -> Path:
    """A tiny data root in the BCCD (VOC) + TXL-PBC (YOLO) layout the blood recipe reads."""
    from marrowscope.io.annotations.voc import write_voc_folder
    from marrowscope.io.annotations.yolo import write_yolo_folder

    def ann(path: Path) -> CellAnnotations:
        Image.fromarray(np.full((48, 64, 3), 180, np.uint8)).save(path)
        return CellAnnotations((Cell(Box(4, 4, 20, 20), "RBC"), Cell(Box(30, 8, 50, 30), "WBC")),
                               image_path=str(path), width=64, height=48)

    bccd = root / "bccd" / "BCCD"
    (bccd / "JPEGImages").mkdir(parents=True)
    for split, ids in (("train", ["b0", "b1"]), ("val", ["b2"]), ("test", ["b3"])):
        write_voc_folder([ann(bccd / "JPEGImages" / f"{i}.jpg") for i in ids], bccd, split=split)
    txl = root / "txl_pbc" / "TXL_PBC"
    (root / "src").mkdir()
    for split, ids in (("train", ["t0", "t1", "t2"]), ("val", ["t3"])):
        anns = [ann(root / "src" / f"{i}.jpg") for i in ids]
        write_yolo_folder(anns, txl, ("WBC", "RBC", "Platelet"), split)
    (root / "txl_pbc" / "bccd_duplicates.csv").write_text(
        "txl_path,txl_split,bccd_path,bccd_voc_split,dhash_distance\n"
        "TXL_PBC/images/train/t0.jpg,train,BCCD/JPEGImages/b0.jpg,train,0\n"
        "TXL_PBC/images/train/t1.jpg,train,BCCD/JPEGImages/b3.jpg,test,0\n")
    return root


def test_blood_recipe_uses_bccd_split_and_leaves_out_txl_copies(tmp_path: Path) -> None:
    from marrowscope.data.detection_datasets import blood_recipe_samples

    root = _blood_root(tmp_path)
    train, val = blood_recipe_samples(root, bccd_repeats=3)
    assert sorted(s.image_id for s in train) == ["b0"] * 3 + ["b1"] * 3 + ["t2", "t3"]
    assert [s.image_id for s in val] == ["b2"]  # BCCD val, BCCD's own boxes; test never used
    assert all(s.mpp == 0.075 for s in train + val)
    assert [c.label for c in val[0].annotations] == ["RBC", "WBC"]
    (root / "txl_pbc" / "bccd_duplicates.csv").unlink()
    with pytest.raises(InputError, match="blood recipe data"):
        blood_recipe_samples(root)


def test_leave_one_source_out_holds_every_image_of_the_source_back(tmp_path: Path) -> None:
    from marrowscope.data.detection_datasets import leave_one_source_out

    root = _blood_root(tmp_path)
    sources = {"t0": "BCCD", "t1": "BCCD", "t2": "PBC", "t3": "Raabin-WBC"}
    rows = ["path,label_path,split,source_inferred_from_size"]
    for stem, src in sources.items():
        split = "val" if stem == "t3" else "train"
        rows.append(f"TXL_PBC/images/{split}/{stem}.jpg,TXL_PBC/labels/{split}/{stem}.txt,{split},{src}")
    (root / "txl_pbc" / "manifest.csv").write_text("\n".join(rows) + "\n")

    train, val, test = leave_one_source_out(root, "pbc")
    assert sorted(s.image_id for s in train) == ["b0"] * 3 + ["b1"] * 3  # t2 (PBC) held out
    assert [s.image_id for s in val] == ["b2"]
    assert [(s.image_id, s.mpp) for s in test] == [("t2", 0.1)]  # at PBC's own scale
    assert [c.label for c in test[0].annotations] == ["cell"]  # white cells only

    train, val, test = leave_one_source_out(root, "bccd")
    assert [s.image_id for s in train] == ["t2"]  # no BCCD field, and no TXL copy of one
    assert [(s.image_id, s.mpp) for s in val] == [("t3", 0.075)]  # the other sources' TXL val
    assert sorted(s.image_id for s in test) == ["t0", "t1"]
    # per-source scales (e.g. read from each source's red cells): training, validation and test alike
    from marrowscope.data.ood_datasets import txl_source_scales

    scales = txl_source_scales(root / "txl_pbc")
    assert scales == pytest.approx({"bccd": 7.5 / 16, "pbc": 7.5 / 16, "raabin": 7.5 / 16})  # 16 px RBCs
    train, val, test = leave_one_source_out(root, "bccd", txl_mpp={"pbc": 0.11, "raabin": 0.06})
    assert [(s.image_id, s.mpp) for s in train] == [("t2", 0.11)]
    assert [(s.image_id, s.mpp) for s in val] == [("t3", 0.06)]
    assert {s.mpp for s in test} == {0.075}  # a source the mapping does not name keeps its assumed scale
    train, _, test = leave_one_source_out(root, "raabin", txl_mpp={"pbc": 0.11, "raabin": 0.06})
    assert {(s.image_id, s.mpp) for s in train} == {("b0", 0.075), ("b1", 0.075), ("t2", 0.11)}
    assert [(s.image_id, s.mpp) for s in test] == [("t3", 0.06)]
    with pytest.raises(InputError, match="unknown TXL-PBC source"):
        leave_one_source_out(root, "elsewhere")
    with pytest.raises(InputError, match="no images of source 'bcd'"):
        leave_one_source_out(root, "bcd")


def test_blood_recipe_cli_trains_with_an_epoch_override(tmp_path: Path) -> None:
    import json

    from marrowscope.cli.main import main

    root = _blood_root(tmp_path / "data")
    out = tmp_path / "run"
    rc = main(["train", "detector", "--recipe", "blood", "--data-root", str(root), "--epochs", "1",
               "--out", str(out)])
    assert rc == 0
    config = json.loads((out / "config.json").read_text())
    assert config["epochs"] == 1 and config["mpp"] == 0.1 and config["n_train"] == 8 and config["n_val"] == 1
    hist = json.loads((out / "history.json").read_text())
    assert len(hist) == 1 and hist[0]["val_ap50"] is not None  # validated on BCCD val after the last epoch
    assert (out / "best.pt").is_file()


def test_explicit_class_map_matches_plural_label_names() -> None:
    # TXL-PBC's data.yaml and BCCD say "Platelets"; a mapping written "Platelet=" must still drop them
    m = class_mapping(["WBC", "RBC", "Platelets"], ("cell",), {"WBC": "cell", "RBC": None, "Platelet": None})
    assert m == {"WBC": "cell", "RBC": None, "Platelets": None}


def test_marrow_recipe_takes_white_cells_as_cells_and_holds_out_txl_val(tmp_path: Path) -> None:
    from marrowscope.data.detection_datasets import marrow_recipe_samples
    from marrowscope.data.synth.cohort import SynthConfig, generate_cohort

    root = _blood_root(tmp_path / "data")
    cohort = tmp_path / "cohort"
    generate_cohort(SynthConfig(n_patients=2, seed=5, slide_size=1536, roi_size=512, n_rois=1,
                                cells_per_roi=12), cohort)
    train, val = marrow_recipe_samples(root, cohort, bccd_repeats=2, cohort_repeats=3, val_fraction=0.5,
                                       classes=("cell",))
    blood = [s for s in train if s.mpp == 0.075]
    assert sorted(s.image_id for s in blood) == ["b0", "b0", "b1", "b1", "t2"]  # t3 (TXL val) held out
    assert all([c.label for c in s.annotations] == ["cell"] for s in blood)  # the WBC; the RBC dropped
    synth = [s for s in train if s.mpp != 0.075]
    assert len(synth) == 3 and len({s.image_id for s in synth}) == 1  # one training patient, listed 3 times
    assert sorted(s.image_id for s in val if s.mpp == 0.075) == ["b2"]
    assert len([s for s in val if s.mpp != 0.075]) == 1  # the other patient validates
    assert {s.group for s in synth}.isdisjoint(s.group for s in val)
    with pytest.raises(InputError, match="no DICOM slide"):
        marrow_recipe_samples(root, tmp_path / "data", classes=("cell",))  # not a cohort folder
    # the recipe's red_cell class would learn this cohort's unboxed red cells as background: refused
    with pytest.raises(InputError, match="--box-red-cells"):
        marrow_recipe_samples(root, cohort)


def test_marrow_recipe_trains_red_cells_as_their_own_class(tmp_path: Path) -> None:
    from marrowscope.data.detection_datasets import marrow_recipe_samples
    from marrowscope.data.synth.cohort import SynthConfig, generate_cohort
    from marrowscope.engines.train_detector import MARROW_CLASSES, marrow_recipe_config

    root = _blood_root(tmp_path / "data")
    cohort = tmp_path / "cohort"
    generate_cohort(SynthConfig(n_patients=2, seed=5, slide_size=1536, roi_size=512, n_rois=1,
                                cells_per_roi=8, box_red_cells=True), cohort)
    train, val = marrow_recipe_samples(root, cohort, bccd_repeats=1, val_fraction=0.5)
    blood = [s for s in train + val if s.mpp == 0.075]
    assert all(sorted(c.label for c in s.annotations) == ["cell", "red_cell"] for s in blood)  # WBC, RBC
    synth = [c.label for s in train + val if s.mpp != 0.075 for c in s.annotations]
    assert synth.count("red_cell") > 10 and synth.count("cell") > 0
    cfg = marrow_recipe_config()
    assert cfg.classes == MARROW_CLASSES == ("cell", "red_cell") and cfg.select_classes == ("cell",)


def test_validation_baseline_scores_one_and_two_class_models_on_the_same_cell_truths(tmp_path: Path) -> None:
    import sys

    from marrowscope.data.synth.cohort import SynthConfig, generate_cohort
    from marrowscope.models.detector import build_detector, detector_spec, save_detector

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from detector_val_baseline import cell_val

    root = _blood_root(tmp_path / "data")
    cohort = tmp_path / "cohort"
    generate_cohort(SynthConfig(n_patients=2, seed=5, slide_size=1536, roi_size=512, n_rois=1,
                                cells_per_roi=8, box_red_cells=True), cohort)
    rows = []
    for classes in (("cell",), ("cell", "red_cell")):
        spec = detector_spec(classes, mpp=0.25, tile_size=128)
        w = tmp_path / f"{len(classes)}.pt"
        save_detector(w, build_detector(spec), spec)
        rows.append(cell_val(str(w), root, cohort))
    for part in ("pooled", "bccd_val", "cohort_val"):
        assert rows[0][part]["n_cell_truths"] == rows[1][part]["n_cell_truths"] > 0
        assert rows[0][part]["n_images"] == rows[1][part]["n_images"] > 0
    parts = rows[0]["bccd_val"]["n_images"] + rows[0]["cohort_val"]["n_images"]
    assert rows[0]["pooled"]["n_images"] == parts
