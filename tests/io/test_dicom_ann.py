"""DICOM ANN reading/writing, incl. the dataset.md §9 pitfalls built the way the IDC files are."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from annfixtures import make_source_image, save_source_image
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from marrowscope.cells import Box, Cell, CellAnnotations, Region
from marrowscope.errors import InputError
from marrowscope.io.annotations.dicom_ann import (
    check_references,
    merge_sessions,
    read_dicom_ann,
    read_dicom_ann_header,
    series_kind,
)
from marrowscope.io.annotations.dicom_ann_writer import hex_to_cielab, write_dataset_series, write_dicom_ann
from marrowscope.io.slides.base import SlideInfo, SlideLevel

ANAT = Code("91723000", "SCT", "Anatomical structure")
CELL_ID = Code("0010197", "EFO", "single cell identifier")
ROI_ID = Code("130489", "DCM", "Referenced Region of Interest Identifier")


def _rect(x1: float, y1: float, x2: float, y2: float) -> np.ndarray:
    return np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], dtype=np.float32)


def _idc_like(path: Path, src: pydicom.Dataset, groups: list[tuple], *, description: str,
              trial_id: str | None, number: int = 42) -> Path:
    """Build an ANN exactly like the IDC converter does, straight with highdicom (not our writer).

    groups: (label, type_code, boxes, cell_ids, roi_ids or None)
    """
    hd_groups = []
    for i, (label, type_code, boxes, cell_ids, roi_ids) in enumerate(groups):
        ms = [hd.ann.Measurements(name=CELL_ID, values=np.array(cell_ids, float), unit=codes.UCUM.NoUnits)]
        if roi_ids is not None:
            ms.append(hd.ann.Measurements(name=ROI_ID, values=np.array(roi_ids, float),
                                          unit=codes.UCUM.NoUnits))
        hd_groups.append(hd.ann.AnnotationGroup(
            number=i + 1, uid=hd.UID(), label=label, annotated_property_category=ANAT,
            annotated_property_type=type_code, graphic_type="RECTANGLE",
            graphic_data=[_rect(*b) for b in boxes], algorithm_type="MANUAL", measurements=ms))
    obj = hd.ann.MicroscopyBulkSimpleAnnotations(
        source_images=[src], annotation_coordinate_type="2D", annotation_groups=hd_groups,
        series_instance_uid=hd.UID(), series_number=number, sop_instance_uid=hd.UID(), instance_number=1,
        manufacturer="University Hospital Erlangen and Fraunhofer MEVIS",
        manufacturer_model_name="BMDeep data conversion", software_versions="x", device_serial_number="y",
        series_description=description)
    if trial_id is not None:
        obj.ClinicalTrialSeriesID = trial_id
    obj.save_as(path)
    return path


@pytest.fixture()
def src() -> pydicom.Dataset:
    return make_source_image(width=4000, height=3000)


def _slide_info(src: pydicom.Dataset, width: int = 4000, height: int = 3000) -> SlideInfo:
    return SlideInfo(
        path="slide", slide_id=str(src.ContainerIdentifier), format="dicom", width=width, height=height,
        mpp=0.11, levels=(SlideLevel(0, width, height, 1.0, 0.11),),
        properties={"dicom.SeriesInstanceUID": str(src.SeriesInstanceUID),
                    "dicom.ContainerIdentifier": str(src.ContainerIdentifier)},
    )


def _cells() -> CellAnnotations:
    cells = (
        Cell(Box(100, 100, 196, 196), "lymphoblast", cell_id=70001, roi_id=101,
             session_labels=("lymphoblast", "lymphocytic_blast", "lymphoblast")),
        Cell(Box(300, 100, 400, 190), "lymphoblast", cell_id=70002, roi_id=-1,
             session_labels=("lymphoblast", "lymphoblast")),
        Cell(Box(500, 500, 610, 620), "monoblast", cell_id=70003, roi_id=101,
             session_labels=("monoblast", "promonocyte", "monoblast")),
        Cell(Box(700, 700, 800, 800), "no_consensus_found", cell_id=70004, roi_id=102,
             session_labels=("myelocytic_blast", "promyelocyte")),
        Cell(Box(900.5, 900.25, 1000.5, 1010.75), "segmented_neutrophil", cell_id=70005, roi_id=102,
             session_labels=("segmented_neutrophil", "segmented_neutrophil")),
    )
    regions = (Region(Box(0, 0, 2048, 2048), 101), Region(Box(2000, 0, 3800, 2900), 2345))
    return CellAnnotations(cells=cells, regions=regions, slide_id="PATIENT_A_1_bm")


def _by_id(ann: CellAnnotations) -> dict[int | None, Cell]:
    return {c.cell_id: c for c in ann.cells}


def test_consensus_round_trip(tmp_path: Path, src: pydicom.Dataset) -> None:
    ann = _cells()
    out = write_dicom_ann(ann, tmp_path / "c.dcm", source_image=src, kind="consensus")
    s = read_dicom_ann(out)
    assert (s.kind, s.session) == ("consensus", None)
    assert s.series_description == "Consensus: cell bounding boxes with cell type labels"
    assert s.referenced_series_uid == src.SeriesInstanceUID
    assert s.referenced_sop_uid == src.SOPInstanceUID
    assert s.study_uid == src.StudyInstanceUID
    assert s.container_id == "PATIENT_A_1_bm"
    got = _by_id(s.annotations)
    assert set(got) == {c.cell_id for c in ann.cells}
    for c in ann.cells:
        g = got[c.cell_id]
        assert (g.label, g.roi_id, g.box) == (c.label, c.roi_id, c.box)
    ds = pydicom.dcmread(out)
    assert ds.ClinicalTrialSeriesID == "consensus" and int(ds.SeriesNumber) == 42 and ds.Modality == "ANN"
    labels = [str(g.AnnotationGroupLabel) for g in ds.AnnotationGroupSequence]
    # IDC renames, alphabetical order, split lymphoid_precursor_cell (inside + outside ROI)
    assert labels == sorted(labels)
    assert labels.count("lymphoid_precursor_cell") == 2
    assert "immature_monoblast" in labels and "monoblast" not in labels
    obj = hd.ann.annread(out)
    grp = obj.get_annotation_groups()[0]
    assert str(grp.annotated_property_category.value) in {"91723000", "49755003", "260787004", "309825002"}
    rect = grp.get_graphic_data(coordinate_type="2D")[0]
    assert rect.dtype == np.float32
    x1, y1, x2, y2 = rect[0, 0], rect[0, 1], rect[2, 0], rect[2, 1]
    assert rect.tolist() == [[x1, y1], [x2, y1], [x2, y2], [x1, y2]] and x2 > x1 and y2 > y1
    assert "RecommendedDisplayCIELabValue" in ds.AnnotationGroupSequence[0]


def test_pitfall1_split_groups_have_1_or_2_measurement_columns(tmp_path: Path, src: pydicom.Dataset) -> None:
    lym = Code("56972008", "SCT", "Lymphocyte")
    path = _idc_like(tmp_path / "a.dcm", src, [
        ("lymphocyte", lym, [(10, 10, 100, 100), (200, 10, 300, 100)], [11, 12], [5, 6]),
        ("lymphocyte", lym, [(400, 400, 500, 500)], [13], None),
    ], description="Consensus: cell bounding boxes with cell type labels", trial_id="consensus")
    s = read_dicom_ann(path)
    got = _by_id(s.annotations)
    assert len(s.annotations) == 3 and s.annotations.label_counts()["lymphocyte"] == 3
    assert [got[i].roi_id for i in (11, 12, 13)] == [5, 6, -1]
    # and our writer produces the same layout
    out = write_dicom_ann(s.annotations, tmp_path / "b.dcm", source_image=src, kind="consensus")
    groups = hd.ann.annread(out).get_annotation_groups()
    assert [len(g.get_measurements()[0]) for g in groups] == [2, 1]


def test_pitfall2_shared_code_told_apart_by_group_label(tmp_path: Path, src: pydicom.Dataset) -> None:
    shared = Code("414387006", "SCT", "Structure of haematological system")
    path = _idc_like(tmp_path / "a.dcm", src, [
        ("haematological_structure", shared, [(10, 10, 100, 100)], [1], [3]),
        ("no_consensus_found", shared, [(200, 10, 300, 100)], [2], [3]),
    ], description="Consensus: cell bounding boxes with cell type labels", trial_id="consensus")
    got = _by_id(read_dicom_ann(path).annotations)
    assert got[1].label is None  # an unlabeled box
    assert got[2].label == "no_consensus_found"


def test_pitfall3_monoblast_rename_is_read_and_never_dropped(tmp_path: Path, src: pydicom.Dataset) -> None:
    code = Code("C13120", "NCIt", "Immature Monocyte")
    path = _idc_like(tmp_path / "a.dcm", src, [
        ("immature_monoblast", code, [(10, 10, 100, 100)], [1], [3]),
        ("immature_monocyte", code, [(200, 10, 300, 100)], [2], [3]),
        ("lymphoid_precursor_cell", Code("127910003", "SCT", "Lymphoid precursor cell"),
         [(400, 10, 500, 100)], [3], [3]),
        ("myeloid_precursor_cell", Code("127914007", "SCT", "Myeloid precursor cell"),
         [(600, 10, 700, 100)], [4], [3]),
    ], description="Consensus: cell bounding boxes with cell type labels", trial_id="consensus")
    got = _by_id(read_dicom_ann(path).annotations)
    assert [got[i].label for i in (1, 2, 3, 4)] == ["monoblast", "monoblast", "lymphoblast", "myeloblast"]
    # our writer keeps monoblast cells (the IDC converter silently drops them)
    ann = CellAnnotations(cells=(Cell(Box(1, 1, 50, 50), "monoblast", cell_id=9, roi_id=1),))
    back = read_dicom_ann(write_dicom_ann(ann, tmp_path / "m.dcm", source_image=src, kind="consensus"))
    assert back.annotations.labels() == ["monoblast"]


def test_pitfall5_sessions_zero_based_only_cells_with_k_labels(tmp_path: Path, src: pydicom.Dataset) -> None:
    ann = _cells()
    series = []
    for k in range(3):
        out = write_dicom_ann(ann, tmp_path / f"s{k}.dcm", source_image=src, kind="session", session=k)
        ds = pydicom.dcmread(out)
        assert ds.SeriesDescription == f"Session {k}: Cell bounding boxes with cell type labels"
        assert ds.ClinicalTrialSeriesID == str(k) and int(ds.SeriesNumber) == 33 + k
        s = read_dicom_ann(out)
        assert (s.kind, s.session) == ("session", k)
        expected = {c.cell_id: c.session_labels[k] for c in ann.cells if len(c.session_labels) > k}
        assert {c.cell_id: c.label for c in s.annotations.cells} == expected
        series.append(s)
    assert len(series[2].annotations) == 2  # only the cells with 3 labels
    consensus = read_dicom_ann(write_dicom_ann(ann, tmp_path / "c.dcm", source_image=src, kind="consensus"))
    merged = _by_id(merge_sessions(consensus.annotations, series))
    for c in ann.cells:
        assert merged[c.cell_id].session_labels == c.session_labels
    # a description-only file ("Session 0: ...", no trial id) is session 0, not 1
    path = _idc_like(tmp_path / "d.dcm", src, [
        ("lymphocyte", Code("56972008", "SCT", "Lymphocyte"), [(1, 1, 9, 9)], [1], [1])],
        description="Session 0: Cell bounding boxes with cell type labels", trial_id=None, number=33)
    assert series_kind(pydicom.dcmread(path))[1] == 0
    # a gap (labels in sessions 0 and 2, not 1) is an error
    with pytest.raises(InputError, match="zero-based"):
        merge_sessions(consensus.annotations, [series[0], series[2]])


def test_pitfall7_global_cell_ids_and_outside_roi(tmp_path: Path, src: pydicom.Dataset) -> None:
    ann = CellAnnotations(cells=(
        Cell(Box(1, 1, 50, 50), "lymphocyte", cell_id=9_876_543, roi_id=-1),
        Cell(Box(60, 1, 90, 50), "lymphocyte", cell_id=12, roi_id=1234),
    ))
    got = _by_id(read_dicom_ann(write_dicom_ann(ann, tmp_path / "a.dcm", source_image=src,
                                                kind="consensus")).annotations)
    assert got[9_876_543].roi_id == -1 and got[12].roi_id == 1234
    too_big = CellAnnotations(cells=(Cell(Box(1, 1, 50, 50), "lymphocyte", cell_id=2**25, roi_id=1),))
    with pytest.raises(ValueError, match="2\\*\\*24"):
        write_dicom_ann(too_big, tmp_path / "big.dcm", source_image=src, kind="consensus")
    assert not (tmp_path / "big.dcm").exists()


def test_roi_series_round_trip(tmp_path: Path, src: pydicom.Dataset) -> None:
    ann = _cells()
    out = write_dicom_ann(ann, tmp_path / "r.dcm", source_image=src, kind="roi")
    ds = pydicom.dcmread(out)
    assert ds.SeriesDescription == "Monolayer regions of interest for cell classification"
    assert int(ds.SeriesNumber) == 33 and "ClinicalTrialSeriesID" not in ds
    assert [str(g.AnnotationGroupLabel) for g in ds.AnnotationGroupSequence] == ["region_of_interest"]
    s = read_dicom_ann(out)
    assert s.kind == "roi" and s.annotations.cells == ()
    assert s.annotations.regions == ann.regions
    names = hd.ann.annread(out).get_annotation_groups()[0].get_measurements()[0]
    assert [(n.scheme_designator, n.value) for n in names] == [("DCM", "111030")]


def test_unlabeled_round_trip(tmp_path: Path, src: pydicom.Dataset) -> None:
    ann = _cells()
    out = write_dicom_ann(ann, tmp_path / "u.dcm", source_image=src, kind="unlabeled")
    ds = pydicom.dcmread(out)
    assert ds.ClinicalTrialSeriesID == "detection-only"
    assert ds.SeriesDescription == "Unlabeled cell bounding boxes"
    assert {str(g.AnnotationGroupLabel) for g in ds.AnnotationGroupSequence} == {"haematological_structure"}
    s = read_dicom_ann(out)
    assert s.kind == "unlabeled" and len(s.annotations) == len(ann)
    assert all(c.label is None for c in s.annotations.cells)
    assert sorted(c.cell_id for c in s.annotations.cells) == sorted(c.cell_id for c in ann.cells)  # type: ignore


def test_automatic_predictions_round_trip(tmp_path: Path, src: pydicom.Dataset) -> None:
    cells = (
        Cell(Box(10, 10, 110, 110), "myelocytic_blast", cell_id=1, score=0.93,
             probabilities={"myelocytic_blast": 0.8, "promyelocyte": 0.15, "lymphocyte": 0.05}),
        Cell(Box(210, 10, 310, 110), "lymphocyte", cell_id=2, score=0.71,
             probabilities={"myelocytic_blast": 0.1, "promyelocyte": 0.1, "lymphocyte": 0.8}),
        Cell(Box(410, 10, 510, 110), None, cell_id=3, score=0.55),
        Cell(Box(610, 10, 710, 110), "lymphocyte", cell_id=4),  # sparse: no score, no probabilities
    )
    ann = CellAnnotations(cells=cells)
    out = write_dicom_ann(ann, tmp_path / "p.dcm", source_image=src, kind="automatic",
                          algorithm_name="marrowscope-r50", algorithm_version="1.2")
    ds = pydicom.dcmread(out)
    assert {str(g.AnnotationGroupGenerationType) for g in ds.AnnotationGroupSequence} == {"AUTOMATIC"}
    s = read_dicom_ann(out)
    assert s.kind == "automatic" and (s.algorithm_name, s.algorithm_version) == ("marrowscope-r50", "1.2")
    got = _by_id(s.annotations)
    for c in cells:
        g = got[c.cell_id]
        assert g.label == c.label and g.roi_id is None
        assert g.score == (None if c.score is None else pytest.approx(c.score, abs=1e-6))
        if c.probabilities is None:
            assert g.probabilities is None
        else:
            assert g.probabilities is not None and set(g.probabilities) == set(c.probabilities)
            for k, v in c.probabilities.items():
                assert g.probabilities[k] == pytest.approx(v, abs=1e-6)
    with pytest.raises(ValueError, match="algorithm_name"):
        write_dicom_ann(ann, tmp_path / "q.dcm", source_image=src, kind="automatic")


def test_header_only_and_references(tmp_path: Path, src: pydicom.Dataset) -> None:
    out = write_dicom_ann(_cells(), tmp_path / "c.dcm", source_image=src, kind="session", session=1)
    ref = read_dicom_ann_header(out)
    assert (ref.kind, ref.session, ref.referenced_series_uid) == ("session", 1, src.SeriesInstanceUID)
    s = read_dicom_ann(tmp_path)  # a series folder with one file
    check_references(s, _slide_info(src))
    check_references(ref, _slide_info(src))
    other = make_source_image(width=4000, height=3000, slide_id="OTHER_1_bm")
    with pytest.raises(InputError, match="reference slide series"):
        check_references(s, _slide_info(other))
    with pytest.raises(InputError, match="outside the slide"):
        check_references(s, _slide_info(src, width=500, height=500))


def test_bad_inputs(tmp_path: Path, src: pydicom.Dataset) -> None:
    out = write_dicom_ann(_cells(), tmp_path / "c.dcm", source_image=src, kind="consensus")
    data = out.read_bytes()
    (tmp_path / "trunc.dcm").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.dcm").write_bytes(b"not dicom at all")
    for name in ("trunc.dcm", "junk.dcm", "missing.dcm"):
        with pytest.raises(InputError, match=name):
            read_dicom_ann(tmp_path / name)
    sm = save_source_image(make_source_image(), tmp_path / "sm" / "sm.dcm")
    with pytest.raises(InputError, match="not a Microscopy Bulk Simple Annotations"):
        read_dicom_ann(sm)
    bad = _idc_like(tmp_path / "bad.dcm", src, [
        ("martian_cell", Code("1", "99X", "x"), [(1, 1, 9, 9)], [1], [1])],
        description="Consensus: cell bounding boxes with cell type labels", trial_id="consensus")
    with pytest.raises(InputError, match="martian_cell"):
        read_dicom_ann(bad)
    with pytest.raises(ValueError, match="no boxes"):
        write_dicom_ann(CellAnnotations(cells=()), tmp_path / "empty.dcm", source_image=src, kind="consensus")
    assert not (tmp_path / "empty.dcm").exists()
    assert list(tmp_path.glob(".*part")) == []


def test_hex_to_cielab_known_values() -> None:
    assert hex_to_cielab("#ffffff") == pytest.approx((100.0, 0.0, 0.0), abs=0.05)
    assert hex_to_cielab("#000000") == pytest.approx((0.0, 0.0, 0.0), abs=0.05)
    L, a, b = hex_to_cielab("#ff0000")
    assert (L, a, b) == pytest.approx((53.24, 80.09, 67.20), abs=0.1)


def test_writer_checks_boxes_against_the_source_image(tmp_path: Path, src: pydicom.Dataset) -> None:
    ann = CellAnnotations(cells=(Cell(Box(3950, 10, 4100, 60), "lymphocyte", cell_id=1, roi_id=-1),))
    with pytest.raises(InputError, match="outside the slide"):
        write_dicom_ann(ann, tmp_path / "a.dcm", source_image=src, kind="consensus")
    assert not (tmp_path / "a.dcm").exists()
    sm = save_source_image(src, tmp_path / "sm.dcm")  # a file path works as source_image too
    ok = write_dicom_ann(ann.shifted(-200, 0), tmp_path / "b.dcm", source_image=sm, kind="consensus")
    assert read_dicom_ann(ok).referenced_sop_uid == src.SOPInstanceUID


def test_write_dataset_series_layout(tmp_path: Path, src: pydicom.Dataset) -> None:
    ann = _cells()
    extra = Cell(Box(1200, 1200, 1290, 1300), None, cell_id=80001, roi_id=2345)
    ann = ann.with_cells((*ann.cells, extra))
    paths = write_dataset_series(ann, tmp_path / "study", source_image=src)
    kinds = [(s.kind, s.session) for s in map(read_dicom_ann, paths)]
    assert kinds == [("roi", None), ("session", 0), ("session", 1), ("session", 2), ("consensus", None),
                     ("unlabeled", None)]
    assert all(p.parent.name.startswith("ANN_") and p.parent.parent == tmp_path / "study" for p in paths)
    again = write_dataset_series(ann, tmp_path / "study2", source_image=src)
    rel = [p.relative_to(tmp_path / "study") for p in paths]
    assert [p.relative_to(tmp_path / "study2") for p in again] == rel  # same UIDs for the same inputs
    unl = read_dicom_ann(paths[-1]).annotations
    assert [c.cell_id for c in unl.cells] == [80001]


def test_fast_decoder_equals_highdicom(tmp_path: Path, src: pydicom.Dataset) -> None:
    ann = _cells()
    pred = CellAnnotations(cells=(
        Cell(Box(10, 10, 110, 110), "lymphocyte", cell_id=1, score=0.9, probabilities={"lymphocyte": 0.7}),
        Cell(Box(210, 10, 310, 110), "lymphocyte", cell_id=2),
    ))
    files = list(write_dataset_series(ann, tmp_path / "st", source_image=src))
    files.append(write_dicom_ann(pred, tmp_path / "p.dcm", source_image=src, kind="automatic",
                                 algorithm_name="m", algorithm_version="0"))
    # a POLYGON group (boxes are the polygons' bounding boxes)
    poly = hd.ann.AnnotationGroup(
        number=1, uid=hd.UID(), label="lymphocyte", annotated_property_category=ANAT,
        annotated_property_type=Code("56972008", "SCT", "Lymphocyte"), graphic_type="POLYGON",
        graphic_data=[np.array([[5, 5], [50, 8], [30, 60]], np.float32),
                      np.array([[100, 100], [140, 100], [150, 130], [120, 170], [100, 140]], np.float32)],
        algorithm_type="MANUAL",
        measurements=[hd.ann.Measurements(name=CELL_ID, values=np.array([7.0, 8.0]),
                                          unit=codes.UCUM.NoUnits)])
    obj = hd.ann.MicroscopyBulkSimpleAnnotations(
        source_images=[src], annotation_coordinate_type="2D", annotation_groups=[poly],
        series_instance_uid=hd.UID(), series_number=42, sop_instance_uid=hd.UID(), instance_number=1,
        manufacturer="x", manufacturer_model_name="x", software_versions="x", device_serial_number="x",
        series_description="Consensus: cell bounding boxes with cell type labels")
    obj.save_as(tmp_path / "poly.dcm")
    files.append(tmp_path / "poly.dcm")
    for f in files:
        fast, slow = read_dicom_ann(f), read_dicom_ann(f, validate=True)
        assert fast.annotations == slow.annotations and fast.kind == slow.kind, f
    boxes = read_dicom_ann(tmp_path / "poly.dcm").annotations.boxes_array().tolist()
    assert boxes == [[5, 5, 50, 60], [100, 100, 150, 170]]


def test_predictions_in_other_class_schemes(tmp_path: Path, src: pydicom.Dataset) -> None:
    """Coarse scheme classes (pbc8 'ig', group 'neutrophil') survive an AUTOMATIC round trip."""
    ann = CellAnnotations(cells=(
        Cell(Box(10, 10, 110, 110), "ig", cell_id=1, probabilities={"ig": 0.6, "neutrophil": 0.4}),
        Cell(Box(210, 10, 310, 110), "neutrophil", cell_id=2, probabilities={"ig": 0.1, "neutrophil": 0.9}),
    ))
    out = write_dicom_ann(ann, tmp_path / "p.dcm", source_image=src, kind="automatic", algorithm_name="m")
    got = _by_id(read_dicom_ann(out).annotations)
    assert (got[1].label, got[2].label) == ("ig", "neutrophil")
    assert got[2].probabilities == pytest.approx({"ig": 0.1, "neutrophil": 0.9})
    with pytest.raises(ValueError, match="unknown label 'ig'"):
        write_dicom_ann(ann, tmp_path / "m.dcm", source_image=src, kind="consensus")
