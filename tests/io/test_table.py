"""Cell tables (DataFrame, Parquet, CSV): columns, round trips, bad input."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from marrowscope.cells import Box, Cell, CellAnnotations, Region
from marrowscope.errors import InputError
from marrowscope.io.annotations.table import (
    cells_to_frame,
    frame_to_cells,
    read_cell_table,
    read_cell_table_by_slide,
    write_cell_table,
)


def _ann(slide_id: str = "s1") -> CellAnnotations:
    return CellAnnotations(
        cells=(
            Cell(Box(10, 20, 40, 50), "lymphoblast", cell_id=7, roi_id=1,
                 session_labels=("lymphoblast", "other:smudge")),
            Cell(Box(50.5, 10.25, 60, 30), None, cell_id=None, roi_id=-1),
            Cell(Box(0, 0, 120, 90), "myeloblast", cell_id=9, score=0.8,
                 probabilities={"myeloblast": 0.8, "lymphoblast": 0.2}),
        ),
        regions=(Region(Box(0, 0, 100, 80), roi_id=1),),
        slide_id=slide_id, image_path="/x/s1.dcm", width=200, height=100, mpp=0.11,
    )


def test_columns() -> None:
    df = cells_to_frame(_ann())
    assert list(df.columns) == [
        "slide_id", "cell_id", "detection_id", "roi_id", "frame", "x1", "y1", "x2", "y2", "label", "score",
        "prob_myeloblast", "prob_lymphoblast", "session_labels",
    ]
    assert df["cell_id"].tolist()[0] == 7 and df["cell_id"].isna().tolist() == [False, True, False]
    assert df["session_labels"].tolist() == ["lymphoblast|other:smudge", "", ""]
    assert math.isnan(df["score"][0]) and df["score"][2] == 0.8
    fixed = cells_to_frame(_ann(), classes=["lymphoblast", "monoblast"])
    assert [c for c in fixed.columns if c.startswith("prob_")] == ["prob_lymphoblast", "prob_monoblast"]
    assert frame_to_cells(df).cells == _ann().cells


def test_round_trip_parquet_and_csv(tmp_path: Path) -> None:
    ann = _ann()
    pq_path, csv_path = write_cell_table(ann, tmp_path / "out" / "s1.cells")
    assert pq_path == tmp_path / "out" / "s1.cells.parquet" and csv_path == tmp_path / "out" / "s1.cells.csv"
    from_pq = read_cell_table(pq_path)
    assert from_pq.cells == ann.cells
    assert from_pq.regions == ann.regions
    assert (from_pq.slide_id, from_pq.width, from_pq.height, from_pq.mpp, from_pq.image_path) == (
        "s1", 200, 100, 0.11, "/x/s1.dcm",
    )
    from_csv = read_cell_table(csv_path)
    assert from_csv.cells == ann.cells and from_csv.slide_id == "s1"
    assert pd.read_csv(csv_path).shape == (3, 14)
    names = sorted(p.name for p in (tmp_path / "out").iterdir() if p.name != ".marrowscope-owned")
    assert names == ["s1.cells.csv", "s1.cells.parquet"]


def test_several_slides_and_empty(tmp_path: Path) -> None:
    pq_path, csv_path = write_cell_table([_ann("a"), _ann("b")], tmp_path / "t")
    for p in (pq_path, csv_path):
        parts = read_cell_table_by_slide(p)
        assert list(parts) == ["a", "b"] and all(len(v) == 3 for v in parts.values())
        with pytest.raises(InputError, match="holds 2 slides"):
            read_cell_table(p)
        assert read_cell_table(p, slide_id="b").slide_id == "b"
        with pytest.raises(InputError, match="no cells of slide 'c'"):
            read_cell_table(p, slide_id="c")
    empty = CellAnnotations(cells=(), slide_id="e", width=5, height=5)
    pq_path, csv_path = write_cell_table(empty, tmp_path / "e")
    back = read_cell_table(pq_path)
    assert len(back) == 0 and back.slide_id == "e" and back.width == 5
    assert len(read_cell_table(csv_path)) == 0


def test_nothing_half_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", boom)
    with pytest.raises(OSError, match="disk full"):
        write_cell_table(_ann(), tmp_path / "x")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("slide_id,x1,y1,x2\ns,1,2,3\n", r"lacks column\(s\) y2"),
        ("x1,y1,x2,y2\n1,2,a,4\n", "row 1: non-numeric box coordinate"),
        ("x1,y1,x2,y2\n1,2,3,4\n5,5,5,9\n", r"row 2: invalid box"),
        ("x1,y1,x2,y2,cell_id\n1,2,3,4,1.5\n", "row 1: 1.5 is not an integer"),
    ],
)
def test_bad_csv(tmp_path: Path, content: str, message: str) -> None:
    p = tmp_path / "bad.csv"
    p.write_text(content)
    with pytest.raises(InputError, match=message) as exc:
        read_cell_table(p)
    assert str(exc.value).startswith(str(p)) and "\n" not in str(exc.value)


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        read_cell_table(tmp_path / "none.csv")
    p = tmp_path / "bad.parquet"
    p.write_bytes(b"not parquet at all")
    with pytest.raises(InputError, match="cannot read the cell table"):
        read_cell_table(p)
    q = tmp_path / "x.txt"
    q.write_text("x")
    with pytest.raises(InputError, match="use .parquet or .csv"):
        read_cell_table(q)
