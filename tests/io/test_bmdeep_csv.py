"""BMDeep dataset CSVs: cells (labelled / detection-only), ROIs, old format, CSV <-> DICOM offset."""

from __future__ import annotations

from pathlib import Path

import pytest

from marrowscope.cells import Box, Cell, CellAnnotations, Region
from marrowscope.errors import InputError
from marrowscope.io.annotations.bmdeep_csv import (
    attach_rois,
    csv_to_dicom,
    csv_to_dicom_offset,
    dicom_to_csv,
    read_cells_csv,
    read_rois_csv,
    write_cells_csv,
    write_rois_csv,
)
from marrowscope.io.slides.base import SlideInfo, SlideLevel

SLIDE_A = "F7177163C833DFF4B38FC8D2872F1EC6_1_bm"
SLIDE_B = "0123456789ABCDEF0123456789ABCDEF_3_bm"

DEGRAN = "other:degranulierter Promyelozyt"
LABELLED = f"""cell_id,slide_id,roi_id,x1,y1,x2,y2,all_original_annotations,original_consensus_label
1001,{SLIDE_A},101,1500,2300,1620,2410,"lymphoblast,lymphoblast",lymphoblast
1002,{SLIDE_A},-1,5000,6000,5100,6090,"monoblast,promonocyte,monoblast",monoblast
1003,{SLIDE_A},101,1700,2300,1800,2400,"other:Zellhaufen,annotation_error",technically_unfit
1004,{SLIDE_B},7,10,20,110,120,"myelocytic_blast,promyelocyte,{DEGRAN}",no_consensus_found
"""

DETECTION = f"""cell_id,slide_id,roi_id,x1,y1,x2,y2
2001,{SLIDE_B},7,200,200,300,300
2002,{SLIDE_B},-1,400,400,480,490
"""

ROIS = f"""roi_id,slide_id,x1,y1,x2,y2
101,{SLIDE_A},1000,2000,3048,4048
2345,{SLIDE_A},8000,9000,12000,13100
7,{SLIDE_B},0,0,2048,2048
"""


def _info(bx: str | None, by: str | None) -> SlideInfo:
    props = {}
    if bx is not None:
        props["openslide.bounds-x"] = bx
    if by is not None:
        props["openslide.bounds-y"] = by
    return SlideInfo(path="s", slide_id=SLIDE_A, format="dicom", width=10, height=10, mpp=0.11,
                     levels=(SlideLevel(0, 10, 10, 1.0, 0.11),), properties=props)


def test_read_labelled_cells(tmp_path: Path) -> None:
    (tmp_path / "cells.csv").write_text(LABELLED)
    anns = read_cells_csv(tmp_path / "cells.csv")
    assert set(anns) == {SLIDE_A, SLIDE_B}
    a = {c.cell_id: c for c in anns[SLIDE_A].cells}
    assert a[1001].label == "lymphoblast" and a[1001].box == Box(1500, 2300, 1620, 2410)
    assert a[1001].session_labels == ("lymphoblast", "lymphoblast") and a[1001].roi_id == 101
    assert a[1002].label == "monoblast" and a[1002].roi_id == -1  # monoblast kept: the CSV is authoritative
    assert a[1002].session_labels == ("monoblast", "promonocyte", "monoblast")
    assert a[1003].session_labels == ("technically_unfit", "technically_unfit")
    b = anns[SLIDE_B].cells[0]
    assert b.label == "no_consensus_found"
    assert b.session_labels == ("myelocytic_blast", "promyelocyte", "degranulated_neutrophilic_myelocyte")
    assert anns[SLIDE_A].extra["frame"] == "csv"


def test_read_detection_only_cells(tmp_path: Path) -> None:
    (tmp_path / "det.csv").write_text(DETECTION)
    anns = read_cells_csv(tmp_path / "det.csv")
    cells = anns[SLIDE_B].cells
    assert [c.label for c in cells] == [None, None] and [c.roi_id for c in cells] == [7, -1]
    assert anns[SLIDE_B].label_counts() == {"haematological_structure": 2}


def test_cells_and_rois_round_trip(tmp_path: Path) -> None:
    (tmp_path / "cells.csv").write_text(LABELLED)
    (tmp_path / "rois.csv").write_text(ROIS)
    anns = attach_rois(read_cells_csv(tmp_path / "cells.csv"), read_rois_csv(tmp_path / "rois.csv"))
    assert [r.roi_id for r in anns[SLIDE_A].regions] == [101, 2345]
    write_cells_csv(anns, tmp_path / "out_cells.csv")
    write_rois_csv(list(anns.values()), tmp_path / "out_rois.csv")
    back = attach_rois(read_cells_csv(tmp_path / "out_cells.csv"), read_rois_csv(tmp_path / "out_rois.csv"))
    assert back == anns
    header = (tmp_path / "out_cells.csv").read_text().splitlines()[0]
    assert header == "cell_id,slide_id,roi_id,x1,y1,x2,y2,all_original_annotations,original_consensus_label"
    # detection-only round trip writes no label columns
    det = CellAnnotations(cells=(Cell(Box(1.5, 2, 30, 40), None, cell_id=5, roi_id=None),), slide_id="S")
    write_cells_csv([det], tmp_path / "det.csv")
    assert "original_consensus_label" not in (tmp_path / "det.csv").read_text()
    got = read_cells_csv(tmp_path / "det.csv")["S"].cells[0]
    assert (got.box, got.label, got.roi_id) == (Box(1.5, 2, 30, 40), None, -1)


def test_missing_columns_and_bad_rows(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("cell_id,slide_id,x1,y1\n1,S,1,2\n")
    with pytest.raises(InputError, match="roi_id, x2, y2"):
        read_cells_csv(tmp_path / "a.csv")
    (tmp_path / "b.csv").write_text("roi_id,slide_id,x1,y1,x2\n1,S,1,2,3\n")
    with pytest.raises(InputError, match="lacks column.*y2"):
        read_rois_csv(tmp_path / "b.csv")
    (tmp_path / "c.csv").write_text(
        "cell_id,slide_id,roi_id,x1,y1,x2,y2,all_original_annotations,original_consensus_label\n"
        "1,S,1,1,2,30,40,\"martian,lymphocyte\",lymphocyte\n")
    with pytest.raises(InputError, match="martian"):
        read_cells_csv(tmp_path / "c.csv")
    (tmp_path / "d.csv").write_text("cell_id,slide_id,roi_id,x1,y1,x2,y2\n1,S,1,50,2,30,40\n")
    with pytest.raises(InputError, match="row 2"):
        read_cells_csv(tmp_path / "d.csv")
    with pytest.raises(InputError, match="not found"):
        read_cells_csv(tmp_path / "nope.csv")


def test_old_internal_format(tmp_path: Path) -> None:
    (tmp_path / "old_rois.csv").write_text(
        f"id,slide_id,x_in_slide,y_in_slide,width,height\n55,{SLIDE_A},1000,1000,2458,2458\n")
    (tmp_path / "old_cells.csv").write_text(
        "cell_id,x_in_slide,y_in_slide,cell_width,cell_height,rocellboxing_id,all_original_annotations,"
        "original_consensus_label\n9,1500,1600,100,120,55,\"lymphocyte,lymphocyte\",lymphocyte\n")
    anns = read_cells_csv(tmp_path / "old_cells.csv", rois_path=tmp_path / "old_rois.csv")
    c = anns[SLIDE_A].cells[0]
    assert (c.box, c.roi_id, c.label) == (Box(1500, 1600, 1600, 1720), 55, "lymphocyte")
    roi = read_rois_csv(tmp_path / "old_rois.csv")[SLIDE_A][0]
    assert (roi.box.width, roi.box.height, roi.box.center) == (2048, 2048, (2229.0, 2229.0))
    with pytest.raises(InputError, match="rois_path"):
        read_cells_csv(tmp_path / "old_cells.csv")


def test_pitfall4_csv_and_dicom_frames_differ_by_openslide_bounds(tmp_path: Path) -> None:
    info = _info("1234", "5678")
    assert csv_to_dicom_offset(info) == (-1234.0, -5678.0)
    ann = CellAnnotations(
        cells=(Cell(Box(2000, 7000, 2100, 7100), "lymphocyte", cell_id=1, roi_id=1),),
        regions=(Region(Box(1234, 5678, 3282, 7726), 1),), slide_id=SLIDE_A, extra={"frame": "csv"},
    )
    d = csv_to_dicom(ann, info)
    assert d.cells[0].box == Box(766, 1322, 866, 1422)  # DICOM = CSV - bounds
    assert d.regions[0].box == Box(0, 0, 2048, 2048)
    assert csv_to_dicom(d, info) is d  # already in the DICOM frame: not shifted twice
    assert dicom_to_csv(d, info).cells == ann.cells
    assert csv_to_dicom_offset({"openslide.bounds-x": "10", "openslide.bounds-y": "20"}) == (-10.0, -20.0)
    assert csv_to_dicom_offset(_info(None, None)) == (0.0, 0.0)
