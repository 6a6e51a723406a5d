"""Machine-readable warnings that travel with a result: ``summary.json``, the report and the cohort index.

A warning is a :class:`ResultWarning` (``code`` + human ``message``); the code is one of
:data:`CODES`, so a pipeline can act on it (``jq '.warnings[].code'``) and the report can place it
(warnings about what the models are stand beside the differential). Other modules add their own codes
with :func:`register_code` at import time of their module (not of this one), e.g. the OOD score's
``ood_slide``; every code is declared once, with its meaning, here or where it is registered.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

SEVERITIES: tuple[str, ...] = ("caution", "info")


@dataclass(frozen=True)
class WarningCode:
    """A warning kind: its code, how serious it is and what it means (for docs and the report)."""

    code: str
    severity: str  # "caution": read before the differential; "info": about the count's precision
    meaning: str
    about_models: bool = False  # stands beside the differential/diagnosis (what the models are)


_CODES: dict[str, WarningCode] = {}


def register_code(
    code: str, meaning: str, *, severity: str = "caution", about_models: bool = False
) -> WarningCode:
    """Declare a warning code (idempotent for an identical declaration; a conflicting one raises)."""
    if not code or not code.replace("_", "").isalnum() or code.lower() != code:
        raise ValueError(f"warning code must be lower_snake_case, got {code!r}")
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {SEVERITIES}, got {severity!r}")
    new = WarningCode(code, severity, meaning, about_models)
    old = _CODES.get(code)
    if old is not None and old != new:
        raise ValueError(f"warning code {code!r} is already declared differently: {old}")
    _CODES[code] = new
    return new


def codes() -> Mapping[str, WarningCode]:
    """Every declared code."""
    return dict(_CODES)


SYNTHETIC_MODEL = register_code(
    "synthetic_model", "a model used was trained only on synthetic data; its output on a real slide is "
    "not meaningful", about_models=True)
UNKNOWN_TRAINING_DATA = register_code(
    "unknown_training_data", "a model used does not say what it was trained on", about_models=True)
OOD_SLIDE = register_code(
    "ood_slide", "the slide looks unlike the models' training data", about_models=True)
UNCERTAIN_DIAGNOSIS = register_code(
    "uncertain_diagnosis", "the diagnosis model's top probability is below the confidence threshold; "
    "the suggestion is shown as uncertain between the two most likely diagnoses", about_models=True)
RULE_DISAGREES = register_code(
    "rule_disagrees", "the diagnosis model and the rule baseline suggest different diagnoses",
    severity="info", about_models=True)
FEW_CELLS = register_code(
    "few_cells", "fewer countable cells than the target differential; the intervals are wide",
    severity="info")
NO_COUNTABLE_CELLS = register_code("no_countable_cells", "no countable (nucleated marrow) cell was found")
THRESHOLD_UNDECIDED = register_code(
    "threshold_undecided", "a blast interval contains a clinical threshold; the count cannot decide it",
    severity="info")
NO_LOW_RES_LEVEL = register_code(
    "no_low_res_level", "the slide has no low-resolution level: field selection read a downsampled overview "
    "tile by tile from level 0 (slower, same result)", severity="info")
MPP_ESTIMATED = register_code(
    "mpp_estimated", "the slide carries no pixel size; it was read from the size of its red cells "
    "(--mpp auto): give the real one with --mpp when it is known")
EMPTY_REGION = register_code("empty_region", "a counting region had no cells", severity="info")


@dataclass(frozen=True)
class ResultWarning:
    """One warning: a declared ``code`` and a message that says what happened and what to do."""

    code: str
    message: str

    def __post_init__(self) -> None:
        if self.code not in _CODES:
            raise ValueError(f"undeclared warning code {self.code!r} (declare it with alerts.register_code)")

    @property
    def kind(self) -> WarningCode:
        return _CODES[self.code]

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ResultWarning:
        """Read one back; a code this version does not know is kept (declared as such), not refused."""
        code = str(d["code"])
        if code not in _CODES:
            register_code(code, "declared by another marrowscope version")
        return cls(code, str(d.get("message", "")))


def warning_codes(warnings: Iterable[ResultWarning | Mapping[str, Any]]) -> tuple[str, ...]:
    """The codes of ``warnings`` (objects or their dicts), each once, in first-seen order."""
    out: list[str] = []
    for w in warnings:
        c = w.code if isinstance(w, ResultWarning) else str(w.get("code", ""))
        if c and c not in out:
            out.append(c)
    return tuple(out)
