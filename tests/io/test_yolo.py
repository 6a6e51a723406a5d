"""YOLO (Ultralytics layout) reader/writer: real TXL-PBC counts, tiny round trips, bad input."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from marrowscope.cells import Box, Cell, CellAnnotations
from marrowscope.errors import InputError
from marrowscope.io.annotations.yolo import (
    read_yolo_classes,
    read_yolo_file,
    read_yolo_folder,
    write_yolo_folder,
)


def _image(path: Path, w: int = 100, h: int = 50) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (w, h), (200, 100, 150)).save(path)
    return path


def _label(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_txl_pbc_counts_match_manifest(shared_data: Path) -> None:
    root = shared_data / "txl_pbc" / "TXL_PBC"
    manifest = pd.read_csv(shared_data / "txl_pbc" / "manifest.csv")
    # labels/classes.txt wins over data.yaml ("Platelets") and labels/train/classes.txt ("PC").
    assert read_yolo_classes(root) == ["WBC", "RBC", "Platelet"]
    anns = read_yolo_folder(root)
    assert len(anns) == len(manifest) == 1296
    assert Counter(a.extra["split"] for a in anns) == {"train": 1008, "val": 288}
    counts: Counter[str] = Counter()
    for a in anns:
        counts.update(a.label_counts())
        assert a.width is not None and a.height is not None
        assert all(c.box.within(a.width, a.height) for c in a.cells)
    assert counts == {
        "WBC": manifest["n_WBC"].sum(),
        "RBC": manifest["n_RBC"].sum(),
        "Platelet": manifest["n_Platelet"].sum(),
    }
    # Real image sizes are used (several source microscopes).
    sizes = {(a.width, a.height) for a in anns}
    expected = {(int(r.width), int(r.height)) for r in manifest.itertuples()}
    assert sizes == expected and len(sizes) >= 4


def test_txl_pbc_split(shared_data: Path) -> None:
    root = shared_data / "txl_pbc" / "TXL_PBC"
    val = read_yolo_folder(root, "val")
    assert len(val) == 288 and all(a.extra["split"] == "val" for a in val)
    with pytest.raises(InputError, match="no images for split 'test'"):
        read_yolo_folder(root, "test")  # held out: not in shared/


def test_flat_layout_and_denormalisation(tmp_path: Path) -> None:
    _image(tmp_path / "images" / "a.png", 100, 50)
    _image(tmp_path / "images" / "b.jpg", 100, 50)  # no label file: background image
    lines = "1 0.5 0.5 0.2 0.4\n\n0 0.1 0.1 0.2 0.2 0.9\n2 0.1 0.1 0.3 0.1 0.2 0.4\n"
    _label(tmp_path / "labels" / "a.txt", lines)
    (tmp_path / "classes.txt").write_text("x\ny\nz\n")
    a, b = read_yolo_folder(tmp_path)
    assert "split" not in a.extra
    assert (a.width, a.height, a.slide_id) == (100, 50, "a")
    assert [c.label for c in a.cells] == ["y", "x", "z"]
    assert a.cells[0].box.as_tuple() == pytest.approx((40, 15, 60, 35))
    assert a.cells[1].score == pytest.approx(0.9)
    assert a.cells[2].box.as_tuple() == pytest.approx((10, 5, 30, 20))  # polygon -> bounding box
    assert len(b) == 0


def test_data_yaml_names_and_roboflow_layout(tmp_path: Path) -> None:
    (tmp_path / "data.yaml").write_text("nc: 2\nnames: {0: cat, 1: dog}\n")
    _image(tmp_path / "valid" / "images" / "q.png")
    _label(tmp_path / "valid" / "labels" / "q.txt", "1 0.5 0.5 0.5 0.5\n")
    anns = read_yolo_folder(tmp_path)
    assert [c.label for c in anns[0].cells] == ["dog"] and anns[0].extra["split"] == "valid"


def test_round_trip_with_splits(tmp_path: Path) -> None:
    src = tmp_path / "src"
    anns = []
    for i, split in enumerate(("train", "val")):
        img = _image(src / f"im{i}.png", 80, 60)
        anns.append(
            (split, CellAnnotations(
                cells=(Cell(Box(10, 12, 30, 40), "WBC"), Cell(Box(0, 0, 80, 60), "Platelet")),
                image_path=str(img), width=80, height=60,
            ))
        )
    out = tmp_path / "yolo"
    for split, ann in anns:
        write_yolo_folder([ann], out, ["WBC", "RBC", "Platelet"], split=split)
    assert (out / "labels" / "classes.txt").read_text() == "WBC\nRBC\nPlatelet\n"
    import yaml

    data = yaml.safe_load((out / "data.yaml").read_text())
    assert data["names"] == {0: "WBC", 1: "RBC", 2: "Platelet"} and data["val"] == "images/val"
    back = read_yolo_folder(out)
    assert [a.extra["split"] for a in back] == ["train", "val"]
    for b, (_, a) in zip(back, anns, strict=True):
        assert [c.label for c in b.cells] == [c.label for c in a.cells]
        assert b.boxes_array() == pytest.approx(a.boxes_array(), abs=1e-3)
        assert Path(b.image_path or "").read_bytes() == Path(a.image_path or "").read_bytes()


def test_write_rejects_unknown_label(tmp_path: Path) -> None:
    ann = CellAnnotations(cells=(Cell(Box(1, 1, 5, 5), "monocyte"),), width=10, height=10, slide_id="s")
    with pytest.raises(InputError, match="'monocyte' is not among the classes"):
        write_yolo_folder([ann], tmp_path, ["WBC"], images="none")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("3 0.5 0.5 0.1 0.1", r"line 1: class index 3 is not in 0\.\.2"),
        ("-1 0.5 0.5 0.1 0.1", "class index -1"),
        ("0 0.5 0.5 0.1", "4 values"),
        ("0 a 0.5 0.1 0.1", "non-numeric"),
        ("0 50 25 10 10", "lies outside the 100x50 image"),  # pixels instead of 0-1
    ],
)
def test_bad_lines(tmp_path: Path, line: str, message: str) -> None:
    img = _image(tmp_path / "a.png")
    lbl = _label(tmp_path / "a.txt", line + "\n")
    with pytest.raises(InputError, match=message) as exc:
        read_yolo_file(lbl, img, ["x", "y", "z"])
    assert str(exc.value).startswith(str(lbl)) and "\n" not in str(exc.value)


def test_clip(tmp_path: Path) -> None:
    img = _image(tmp_path / "a.png", 100, 50)
    lbl = _label(tmp_path / "a.txt", "0 0.95 0.5 0.2 0.2\n")
    with pytest.raises(InputError, match="outside"):
        read_yolo_file(lbl, img, ["x"])
    ann = read_yolo_file(lbl, img, ["x"], clip=True)
    assert ann.cells[0].box.as_tuple() == pytest.approx((85, 20, 100, 30))


def test_bad_folders(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        read_yolo_folder(tmp_path / "nope")
    _image(tmp_path / "images" / "a.png")
    with pytest.raises(InputError, match="no class names"):
        read_yolo_folder(tmp_path)
    (tmp_path / "classes.txt").write_text("\n")
    with pytest.raises(InputError, match="classes.txt is empty"):
        read_yolo_folder(tmp_path)
    empty = tmp_path / "empty"
    (empty / "images").mkdir(parents=True)
    with pytest.raises(InputError, match="not a YOLO folder"):
        read_yolo_folder(empty, classes=["x"])
    (tmp_path / "data.yaml").write_text("names: [a, b\n")
    (tmp_path / "classes.txt").unlink()
    with pytest.raises(InputError, match="malformed YAML"):
        read_yolo_folder(tmp_path)
