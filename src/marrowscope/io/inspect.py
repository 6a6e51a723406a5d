"""What a slide, an annotation file or a cohort folder holds, as summaries (``marrowscope info``).

``inspect_path(path)`` picks the kind from the content (DICOM headers, not file names where it can):

- a slide (DICOM folder/file of one SM series, MRXS/SVS/TIFF, PNG/JPEG) -> :class:`SlideSummary`;
- an annotation file (DICOM ANN, QuPath GeoJSON, the dataset's cells/ROI CSV) -> :class:`AnnotationSummary`;
- a folder holding annotation series and/or several slides (an IDC download or a synthetic cohort)
  -> :class:`CohortSummary`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from marrowscope.errors import InputError
from marrowscope.io.formats import SLIDE_FILE_SUFFIXES
from marrowscope.io.slides.base import SlideLevel

log = logging.getLogger(__name__)

_SLIDE_ID_KEYS = (
    "dicom.PatientID",
    "dicom.ContainerIdentifier",
    "dicom.StudyInstanceUID",
    "dicom.SeriesInstanceUID",
    "dicom.SOPInstanceUID",
    "dicom.PatientAge",
    "dicom.PatientSex",
    "dicom.SeriesDescription",
    "openslide.vendor",
    "openslide.bounds-x",
    "openslide.bounds-y",
)


@dataclass(frozen=True)
class SlideSummary:
    path: str
    format: str
    slide_id: str
    width: int
    height: int
    mpp: float | None
    levels: tuple[SlideLevel, ...]
    ids: Mapping[str, str] = field(default_factory=dict)
    n_files: int = 1
    kind: str = "slide"


@dataclass(frozen=True)
class AnnotationGroupSummary:
    label: str
    count: int
    graphic_type: str = ""
    generation_type: str = ""


@dataclass(frozen=True)
class AnnotationSummary:
    path: str
    format: str  # "dicom-ann", "geojson", "cells-csv", "rois-csv"
    series_kind: str | None  # roi | session | consensus | unlabeled | automatic (DICOM ANN)
    session: int | None
    n_cells: int
    n_regions: int
    label_counts: Mapping[str, int]
    groups: tuple[AnnotationGroupSummary, ...] = ()
    series_uid: str | None = None
    referenced_series_uid: str | None = None
    series_description: str | None = None
    container_id: str | None = None
    patient_id: str | None = None
    slide_ids: tuple[str, ...] = ()
    kind: str = "annotation"


@dataclass(frozen=True)
class PatientSummary:
    patient_id: str
    slide_id: str | None
    n_slide_files: int
    ann_series: Mapping[str, int]  # kind (session k as "session k") -> series count
    diagnosis: str | None = None


@dataclass(frozen=True)
class CohortSummary:
    path: str
    n_patients: int
    n_slides: int
    n_ann_series: int
    ann_series_by_kind: Mapping[str, int]
    patients: tuple[PatientSummary, ...]
    label_counts: Mapping[str, int]  # consensus labels over all slides, from the DICOM ANN
    n_unlabeled_boxes: int
    n_rois: int
    csv_label_counts: Mapping[str, int] | None = None  # from csv/cells_labelled.csv when present
    diagnoses: Mapping[str, int] = field(default_factory=dict)
    n_orphan_series: int = 0  # ANN series whose referenced slide is not in the folder
    problems: tuple[str, ...] = ()  # what discovery found wrong (unreadable CSVs, mismatches)
    kind: str = "cohort"


Summary = SlideSummary | AnnotationSummary | CohortSummary


def to_jsonable(summary: Summary) -> dict[str, Any]:
    """Plain dict (JSON-ready) of a summary."""

    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, Mapping):
            return {str(k): conv(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        return v

    out = conv(summary)
    assert isinstance(out, dict)
    return out


# ------------------------------------------------------------------------------------------- slides


def summarize_slide(path: str | Path, mpp: float | None = None) -> SlideSummary:
    from marrowscope.io.slides import open_slide
    from marrowscope.io.slides.dicom import DicomSlide

    with open_slide(Path(path), mpp=mpp) as s:
        info = s.info
        n_files = len(s.files) if isinstance(s, DicomSlide) else 1
    ids = {k: info.properties[k] for k in _SLIDE_ID_KEYS if k in info.properties}
    return SlideSummary(
        path=str(path),
        format=info.format,
        slide_id=info.slide_id,
        width=info.width,
        height=info.height,
        mpp=info.mpp,
        levels=info.levels,
        ids=ids,
        n_files=n_files,
    )


# -------------------------------------------------------------------------------------- annotations


def _ann_groups(path: Path) -> tuple[AnnotationGroupSummary, ...]:
    import pydicom

    ds = pydicom.dcmread(path)
    out = []
    for g in ds.get("AnnotationGroupSequence", []):
        out.append(
            AnnotationGroupSummary(
                label=str(g.get("AnnotationGroupLabel", "")),
                count=int(g.get("NumberOfAnnotations", 0) or 0),
                graphic_type=str(g.get("GraphicType", "")),
                generation_type=str(g.get("AnnotationGroupGenerationType", "")),
            )
        )
    return tuple(out)


def summarize_dicom_ann(path: str | Path) -> AnnotationSummary:
    from marrowscope.io.slides.dicom import quiet_dicom_imports

    quiet_dicom_imports()
    from marrowscope.io.annotations.dicom_ann import read_dicom_ann

    series = read_dicom_ann(path)
    ann = series.annotations
    counts: Counter[str] = ann.label_counts() if ann.cells else Counter()
    if series.kind == "roi" and ann.regions:
        counts = Counter(r.label for r in ann.regions)
    return AnnotationSummary(
        path=str(path),
        format="dicom-ann",
        series_kind=series.kind,
        session=series.session,
        n_cells=len(ann.cells),
        n_regions=len(ann.regions),
        label_counts=dict(sorted(counts.items())),
        groups=_ann_groups(Path(series.path)),
        series_uid=series.series_uid,
        referenced_series_uid=series.referenced_series_uid,
        series_description=series.series_description,
        container_id=series.container_id,
        patient_id=series.patient_id,
        slide_ids=(ann.slide_id,) if ann.slide_id else (),
    )


def summarize_geojson(path: str | Path) -> AnnotationSummary:
    from marrowscope.io.annotations.geojson import read_geojson

    ann = read_geojson(path)
    return AnnotationSummary(
        path=str(path),
        format="geojson",
        series_kind=None,
        session=None,
        n_cells=len(ann.cells),
        n_regions=len(ann.regions),
        label_counts=dict(sorted(ann.label_counts().items())),
        slide_ids=(ann.slide_id,) if ann.slide_id else (),
    )


#: columns of the dataset's own CSVs that marrowscope's cell table never has
_DATASET_CSV_COLUMNS = frozenset({"original_consensus_label", "all_original_annotations"})


def is_cell_table_columns(cols: set[str]) -> bool:
    """Whether CSV columns are those of marrowscope's own cell table (``analyze``'s ``cells.csv``):
    a ``label`` column and box columns, none of the dataset CSVs' own columns."""
    return "label" in cols and {"x1", "y1", "x2", "y2"} <= cols and not cols & _DATASET_CSV_COLUMNS


def summarize_cell_table(path: str | Path) -> AnnotationSummary:
    """marrowscope's own cell table (``cells.parquet`` / ``cells.csv`` written by ``analyze``)."""
    from marrowscope.io.annotations.table import read_cell_table_by_slide

    p = Path(path)
    per_slide = read_cell_table_by_slide(p)
    counts: Counter[str] = Counter()
    for ann in per_slide.values():
        counts.update(ann.label_counts())
    return AnnotationSummary(
        path=str(p),
        format="cell-table",
        series_kind="automatic",
        session=None,
        n_cells=sum(len(a.cells) for a in per_slide.values()),
        n_regions=sum(len(a.regions) for a in per_slide.values()),
        label_counts=dict(sorted(counts.items())),
        slide_ids=tuple(sorted(str(k) for k in per_slide if k is not None)),
    )


def summarize_csv(path: str | Path) -> AnnotationSummary:
    """The dataset's cells CSV (labelled or detection-only), its ROI CSV, or marrowscope's cell table."""
    import pandas as pd

    p = Path(path)
    try:
        cols = set(pd.read_csv(p, nrows=0).columns)
    except (ValueError, OSError) as e:
        raise InputError(p, f"cannot read this CSV ({e})") from e
    if is_cell_table_columns(cols):
        return summarize_cell_table(p)
    if "roi_id" in cols and "cell_id" not in cols:
        from marrowscope.io.annotations.bmdeep_csv import read_rois_csv

        rois = read_rois_csv(p)
        n = sum(len(r) for r in rois.values())
        return AnnotationSummary(
            path=str(p),
            format="rois-csv",
            series_kind="roi",
            session=None,
            n_cells=0,
            n_regions=n,
            label_counts={"region_of_interest": n} if n else {},
            slide_ids=tuple(sorted(rois)),
        )
    from marrowscope.io.annotations.bmdeep_csv import read_cells_csv

    per_slide = read_cells_csv(p)
    counts: Counter[str] = Counter()
    for ann in per_slide.values():
        counts.update(ann.label_counts())
    labelled = any(c.label is not None for ann in per_slide.values() for c in ann.cells)
    return AnnotationSummary(
        path=str(p),
        format="cells-csv",
        series_kind="consensus" if labelled else "unlabeled",
        session=None,
        n_cells=sum(len(a.cells) for a in per_slide.values()),
        n_regions=0,
        label_counts=dict(sorted(counts.items())),
        slide_ids=tuple(sorted(per_slide)),
    )


# ------------------------------------------------------------------------------------------ cohorts


def _kind_key(kind: str, session: int | None) -> str:
    return f"session {session}" if kind == "session" and session is not None else kind


def _tally_series(ref: Any, labels: Counter[str]) -> tuple[int, int]:
    """Decode a consensus/unlabeled/ROI series: add its labels to ``labels``; return (unlabeled, rois)."""
    ann = ref.load().annotations
    if ref.kind == "consensus":
        labels.update(ann.label_counts())
        return 0, 0
    if ref.kind == "unlabeled":
        return len(ann.cells), 0
    return 0, len(ann.regions)


def summarize_cohort(path: str | Path, *, count_labels: bool = True) -> CohortSummary:
    """Patients, slides, ANN series by kind and per-label counts of a cohort folder.

    ``count_labels`` decodes the consensus, unlabeled and ROI series (all ANN objects of a real IDC
    download together are 17 MB); without it only headers are read.
    """
    from marrowscope.io.slides.dicom import quiet_dicom_imports

    quiet_dicom_imports()
    from marrowscope.io.cohort import discover_cohort

    root = Path(path)
    cohort = discover_cohort(root)
    by_kind: Counter[str] = Counter()
    labels: Counter[str] = Counter()
    diagnoses: Counter[str] = Counter()
    n_unlabeled = n_rois = n_slides = n_ann = 0
    patients = []
    for entry in cohort.patients:
        kinds: Counter[str] = Counter()
        for ref in entry.ann_series:
            key = _kind_key(ref.kind, ref.session)
            kinds[key] += 1
            by_kind[key] += 1
            n_ann += 1
            if count_labels and ref.kind in ("consensus", "unlabeled", "roi"):
                du, dr = _tally_series(ref, labels)
                n_unlabeled, n_rois = n_unlabeled + du, n_rois + dr
        slide_files = tuple(entry.slide_files)
        n_slides += 1 if slide_files else 0
        diagnosis = entry.clinical.diagnosis if entry.clinical is not None else None
        if diagnosis:
            diagnoses[str(diagnosis)] += 1
        patients.append(
            PatientSummary(
                patient_id=str(entry.patient_id),
                slide_id=entry.slide_id,
                n_slide_files=len(slide_files),
                ann_series=dict(sorted(kinds.items())),
                diagnosis=None if diagnosis is None else str(diagnosis),
            )
        )
    csv_counts = _csv_label_counts(root) if count_labels else None
    return CohortSummary(
        path=str(root),
        n_patients=len(patients),
        n_slides=n_slides,
        n_ann_series=n_ann,
        ann_series_by_kind=dict(sorted(by_kind.items())),
        patients=tuple(patients),
        label_counts=dict(sorted(labels.items())),
        n_unlabeled_boxes=n_unlabeled,
        n_rois=n_rois,
        csv_label_counts=csv_counts,
        diagnoses=dict(sorted(diagnoses.items())),
        n_orphan_series=len(cohort.orphan_series),
        problems=tuple(str(p) for p in cohort.problems),
    )


def summarize_annotation_folder(
    path: str | Path, ann_files: list[Path], *, count_labels: bool = True
) -> CohortSummary:
    """A folder of ANN series without their slides (e.g. the 17 MB annotations-only IDC download).

    Patients are grouped by the ANN headers' PatientID; every series counts as orphaned (its slide
    is not here) and ``n_slides`` is 0.
    """
    from marrowscope.io.slides.dicom import quiet_dicom_imports

    quiet_dicom_imports()
    from marrowscope.io.annotations.dicom_ann import read_dicom_ann_header

    by_kind: Counter[str] = Counter()
    labels: Counter[str] = Counter()
    per_patient: dict[str, Counter[str]] = {}
    slide_of: dict[str, str | None] = {}
    n_unlabeled = n_rois = 0
    for f in ann_files:
        ref = read_dicom_ann_header(f)
        key = _kind_key(ref.kind, ref.session)
        by_kind[key] += 1
        pid = ref.patient_id or "?"
        per_patient.setdefault(pid, Counter())[key] += 1
        slide_of.setdefault(pid, ref.container_id)
        if count_labels and ref.kind in ("consensus", "unlabeled", "roi"):
            du, dr = _tally_series(ref, labels)
            n_unlabeled, n_rois = n_unlabeled + du, n_rois + dr
    patients = tuple(
        PatientSummary(pid, slide_of.get(pid), n_slide_files=0, ann_series=dict(sorted(k.items())))
        for pid, k in sorted(per_patient.items())
    )
    root = Path(path)
    return CohortSummary(
        path=str(root),
        n_patients=len(patients),
        n_slides=0,
        n_ann_series=len(ann_files),
        ann_series_by_kind=dict(sorted(by_kind.items())),
        patients=patients,
        label_counts=dict(sorted(labels.items())),
        n_unlabeled_boxes=n_unlabeled,
        n_rois=n_rois,
        csv_label_counts=_csv_label_counts(root) if count_labels else None,
        n_orphan_series=len(ann_files),
    )


def _csv_label_counts(root: Path) -> dict[str, int] | None:
    csv = root / "csv" / "cells_labelled.csv"
    if not csv.is_file():
        return None
    from marrowscope.io.annotations.bmdeep_csv import read_cells_csv

    counts: Counter[str] = Counter()
    for ann in read_cells_csv(csv).values():
        counts.update(ann.label_counts())
    return dict(sorted(counts.items()))


# ---------------------------------------------------------------------------------------- dispatch


def inspect_path(path: str | Path, *, count_labels: bool = True, mpp: float | None = None) -> Summary:
    """Summarise what ``path`` holds (slide, annotation file or cohort folder)."""
    from marrowscope.io.slides.dicom import ANN_SOP_CLASS_UID, scan_dicom

    p = Path(path)
    if not p.exists():
        raise InputError(p, "no such file or folder")
    if p.is_dir():
        files = [f for f in p.rglob("*") if f.is_file()]
        if not files:
            raise InputError(p, "folder is empty")
        headers = scan_dicom(files)
        sm_series = {h.series_uid for h in headers if h.is_slide}
        n_other = sum(1 for h in headers if not h.is_slide)
        cohort_like = (p / "csv").is_dir() or (p / "dicom").is_dir() or (p / "synth_record.json").is_file()
        if len(sm_series) == 1 and n_other == 0 and not cohort_like:
            return summarize_slide(p, mpp=mpp)
        if not headers and not cohort_like:
            problem = f"no DICOM files and no cohort layout (csv/, dicom/) among {len(files)} file(s)"
            raise InputError(p, problem)
        if not sm_series:
            ann_files = [h.path for h in headers if h.sop_class_uid == ANN_SOP_CLASS_UID]
            if ann_files:
                return summarize_annotation_folder(p, ann_files, count_labels=count_labels)
        return summarize_cohort(p, count_labels=count_labels)
    suffix = p.suffix.lower()
    if suffix in (".geojson", ".json"):
        return summarize_geojson(p)
    if suffix == ".csv":
        return summarize_csv(p)
    if suffix == ".parquet":
        return summarize_cell_table(p)
    if suffix in SLIDE_FILE_SUFFIXES:
        return summarize_slide(p, mpp=mpp)
    headers = scan_dicom([p])
    if not headers:
        raise InputError(p, "not a slide, annotation file (DICOM ANN, GeoJSON, CSV) or cohort folder")
    if headers[0].is_slide:
        return summarize_slide(p, mpp=mpp)
    return summarize_dicom_ann(p)


def format_summary(s: Summary) -> str:
    """Human-readable text of a summary (what ``marrowscope info`` prints)."""
    from marrowscope.io.inspect_text import format_summary as fmt

    return fmt(s)

