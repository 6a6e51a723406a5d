"""DICOM Microscopy Bulk Simple Annotations (ANN) as used by the BoneMarrowWSI-PediatricLeukemia
collection in NCI IDC: reading, in the slide's level-0 pixel frame (writing:
:mod:`marrowscope.io.annotations.dicom_ann_writer`).

Series kinds (dataset.md §3.2):

- ``roi``: "Monolayer regions of interest for cell classification", SeriesNumber 33, no
  ClinicalTrialSeriesID;
- ``session`` k (zero-based): "Session k: Cell bounding boxes with cell type labels", 33+k, "k";
- ``consensus``: "Consensus: cell bounding boxes with cell type labels", 42, "consensus";
- ``unlabeled``: "Unlabeled cell bounding boxes", 42, "detection-only";
- ``automatic`` (ours, predictions): "Automatic: cell bounding boxes with predicted cell types", 50, none.

Inside a cell series there is one annotation group per label (alphabetical), split in two when the
label has cells inside and outside ROIs. Groups of cells inside ROIs carry two measurements
(EFO 0010197 cell id, DCM 130489 roi id), groups outside ROIs only the cell id (roi id -1 on reading).
Structural labels (``no_consensus_found``, ``haematological_structure``) share one SNOMED code, so
groups are told apart by their label, never by code. ``haematological_structure`` reads as an
unlabeled box (``Cell.label is None``).
"""

from __future__ import annotations

import logging
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from marrowscope.cells import Box, Cell, CellAnnotations, Region
from marrowscope.errors import InputError

if TYPE_CHECKING:
    from marrowscope.io.slides.base import SlideInfo

log = logging.getLogger(__name__)

AnnotationKind = Literal["roi", "session", "consensus", "unlabeled", "automatic"]
KINDS: tuple[str, ...] = ("roi", "session", "consensus", "unlabeled", "automatic")

ANN_SOP_CLASS_UID = "1.2.840.10008.5.1.4.1.1.91.1"
SM_SOP_CLASS_UID = "1.2.840.10008.5.1.4.1.1.77.1.6"

UNLABELED_GROUP = "haematological_structure"
ROI_GROUP = "region_of_interest"
ROI_GROUP_ALIASES = frozenset({ROI_GROUP, "monolayer"})  # "monolayer": early converter versions

ROI_DESCRIPTION = "Monolayer regions of interest for cell classification"
SESSION_DESCRIPTION = "Session {k}: Cell bounding boxes with cell type labels"
CONSENSUS_DESCRIPTION = "Consensus: cell bounding boxes with cell type labels"
UNLABELED_DESCRIPTION = "Unlabeled cell bounding boxes"
AUTOMATIC_DESCRIPTION = "Automatic: cell bounding boxes with predicted cell types"

# Measurement concepts: (scheme, value)
CELL_ID_CODES = frozenset({("EFO", "0010197"), ("DCM", "125010")})  # DCM Identifier: early converter
ROI_ID_CODE = ("DCM", "130489")
IMAGE_REGION_CODE = ("DCM", "111030")
PRIVATE_SCHEME = "99MRWSCP"  # private coding scheme for our prediction measurements
SCORE_CODE_VALUE = "SCORE"
DETECTION_ID_CODE_VALUE = "DETID"  # our id of a detected object (the dataset's cell id is EFO 0010197)
PROB_PREFIX = "Probability of "
_FLOAT32_EXACT = 2**24  # integers above this are not exact in the float32 measurement values

_SESSION_RE = re.compile(r"^\s*session\s+(\d+)\s*:", re.IGNORECASE)


@dataclass(frozen=True)
class AnnotationSeriesRef:
    """What the header of one ANN instance says (no annotations decoded). ``load()`` reads it."""

    kind: str
    session: int | None
    series_uid: str
    sop_uid: str
    study_uid: str
    referenced_series_uid: str | None
    referenced_sop_uid: str | None
    series_description: str
    path: str
    patient_id: str | None = None
    container_id: str | None = None
    series_number: int | None = None

    def load(self) -> AnnotationSeries:
        return read_dicom_ann(self.path)


@dataclass(frozen=True)
class AnnotationSeries:
    """One ANN instance decoded: its kind and the boxes it holds, in the referenced slide's level-0 frame.

    For ``roi`` series the ROIs are in ``annotations.regions`` and ``annotations.cells`` is empty.
    For ``session`` series each cell's ``label`` is its label in that session.
    """

    kind: str
    session: int | None
    annotations: CellAnnotations
    series_uid: str
    sop_uid: str
    study_uid: str
    referenced_series_uid: str | None
    referenced_sop_uid: str | None
    series_description: str
    path: str
    patient_id: str | None = None
    container_id: str | None = None
    series_number: int | None = None
    algorithm_name: str | None = None
    algorithm_version: str | None = None


# ----------------------------------------------------------------------------------------------- reading


def _resolve_file(path: str | Path) -> Path:
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith("."))
        if len(files) != 1:
            raise InputError(p, f"expected one DICOM ANN file in the folder, found {len(files)}")
        return files[0]
    if not p.is_file():
        raise InputError(p, "file not found")
    return p


def _dcmread(path: Path, *, header_only: bool) -> Dataset:
    """The dataset of ``path``; a full read also decodes every element now (pydicom decodes lazily, so a
    damaged value would otherwise raise its own error type wherever it is first used)."""
    try:
        if header_only:
            return pydicom.dcmread(path, defer_size=4096)
        ds = pydicom.dcmread(path)
        for _ in ds.iterall():
            pass
        return ds
    except Exception as exc:  # pydicom raises many types for corrupt input
        raise InputError(
            path, f"not a readable DICOM file ({type(exc).__name__}: {exc}); re-download it"
        ) from exc


def _damaged(path: Path, exc: Exception) -> InputError:
    return InputError(path, f"damaged DICOM header ({type(exc).__name__}: {exc}); re-download it")


def _check_is_ann(ds: Dataset, path: Path) -> None:
    sop = str(ds.get("SOPClassUID", ""))
    if sop != ANN_SOP_CLASS_UID and ds.get("Modality") != "ANN":
        raise InputError(
            path, f"not a Microscopy Bulk Simple Annotations object (SOP class {sop or 'missing'}, "
            f"modality {ds.get('Modality', 'missing')})"
        )


def _generation_types(ds: Dataset) -> set[str]:
    return {str(g.get("AnnotationGroupGenerationType", "")) for g in ds.get("AnnotationGroupSequence", [])}


def series_kind(ds: Dataset) -> tuple[str, int | None]:
    """(kind, session) of an ANN dataset, from ClinicalTrialSeriesID, SeriesDescription and groups."""
    trial_id = str(ds.get("ClinicalTrialSeriesID", "") or "").strip().lower()
    desc = str(ds.get("SeriesDescription", "") or "").strip()
    m = _SESSION_RE.match(desc)
    if trial_id.isdigit():
        return "session", int(trial_id)
    if m:
        return "session", int(m.group(1))
    if trial_id == "consensus" or desc.lower().startswith("consensus"):
        return "consensus", None
    if trial_id == "detection-only" or desc.lower().startswith("unlabeled"):
        return "unlabeled", None
    if "AUTOMATIC" in _generation_types(ds) or desc.lower().startswith("automatic"):
        return "automatic", None
    labels = {str(g.get("AnnotationGroupLabel", "")) for g in ds.get("AnnotationGroupSequence", [])}
    if "regions of interest" in desc.lower() or (labels and labels <= ROI_GROUP_ALIASES):
        return "roi", None
    if labels and labels <= {UNLABELED_GROUP}:
        return "unlabeled", None
    log.warning("ANN series %r has no known kind; reading it as labelled (consensus-like)", desc)
    return "consensus", None


def _ref_uids(ds: Dataset) -> tuple[str | None, str | None]:
    ref_series = None
    ref_sop = None
    if "ReferencedSeriesSequence" in ds and len(ds.ReferencedSeriesSequence):
        ref_series = str(ds.ReferencedSeriesSequence[0].SeriesInstanceUID)
    if "ReferencedImageSequence" in ds and len(ds.ReferencedImageSequence):
        ref_sop = str(ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID)
    elif ref_series is not None:
        inst = ds.ReferencedSeriesSequence[0].get("ReferencedInstanceSequence", [])
        if len(inst):
            ref_sop = str(inst[0].ReferencedSOPInstanceUID)
    return ref_series, ref_sop


def _ref_from_dataset(ds: Dataset, path: Path) -> AnnotationSeriesRef:
    kind, session = series_kind(ds)
    ref_series, ref_sop = _ref_uids(ds)
    number = ds.get("SeriesNumber")
    return AnnotationSeriesRef(
        kind=kind,
        session=session,
        series_uid=str(ds.get("SeriesInstanceUID", "")),
        sop_uid=str(ds.get("SOPInstanceUID", "")),
        study_uid=str(ds.get("StudyInstanceUID", "")),
        referenced_series_uid=ref_series,
        referenced_sop_uid=ref_sop,
        series_description=str(ds.get("SeriesDescription", "") or ""),
        path=str(path),
        patient_id=str(ds.PatientID) if ds.get("PatientID") else None,
        container_id=str(ds.ContainerIdentifier) if ds.get("ContainerIdentifier") else None,
        series_number=int(number) if number not in (None, "") else None,
    )


def annotation_ref_from_dataset(ds: Dataset, path: str | Path) -> AnnotationSeriesRef:
    """The :class:`AnnotationSeriesRef` of an already-read ANN header (InputError if not an ANN or if a
    header value is damaged)."""
    p = Path(path)
    try:
        _check_is_ann(ds, p)
        return _ref_from_dataset(ds, p)
    except InputError:
        raise
    except Exception as exc:  # a damaged value, decoded lazily by pydicom on first use
        raise _damaged(p, exc) from exc


def read_dicom_ann_header(path: str | Path) -> AnnotationSeriesRef:
    """Kind, UIDs and references of an ANN file without decoding its annotations."""
    p = _resolve_file(path)
    return annotation_ref_from_dataset(_dcmread(p, header_only=True), p)


def _label_from_group(group_label: str, path: Path, keep_unknown: bool = False) -> str | None:
    from marrowscope.taxonomy import from_idc_label

    if group_label == UNLABELED_GROUP:
        return None
    try:
        return from_idc_label(group_label)
    except InputError as exc:
        if keep_unknown:  # predictions in another class scheme (e.g. pbc8 "ig"): keep the name
            log.warning("%s: group label %r is not in the taxonomy; kept as written", path, group_label)
            return group_label
        raise InputError(path, f"unknown annotation group label {group_label!r} ({exc.problem})") from exc


_BOX_GRAPHICS = ("RECTANGLE", "POLYGON", "ELLIPSE", "POLYLINE")


@dataclass(frozen=True)
class _GroupData:
    """One annotation group decoded: label, (n, 4) boxes x1 y1 x2 y2, measurement columns by code."""

    label: str
    boxes: np.ndarray
    measurements: tuple[tuple[str, str, str, np.ndarray], ...]  # (scheme, value, meaning, values)
    algorithm: tuple[str, str] | None


def _bbox_of(points: Sequence[np.ndarray]) -> np.ndarray:
    if not points:
        return np.zeros((0, 4))
    rows = [[*np.min(g[:, :2], axis=0), *np.max(g[:, :2], axis=0)] for g in points]
    return np.array(rows, dtype=np.float64)


def _groups_highdicom(ds: Dataset, path: Path) -> list[_GroupData]:
    """Decode groups through highdicom (validates every group against the standard; slow)."""
    import highdicom as hd

    try:
        ann = hd.ann.MicroscopyBulkSimpleAnnotations.from_dataset(ds, copy=True)
        groups = ann.get_annotation_groups()
    except Exception as exc:
        raise InputError(path, f"cannot decode annotation groups ({type(exc).__name__}: {exc})") from exc
    out = []
    for g in groups:
        label = str(g.label)
        if g.graphic_type.value not in _BOX_GRAPHICS:
            raise InputError(path, f"group {label!r} has {g.graphic_type.value} graphics, not boxes")
        try:
            graphics = g.get_graphic_data(coordinate_type="2D")
            names, values, _units = g.get_measurements()
        except Exception as exc:
            raise InputError(path, f"group {label!r}: cannot decode ({type(exc).__name__}: {exc})") from exc
        values = np.asarray(values, dtype=np.float64).reshape(len(graphics), len(names))
        ms = tuple((str(n.scheme_designator), str(n.value), str(n.meaning), values[:, j])
                   for j, n in enumerate(names))
        algo = None
        if g.algorithm_identification is not None:
            a = g.algorithm_identification[0]
            algo = (str(a.AlgorithmName), str(a.AlgorithmVersion))
        out.append(_GroupData(label, _bbox_of(graphics), ms, algo))
    return out


def _fast_values(item: Dataset, n: int) -> np.ndarray:
    v = item.MeasurementValuesSequence[0]
    values = np.full(n, np.nan, dtype=np.float64)
    stored = np.frombuffer(v.FloatingPointValues, np.float32) if v.get("FloatingPointValues") else np.zeros(0)
    if "AnnotationIndexList" in v:
        idx = np.frombuffer(v.AnnotationIndexList, np.int32).astype(np.int64) - 1
    else:
        idx = np.arange(len(stored))
    values[idx] = stored
    return values


def _groups_fast(ds: Dataset, path: Path) -> list[_GroupData]:
    """Decode groups straight from the pydicom dataset (same result as highdicom, ~10x faster)."""
    out = []
    for g in ds.get("AnnotationGroupSequence", []):
        label = str(g.get("AnnotationGroupLabel", ""))
        try:
            n = int(g.NumberOfAnnotations)
            gtype = str(g.GraphicType)
            if gtype not in _BOX_GRAPHICS:
                raise InputError(path, f"group {label!r} has {gtype} graphics, not boxes")
            if "DoublePointCoordinatesData" in g:
                flat = np.frombuffer(g.DoublePointCoordinatesData, np.float64)
            else:
                flat = np.frombuffer(g.PointCoordinatesData, np.float32)
            dim = 2  # 2D pixel coordinates (3D files are refused before)
            pts = flat.astype(np.float64).reshape(-1, dim)[:, :2]
            if gtype in ("RECTANGLE", "ELLIPSE"):
                xy = pts.reshape(n, 4, 2)
                boxes = np.concatenate([xy.min(axis=1), xy.max(axis=1)], axis=1)
            else:
                starts = (np.frombuffer(g.LongPrimitivePointIndexList, np.int32).astype(np.int64) - 1) // dim
                boxes = _bbox_of(np.split(pts, starts[1:]))
            ms = []
            for m in g.get("MeasurementsSequence", []):
                c = m.ConceptNameCodeSequence[0]
                code = (str(c.CodingSchemeDesignator), str(c.CodeValue), str(c.CodeMeaning))
                ms.append((*code, _fast_values(m, n)))
            algo = None
            if "AnnotationGroupAlgorithmIdentificationSequence" in g:
                a = g.AnnotationGroupAlgorithmIdentificationSequence[0]
                algo = (str(a.get("AlgorithmName", "")), str(a.get("AlgorithmVersion", "")))
        except InputError:
            raise
        except Exception as exc:
            raise InputError(path, f"group {label!r}: cannot decode ({type(exc).__name__}: {exc})") from exc
        if boxes.shape[0] != n:
            raise InputError(path, f"group {label!r}: {boxes.shape[0]} graphics for {n} annotations")
        out.append(_GroupData(label, boxes, tuple(ms), algo))
    return out


def _columns(group: _GroupData) -> dict[str, Any]:
    """Measurement columns of a group by role: cell_id, roi_id, image_region, score, probabilities."""
    out: dict[str, Any] = {"probabilities": {}}
    for scheme, value, meaning, col in group.measurements:
        key = (scheme, value)
        if key in CELL_ID_CODES:
            out["cell_id"] = col
        elif key == ROI_ID_CODE:
            out["roi_id"] = col
        elif key == IMAGE_REGION_CODE:
            out["image_region"] = col
        elif scheme == PRIVATE_SCHEME and value == SCORE_CODE_VALUE:
            out["score"] = col
        elif scheme == PRIVATE_SCHEME and value == DETECTION_ID_CODE_VALUE:
            out["detection_id"] = col
        elif scheme == PRIVATE_SCHEME and meaning.startswith(PROB_PREFIX):
            out["probabilities"][meaning[len(PROB_PREFIX):]] = col
    return out


def _as_int(v: float) -> int | None:
    return None if math.isnan(v) else int(round(v))


def _to_boxes(arr: np.ndarray, path: Path, label: str) -> list[Box]:
    boxes = []
    for row in arr.tolist():
        try:
            boxes.append(Box(*row))
        except ValueError as exc:
            raise InputError(path, f"group {label!r}: {exc}") from exc
    return boxes


def read_dicom_ann(path: str | Path, *, validate: bool = False) -> AnnotationSeries:
    """Read one ANN file (or a series folder holding one file) into an :class:`AnnotationSeries`.

    ``validate=True`` decodes through highdicom, which checks every group against the standard
    (about 10x slower); the default decodes the same attributes directly with pydicom.
    """
    p = _resolve_file(path)
    ds = _dcmread(p, header_only=False)
    ref = annotation_ref_from_dataset(ds, p)
    if str(ds.get("AnnotationCoordinateType", "2D")) != "2D":
        raise InputError(
            p, "annotation coordinates are 3D (frame of reference); only 2D pixel coordinates are supported"
        )
    groups = _groups_highdicom(ds, p) if validate else _groups_fast(ds, p)

    any_roi_column = False
    cells: list[Cell] = []
    regions: list[Region] = []
    algo_name = algo_version = None
    for group in groups:
        label = group.label
        if group.algorithm is not None:
            algo_name, algo_version = group.algorithm
        boxes = _to_boxes(group.boxes, p, label)
        cols = _columns(group)
        if label in ROI_GROUP_ALIASES:
            ids = cols.get("image_region", cols.get("roi_id"))
            for i, box in enumerate(boxes):
                rid = _as_int(ids[i]) if ids is not None else None
                regions.append(Region(box=box, roi_id=rid if rid is not None else i))
            continue
        name = _label_from_group(label, p, keep_unknown=ref.kind == "automatic")
        any_roi_column = any_roi_column or "roi_id" in cols
        cell_ids = cols.get("cell_id")
        det_ids = cols.get("detection_id")
        roi_ids = cols.get("roi_id")
        score = cols.get("score")
        probs: dict[str, np.ndarray] = cols["probabilities"]
        for i, box in enumerate(boxes):
            p_i = {k: float(v[i]) for k, v in probs.items() if not math.isnan(v[i])} or None
            cells.append(
                Cell(
                    box=box,
                    label=name,
                    # -1: the writer's mark for a detection without a dataset cell id
                    cell_id=_as_int(cell_ids[i]) if cell_ids is not None and cell_ids[i] != -1 else None,
                    detection_id=_as_int(det_ids[i]) if det_ids is not None else None,
                    roi_id=(_as_int(roi_ids[i]) if roi_ids is not None else -1),
                    score=(None if score is None or math.isnan(score[i]) else float(score[i])),
                    probabilities=p_i,
                )
            )
    if ref.kind == "automatic" and not any_roi_column:
        cells = [replace(c, roi_id=None) for c in cells]
    annotations = CellAnnotations(
        cells=tuple(cells),
        regions=tuple(regions),
        slide_id=ref.container_id,
        source=f"dicom-ann:{ref.kind}" + (f":{ref.session}" if ref.session is not None else ""),
        extra={"frame": "dicom", "series_uid": ref.series_uid,
               "referenced_series_uid": ref.referenced_series_uid or ""},
    )
    return AnnotationSeries(
        kind=ref.kind,
        session=ref.session,
        annotations=annotations,
        series_uid=ref.series_uid,
        sop_uid=ref.sop_uid,
        study_uid=ref.study_uid,
        referenced_series_uid=ref.referenced_series_uid,
        referenced_sop_uid=ref.referenced_sop_uid,
        series_description=ref.series_description,
        path=ref.path,
        patient_id=ref.patient_id,
        container_id=ref.container_id,
        series_number=ref.series_number,
        algorithm_name=algo_name,
        algorithm_version=algo_version,
    )


def merge_sessions(base: CellAnnotations, sessions: Iterable[AnnotationSeries]) -> CellAnnotations:
    """Fill ``Cell.session_labels`` of ``base`` (matched by ``cell_id``) from Session k series.

    Session k holds only the cells that received at least k+1 labels, so a cell's labels are the
    sessions 0, 1, ... it appears in; a gap (present in k but not in k-1) raises :class:`InputError`.
    """
    per_cell: dict[int, dict[int, str]] = defaultdict(dict)
    ordered = sorted((s for s in sessions if s.kind == "session"), key=lambda s: s.session or 0)
    for s in ordered:
        assert s.session is not None
        for c in s.annotations.cells:
            if c.cell_id is None or c.label is None:
                continue
            per_cell[c.cell_id][s.session] = c.label
    out = []
    for c in base.cells:
        labels = per_cell.get(c.cell_id, {}) if c.cell_id is not None else {}
        if labels and sorted(labels) != list(range(len(labels))):
            path = ordered[0].path if ordered else "sessions"
            raise InputError(
                path, f"cell {c.cell_id} has labels in sessions {sorted(labels)}: session k must only hold "
                "cells labelled in sessions 0..k-1 too (zero-based sessions)"
            )
        out.append(replace(c, session_labels=tuple(labels[k] for k in sorted(labels))))
    return base.with_cells(out)


# ----------------------------------------------------------------------------------------------- checking


def check_references(
    series: AnnotationSeries | AnnotationSeriesRef, slide_info: SlideInfo, *, check_bounds: bool = True
) -> None:
    """Raise :class:`InputError` when ``series`` belongs to another slide than ``slide_info``.

    Compares the referenced SM series UID with ``slide_info.properties['dicom.SeriesInstanceUID']``
    (and the container identifier / slide id when UIDs are not available); with ``check_bounds`` also
    checks that every box lies inside the slide.
    """
    props = slide_info.properties
    slide_series = props.get("dicom.SeriesInstanceUID")
    if slide_series and series.referenced_series_uid and series.referenced_series_uid != slide_series:
        raise InputError(
            series.path, f"annotations reference slide series {series.referenced_series_uid}, but the slide "
            f"{slide_info.slide_id} is series {slide_series}: use the ANN series of this slide"
        )
    slide_container = props.get("dicom.ContainerIdentifier") or slide_info.slide_id
    if (not slide_series or not series.referenced_series_uid) and series.container_id and slide_container \
            and series.container_id != slide_container:
        raise InputError(
            series.path, f"annotations belong to slide {series.container_id}, not to {slide_container}"
        )
    if check_bounds and isinstance(series, AnnotationSeries):
        _raise_outside(series.annotations, slide_info.width, slide_info.height, series.path)


def _raise_outside(ann: CellAnnotations, width: int, height: int, path: object, tol: float = 1.0) -> None:
    boxes = [c.box for c in ann.cells] + [r.box for r in ann.regions]
    bad = [b for b in boxes if b.x1 < -tol or b.y1 < -tol or b.x2 > width + tol or b.y2 > height + tol]
    if bad:
        raise InputError(
            path, f"{len(bad)} box(es) lie outside the slide ({width} x {height} px), e.g. "
            f"{bad[0].as_tuple()}: wrong slide or wrong coordinate frame (CSV boxes need the openslide "
            "bounds offset)"
        )
