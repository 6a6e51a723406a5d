"""COCO JSON reader/writer: round trip (incl. marrowscope extras), pycocotools loads it, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from marrowscope.cells import Box, Cell, CellAnnotations, Region
from marrowscope.errors import InputError
from marrowscope.io.annotations.coco import read_coco, write_coco


def _anns(tmp_path: Path) -> list[CellAnnotations]:
    img = tmp_path / "f1.png"
    Image.new("RGB", (120, 90)).save(img)
    a = CellAnnotations(
        cells=(
            Cell(Box(10, 20, 40, 50), "lymphoblast", cell_id=7, roi_id=1,
                 session_labels=("lymphoblast", "myeloblast")),
            Cell(Box(50.5, 10.25, 60, 30), None, cell_id=8, roi_id=-1),
            Cell(Box(0, 0, 120, 90), "myeloblast", cell_id=9, score=0.8,
                 probabilities={"myeloblast": 0.8, "lymphoblast": 0.2}),
        ),
        regions=(Region(Box(0, 0, 100, 80), roi_id=1),),
        image_path=str(img), width=120, height=90, slide_id="f1",
    )
    b = CellAnnotations(cells=(), image_path=str(tmp_path / "f2.png"), width=30, height=30, slide_id="f2")
    return [a, b]


def test_round_trip(tmp_path: Path) -> None:
    anns = _anns(tmp_path)
    out = write_coco(anns, tmp_path / "ann.json")
    back = read_coco(out)
    assert len(back) == 2
    for got, want in zip(back, anns, strict=True):
        assert got.cells == want.cells
        assert got.regions == want.regions
        assert (got.width, got.height, got.slide_id, got.image_path) == (
            want.width, want.height, want.slide_id, want.image_path,
        )
    doc = json.loads(out.read_text())
    names = [c["name"] for c in doc["categories"]]
    assert names == ["lymphoblast", "myeloblast", "region_of_interest", "unlabeled"]
    assert doc["annotations"][0]["bbox"] == [10, 20, 30, 30]  # x, y, w, h


def test_pycocotools_loads_it(tmp_path: Path) -> None:
    from pycocotools.coco import COCO

    out = write_coco(_anns(tmp_path), tmp_path / "ann.json", categories=["lymphoblast", "myeloblast",
                                                                       "region_of_interest"])
    coco = COCO(str(out))
    assert sorted(coco.getImgIds()) == [1, 2]
    assert len(coco.getAnnIds(imgIds=[1])) == 4 and coco.getAnnIds(imgIds=[2]) == []
    cat = coco.getCatIds(catNms=["lymphoblast"])[0]
    ann = coco.loadAnns(coco.getAnnIds(catIds=[cat]))[0]
    assert ann["bbox"] == [10, 20, 30, 30] and ann["area"] == 900


def test_foreign_file_and_images_root(tmp_path: Path) -> None:
    (tmp_path / "imgs").mkdir()
    Image.new("RGB", (64, 32)).save(tmp_path / "imgs" / "x.jpg")
    doc = {
        "images": [{"id": 5, "file_name": "x.jpg"}],  # no width/height: read from the image
        "annotations": [
            {"id": 11, "image_id": 5, "category_id": 3, "bbox": [1, 2, 3, 4], "iscrowd": 0},
            {"id": 12, "image_id": 5, "category_id": 3, "bbox": [5, 5, 0, 4]},  # no area: dropped
        ],
        "categories": [{"id": 3, "name": "WBC"}],
    }
    p = tmp_path / "a.json"
    p.write_text(json.dumps(doc))
    (ann,) = read_coco(p, images_root=tmp_path / "imgs")
    assert (ann.width, ann.height) == (64, 32)
    assert ann.cells == (Cell(Box(1, 2, 4, 6), "WBC", cell_id=11),)
    assert ann.extra["dropped_boxes"] == "1"


def test_write_rejects_unknown_category(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="'lymphoblast' is not among the categories"):
        write_coco(_anns(tmp_path), tmp_path / "x.json", categories=["myeloblast"])
    assert not (tmp_path / "x.json").exists()


def _doc(**over: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "images": [{"id": 1, "file_name": "a.png", "width": 10, "height": 10}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 2, 2]}],
        "categories": [{"id": 1, "name": "c"}],
    }
    doc.update(over)
    return doc


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "malformed JSON"),
        ("[]", "top level must be an object"),
        (json.dumps({"images": []}), "missing list"),
        (json.dumps(_doc(annotations=[{"image_id": 1, "category_id": 9, "bbox": [1, 1, 2, 2]}])),
         "category_id 9 is not in categories"),
        (json.dumps(_doc(annotations=[{"image_id": 4, "category_id": 1, "bbox": [1, 1, 2, 2]}])),
         "image_id 4 is not in images"),
        (json.dumps(_doc(annotations=[{"image_id": 1, "category_id": 1, "bbox": [1, 1, 2]}])),
         "bbox must be"),
        (json.dumps(_doc(annotations=[{"image_id": 1, "category_id": 1, "bbox": [1, "x", 2, 2]}])),
         "expected a number"),
        (json.dumps(_doc(annotations=[{"image_id": 1, "category_id": 1, "bbox": [5, 5, 20, 2]}])),
         r"annotations\[0\] \(c\): box \(5, 5, 25, 7\) lies outside the 10x10 image"),
        (json.dumps(_doc(annotations=[{"image_id": 1, "bbox": [5, 5, 2, 2]}])), "has no 'category_id'"),
    ],
)
def test_bad_input(tmp_path: Path, content: str, message: str) -> None:
    p = tmp_path / "bad.json"
    p.write_text(content)
    with pytest.raises(InputError, match=message) as exc:
        read_coco(p)
    assert str(exc.value).startswith(str(p)) and "\n" not in str(exc.value)


def test_clip(tmp_path: Path) -> None:
    p = tmp_path / "a.json"
    p.write_text(json.dumps(_doc(annotations=[{"image_id": 1, "category_id": 1, "bbox": [5, 5, 20, 2]}])))
    (ann,) = read_coco(p, clip=True)
    assert ann.cells[0].box.as_tuple() == (5, 5, 10, 7)
