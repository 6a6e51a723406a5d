"""The clinical / laboratory table of the BoneMarrowWSI-PediatricLeukemia dataset (dataset.md §4).

Semicolon-delimited, one row per patient, indexed by ``patient_id``. Columns: ``gender`` (M/F/O),
``age`` (DICOM PatientAge style age group such as ``042M``), ``ncit_concept_code`` (NCIt diagnosis),
``diagnosis`` (short name: ALL, AML, CML, control, ...) and the laboratory values ``blasts``, ``wbc``,
``thrombocytes``, ``ldh``, ``uric_acid``, ``hemoglobin``. ``diagnosis`` may be missing when the NCIt
code is present (it is derived) and vice versa; older files with ``leukemia_type`` are read too.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from marrowscope.errors import InputError
from marrowscope.io.atomic import atomic_path
from marrowscope.io.csvsafe import escape_frame, unescape_frame

log = logging.getLogger(__name__)

LAB_COLUMNS: tuple[str, ...] = ("blasts", "wbc", "thrombocytes", "ldh", "uric_acid", "hemoglobin")
REQUIRED_COLUMNS: tuple[str, ...] = ("patient_id", "gender", "age")
SEXES = frozenset({"M", "F", "O"})

# NCIt codes (Neoplasm Core) -> short diagnosis names used across marrowscope.
NCIT_TO_DIAGNOSIS: Mapping[str, str] = {
    "C3167": "ALL",  # Acute Lymphoblastic Leukemia
    "C8644": "ALL",  # B Acute Lymphoblastic Leukemia
    "C3183": "ALL",  # T Acute Lymphoblastic Leukemia
    "C3171": "AML",  # Acute Myeloid Leukemia
    "C3182": "AML",  # Acute Promyelocytic Leukemia with PML-RARA (APL)
    "C3174": "CML",  # Chronic Myelogenous Leukemia, BCR-ABL1 Positive
    "C82179": "MPAL",  # Mixed Phenotype Acute Leukemia
    "C14165": "control",  # Normal
}
DIAGNOSIS_TO_NCIT: Mapping[str, str] = {
    "ALL": "C3167", "AML": "C3171", "CML": "C3174", "MPAL": "C82179", "control": "C14165",
}
_DIAGNOSIS_ALIASES: Mapping[str, str] = {
    "all": "ALL", "b-all": "ALL", "t-all": "ALL", "aml": "AML", "apl": "AML", "cml": "CML", "mpal": "MPAL",
    "control": "control", "normal": "control", "non-leukemic": "control", "none": "control",
}


@dataclass(frozen=True)
class ClinicalRecord:
    """One patient's clinical and laboratory data. ``None`` = not recorded."""

    patient_id: str
    sex: str | None
    age: str | None
    diagnosis: str | None
    ncit_code: str | None
    labs: Mapping[str, float | None] = field(default_factory=dict)
    extra: Mapping[str, str] = field(default_factory=dict)


def normalise_diagnosis(raw: str | None) -> str | None:
    """'aml', 'AML', 'APL' -> 'AML'; unknown strings are kept as written (stripped)."""
    if raw is None:
        return None
    text = raw.strip()
    if not text:
        return None
    return _DIAGNOSIS_ALIASES.get(text.lower(), text)


def _text(v: Any) -> str | None:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    s = str(v).strip()
    return s or None


def _number(v: Any, path: Path, pid: str, col: str) -> float | None:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    s = str(v).strip().replace(",", ".")
    if not s:
        return None
    try:
        return float(s)
    except ValueError as exc:
        raise InputError(path, f"patient {pid}: {col} value {v!r} is not a number") from exc


def read_clinical_csv(path: str | Path, *, sep: str = ";") -> dict[str, ClinicalRecord]:
    """Read the clinical table into ``{patient_id: ClinicalRecord}``.

    Missing required columns (``patient_id``, ``gender``, ``age``) or a table without any diagnosis
    column (``diagnosis``, ``ncit_concept_code`` or ``leukemia_type``) raise :class:`InputError`;
    missing lab columns are logged and read as ``None``; duplicate patient ids raise.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(p, "file not found")
    try:
        df = unescape_frame(pd.read_csv(p, sep=sep, dtype=str, keep_default_na=False))
    except Exception as exc:
        raise InputError(p, f"cannot parse as CSV ({type(exc).__name__}: {exc})") from exc
    df.columns = [str(c).strip() for c in df.columns]
    if len(df.columns) == 1 and sep == ";" and "," in df.columns[0]:
        raise InputError(p, "clinical CSV must be semicolon-delimited (found commas in the header)")
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(
            p, f"clinical CSV lacks column(s) {', '.join(missing)} (has: {', '.join(df.columns)})"
        )
    diag_cols = [c for c in ("diagnosis", "ncit_concept_code", "leukemia_type") if c in df.columns]
    if not diag_cols:
        raise InputError(
            p, "clinical CSV has no diagnosis column (diagnosis, ncit_concept_code or leukemia_type)"
        )
    missing_labs = [c for c in LAB_COLUMNS if c not in df.columns]
    if missing_labs:
        log.warning("%s: no lab column(s) %s; they read as missing", p, ", ".join(missing_labs))
    known = set(REQUIRED_COLUMNS) | set(LAB_COLUMNS) | {"diagnosis", "ncit_concept_code", "leukemia_type"}
    out: dict[str, ClinicalRecord] = {}
    for i, r in enumerate(df.to_dict("records")):
        pid = _text(r["patient_id"])
        if pid is None:
            raise InputError(p, f"row {i + 2}: empty patient_id")
        if pid in out:
            raise InputError(p, f"patient {pid} appears twice")
        sex = _text(r["gender"])
        if sex is not None:
            sex = sex.upper()
            if sex not in SEXES:
                raise InputError(p, f"patient {pid}: gender {sex!r} is not one of M, F, O")
        ncit = _text(r.get("ncit_concept_code"))
        diagnosis = normalise_diagnosis(_text(r.get("diagnosis")) or _text(r.get("leukemia_type")))
        if diagnosis is None and ncit is not None:
            diagnosis = NCIT_TO_DIAGNOSIS.get(ncit)
            if diagnosis is None:
                log.warning("%s: patient %s has NCIt code %s with no known diagnosis name", p, pid, ncit)
        labs = {c: (_number(r[c], p, pid, c) if c in df.columns else None) for c in LAB_COLUMNS}
        extra = {str(k): str(v) for k, v in r.items() if k not in known and _text(v) is not None}
        out[pid] = ClinicalRecord(patient_id=pid, sex=sex, age=_text(r["age"]), diagnosis=diagnosis,
                                  ncit_code=ncit, labs=labs, extra=extra)
    if not out:
        raise InputError(p, "clinical CSV has no patient rows")
    return out


def _fmt(v: float | None) -> str:
    if v is None:
        return ""
    return repr(float(v))


def write_clinical_csv(
    records: Mapping[str, ClinicalRecord] | Iterable[ClinicalRecord], path: str | Path
) -> Path:
    """Write records as the semicolon-delimited clinical table (read back by :func:`read_clinical_csv`)."""
    recs = list(records.values()) if isinstance(records, Mapping) else list(records)
    extra_cols = sorted({k for r in recs for k in r.extra})
    rows = []
    for r in recs:
        row: dict[str, str] = {
            "patient_id": r.patient_id, "gender": r.sex or "", "age": r.age or "",
            "diagnosis": r.diagnosis or "",
            "ncit_concept_code": r.ncit_code or DIAGNOSIS_TO_NCIT.get(r.diagnosis or "", ""),
        }
        for c in LAB_COLUMNS:
            row[c] = _fmt(r.labs.get(c))
        for c in extra_cols:
            row[c] = r.extra.get(c, "")
        rows.append(row)
    cols = ["patient_id", "gender", "age", "diagnosis", "ncit_concept_code", *LAB_COLUMNS, *extra_cols]
    df = pd.DataFrame(rows, columns=cols)
    out = Path(path)
    with atomic_path(out) as tmp:
        escape_frame(df).to_csv(tmp, sep=";", index=False)
    return out


def match_patients(
    records: Mapping[str, ClinicalRecord], patient_ids: Iterable[str], *, source: str | Path = "clinical CSV"
) -> dict[str, ClinicalRecord | None]:
    """Records for ``patient_ids``; patients without a row get ``None`` and one warning names them all."""
    ids = list(patient_ids)
    out = {pid: records.get(pid) for pid in ids}
    missing = [pid for pid, rec in out.items() if rec is None]
    if missing:
        log.warning("%s: no clinical row for %d patient(s): %s", source, len(missing),
                    ", ".join(missing[:10]))
    return out
