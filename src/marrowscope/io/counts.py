"""Per-patient cell-count tables: the input of the diagnosis model.

Three sources give one :class:`CountsTable`:

* a plain CSV (comma or semicolon): ``patient_id``, ``diagnosis``, one column per taxonomy label with
  that label's cell count, optionally the lab columns (``blasts``, ``wbc``, ``thrombocytes``, ``ldh``,
  ``uric_acid``, ``hemoglobin``), ``age`` (``042M`` style age group or months) and ``sex`` / ``gender``
  (:func:`read_counts_table`, written by :func:`write_counts_table`);
* a cohort folder (IDC-style DICOM + the dataset CSVs + clinical table, or the CSVs alone): the expert
  consensus labels of every labelled slide are counted (:func:`counts_from_cohort`); without a
  clinical row the diagnosis comes from the slide header's NCIt admitting diagnosis when IDC put one;
* the whole-slide pipeline's ``summary.json`` files, one per slide, whose ``differential.counts`` (and
  ``differential.not_counted``) give the predicted counts (:func:`predicted_counts_from_summaries`).
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from marrowscope import taxonomy
from marrowscope.errors import InputError
from marrowscope.io.annotations.clinical import LAB_COLUMNS, ClinicalRecord, normalise_diagnosis
from marrowscope.io.atomic import atomic_path
from marrowscope.io.csvsafe import escape_frame, unescape_frame

log = logging.getLogger(__name__)

DEMOGRAPHIC_COLUMNS: tuple[str, ...] = ("age_months", "sex_male")
CLINICAL_COLUMNS: tuple[str, ...] = LAB_COLUMNS + DEMOGRAPHIC_COLUMNS
#: Columns of a plain counts CSV that are not label counts.
_META_COLUMNS = frozenset({"patient_id", "diagnosis", "slide_id", "age", "sex", "gender", *CLINICAL_COLUMNS})
#: Non-label buckets a summary.json reports under ``not_counted``.
_NOT_LABELS = frozenset({"unlabeled", "uncertain"})


def age_in_months(age: str | float | None) -> float:
    """``'042M'`` -> 42, ``'5Y'`` -> 60, ``'3W'`` -> 0.7, plain numbers are months; NaN when unknown."""
    if age is None or (isinstance(age, float) and math.isnan(age)):
        return float("nan")
    if isinstance(age, int | float):
        return float(age)
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([DWMY]?)\s*", str(age).upper())
    if m is None:
        return float("nan")
    v, unit = float(m.group(1)), m.group(2) or "M"
    return v * {"D": 1 / 30.44, "W": 7 / 30.44, "M": 1.0, "Y": 12.0}[unit]


def sex_male(sex: str | None) -> float:
    """1 for M, 0 for F, NaN for O or unknown."""
    s = (sex or "").strip().upper()
    return {"M": 1.0, "F": 0.0}.get(s, float("nan"))


def clinical_row(record: ClinicalRecord | None) -> dict[str, float]:
    """Lab and demographic values of one patient as numbers (NaN = missing)."""
    if record is None:
        return {c: float("nan") for c in CLINICAL_COLUMNS}
    row = {c: (float("nan") if record.labs.get(c) is None else float(record.labs[c]))  # type: ignore[arg-type]
           for c in LAB_COLUMNS}
    row["age_months"] = age_in_months(record.age)
    row["sex_male"] = sex_male(record.sex)
    return row


@dataclass(frozen=True)
class CountsTable:
    """Cell counts per patient (rows in ``patient_ids`` order).

    ``counts``: index patient_id, one column per canonical taxonomy label (non-countable labels
    included; the features keep them out of the denominator). ``clinical``: index patient_id, columns
    :data:`CLINICAL_COLUMNS` (NaN = missing). ``diagnoses``: None where unknown. ``problems``: one line
    per patient that was left out or is incomplete (also logged).
    """

    patient_ids: tuple[str, ...]
    diagnoses: tuple[str | None, ...]
    counts: pd.DataFrame
    clinical: pd.DataFrame
    source: str = ""
    problems: tuple[str, ...] = ()
    slide_ids: Mapping[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.patient_ids)

    def frame(self, include_clinical: bool = False) -> pd.DataFrame:
        """The estimator input: counts (+ clinical columns), index patient_id."""
        if not include_clinical:
            return self.counts.copy()
        return pd.concat([self.counts, self.clinical], axis=1)

    def diagnosis_of(self, patient_id: str) -> str | None:
        return self.diagnoses[self.patient_ids.index(patient_id)]

    def subset(self, patient_ids: Sequence[str]) -> CountsTable:
        ids = list(patient_ids)
        pos = {p: i for i, p in enumerate(self.patient_ids)}
        missing = [p for p in ids if p not in pos]
        if missing:
            raise KeyError(f"patients not in the table: {missing[:5]}")
        return replace(
            self, patient_ids=tuple(ids), diagnoses=tuple(self.diagnoses[pos[p]] for p in ids),
            counts=self.counts.loc[ids], clinical=self.clinical.loc[ids],
        )

    def with_labels(self, labels: Iterable[str]) -> CountsTable:
        """The same table with count columns ``labels`` (missing ones are 0; others dropped)."""
        cols = list(labels)
        return replace(self, counts=self.counts.reindex(columns=cols, fill_value=0))

    def with_clinical_from(self, other: CountsTable) -> CountsTable:
        """Take diagnoses and clinical values from ``other`` for the patients both tables hold."""
        pos = {p: i for i, p in enumerate(other.patient_ids)}
        diag = tuple(other.diagnoses[pos[p]] if p in pos else d
                     for p, d in zip(self.patient_ids, self.diagnoses, strict=True))
        clin = self.clinical.copy()
        both = [p for p in self.patient_ids if p in pos]
        clin.loc[both] = other.clinical.loc[both].to_numpy()
        return replace(self, diagnoses=diag, clinical=clin)


def make_counts_table(
    rows: Mapping[str, Mapping[str, float]],
    diagnoses: Mapping[str, str | None] | None = None,
    clinical: Mapping[str, Mapping[str, float]] | None = None,
    *, source: str = "", problems: Sequence[str] = (), slide_ids: Mapping[str, str] | None = None,
) -> CountsTable:
    """Build a table from ``{patient_id: {label: count}}`` (labels normalised through the taxonomy)."""
    ids = list(rows)
    norm_rows: list[Counter[str]] = []
    for pid in ids:
        c: Counter[str] = Counter()
        for lab, v in rows[pid].items():
            if lab in _NOT_LABELS:
                continue
            name = lab if lab in taxonomy.LABELS else taxonomy.normalise_label(lab, source=pid)
            c[name] += float(v)  # type: ignore[assignment]
        norm_rows.append(c)
    labels = taxonomy.in_differential_order({k for c in norm_rows for k in c})  # lineage, maturation
    counts = pd.DataFrame([[c.get(k, 0) for k in labels] for c in norm_rows], index=ids, columns=labels,
                          dtype=np.float64)
    counts.index.name = "patient_id"
    clin = pd.DataFrame(
        [[(clinical or {}).get(p, {}).get(k, float("nan")) for k in CLINICAL_COLUMNS] for p in ids],
        index=ids, columns=list(CLINICAL_COLUMNS), dtype=np.float64,
    )
    clin.index.name = "patient_id"
    diag = tuple((diagnoses or {}).get(p) for p in ids)
    for line in problems:
        log.warning("%s", line)
    return CountsTable(tuple(ids), diag, counts, clin, source, tuple(problems), dict(slide_ids or {}))


# ------------------------------------------------------------------------------------------ plain CSV


def read_counts_table(path: str | Path) -> CountsTable:
    """Read a plain counts CSV (comma or semicolon). Raises :class:`InputError` with what to fix."""
    p = Path(path)
    if not p.is_file():
        raise InputError(p, "counts table not found")
    try:
        df = unescape_frame(pd.read_csv(p, sep=None, engine="python", dtype=str, keep_default_na=False))
    except Exception as exc:  # noqa: BLE001
        raise InputError(p, f"cannot parse as CSV ({type(exc).__name__}: {exc})") from exc
    df.columns = [str(c).strip() for c in df.columns]
    if "patient_id" not in df.columns:
        raise InputError(p, f"counts table needs a patient_id column (has: {', '.join(df.columns)})")
    if "diagnosis" not in df.columns:
        raise InputError(p, "counts table needs a diagnosis column (leave a cell empty where unknown)")
    label_cols = [c for c in df.columns if c not in _META_COLUMNS]
    if not label_cols:
        raise InputError(p, "counts table has no label columns (one column per cell label with its count)")
    unknown = []
    for c in label_cols:
        try:
            taxonomy.normalise_label(c)
        except taxonomy.UnknownLabelError:
            unknown.append(c)
    if unknown:
        raise InputError(
            p, f"column(s) {', '.join(unknown)} are neither cell labels nor known columns "
            "(patient_id, diagnosis, slide_id, age, sex, gender, lab values); see docs/taxonomy.md",
        )
    rows: dict[str, dict[str, float]] = {}
    diagnoses: dict[str, str | None] = {}
    clinical: dict[str, dict[str, float]] = {}
    slide_ids: dict[str, str] = {}
    for i, r in enumerate(df.to_dict("records")):
        line = i + 2
        pid = str(r["patient_id"]).strip()
        if not pid:
            raise InputError(p, f"line {line}: empty patient_id")
        if pid in rows:
            raise InputError(p, f"line {line}: patient {pid} appears twice (one row per patient)")
        counts: dict[str, float] = {}
        for c in label_cols:
            text = str(r[c]).strip()
            try:
                v = float(text)
            except ValueError:
                raise InputError(
                    p, f"line {line}, column {c}: {text!r} is not a count (write 0 for no cells)"
                ) from None
            if not math.isfinite(v) or v < 0:
                raise InputError(p, f"line {line}, column {c}: count must be a number >= 0, got {text!r}")
            counts[c] = v
        rows[pid] = counts
        diagnoses[pid] = normalise_diagnosis(str(r["diagnosis"]))
        clin = {}
        for c in LAB_COLUMNS + DEMOGRAPHIC_COLUMNS:
            text = str(r.get(c, "")).strip()
            try:
                clin[c] = float(text) if text else float("nan")
            except ValueError:
                raise InputError(p, f"line {line}, column {c}: {text!r} is not a number") from None
        if "age" in df.columns and str(r["age"]).strip():
            clin["age_months"] = age_in_months(str(r["age"]))
        for sc in ("sex", "gender"):
            if sc in df.columns and str(r[sc]).strip():
                clin["sex_male"] = sex_male(str(r[sc]))
        clinical[pid] = clin
        if "slide_id" in df.columns and str(r["slide_id"]).strip():
            slide_ids[pid] = str(r["slide_id"]).strip()
    if not rows:
        raise InputError(p, "counts table has no patient rows")
    return make_counts_table(rows, diagnoses, clinical, source=str(p), slide_ids=slide_ids)


def write_counts_table(table: CountsTable, path: str | Path) -> Path:
    """Write a table that :func:`read_counts_table` reads back (comma-separated)."""
    df = table.counts.copy()
    df.insert(0, "diagnosis", [d or "" for d in table.diagnoses])
    df = pd.concat([df, table.clinical], axis=1)
    df.index.name = "patient_id"
    with atomic_path(path) as tmp:
        escape_frame(df).to_csv(tmp)
    return Path(path)


# ------------------------------------------------------------------------------------------ cohort


def patient_id_from_slide_id(slide_id: str) -> str:
    """``<PatientID>_<n>_bm`` -> ``<PatientID>``; other ids are returned unchanged."""
    m = re.fullmatch(r"(.+)_\d+_bm", slide_id)
    return m.group(1) if m else slide_id


def clinical_from_header(ds: Any, patient_id: str) -> ClinicalRecord | None:
    """Diagnosis (NCIt ``AdmittingDiagnosesCodeSequence``, as IDC stores it), age and sex from a slide's
    DICOM header; None when the header has no diagnosis. No lab values."""
    from marrowscope.io.annotations.clinical import NCIT_TO_DIAGNOSIS

    seq = ds.get("AdmittingDiagnosesCodeSequence")
    if not seq:
        return None
    code = str(seq[0].get("CodeValue", "") or "")
    diagnosis = NCIT_TO_DIAGNOSIS.get(code) or normalise_diagnosis(
        str(ds.get("AdmittingDiagnosesDescription", "") or "") or None
    )
    if diagnosis is None:
        return None
    return ClinicalRecord(patient_id=patient_id, sex=str(ds.get("PatientSex", "") or "") or None,
                          age=str(ds.get("PatientAge", "") or "") or None, diagnosis=diagnosis,
                          ncit_code=code or None, labs={})


def _header(path: str) -> Any:
    import pydicom

    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except Exception:  # noqa: BLE001 - the cohort scan already read it; a failure just means no fallback
        return None


def counts_from_cohort(folder: str | Path) -> CountsTable:
    """Expert (consensus) counts of every labelled slide in a cohort folder, with its clinical values.

    Reads the dataset CSVs when present (the authoritative labels), else each slide's Consensus DICOM
    ANN series. Slides without labels and patients without a clinical row are reported in
    ``problems`` (diagnosis None) rather than raised.
    """
    root = Path(folder)
    if not root.is_dir():
        raise InputError(root, "cohort folder not found")
    csv_dir = root / "csv" if (root / "csv").is_dir() else root
    has_dicom = (root / "dicom").is_dir()
    problems: list[str] = []
    per_slide: dict[str, Counter[str]] = {}
    clinical_records: Mapping[str, ClinicalRecord] = {}
    slide_to_patient: dict[str, str] = {}
    if has_dicom:
        from marrowscope.io.cohort import discover_cohort, load_patient_annotations

        cohort = discover_cohort(root)
        records = dict(cohort.clinical)
        for e in cohort.patients:
            slide_to_patient[e.slide_id] = e.patient_id
            if e.patient_id not in records and e.slide_files:
                ds = _header(e.slide_files[0])
                rec = None if ds is None else clinical_from_header(ds, e.patient_id)
                if rec is not None:
                    records[e.patient_id] = rec
                    problems.append(f"patient {e.patient_id}: no clinical row; diagnosis {rec.diagnosis} "
                                    "taken from the slide's DICOM header (no lab values)")
            if e.csv_annotations is not None and any(c.label is not None for c in e.csv_annotations):
                labels = [c.label for c in e.csv_annotations.cells]
            elif e.series("consensus"):
                labels = [c.label for c in load_patient_annotations(e, "consensus", with_sessions=False)]
            else:
                problems.append(f"patient {e.patient_id}: slide {e.slide_id} has no expert labels; skipped")
                continue
            per_slide[e.slide_id] = Counter(lab for lab in labels if lab is not None)
        clinical_records = records
    else:
        from marrowscope.io.annotations.bmdeep_csv import read_cells_csv
        from marrowscope.io.annotations.clinical import read_clinical_csv

        cells = csv_dir / "cells_labelled.csv"
        if not cells.is_file():
            raise InputError(
                root, "no dicom/ folder and no csv/cells_labelled.csv: not a cohort folder "
                "(for a plain table of counts pass the CSV file itself)",
            )
        by_slide = read_cells_csv(cells)
        if by_slide and not any(c.label is not None for a in by_slide.values() for c in a.cells):
            raise InputError(cells, "no expert labels: the labelled cells CSV lacks its "
                                    "original_consensus_label column (or every value is empty)")
        for slide_id, ann in by_slide.items():
            counted = Counter(c.label for c in ann.cells if c.label is not None)
            if not counted:
                problems.append(f"slide {slide_id} has no expert labels; skipped")
                continue
            slide_to_patient[slide_id] = patient_id_from_slide_id(slide_id)
            per_slide[slide_id] = counted
        if (csv_dir / "clinical.csv").is_file():
            clinical_records = read_clinical_csv(csv_dir / "clinical.csv")
    rows: dict[str, dict[str, float]] = {}
    slide_ids: dict[str, str] = {}
    for slide_id, c in sorted(per_slide.items()):
        pid = slide_to_patient[slide_id]
        if pid in rows:
            problems.append(f"patient {pid}: more than one labelled slide; {slide_ids[pid]} is used")
            continue
        rows[pid] = {k: float(v) for k, v in c.items()}
        slide_ids[pid] = slide_id
    if not rows:
        raise InputError(root, "no slide in the cohort has expert cell labels to count")
    diagnoses: dict[str, str | None] = {}
    clinical: dict[str, dict[str, float]] = {}
    for pid in rows:
        rec = clinical_records.get(pid)
        if rec is None:
            problems.append(f"patient {pid}: no row in the clinical table; no diagnosis or lab values")
        elif rec.diagnosis is None:
            problems.append(f"patient {pid}: clinical row has no diagnosis")
        diagnoses[pid] = None if rec is None else rec.diagnosis
        clinical[pid] = clinical_row(rec)
    return make_counts_table(rows, diagnoses, clinical, source=str(root), problems=problems,
                             slide_ids=slide_ids)


def read_counts(path: str | Path) -> CountsTable:
    """A counts table from a plain CSV file or a cohort folder."""
    p = Path(path)
    if p.is_file():
        return read_counts_table(p)
    if p.is_dir():
        return counts_from_cohort(p)
    raise InputError(p, "no such file or folder (expected a counts CSV or a cohort folder)")


# ------------------------------------------------------------------------------------------ summaries


def predicted_counts_from_summaries(folder: str | Path) -> CountsTable:
    """Predicted counts from the pipeline's ``summary.json`` files found under ``folder``.

    Each summary gives ``differential.counts`` (countable labels) and ``differential.not_counted``
    (non-countable labels; ``unlabeled``/``uncertain`` are ignored); the patient is
    ``slide.patient_id`` when present, else derived from ``slide.slide_id`` (``<PatientID>_<n>_bm``).
    No diagnoses: join them from the expert table (``CountsTable.with_clinical_from``).
    """
    root = Path(folder)
    if root.is_file() and root.suffix.lower() == ".csv":
        return read_counts_table(root)
    if not root.is_dir():
        raise InputError(root, "predicted-counts folder not found")
    files = sorted(root.rglob("summary.json"))
    if not files:
        raise InputError(root, "no summary.json found (run `marrowscope analyze` on each slide first)")
    rows: dict[str, dict[str, float]] = {}
    slide_ids: dict[str, str] = {}
    for f in files:
        try:
            data = json.loads(f.read_text())
            diff = data["differential"]
            counts = dict(diff["counts"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputError(f, f"not a marrowscope summary.json with differential.counts ({exc})") from exc
        counts.update({k: v for k, v in dict(diff.get("not_counted", {})).items() if k not in _NOT_LABELS})
        slide = data.get("slide", {}) or {}
        slide_id = str(slide.get("slide_id") or f.parent.name)
        pid = str(slide.get("patient_id") or patient_id_from_slide_id(slide_id))
        if pid in rows:
            raise InputError(f, f"a second summary for patient {pid} (first: slide {slide_ids[pid]})")
        rows[pid] = {str(k): float(v) for k, v in counts.items()}
        slide_ids[pid] = slide_id
    return make_counts_table(rows, source=str(root), slide_ids=slide_ids)
