"""Cohort discovery: slides and ANN series paired by UID from DICOM headers; CSVs and clinical attached."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from annfixtures import make_source_image, save_source_image

from marrowscope.cells import Box, Cell, CellAnnotations, Region
from marrowscope.errors import InputError
from marrowscope.io.annotations.bmdeep_csv import dicom_to_csv, write_cells_csv, write_rois_csv
from marrowscope.io.annotations.clinical import ClinicalRecord, write_clinical_csv
from marrowscope.io.annotations.dicom_ann_writer import write_dataset_series, write_dicom_ann
from marrowscope.io.cohort import discover_cohort, load_patient_annotations

BOUNDS = {"openslide.bounds-x": "1000", "openslide.bounds-y": "500", "openslide.mpp-x": "0.11"}


def _labelled() -> CellAnnotations:
    cells = (
        Cell(Box(100, 100, 196, 196), "lymphoblast", cell_id=11, roi_id=1,
             session_labels=("lymphoblast", "lymphocytic_blast", "lymphoblast")),
        Cell(Box(300, 100, 400, 190), "monoblast", cell_id=12, roi_id=1,
             session_labels=("monoblast", "monoblast")),
        Cell(Box(2500, 2500, 2600, 2600), "no_consensus_found", cell_id=13, roi_id=-1,
             session_labels=("myelocytic_blast", "promyelocyte")),
    )
    return CellAnnotations(cells=cells, regions=(Region(Box(0, 0, 2048, 2048), 1),), slide_id="AAA_1_bm")


def _unlabelled() -> CellAnnotations:
    cells = (Cell(Box(10, 10, 90, 90), None, cell_id=21, roi_id=7), Cell(Box(900, 900, 990, 980), None,
                                                                           cell_id=22, roi_id=-1))
    return CellAnnotations(cells=cells, regions=(Region(Box(0, 0, 800, 800), 7),), slide_id="BBB_1_bm")


def _series_dir(root: Path, src: object, prefix: str, uid: str) -> Path:
    return root / "dicom" / str(src.PatientID) / str(src.StudyInstanceUID) / f"{prefix}_{uid}"  # type: ignore


def _write_slide(root: Path, patient: str, slide: str) -> object:
    src = make_source_image(width=4000, height=3000, patient_id=patient, slide_id=slide,
                            openslide_properties=BOUNDS)
    save_source_image(src, _series_dir(root, src, "SM", src.SeriesInstanceUID) / "level0.dcm")
    low = make_source_image(width=1000, height=750, patient_id=patient, slide_id=slide,
                            study_uid=src.StudyInstanceUID, series_uid=src.SeriesInstanceUID)
    save_source_image(low, _series_dir(root, src, "SM", src.SeriesInstanceUID) / "level1.dcm")
    return src


@pytest.fixture()
def cohort_dir(tmp_path: Path) -> Path:
    root = tmp_path / "cohort"
    a, b = _write_slide(root, "AAA", "AAA_1_bm"), _write_slide(root, "BBB", "BBB_1_bm")
    lab, unl = _labelled(), _unlabelled()
    for src, ann in ((a, lab), (b, unl)):
        study_dir = root / "dicom" / str(src.PatientID) / str(src.StudyInstanceUID)  # type: ignore
        write_dataset_series(ann, study_dir, source_image=src)  # type: ignore[arg-type]
    # an ANN whose slide is not in the folder
    other = make_source_image(patient_id="ZZZ", slide_id="ZZZ_1_bm")
    import highdicom as hd

    uid = hd.UID()
    write_dicom_ann(unl, root / "dicom" / "ZZZ" / "x" / f"ANN_{uid}" / "a.dcm", source_image=other,
                    kind="unlabeled", series_uid=uid)
    # the CSVs are in the MRXS frame: DICOM + bounds
    lab_csv, unl_csv = dicom_to_csv(lab, BOUNDS), dicom_to_csv(unl, BOUNDS)
    write_cells_csv([lab_csv], root / "csv" / "cells_labelled.csv")
    write_cells_csv([unl_csv], root / "csv" / "cells_detection_only.csv")
    write_rois_csv([lab_csv, unl_csv], root / "csv" / "rois.csv")
    write_clinical_csv([ClinicalRecord("AAA", "F", "042M", "ALL", "C3167", {"wbc": 50.0})],
                       root / "csv" / "clinical.csv")
    (root / "README.md").write_text("synthetic cohort\n")
    return root


def test_discover_pairs_by_uid_and_attaches_csvs(cohort_dir: Path) -> None:
    cohort = discover_cohort(cohort_dir)
    assert [p.patient_id for p in cohort] == ["AAA", "BBB"]
    a, b = cohort.get("AAA"), cohort.get("BBB_1_bm")
    assert a.slide_id == "AAA_1_bm" and (a.width, a.height) == (4000, 3000) and len(a.slide_files) == 2
    assert a.kinds == {"roi": 1, "session": 3, "consensus": 1}
    assert [s.session for s in a.sessions] == [0, 1, 2]
    assert b.kinds == {"roi": 1, "unlabeled": 1}
    assert a.is_labelled and not b.is_labelled
    assert a.openslide_properties["openslide.bounds-x"] == "1000" and a.mpp == 0.11
    assert a.clinical is not None and a.clinical.diagnosis == "ALL" and b.clinical is None
    assert len(cohort.orphan_series) == 1 and cohort.orphan_series[0].container_id == "ZZZ_1_bm"
    assert any("not in the folder" in p for p in cohort.problems)
    assert any("no clinical row" in p and "BBB" in p for p in cohort.problems)
    assert a.csv_annotations is not None and len(a.csv_annotations) == 3


def test_pitfall4_csv_and_dicom_agree_after_offset(cohort_dir: Path) -> None:
    a = discover_cohort(cohort_dir).get("AAA")
    dic = load_patient_annotations(a, "consensus")
    csv = load_patient_annotations(a, "csv")
    key = lambda c: c.cell_id  # noqa: E731
    assert sorted(dic.cells, key=key) == sorted(csv.cells, key=key)  # boxes, labels, sessions, roi ids
    assert dic.regions == csv.regions == _labelled().regions
    assert dic.label_counts() == csv.label_counts() == _labelled().label_counts()
    assert csv.label_counts()["monoblast"] == 1
    raw = a.csv_annotations
    assert raw is not None and raw.cells[0].box.x1 - csv.cells[0].box.x1 == 1000  # they are NOT equal raw


def test_load_sources(cohort_dir: Path) -> None:
    cohort = discover_cohort(cohort_dir)
    a, b = cohort.get("AAA"), cohort.get("BBB")
    cons = load_patient_annotations(a, "consensus")
    assert {c.cell_id: c.session_labels for c in cons.cells} == {
        c.cell_id: c.session_labels for c in _labelled().cells}
    assert load_patient_annotations(a, "consensus", with_sessions=False).cells[0].session_labels == ()
    unl = load_patient_annotations(b, "unlabeled")
    assert [c.label for c in unl.cells] == [None, None] and unl.regions == _unlabelled().regions
    assert len(load_patient_annotations(b, "boxes")) == 2
    assert load_patient_annotations(b, "roi").cells == ()
    assert load_patient_annotations(b, "csv").cells == unl.cells
    with pytest.raises(InputError, match="no consensus"):
        load_patient_annotations(b, "consensus")
    with pytest.raises(ValueError, match="unknown source"):
        load_patient_annotations(b, "nonsense")


def test_bad_folders(tmp_path: Path, cohort_dir: Path) -> None:
    with pytest.raises(InputError, match="no such folder"):
        discover_cohort(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty"):
        discover_cohort(tmp_path / "empty")
    only_ann = tmp_path / "only_ann"
    src = make_source_image()
    write_dicom_ann(_unlabelled(), only_ann / "a.dcm", source_image=src, kind="unlabeled")
    with pytest.raises(InputError, match="no DICOM slide"):
        discover_cohort(only_ann)


def test_unreadable_files_are_listed_and_skipped(tmp_path: Path, cohort_dir: Path) -> None:
    """One broken file never hides the rest of the cohort: it is named in ``unreadable``/``problems``."""
    before = discover_cohort(cohort_dir)
    bad = cohort_dir / "dicom" / "AAA" / "broken.dcm"
    bad.write_bytes(b"\x00" * 10)
    empty = cohort_dir / "dicom" / "empty.dcm"
    empty.write_bytes(b"")
    cohort = discover_cohort(cohort_dir)
    assert [p.slide_id for p in cohort] == [p.slide_id for p in before]
    assert [u.path for u in cohort.unreadable] == sorted([str(bad), str(empty)])
    assert "empty (0 bytes)" in {u.path: u.problem for u in cohort.unreadable}[str(empty)]
    assert any("broken.dcm" in line for line in cohort.problems)
    # a folder with only broken files: the error names them
    only_bad = tmp_path / "only_bad"
    only_bad.mkdir()
    (only_bad / "x.dcm").write_bytes(b"")
    with pytest.raises(InputError, match="x.dcm: file is empty"):
        discover_cohort(only_bad)


def test_with_real_dicom_wsi(tmp_path: Path) -> None:
    """The SM written by the slide writer: header properties, offsets and the reference check."""
    dicom_writer = pytest.importorskip("marrowscope.io.slides.dicom_writer")
    from marrowscope.io.annotations.bmdeep_csv import csv_to_dicom_offset
    from marrowscope.io.annotations.dicom_ann import check_references, read_dicom_ann
    from marrowscope.io.slides import open_slide

    img = np.full((512, 512, 3), 230, np.uint8)
    ref = dicom_writer.write_dicom_wsi(
        img, tmp_path / "c" / "dicom" / "P" / "S" / "SM_x", mpp=0.11, slide_id="P_1_bm", patient_id="P",
        n_levels=2, tile_size=256,
        openslide_properties={"openslide.bounds-x": "100", "openslide.bounds-y": "50"})
    with open_slide(ref.folder) as slide:
        info = slide.info
        src = slide.base_dataset()  # type: ignore[attr-defined]
    assert csv_to_dicom_offset(info) == (-100.0, -50.0)
    ann = CellAnnotations(cells=(Cell(Box(10, 10, 60, 60), "lymphocyte", cell_id=1, roi_id=-1),))
    out = write_dicom_ann(ann, tmp_path / "c" / "dicom" / "P" / "S" / "ANN_y" / "a.dcm", source_image=src,
                          kind="consensus")
    check_references(read_dicom_ann(out), info)
    cohort = discover_cohort(tmp_path / "c")
    assert cohort.get("P").kinds == {"consensus": 1}
    assert cohort.get("P").openslide_properties["openslide.bounds-x"] == "100"
