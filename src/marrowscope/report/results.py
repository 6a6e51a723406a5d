"""The canonical result of analysing one slide, and its JSON form (``summary.json``)."""

from __future__ import annotations

import platform
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from marrowscope.alerts import ResultWarning
from marrowscope.cells import CellAnnotations
from marrowscope.counting import Differential

SCHEMA_VERSION = 2  # 2: warnings as {code, message}; *_fraction names; models with training data
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
    frame: str = "level0"  # coordinate frame of every box: "dicom", "csv" (MRXS canvas) or "level0"
    dataset_csv_offset: tuple[float, float] | None = None  # (dx, dy) to ADD to get the dataset CSV frame


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
    """The diagnosis model's probabilities, its headline and the rule baseline beside it.

    ``uncertain_between``: the two most likely diagnoses when the top probability is below
    ``confidence_threshold`` (the headline then reads "uncertain between A and B"), else None."""

    model: str
    classes: tuple[str, ...]
    probabilities: Mapping[str, float]
    suggestion: str
    rule_baseline: str
    rule_reason: str
    unused_labels: tuple[str, ...] = ()  # counted labels the diagnosis model has no input column for
    rule_outcome: str = ""  # the rule that fired: ALL, AML, CML or other
    rule_values: Mapping[str, float] = field(default_factory=dict)  # the fractions the rules tested
    confidence_threshold: float = 0.0
    uncertain_between: tuple[str, str] | None = None

    @property
    def headline(self) -> str:
        if self.uncertain_between is not None:
            a, b = self.uncertain_between
            return f"uncertain between {a} and {b}"
        return self.suggestion

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "classes": list(self.classes),
            "probabilities": dict(self.probabilities),
            "suggestion": self.suggestion,
            "headline": self.headline,
            "confidence_threshold": self.confidence_threshold,
            "uncertain_between": None if self.uncertain_between is None else list(self.uncertain_between),
            "rule_baseline": self.rule_baseline,
            "rule_outcome": self.rule_outcome,
            "rule_reason": self.rule_reason,
            "rule_values": dict(self.rule_values),
            "unused_labels": list(self.unused_labels),
        }


@dataclass(frozen=True)
class ModelRef:
    """A model used for a result, with its hash and what it was trained on (its own metadata)."""

    name: str
    task: str
    path: str
    sha256: str
    training_data: str = ""
    training_data_kind: str = "unknown"  # synthetic | real | mixed | unknown
    training_datasets: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "task": self.task, "path": self.path, "sha256": self.sha256,
                "training_data": self.training_data, "training_data_kind": self.training_data_kind,
                "training_datasets": list(self.training_datasets)}


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
    device: str | None = None  # where the models ran: "cpu", "cuda", "cuda:1", ...
    precision: str | None = None  # the models' inference precision: "fp32", "bf16", or per model when
    # they differ ("detector fp32, classifier int8")


@dataclass(frozen=True)
class SlideResult:
    slide: SlideSummary
    regions: tuple[RegionResult, ...]
    cells: CellAnnotations  # every detected object with predicted label (None = uncertain)
    differential: Differential
    diagnosis: DiagnosisResult | None
    run: RunRecord
    warnings: tuple[ResultWarning, ...] = ()
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
            "models": [m.to_dict() for m in run.models],
            "differential": self.differential.to_dict(),
            "diagnosis": None if self.diagnosis is None else self.diagnosis.to_dict(),
            "warnings": [w.to_dict() for w in self.warnings],
            "ood": None if self.ood is None else dict(self.ood),
            "run": {
                "marrowscope_version": run.marrowscope_version,
                "python": run.python,
                "platform": run.platform,
                "packages": dict(run.packages),
                "models": [m.to_dict() for m in run.models],
                "config": dict(run.config),
                "seed": run.seed,
                "started": run.started,
                "seconds": run.seconds,
                "timings": dict(run.timings),
                "device": run.device,
                "precision": run.precision,
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
