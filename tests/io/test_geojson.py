"""QuPath GeoJSON writer/reader: structure QuPath expects, round trip, QuPath exports, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from marrowscope.cells import Box, Cell, CellAnnotations, Region
from marrowscope.errors import InputError
from marrowscope.io.annotations.geojson import label_color, read_geojson, write_geojson
from marrowscope.taxonomy import LABELS


def _ann() -> CellAnnotations:
    return CellAnnotations(
        cells=(
            Cell(Box(10, 20, 40, 50), "lymphoblast", cell_id=7, roi_id=1,
                 session_labels=("lymphoblast", "myeloblast")),
            Cell(Box(50.5, 10.25, 60, 30), None, cell_id=8, roi_id=-1),
            Cell(Box(0, 0, 120, 90), "WBC", cell_id=9, score=0.8,
                 probabilities={"myeloblast": 0.8, "lymphoblast": 0.2}),
        ),
        regions=(Region(Box(0, 0, 100, 80), roi_id=1), Region(Box(5, 5, 9, 9), roi_id=2, label="monolayer")),
        slide_id="s1", image_path="/x/s1.dcm", width=200, height=100, mpp=0.11,
    )


def _poly(*pts: list[int]) -> dict[str, object]:
    return {"type": "Polygon", "coordinates": [[*pts, pts[0]]]}


def _hex(c: str) -> list[int]:
    return [int(c[i : i + 2], 16) for i in (1, 3, 5)]


def test_structure_qupath_expects(tmp_path: Path) -> None:
    out = write_geojson(_ann(), tmp_path / "s1.geojson", colors={"WBC": "#0000ff"})
    doc = json.loads(out.read_text())
    assert doc["type"] == "FeatureCollection"
    feats = doc["features"]
    assert len(feats) == 5
    assert len({f["id"] for f in feats}) == 5
    for f in feats:
        assert f["type"] == "Feature"
        geom = f["geometry"]
        assert geom["type"] == "Polygon"
        ring = geom["coordinates"][0]
        assert len(ring) == 5 and ring[0] == ring[-1]  # closed rectangle
        props = f["properties"]
        assert props["objectType"] in ("annotation", "detection")
    regions = [f for f in feats if f["properties"]["objectType"] == "annotation"]
    cells = [f for f in feats if f["properties"]["objectType"] == "detection"]
    assert len(regions) == 2 and len(cells) == 3
    lb = cells[0]["properties"]
    assert lb["classification"] == {"name": "lymphoblast", "color": _hex(LABELS["lymphoblast"].color)}
    assert lb["measurements"] == {"cell_id": 7, "roi_id": 1}
    assert "classification" not in cells[1]["properties"]  # unlabeled box: QuPath shows it unclassified
    wbc = cells[2]["properties"]
    assert wbc["classification"]["color"] == [0, 0, 255]
    assert wbc["measurements"]["prob_myeloblast"] == 0.8 and wbc["measurements"]["score"] == 0.8
    for f in feats:
        cls = f["properties"].get("classification")
        if cls is not None:
            assert isinstance(cls["name"], str)
            assert len(cls["color"]) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in cls["color"])
    # Deterministic output: same input, same bytes.
    again = write_geojson(_ann(), tmp_path / "again.geojson", colors={"WBC": "#0000ff"})
    assert again.read_bytes() == out.read_bytes()


def test_round_trip(tmp_path: Path) -> None:
    ann = _ann()
    back = read_geojson(write_geojson(ann, tmp_path / "s1.geojson"))
    assert back.cells == ann.cells
    assert back.regions == ann.regions
    meta = (back.slide_id, back.image_path, back.width, back.height, back.mpp)
    assert meta == ("s1", "/x/s1.dcm", 200, 100, 0.11)
    # Cells as editable annotations still read back as cells.
    back2 = read_geojson(write_geojson(ann, tmp_path / "b.geojson", object_type="annotation"))
    assert [c.label for c in back2.cells] == ["lymphoblast", "WBC"]  # the unclassified one reads as a region
    with pytest.raises(ValueError, match="object_type"):
        write_geojson(ann, tmp_path / "c.geojson", object_type="blob")


def test_label_colours() -> None:
    assert label_color("myeloblast") == _hex(LABELS["myeloblast"].color)
    c = label_color("something_unknown")
    assert c == label_color("something_unknown") and len(c) == 3
    assert label_color("myeloblast", {"myeloblast": "#010203"}) == [1, 2, 3]


def test_reads_qupath_exports(tmp_path: Path) -> None:
    # QuPath 0.2/0.3 style: a bare list, colorRGB, measurements as a list, MultiPolygon, a Point.
    old = [
        {"type": "Feature", "id": "PathDetectionObject",
         "geometry": {"type": "MultiPolygon", "coordinates": [[[[1, 1], [5, 1], [5, 4], [1, 1]]],
                                                              [[[8, 8], [9, 8], [9, 12], [8, 8]]]]},
         "properties": {"objectType": "cell", "isLocked": False,
                        "classification": {"name": "Lymphocyte", "colorRGB": -3670016},
                        "measurements": [{"name": "Nucleus: Area", "value": 12.5},
                                         {"name": "score", "value": 0.5}]}},
        {"type": "Feature", "geometry": _poly([0, 0], [50, 0], [50, 50]),
         "properties": {"objectType": "annotation"}},
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [3, 3]},
         "properties": {"objectType": "annotation", "classification": {"name": "x"}}},
    ]
    p = tmp_path / "old.json"
    p.write_text(json.dumps(old))
    ann = read_geojson(p)
    assert ann.cells == (Cell(Box(1, 1, 9, 12), "Lymphocyte", score=0.5),)
    assert ann.regions == (Region(Box(0, 0, 50, 50), roi_id=0),)
    assert ann.extra["skipped_features"] == "1" and ann.slide_id == "old"
    # QuPath 0.4+: one Feature on its own.
    one = {"type": "Feature", "geometry": _poly([2, 3], [4, 3], [4, 6]),
           "properties": {"objectType": "annotation",
                          "classification": {"name": "Tumor", "color": [200, 0, 0]}}}
    p.write_text(json.dumps(one))
    assert read_geojson(p).cells == (Cell(Box(2, 3, 4, 6), "Tumor"),)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{oops", "malformed JSON"),
        ('{"type": "Point", "coordinates": [1, 2]}', "not GeoJSON"),
        ('{"type": "FeatureCollection"}', "no 'features' list"),
        ('{"type": "FeatureCollection", "features": [3]}', "feature 0 is not an object"),
        ('[{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[["a", 1]]]}}]',
         "feature 0: malformed coordinates"),
        (json.dumps({"type": "FeatureCollection", "marrowscope": {"width": 10, "height": 10},
                     "features": [{"type": "Feature", "geometry": _poly([0, 0], [20, 0], [20, 5])}]}),
         r"feature 0 \(None\): box \(0, 0, 20, 5\) lies outside the 10x10 image"),
    ],
)
def test_bad_input(tmp_path: Path, content: str, message: str) -> None:
    p = tmp_path / "bad.geojson"
    p.write_text(content)
    with pytest.raises(InputError, match=message) as exc:
        read_geojson(p)
    assert str(exc.value).startswith(str(p)) and "\n" not in str(exc.value)
