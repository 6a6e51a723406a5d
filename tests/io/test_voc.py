"""Pascal VOC reader/writer: real BCCD counts, tiny round trips, bad input."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from marrowscope.cells import Box, Cell, CellAnnotations
from marrowscope.errors import InputError
from marrowscope.io.annotations.voc import read_voc, read_voc_folder, voc_splits, write_voc, write_voc_folder


def _image(path: Path, w: int = 64, h: int = 48) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (w, h), (200, 100, 150)).save(path)
    return path


def _xml(objects: str, w: int = 64, h: int = 48, filename: str = "a.jpg") -> str:
    return (
        f"<annotation><filename>{filename}</filename><size><width>{w}</width><height>{h}</height>"
        f"<depth>3</depth></size>{objects}</annotation>"
    )


def _obj(name: str, x1: float, y1: float, x2: float, y2: float) -> str:
    return (
        f"<object><name>{name}</name><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin>"
        f"<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
    )


def test_bccd_counts_match_manifest(shared_data: Path) -> None:
    root = shared_data / "bccd"
    manifest = pd.read_csv(root / "manifest.csv")
    anns = read_voc_folder(root)  # the folder above BCCD/ is accepted
    assert len(anns) == len(manifest) == 337
    counts: Counter[str] = Counter()
    dropped = 0
    for a in anns:
        counts.update(a.label_counts())
        dropped += int(a.extra.get("dropped_boxes", 0))
        assert (a.width, a.height) == (640, 480)
        assert Path(a.image_path or "").is_file()
        assert all(c.box.within(640, 480) for c in a.cells)
    # Two RBC boxes in BCCD have zero area (00338, 00343): dropped, and counted.
    assert dropped == 2
    assert counts["WBC"] == manifest["n_WBC"].sum() == 345
    assert counts["Platelets"] == manifest["n_Platelets"].sum() == 346
    assert counts["RBC"] + dropped == manifest["n_RBC"].sum() == 3823
    # Per-image counts agree too (the manifest was built from the XML).
    by_id = {Path(a.image_path or "").name: a.label_counts() for a in anns}
    for row in manifest.itertuples():
        c = by_id[Path(row.path).name]
        assert c["WBC"] == row.n_WBC and c["Platelets"] == row.n_Platelets


def test_bccd_splits(shared_data: Path) -> None:
    root = shared_data / "bccd" / "BCCD"
    manifest = pd.read_csv(shared_data / "bccd" / "manifest.csv")
    assert {"train", "val", "test", "trainval"} <= set(voc_splits(root))
    for split in ("train", "val", "test"):
        anns = read_voc_folder(root, split)
        assert len(anns) == int((manifest["voc_split"] == split).sum())
        assert all(a.extra["split"] == split for a in anns)
    first = read_voc(root / "Annotations" / "BloodImage_00000.xml")
    assert first.cells[0].label == "WBC"
    assert first.cells[0].box.as_tuple() == (260, 177, 491, 376)
    assert first.image_path == str(root / "JPEGImages" / "BloodImage_00000.jpg")


def test_round_trip(tmp_path: Path) -> None:
    img = _image(tmp_path / "voc" / "JPEGImages" / "img1.png")
    ann = CellAnnotations(
        cells=(Cell(Box(1, 2, 30, 40), "WBC"), Cell(Box(10.4, 5, 20.6, 9), None)),
        image_path=str(img), width=64, height=48, slide_id="img1",
    )
    written = write_voc_folder([ann], tmp_path / "voc", split="train")
    assert written == [tmp_path / "voc" / "Annotations" / "img1.xml"]
    back = read_voc_folder(tmp_path / "voc", "train")
    assert len(back) == 1
    b = back[0]
    assert (b.width, b.height, b.slide_id, b.image_path) == (64, 48, "img1", str(img))
    assert [c.label for c in b.cells] == ["WBC", "cell"]
    assert b.cells[0].box.as_tuple() == (1, 2, 30, 40)
    assert b.cells[1].box.as_tuple() == (10, 5, 21, 9)  # rounded to whole pixels


def test_write_reads_size_from_image(tmp_path: Path) -> None:
    img = _image(tmp_path / "x.png", 50, 40)
    ann = CellAnnotations(cells=(Cell(Box(0, 0, 5, 5), "RBC"),), image_path=str(img))
    out = write_voc(ann, tmp_path / "x.xml")
    assert read_voc(out).width == 50
    with pytest.raises(InputError, match="image size"):
        write_voc(CellAnnotations(cells=()), tmp_path / "y.xml")


def test_box_outside_image_rejected_or_clipped(tmp_path: Path) -> None:
    p = tmp_path / "a.xml"
    p.write_text(_xml(_obj("WBC", 10, 10, 80, 20)))
    with pytest.raises(InputError, match=r"a\.xml: object 0 \(WBC\): box \(10, 10, 80, 20\) lies outside"):
        read_voc(p)
    clipped = read_voc(p, clip=True)
    assert clipped.cells[0].box.as_tuple() == (10, 10, 64, 20)
    # Within the 1-pixel tolerance: clipped silently.
    p.write_text(_xml(_obj("WBC", 0, 0, 64.5, 48)))
    assert read_voc(p).cells[0].box.x2 == 64


def test_degenerate_box(tmp_path: Path) -> None:
    p = tmp_path / "a.xml"
    p.write_text(_xml(_obj("RBC", 5, 5, 5, 5) + _obj("RBC", 1, 1, 9, 9)))
    ann = read_voc(p)
    assert len(ann) == 1 and ann.cells[0].cell_id == 1 and ann.extra["dropped_boxes"] == "1"
    with pytest.raises(InputError, match="no area"):
        read_voc(p, drop_degenerate=False)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("<annotation><object>", "malformed VOC XML"),
        ("<foo/>", "root element is <foo>"),
        (_xml("<object><name>WBC</name></object>"), "no <bndbox>"),
        (_xml(_obj("WBC", "a", 1, 2, 3)), "non-numeric"),
        (_xml("<object><bndbox/></object>"), "has no <name>"),
    ],
)
def test_bad_xml(tmp_path: Path, text: str, message: str) -> None:
    p = tmp_path / "bad.xml"
    p.write_text(text)
    with pytest.raises(InputError, match=message) as exc:
        read_voc(p)
    assert str(p) in str(exc.value) and "\n" not in str(exc.value)


def test_bad_folders(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no Annotations"):
        read_voc_folder(tmp_path)
    (tmp_path / "Annotations").mkdir()
    with pytest.raises(InputError, match="no VOC annotation files"):
        read_voc_folder(tmp_path)
    with pytest.raises(InputError, match="no such split list"):
        read_voc_folder(tmp_path, "train")
    (tmp_path / "ImageSets" / "Main").mkdir(parents=True)
    (tmp_path / "ImageSets" / "Main" / "train.txt").write_text("missing_one\n")
    with pytest.raises(InputError, match="no XML in Annotations"):
        read_voc_folder(tmp_path, "train")
