"""What a study can use from a cohort folder, with one warning per patient that something is missing.

A patient enters the study with a slide, an ROI (from its ROI series or the dataset's ROI CSV), boxes
(ANN series or CSV rows) and a diagnosis in the clinical table. Every other case is a warning that
names the patient, says what is missing and how to get it, and leaves the patient out; once the user
completes the download the input fingerprints change and the stages that use them run again.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from marrowscope.errors import InputError
from marrowscope.io.cohort import Cohort, PatientEntry, discover_cohort

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StudyInputs:
    root: str
    cohort: Cohort
    diagnoses: Mapping[str, str]  # usable patients -> diagnosis
    labelled: frozenset[str]  # usable patients with consensus labels (classifier, true counts)
    file_hashes: Mapping[str, str]  # usable patient -> hash of its annotation files, slide and record
    csv_hash: str  # hash of the cohort's dataset CSVs
    warnings: tuple[str, ...]

    def fingerprint_of(self, patients: tuple[str, ...]) -> dict[str, str]:
        return {"csv": self.csv_hash, **{p: self.file_hashes[p] for p in patients}}


def _sha(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _patient_hash(e: PatientEntry) -> str:
    h = hashlib.sha256()
    h.update(f"{e.patient_id}|{e.slide_id}|{e.series_uid}".encode())
    for f in e.slide_files:  # slides are large: name and size, not content
        p = Path(f)
        h.update(f"|{p.name}:{p.stat().st_size}".encode())
    for s in e.ann_series:
        h.update(f"|{s.kind}:{s.session}:{_sha(s.path)}".encode())
    c = e.clinical
    if c is not None:
        h.update(f"|{c.diagnosis}|{c.sex}|{c.age}|{sorted(c.labs.items())}".encode())
    return h.hexdigest()


def _missing(e: PatientEntry) -> str | None:
    has_csv = e.csv_annotations is not None
    if not e.ann_series and not has_csv:
        return (
            "slide without annotation series (ROI, consensus) and without CSV rows; left out "
            f"(fetch them: marrowscope fetch --patient {e.patient_id})"
        )
    has_roi = bool(e.series("roi")) or bool(has_csv and e.csv_annotations and e.csv_annotations.regions)
    if not has_roi:
        return f"no ROI series; left out (fetch it: marrowscope fetch --patient {e.patient_id} --kind roi)"
    has_boxes = bool(e.series("consensus") or e.series("unlabeled")) or bool(
        has_csv and e.csv_annotations and e.csv_annotations.cells
    )
    if not has_boxes:
        return (
            f"no consensus or unlabeled box series; left out (fetch them: marrowscope fetch --patient "
            f"{e.patient_id} --kind consensus,unlabeled)"
        )
    if e.clinical is None:
        return "no row in the clinical table (csv/clinical.csv); left out (its diagnosis is unknown)"
    if not e.clinical.diagnosis:
        return "no diagnosis in the clinical table; left out"
    return None


def inspect_inputs(data: str | Path) -> StudyInputs:
    """Discover ``data`` and decide which patients a study can use (see the module docstring)."""
    cohort = discover_cohort(data)
    warnings: list[str] = []
    for s in cohort.orphan_series:
        who = s.patient_id or "(unknown patient)"
        warnings.append(
            f"patient {who}: {s.kind} annotation series {s.series_uid} without its slide "
            f"(slide series {s.referenced_series_uid} is not in the folder); left out"
        )
    diagnoses: dict[str, str] = {}
    hashes: dict[str, str] = {}
    labelled: set[str] = set()
    seen: set[str] = set()
    for e in cohort.patients:
        if e.patient_id in seen:
            warnings.append(f"patient {e.patient_id}: a second slide {e.slide_id}; only the first is used")
            continue
        seen.add(e.patient_id)
        why = _missing(e)
        if why is not None:
            warnings.append(f"patient {e.patient_id}: {why}")
            continue
        assert e.clinical is not None and e.clinical.diagnosis
        diagnoses[e.patient_id] = e.clinical.diagnosis
        hashes[e.patient_id] = _patient_hash(e)
        if e.is_labelled:
            labelled.add(e.patient_id)
    for w in warnings:
        log.warning("%s", w)
    if not diagnoses:
        raise InputError(
            data,
            "no patient has a slide, ROIs, boxes and a diagnosis; "
            + (warnings[0] if warnings else "check the download"),
        )
    h = hashlib.sha256()
    for role, paths in sorted(cohort.csv_files.items()):  # "a.csv, b.csv" when a role has several files
        for path in paths.split(", "):
            h.update(f"{role}:{Path(path).name}:{_sha(path)}|".encode())
    return StudyInputs(
        root=str(data),
        cohort=cohort,
        diagnoses=diagnoses,
        labelled=frozenset(labelled),
        file_hashes=hashes,
        csv_hash=h.hexdigest(),
        warnings=tuple(warnings),
    )
