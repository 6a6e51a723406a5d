"""Classifier data: crop geometry at slide borders, image folders (PBC layout), groups and splits."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from marrowscope.cells import Box, Cell
from marrowscope.data.classification_datasets import (
    PBC_CLASSES,
    SET,
    grouped_split,
    load_image_dataset,
    phash_groups,
)
from marrowscope.data.crops import crop_at, crop_box, crops_from_slide, image_to_contract
from marrowscope.errors import InputError
from marrowscope.io.annotations.imagefolder import read_image_folder
from marrowscope.io.slides.array import ArraySlide


def _gradient(h: int = 64, w: int = 96) -> np.ndarray:
    """Every pixel distinct: R = x, G = y, B = 7."""
    img = np.zeros((h, w, 3), dtype=np.uint8)
    img[..., 0] = np.arange(w)[None, :]
    img[..., 1] = np.arange(h)[:, None]
    img[..., 2] = 7
    return img


def test_crop_same_scale_inside_is_exact():
    img = _gradient()
    slide = ArraySlide(img, mpp=0.25)
    # box centred on pixel (40, 30): centre (40.5, 30.5)
    crop = crop_box(slide, Box(35, 25, 46, 36), mpp=0.25, size=15)
    assert crop.shape == (15, 15, 3)
    np.testing.assert_array_equal(crop, img[23:38, 33:48])
    assert tuple(crop[7, 7]) == (40, 30, 7)


def test_crop_at_slide_corner_pads_white_and_keeps_geometry():
    img = _gradient()
    slide = ArraySlide(img, mpp=0.25)
    crop = crop_at(slide, 0.5, 0.5, mpp=0.25, size=15)  # centred on pixel (0, 0)
    assert (crop[:7, :] == 255).all() and (crop[:, :7] == 255).all()
    np.testing.assert_array_equal(crop[7:, 7:], img[0:8, 0:8])
    assert tuple(crop[7, 7]) == (0, 0, 7)
    # bottom-right corner
    h, w = img.shape[:2]
    crop = crop_at(slide, w - 0.5, h - 0.5, mpp=0.25, size=15)
    np.testing.assert_array_equal(crop[:8, :8], img[h - 8 :, w - 8 :])
    assert (crop[8:, :] == 255).all() and (crop[:, 8:] == 255).all()
    # entirely outside: all white
    assert (crop_at(slide, -500, -500, mpp=0.25, size=9) == 255).all()


def test_crop_downscaled_at_border():
    img = np.zeros((80, 80, 3), dtype=np.uint8)
    img[..., 0] = 200  # uniform red slide
    slide = ArraySlide(img, mpp=0.25)
    crop = crop_at(slide, 0.0, 40.0, mpp=0.5, size=16)  # field 32 level-0 px, left half outside
    assert crop.shape == (16, 16, 3)
    assert (crop[:, :8] == 255).all()
    assert (crop[:, 8:, 0] == 200).all() and (crop[:, 8:, 1] == 0).all()
    cells = [Cell(box=Box(0, 30, 10, 50)), Box(30, 30, 50, 50)]
    batch = crops_from_slide(slide, cells, mpp=0.5, size=16)
    assert batch.shape == (2, 16, 16, 3)
    assert (batch[1, ..., 0] == 200).all()


def test_image_to_contract_resizes_and_pads():
    img = np.full((40, 40, 3), 90, dtype=np.uint8)
    out = image_to_contract(img, src_mpp=0.1, mpp=0.2, size=30)  # field 6 µm = 60 src px > 40
    assert out.shape == (30, 30, 3)
    assert (out[15, 15] == 90).all()
    assert (out[0, 0] == 255).all() and (out[:, :5] == 255).all()
    assert (out[5:25, 5:25] == 90).all()


def _write_pbc_folder(root: Path, n_per: int = 3, manifest: bool = True) -> None:
    rng = np.random.default_rng(0)
    rows = []
    spec = {"ig": ["PMY", "MY", "IG"], "neutrophil": ["SNE", "NEUTROPHIL"], "lymphocyte": ["LY"]}
    k = 0
    for group, fines in spec.items():
        (root / group).mkdir(parents=True, exist_ok=True)
        for fine in fines:
            for _ in range(n_per):
                k += 1
                name = f"{group}/{fine}_{1000 + k}.jpg"
                Image.fromarray(rng.integers(0, 255, (36, 36, 3), dtype=np.uint8)).save(root / name)
                rows.append({"path": name, "label": group, "fine_label": fine,
                             "fine_label_name": fine.lower(),
                             "width": 36, "height": 36, "phash": f"{rng.integers(0, 2**62):016x}"})
    if manifest:
        with open(root / "manifest.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)


def test_read_pbc_layout(tmp_path):
    _write_pbc_folder(tmp_path)
    items = read_image_folder(tmp_path)
    assert len(items) == 18
    assert {it.label for it in items} == {"ig", "neutrophil", "lymphocyte"}
    sne = [it for it in items if it.fine_label == "SNE"]
    assert len(sne) == 3 and all(it.path.is_file() for it in sne)
    assert len(items[0].extra["phash"]) == 16
    cs, unmapped = load_image_dataset("pbc", tmp_path, PBC_CLASSES, mpp=0.45, size=20)
    assert unmapped == {} and len(cs) == 18 and cs.images.shape == (18, 20, 20, 3)
    # IG and NEUTROPHIL (unspecified) become set-valued targets
    assert int((cs.target_kind == SET).sum()) == 6
    assert set(cs.source_labels) == {"ig", "neutrophil", "lymphocyte"}


def test_read_class_folders_without_manifest(tmp_path):
    _write_pbc_folder(tmp_path, manifest=False)
    items = read_image_folder(tmp_path)
    assert len(items) == 18
    assert {it.fine_label for it in items if it.label == "ig"} == {"PMY", "MY", "IG"}


def test_image_folder_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_image_folder(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no images found"):
        read_image_folder(empty)
    bad = tmp_path / "bad"
    _write_pbc_folder(bad, n_per=1)
    (bad / "manifest.csv").write_text("file,label\nx.jpg,ig\n")
    with pytest.raises(InputError, match="missing column"):
        read_image_folder(bad)
    (bad / "manifest.csv").write_text("path,label\nig/none.jpg,ig\n")
    with pytest.raises(InputError, match="do not exist"):
        read_image_folder(bad)
    loose = tmp_path / "loose"
    loose.mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(loose / "a.png")
    with pytest.raises(InputError, match="class"):
        read_image_folder(loose)


def test_phash_groups_and_grouped_split():
    hashes = ["0" * 16, "0" * 15 + "3", "f" * 16, "0f" * 8]  # first two differ in 2 bits
    g = phash_groups(hashes, max_distance=6)
    assert g[0] == g[1] and len(set(g.tolist())) == 3
    strata = ["a"] * 10 + ["b"] * 10
    groups = np.array([i // 2 for i in range(20)])
    tr, va = grouped_split(strata, groups, 0.2, seed=1)
    assert len(set(tr) & set(va)) == 0 and len(tr) + len(va) == 20
    assert set(groups[tr]).isdisjoint(set(groups[va]))
    assert sum(strata[i] == "a" for i in va) == 2
    tr2, va2 = grouped_split(strata, groups, 0.2, seed=1)
    assert va.tolist() == va2.tolist()


def test_grouped_split_by_patient():
    strata = ["a", "b", "c"] * 10
    groups = np.repeat(np.arange(6), 5)  # 6 patients with mixed labels
    tr, va = grouped_split(strata, groups, 0.3, seed=0)
    assert set(groups[tr]).isdisjoint(set(groups[va]))
    assert len(va) == 10 and len(tr) == 20
