"""The canonical result of analysing one slide, and its JSON form (``summary.json``)."""

from __future__ import annotations

import platform
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from marrowscope.cells import CellAnnotations
from marrowscope.counting import Differential

SCHEMA_VERSION = 1
RESEARCH_NOTICE = (
    "Research use only. Not a medical device. The differential and the diagnosis suggestion are "
    "computed by machine-learning models and must be reviewed by a qualified hematologist."
)


@dataclass(frozen=True)
class SlideSummary:
    path: str
    slide_id: str
    format: str
    width: int
    height: int
    mpp: float | None
    patient_id: str | None = None  # from the DICOM header when known


@dataclass(frozen=True)
class RegionResult:
    roi_id: int
    box: tuple[float, float, float, float]
    source: str  # "annotated ROI" or "auto field"
    verdict: str
    coverage: float | None
    nuclear: float | None
    n_cells: int


@dataclass(frozen=True)
class DiagnosisResult:
    model: str
    classes: tuple[str, ...]
    probabilities: Mapping[str, float]
    suggestion: str
    rule_baseline: str
    rule_reason: str
    unused_labels: tuple[str, ...] = ()  # counted labels the diagnosis model has no input column for

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "classes": list(self.classes),
            "probabilities": dict(self.probabilities),
            "suggestion": self.suggestion,
            "rule_baseline": self.rule_baseline,
            "rule_reason": self.rule_reason,
            "unused_labels": list(self.unused_labels),
        }


@dataclass(frozen=True)
class ModelRef:
    name: str
    task: str
    path: str
    sha256: str


@dataclass(frozen=True)
class RunRecord:
    marrowscope_version: str
    python: str
    platform: str
    packages: Mapping[str, str]
    models: tuple[ModelRef, ...]
    config: Mapping[str, Any]
    seed: int
    started: str
    seconds: float
    timings: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class SlideResult:
    slide: SlideSummary
    regions: tuple[RegionResult, ...]
    cells: CellAnnotations  # every detected object with predicted label (None = uncertain)
    differential: Differential
    diagnosis: DiagnosisResult | None
    run: RunRecord
    warnings: tuple[str, ...] = ()
    ood: Mapping[str, Any] | None = None  # the slide's out-of-distribution score (engines.ood.SlideOOD)

    def to_dict(self) -> dict[str, Any]:
        """The canonical JSON form; cells are summarised (the full list is in the cell table)."""
        run = self.run
        return {
            "schema_version": SCHEMA_VERSION,
            "notice": RESEARCH_NOTICE,
            "slide": vars(self.slide).copy(),
            "regions": [
                {**vars(r), "box": list(r.box)} for r in self.regions
            ],
            "n_objects": len(self.cells),
            "differential": self.differential.to_dict(),
            "diagnosis": None if self.diagnosis is None else self.diagnosis.to_dict(),
            "warnings": list(self.warnings),
            "ood": None if self.ood is None else dict(self.ood),
            "run": {
                "marrowscope_version": run.marrowscope_version,
                "python": run.python,
                "platform": run.platform,
                "packages": dict(run.packages),
                "models": [vars(m).copy() for m in run.models],
                "config": dict(run.config),
                "seed": run.seed,
                "started": run.started,
                "seconds": run.seconds,
                "timings": dict(run.timings),
            },
        }


def environment() -> tuple[str, str, dict[str, str]]:
    """(python version, platform, versions of the packages that shape results)."""
    from importlib import metadata

    pkgs = {}
    for name in ("numpy", "torch", "torchvision", "scikit-learn", "highdicom", "wsidicom", "pydicom"):
        try:
            pkgs[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return sys.version.split()[0], platform.platform(), pkgs
