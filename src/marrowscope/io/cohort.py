"""Discover a cohort folder laid out like an IDC download plus the dataset's CSVs.

Layout (docs/annotations-dicom.md)::

    DIR/dicom/<PatientID>/<StudyInstanceUID>/SM_<SeriesInstanceUID>/*.dcm    one slide per patient
    DIR/dicom/<PatientID>/<StudyInstanceUID>/ANN_<SeriesInstanceUID>/*.dcm   ROI, Session k, Consensus, ...
    DIR/csv/cells_labelled.csv, cells_detection_only.csv, rois.csv          (MRXS frame)
    DIR/csv/clinical.csv                                                     (semicolon)
    DIR/rois/slides/<SeriesInstanceUID>.json + DIR/rois/index.json           an ROI-only download's slides

Slides and annotation series are found by their DICOM headers, never by folder names; an ANN series
belongs to the slide whose SM series UID it references. CSVs are recognised by their header row.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset

from marrowscope.cells import Cell, CellAnnotations
from marrowscope.errors import InputError
from marrowscope.io.annotations.bmdeep_csv import attach_rois, csv_to_dicom, read_cells_csv, read_rois_csv
from marrowscope.io.annotations.clinical import ClinicalRecord, read_clinical_csv
from marrowscope.io.annotations.dicom_ann import (
    ANN_SOP_CLASS_UID,
    SM_SOP_CLASS_UID,
    AnnotationSeries,
    AnnotationSeriesRef,
    annotation_ref_from_dataset,
    merge_sessions,
    read_dicom_ann,
)
from marrowscope.io.formats import IMAGE_SUFFIXES
from marrowscope.io.slides.dicom import _has_dicm_magic, check_not_empty

log = logging.getLogger(__name__)

SOURCES: tuple[str, ...] = ("consensus", "unlabeled", "boxes", "automatic", "csv", "roi")
_SKIP_SUFFIXES = frozenset({".csv", ".json", ".md", ".txt", ".html", ".parquet", *IMAGE_SUFFIXES})


@dataclass(frozen=True)
class PatientEntry:
    """One slide of the cohort with everything that refers to it.

    ``slide_files``: the SM instance files of the slide (hand them to ``open_slide``).
    ``ann_series``: headers of the ANN series that reference this slide.
    ``csv_annotations``: the slide's cells and ROIs from the dataset CSVs, in the CSV (MRXS) frame.
    ``openslide_properties``: the OpenSlide properties stored in the SM header (bounds, mpp).
    """

    patient_id: str
    slide_id: str
    slide_files: tuple[str, ...]
    ann_series: tuple[AnnotationSeriesRef, ...] = ()
    clinical: ClinicalRecord | None = None
    study_uid: str = ""
    series_uid: str = ""
    base_sop_uid: str = ""
    width: int = 0
    height: int = 0
    openslide_properties: Mapping[str, str] = field(default_factory=dict)
    csv_annotations: CellAnnotations | None = None

    def series(self, kind: str, session: int | None = None) -> tuple[AnnotationSeriesRef, ...]:
        return tuple(
            s for s in self.ann_series if s.kind == kind and (session is None or s.session == session)
        )

    @property
    def sessions(self) -> tuple[AnnotationSeriesRef, ...]:
        return tuple(sorted(self.series("session"), key=lambda s: s.session or 0))

    @property
    def kinds(self) -> Counter[str]:
        return Counter(s.kind for s in self.ann_series)

    @property
    def is_labelled(self) -> bool:
        return bool(self.series("consensus")) or bool(
            self.csv_annotations and any(c.label is not None for c in self.csv_annotations.cells)
        )

    @property
    def mpp(self) -> float | None:
        v = self.openslide_properties.get("openslide.mpp-x")
        try:
            return float(v) if v is not None else None
        except ValueError:
            return None


@dataclass(frozen=True)
class UnreadableFile:
    """A file that looks like DICOM (``.dcm`` or the ``DICM`` preamble) but whose header cannot be read."""

    path: str
    problem: str

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


@dataclass(frozen=True)
class Cohort:
    """All slides found under ``root``. ``orphan_series``: ANN series whose slide is not in the folder;
    ``unreadable``: DICOM files whose header could not be read (skipped; one bad file never hides the
    others); ``problems``: one line per inconsistency found, unreadable files included (also logged as
    warnings)."""

    root: str
    patients: tuple[PatientEntry, ...]
    orphan_series: tuple[AnnotationSeriesRef, ...] = ()
    clinical: Mapping[str, ClinicalRecord] = field(default_factory=dict)
    csv_files: Mapping[str, str] = field(default_factory=dict)
    problems: tuple[str, ...] = ()
    unreadable: tuple[UnreadableFile, ...] = ()

    def __len__(self) -> int:
        return len(self.patients)

    def __iter__(self) -> Iterator[PatientEntry]:
        return iter(self.patients)

    def get(self, key: str) -> PatientEntry:
        """The entry with this patient id or slide id."""
        for p in self.patients:
            if key in (p.patient_id, p.slide_id):
                return p
        raise KeyError(f"{key}: no such patient or slide in {self.root}")


# ------------------------------------------------------------------------------------------------ DICOM


def _is_candidate(p: Path) -> bool:
    if p.name.startswith(".") or p.name.upper() == "DICOMDIR" or p.suffix.lower() in _SKIP_SUFFIXES:
        return False
    if p.suffix.lower() == ".dcm":
        return True
    return _has_dicm_magic(p)


def _read_header(p: Path) -> Dataset:
    check_not_empty(p)
    try:
        ds = pydicom.dcmread(p, stop_before_pixels=True, defer_size=2048)
    except Exception as exc:  # pydicom raises many types (struct.error, ...) on damaged headers
        raise InputError(p, f"not a readable DICOM file ({type(exc).__name__}: {exc})") from exc
    if "SOPClassUID" not in ds:
        raise InputError(p, "DICOM file has no SOPClassUID; it may be truncated")
    return ds


def _openslide_properties(ds: Dataset) -> dict[str, str]:
    from marrowscope.io.slides.dicom import openslide_properties_from_dataset

    return openslide_properties_from_dataset(ds)


@dataclass(frozen=True)
class _BaseHeader:
    """The fields of a slide's base-level SM header that discovery keeps (read while the file is
    guarded: pydicom decodes values lazily, so a damaged one raises where it is first used)."""

    patient_id: str
    container_id: str
    study_uid: str
    sop_uid: str
    width: int
    height: int
    openslide_properties: Mapping[str, str]

    @classmethod
    def of(cls, ds: Dataset) -> _BaseHeader:
        return cls(
            patient_id=str(ds.get("PatientID", "") or ""),
            container_id=str(ds.get("ContainerIdentifier", "") or ""),
            study_uid=str(ds.get("StudyInstanceUID", "") or ""),
            sop_uid=str(ds.get("SOPInstanceUID", "") or ""),
            width=_header_int(ds, "TotalPixelMatrixColumns"),
            height=_header_int(ds, "TotalPixelMatrixRows"),
            openslide_properties=_openslide_properties(ds),
        )


@dataclass
class _SlideAcc:
    files: list[str] = field(default_factory=list)
    base: _BaseHeader | None = None
    base_size: int = -1


def _is_volume(ds: Dataset) -> bool:
    it = ds.get("ImageType")
    return it is None or len(it) < 3 or str(it[2]) == "VOLUME"


def _header_int(ds: Dataset, name: str) -> int:
    try:
        return int(ds.get(name, 0) or 0)
    except (TypeError, ValueError):
        return 0


def _scan_dicom(
    root: Path,
) -> tuple[dict[str, _SlideAcc], list[AnnotationSeriesRef], list[UnreadableFile]]:
    """Slides by series UID, ANN series and the DICOM files that could not be read (skipped)."""
    slides: dict[str, _SlideAcc] = defaultdict(_SlideAcc)
    anns: list[AnnotationSeriesRef] = []
    unreadable: list[UnreadableFile] = []
    for p in sorted(root.rglob("*")):
        if not p.is_file() or not _is_candidate(p):
            continue
        try:
            ds = _read_header(p)
            sop = str(ds.SOPClassUID)
            if sop == SM_SOP_CLASS_UID:
                series = str(ds.get("SeriesInstanceUID", "") or "")
                if not series:
                    raise InputError(p, "slide (SM) file has no SeriesInstanceUID; it may be truncated")
                header = _BaseHeader.of(ds) if _is_volume(ds) else None
                acc = slides[series]
                acc.files.append(str(p))
                if header is not None and header.width * header.height > acc.base_size:
                    acc.base, acc.base_size = header, header.width * header.height
            elif sop == ANN_SOP_CLASS_UID:
                anns.append(annotation_ref_from_dataset(ds, p))
            else:
                log.debug("%s: ignoring DICOM object of class %s", p, sop)
        except InputError as e:
            unreadable.append(UnreadableFile(str(p), e.problem))
        except Exception as e:  # noqa: BLE001 - a damaged header value, decoded lazily by pydicom
            unreadable.append(UnreadableFile(str(p), f"damaged DICOM header ({type(e).__name__}: {e})"))
    return slides, anns, unreadable


def _add_roi_only_slides(root: Path, slides: dict[str, _SlideAcc], unreadable: list[UnreadableFile]) -> None:
    """The slides of an ROI-only download (``rois/slides/<uid>.json`` headers, no SM files; see
    :mod:`marrowscope.io.slides.roi_patches`) whose series has no SM files in the folder."""
    from marrowscope.io.slides.roi_patches import is_roi_header, read_roi_header

    for p in sorted((root / "rois" / "slides").glob("*.json")):
        if not is_roi_header(p) or p.stem in slides:
            continue
        try:
            ds = read_roi_header(p)
            if str(ds.get("SOPClassUID", "")) != SM_SOP_CLASS_UID:
                raise InputError(p, "ROI-only slide header is not a slide (SM) header")
            acc = slides[str(ds.get("SeriesInstanceUID", "") or p.stem)]
            acc.files.append(str(p))
            acc.base = _BaseHeader.of(ds)
            acc.base_size = acc.base.width * acc.base.height
        except InputError as e:
            unreadable.append(UnreadableFile(str(p), e.problem))


# ------------------------------------------------------------------------------------------------ CSVs


def _csv_role(p: Path) -> str | None:
    try:
        with p.open(encoding="utf-8-sig") as f:
            header = f.readline().strip()
    except (OSError, UnicodeDecodeError):
        return None
    cols = {c.strip() for c in header.replace(";", ",").split(",")}
    if "patient_id" in cols and ";" in header:
        return "clinical"
    if "cell_id" in cols:
        return "cells"
    if "roi_id" in cols or {"id", "x_in_slide", "width"} <= cols:
        return "rois"
    return None


def _read_csvs(
    root: Path, problems: list[str]
) -> tuple[dict[str, CellAnnotations], dict[str, ClinicalRecord], dict[str, str]]:
    files = sorted({*root.glob("*.csv"), *(root / "csv").glob("*.csv")})
    roles: dict[str, list[Path]] = defaultdict(list)
    for p in files:
        role = _csv_role(p)
        if role is None:
            log.info("%s: not a dataset CSV (unknown header); ignored", p)
            continue
        roles[role].append(p)
    cells: dict[str, list[CellAnnotations]] = defaultdict(list)
    rois_by_slide: dict[str, tuple[Any, ...]] = {}
    rois_path = roles["rois"][0] if roles["rois"] else None
    for p in roles["cells"]:
        for sid, ann in read_cells_csv(p, rois_path=rois_path).items():
            cells[sid].append(ann)
    for p in roles["rois"]:
        for sid, regs in read_rois_csv(p).items():
            rois_by_slide[sid] = rois_by_slide.get(sid, ()) + tuple(regs)
    merged: dict[str, CellAnnotations] = {}
    for sid, parts in cells.items():
        seen: set[int] = set()
        all_cells: list[Cell] = []
        for part in parts:
            for c in part.cells:
                if c.cell_id is not None and c.cell_id in seen:
                    problems.append(f"cell {c.cell_id} of slide {sid} appears in more than one cells CSV")
                    continue
                if c.cell_id is not None:
                    seen.add(c.cell_id)
                all_cells.append(c)
        merged[sid] = replace(parts[0], cells=tuple(all_cells),
                              source="+".join(sorted({p.source for p in parts})))
    with_rois = attach_rois(merged, rois_by_slide) if (merged or rois_by_slide) else {}
    clinical: dict[str, ClinicalRecord] = {}
    for p in roles["clinical"]:
        for pid, rec in read_clinical_csv(p).items():
            if pid in clinical:
                problems.append(f"patient {pid} appears in more than one clinical CSV ({p.name})")
            clinical[pid] = rec
    used = {role: ", ".join(str(p) for p in ps) for role, ps in roles.items() if ps}
    return with_rois, clinical, used


# ------------------------------------------------------------------------------------------------ discovery


def discover_cohort(folder: str | Path, *, read_csvs: bool = True) -> Cohort:
    """Find every slide, its ANN series, CSV annotations and clinical record under ``folder``.

    Raises :class:`InputError` for a missing or empty folder or one without any DICOM slide. ANN series
    that reference a slide not in the folder, CSV rows for unknown slides and patients without a
    clinical row are reported in ``Cohort.problems`` (and logged), not raised.
    """
    root = Path(folder)
    if not root.is_dir():
        raise InputError(root, "no such folder")
    if not any(root.iterdir()):
        raise InputError(root, "folder is empty; expected dicom/<PatientID>/<Study>/<Series>/*.dcm (+ csv/)")
    problems: list[str] = []
    dicom_root = root / "dicom" if (root / "dicom").is_dir() else root
    slides, anns, unreadable = _scan_dicom(dicom_root)
    _add_roi_only_slides(root, slides, unreadable)
    if not slides:
        what = f"{len(anns)} annotation series but " if anns else ""
        bad = ""
        if unreadable:
            more = f" (and {len(unreadable) - 1} more)" if len(unreadable) > 1 else ""
            bad = f"; {len(unreadable)} DICOM file(s) could not be read: {unreadable[0]}{more}"
        raise InputError(
            root, f"{what}no DICOM slide (SM) found; expected dicom/<PatientID>/<Study>/SM_*/*.dcm{bad}"
        )
    problems.extend(f"{u}; skipped" for u in unreadable)
    csv_anns: dict[str, CellAnnotations] = {}
    clinical: dict[str, ClinicalRecord] = {}
    csv_files: dict[str, str] = {}
    if read_csvs:
        csv_anns, clinical, csv_files = _read_csvs(root, problems)

    by_series: dict[str, list[AnnotationSeriesRef]] = defaultdict(list)
    container_to_series = {
        acc.base.container_id: uid
        for uid, acc in slides.items()
        if acc.base is not None
    }
    orphans: list[AnnotationSeriesRef] = []
    for a in anns:
        uid = a.referenced_series_uid
        if uid is None and a.container_id in container_to_series:
            uid = container_to_series[a.container_id]
        if uid in slides:
            by_series[uid].append(a)
        else:
            orphans.append(a)
            problems.append(f"{a.path}: {a.kind} series references slide series {a.referenced_series_uid}, "
                            "which is not in the folder")

    entries = []
    for uid, acc in slides.items():
        if acc.base is None:
            problems.append(f"slide series {uid} has no pyramid (VOLUME) instance; skipped")
            continue
        base = acc.base
        patient_id = base.patient_id
        slide_id = base.container_id or uid
        series = tuple(sorted(by_series.get(uid, []), key=lambda s: (s.kind, s.session or 0, s.series_uid)))
        seen_kinds = Counter((s.kind, s.session) for s in series)
        for (kind, session), n in seen_kinds.items():
            if n > 1 and kind != "automatic":
                problems.append(f"slide {slide_id}: {n} {kind} series" + (f" {session}" if session is not None
                                                                          else "") + "; the first is used")
        entries.append(PatientEntry(
            patient_id=patient_id,
            slide_id=slide_id,
            slide_files=tuple(sorted(acc.files)),
            ann_series=series,
            clinical=clinical.get(patient_id),
            study_uid=base.study_uid,
            series_uid=uid,
            base_sop_uid=base.sop_uid,
            width=base.width,
            height=base.height,
            openslide_properties=base.openslide_properties,
            csv_annotations=csv_anns.get(slide_id),
        ))
    entries.sort(key=lambda e: (e.patient_id, e.slide_id))
    per_patient = Counter(e.patient_id for e in entries)
    for pid, n in per_patient.items():
        if n > 1:
            problems.append(f"patient {pid} has {n} slides (the dataset has one per patient)")
    known_slides = {e.slide_id for e in entries}
    extra_csv = sorted(set(csv_anns) - known_slides)
    if extra_csv:
        problems.append(
            f"CSV annotations for {len(extra_csv)} slide(s) not in the folder: {', '.join(extra_csv[:5])}"
        )
    if clinical:
        missing = sorted({e.patient_id for e in entries} - set(clinical))
        if missing:
            problems.append(f"no clinical row for {len(missing)} patient(s): {', '.join(missing[:5])}")
    for line in problems:
        log.warning("%s", line)
    return Cohort(root=str(root), patients=tuple(entries), orphan_series=tuple(orphans), clinical=clinical,
                  csv_files=csv_files, problems=tuple(problems), unreadable=tuple(unreadable))


# ------------------------------------------------------------------------------------------------ loading


def _load_first(entry: PatientEntry, kind: str) -> AnnotationSeries | None:
    refs = entry.series(kind)
    return read_dicom_ann(refs[0].path) if refs else None


def _regions(entry: PatientEntry) -> tuple[Any, ...]:
    roi = _load_first(entry, "roi")
    return roi.annotations.regions if roi is not None else ()


def load_patient_annotations(
    entry: PatientEntry, source: str = "consensus", *, with_sessions: bool = True
) -> CellAnnotations:
    """One slide's annotations in its DICOM level-0 frame, with the ROIs of its ROI series.

    ``source``: ``consensus`` (labels; ``session_labels`` filled from the Session k series),
    ``unlabeled`` (detection-only boxes), ``boxes`` (consensus + unlabeled: every box, for detection),
    ``automatic`` (our predictions), ``roi`` (regions only), ``csv`` (the dataset CSVs, shifted from the
    MRXS frame by the OpenSlide bounds in the slide header; the authoritative source, incl. ``monoblast``).
    """
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; use one of {SOURCES}")
    base = CellAnnotations(cells=(), slide_id=entry.slide_id, width=entry.width or None,
                           height=entry.height or None, mpp=entry.mpp, source=source,
                           extra={"frame": "dicom", "series_uid": entry.series_uid})
    if source == "csv":
        if entry.csv_annotations is None:
            raise InputError(entry.slide_id, "no rows for this slide in the cohort's cells/ROI CSVs")
        shifted = csv_to_dicom(entry.csv_annotations, entry.openslide_properties)
        return replace(base, cells=shifted.cells, regions=shifted.regions, source=shifted.source or "csv")
    regions = _regions(entry)
    if source == "roi":
        return replace(base, regions=regions)
    cells: list[Cell] = []
    kinds = {"boxes": ("consensus", "unlabeled")}.get(source, (source,))
    found = False
    for kind in kinds:
        s = _load_first(entry, kind)
        if s is None:
            continue
        found = True
        ann = s.annotations
        if kind == "consensus" and with_sessions and entry.sessions:
            ann = merge_sessions(ann, [read_dicom_ann(r.path) for r in entry.sessions])
        cells.extend(ann.cells)
    if not found:
        have = ", ".join(sorted(entry.kinds)) or "none"
        raise InputError(
            entry.slide_id, f"no {' or '.join(kinds)} annotation series for this slide (has: {have})"
        )
    return replace(base, cells=tuple(cells), regions=regions)
