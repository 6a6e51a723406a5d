"""marrowscope info: slides, annotation files and cohort folders (tiny generated inputs)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from marrowscope.cells import Box, Cell, CellAnnotations, Region
from marrowscope.cli.main import main
from marrowscope.io.inspect import AnnotationSummary, CohortSummary, SlideSummary, inspect_path
from marrowscope.io.slides.dicom_writer import DicomSlideRef, write_dicom_wsi


def _img(h: int = 256, w: int = 320) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx % 256, yy % 256, np.full_like(xx, 200)], axis=2).astype(np.uint8)


def _cells() -> CellAnnotations:
    cells = (
        Cell(Box(10, 10, 40, 40), "lymphoblast", 1, 7, session_labels=("lymphoblast", "lymphoblast")),
        Cell(Box(50, 10, 80, 40), "lymphoblast", 2, 7, session_labels=("myeloblast", "lymphoblast")),
        Cell(Box(90, 10, 120, 40), "myeloblast", 3, -1, session_labels=("myeloblast", "myeloblast")),
    )
    return CellAnnotations(cells=cells, regions=(Region(Box(0, 0, 200, 200), roi_id=7),), slide_id="P1_1_bm")


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = main(args)
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.fixture(scope="module")
def slide(tmp_path_factory: pytest.TempPathFactory) -> DicomSlideRef:
    root = tmp_path_factory.mktemp("cohort")
    return write_dicom_wsi(
        _img(), root / "dicom" / "P1" / "S" / "SM_1", mpp=0.11, slide_id="P1_1_bm", patient_id="P1"
    )


def test_info_slide_text_and_json(slide: DicomSlideRef, capsys: pytest.CaptureFixture[str]) -> None:
    s = inspect_path(slide.folder)
    assert isinstance(s, SlideSummary)
    assert s.slide_id == "P1_1_bm" and len(s.levels) == 3 and s.n_files == 3
    assert s.ids["dicom.SeriesInstanceUID"] == slide.series_uid
    rc, out, _ = _run(["info", str(slide.folder)], capsys)
    assert rc == 0 and "P1_1_bm" in out and "3 level(s)" in out and "0.11 µm/px" in out
    rc, out, _ = _run(["info", str(slide.folder), "--json"], capsys)
    data = json.loads(out)
    assert rc == 0 and data["kind"] == "slide" and data["width"] == 320 and data["height"] == 256
    assert [lv["downsample"] for lv in data["levels"]] == [1.0, 4.0, 16.0]
    # one instance file of the slide
    rc, out, _ = _run(["info", str(slide.files[0]), "--json"], capsys)
    assert rc == 0 and json.loads(out)["n_files"] == 3


def test_info_png_with_mpp(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    p = tmp_path / "field.png"
    Image.fromarray(_img(100, 120)).save(p)
    rc, out, _ = _run(["info", str(p), "--json", "--mpp", "0.25"], capsys)
    data = json.loads(out)
    assert rc == 0 and data["mpp"] == 0.25 and data["width"] == 120


def test_info_dicom_ann(slide: DicomSlideRef, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import pydicom

    from marrowscope.io.annotations.dicom_ann_writer import write_dicom_ann

    src = pydicom.dcmread(slide.files[0], stop_before_pixels=True)
    out_path = write_dicom_ann(_cells(), tmp_path / "cons.dcm", source_image=src, kind="consensus")
    s = inspect_path(out_path)
    assert isinstance(s, AnnotationSummary)
    assert s.series_kind == "consensus" and s.n_cells == 3
    assert dict(s.label_counts) == {"lymphoblast": 2, "myeloblast": 1}
    assert s.referenced_series_uid == slide.series_uid
    from marrowscope.taxonomy import to_idc_label

    assert sum(g.count for g in s.groups) == 3  # groups carry the IDC group labels
    assert {g.label for g in s.groups} == {to_idc_label("lymphoblast"), to_idc_label("myeloblast")}
    rc, out, _ = _run(["info", str(out_path)], capsys)
    assert rc == 0 and "consensus" in out and "lymphoblast" in out and slide.series_uid in out


def test_info_geojson_and_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from marrowscope.io.annotations.bmdeep_csv import write_cells_csv
    from marrowscope.io.annotations.geojson import write_geojson

    g = write_geojson(_cells(), tmp_path / "cells.geojson")
    s = inspect_path(g)
    assert isinstance(s, AnnotationSummary) and s.format == "geojson"
    assert s.label_counts["lymphoblast"] == 2 and s.n_cells == 3
    c = write_cells_csv({"P1_1_bm": _cells()}, tmp_path / "cells.csv")
    rc, out, _ = _run(["info", str(c), "--json"], capsys)
    data = json.loads(out)
    assert rc == 0 and data["format"] == "cells-csv" and data["n_cells"] == 3
    assert data["label_counts"] == {"lymphoblast": 2, "myeloblast": 1} and data["slide_ids"] == ["P1_1_bm"]


def test_info_cohort(slide: DicomSlideRef, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("marrowscope.io.cohort")
    import pydicom

    from marrowscope.io.annotations.dicom_ann_writer import write_dicom_ann

    study = slide.folder.parent
    src = pydicom.dcmread(slide.files[0], stop_before_pixels=True)
    ann = _cells()
    write_dicom_ann(ann, study / "ANN_c" / "c.dcm", source_image=src, kind="consensus")
    write_dicom_ann(ann, study / "ANN_s0" / "s.dcm", source_image=src, kind="session", session=0)
    unl = ann.with_cells(c.with_label(None) for c in ann.cells)
    write_dicom_ann(unl, study / "ANN_u" / "u.dcm", source_image=src, kind="unlabeled")
    write_dicom_ann(ann, study / "ANN_r" / "r.dcm", source_image=src, kind="roi")
    root = study.parent.parent.parent
    s = inspect_path(root)
    assert isinstance(s, CohortSummary)
    assert s.n_patients == 1 and s.n_slides == 1 and s.n_ann_series == 4
    assert dict(s.ann_series_by_kind) == {"consensus": 1, "roi": 1, "session 0": 1, "unlabeled": 1}
    assert dict(s.label_counts) == {"lymphoblast": 2, "myeloblast": 1}
    assert s.n_unlabeled_boxes == 3 and s.n_rois == 1
    rc, out, _ = _run(["info", str(root)], capsys)
    assert rc == 0 and "1 patient(s)" in out and "P1" in out


def test_info_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = _run(["info", str(tmp_path / "nope")], capsys)
    assert rc != 0 and "no such file" in err and "Traceback" not in err
    (tmp_path / "empty").mkdir()
    rc, _, err = _run(["info", str(tmp_path / "empty")], capsys)
    assert rc != 0 and "empty" in err
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00junk")
    rc, _, err = _run(["info", str(bad)], capsys)
    assert rc != 0 and "bad.dcm" in err and err.count("\n") == 1


def test_info_annotations_only_folder(slide: DicomSlideRef, tmp_path: Path) -> None:
    """The annotations-only IDC download (slides not fetched yet) is summarised, not refused."""
    import pydicom

    from marrowscope.io.annotations.dicom_ann_writer import write_dicom_ann

    src = pydicom.dcmread(slide.files[0], stop_before_pixels=True)
    write_dicom_ann(_cells(), tmp_path / "P1" / "S" / "ANN_c" / "c.dcm", source_image=src, kind="consensus")
    write_dicom_ann(_cells(), tmp_path / "P1" / "S" / "ANN_r" / "r.dcm", source_image=src, kind="roi")
    s = inspect_path(tmp_path)
    assert isinstance(s, CohortSummary)
    assert s.n_slides == 0 and s.n_patients == 1 and s.n_ann_series == 2 and s.n_orphan_series == 2
    assert dict(s.ann_series_by_kind) == {"consensus": 1, "roi": 1}
    assert dict(s.label_counts) == {"lymphoblast": 2, "myeloblast": 1} and s.n_rois == 1
    assert s.patients[0].slide_id == "P1_1_bm"
