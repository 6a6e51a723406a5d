"""The model's cells with the reviewer's corrections applied, and the live differential over them.

Counting is the project's own (:func:`marrowscope.counting.compute_differential`: Wilson intervals,
blasts with equivalents, M:E, threshold flags) and the diagnosis suggestion and rule baseline come from
:func:`marrowscope.engines.pipeline.diagnose`, the function ``analyze`` uses, with the diagnosis model
named in the slide's run record (checked against its sha256). Cells marked deleted are dropped; cells
marked not identifiable / not counted stay out of the denominator and are reported under those names.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from marrowscope.cells import Box, Cell, CellAnnotations
from marrowscope.counting import Differential, compute_differential
from marrowscope.report.results import DiagnosisResult, ModelRef
from marrowscope.review.store import EXCLUDED_STATES, CellCorrection

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReviewedCell:
    """A cell as the reviewer sees it: the model's cell with its correction (if any)."""

    cell: Cell  # label = the current label (model's or corrected); probabilities = the model's
    model_label: str | None
    state: str
    version: int
    added: bool = False

    @property
    def cell_id(self) -> int:
        rid = self.cell.row_id
        return int(rid if rid is not None else -1)

    @property
    def confidence(self) -> float | None:
        p = self.cell.probabilities
        return max(p.values()) if p else None

    def to_dict(self) -> dict[str, Any]:
        c = self.cell
        return {
            "id": self.cell_id,
            "box": list(c.box.as_tuple()),
            "label": c.label,
            "model_label": self.model_label,
            "state": self.state,
            "version": self.version,
            "added": self.added,
            "roi": c.roi_id,
            "p": None if self.confidence is None else round(self.confidence, 4),
        }


def apply_corrections(
    model: CellAnnotations, corrections: Mapping[int, CellCorrection]
) -> list[ReviewedCell]:
    """Model cells in order, each with its correction, then the added cells (by id)."""
    out = []
    seen: set[int] = set()
    for c in model.cells:
        cid = -1 if c.row_id is None else int(c.row_id)
        k = corrections.get(cid)
        if k is None:
            out.append(ReviewedCell(c, c.label, "pending", 0))
        else:
            seen.add(cid)
            out.append(ReviewedCell(replace(c, label=k.label), c.label, k.state, k.version))
    for cid in sorted(set(corrections) - seen):
        k = corrections[cid]
        if k.box is None:
            continue  # a correction of a model cell that no longer exists: nothing to show
        roi = next((r.roi_id for r in model.regions if r.box.contains_point(*Box(*k.box).center)), -1)
        cell = Cell(box=Box(*k.box), label=k.label, detection_id=cid, roi_id=roi)
        out.append(ReviewedCell(cell, None, k.state, k.version, added=True))
    return out


def first_free_id(model: CellAnnotations) -> int:
    return 1 + max((int(rid) for c in model.cells if (rid := c.row_id) is not None), default=-1)


def corrected_annotations(model: CellAnnotations, cells: Sequence[ReviewedCell]) -> CellAnnotations:
    """The corrected cells as :class:`CellAnnotations` (deleted ones left out), for the exports."""
    return model.with_cells(r.cell for r in cells if r.state != "deleted")


def reviewed_differential(cells: Sequence[ReviewedCell]) -> Differential:
    """The differential over the corrected cells (counting as in ``analyze``; see the module docstring)."""
    kept = [r for r in cells if r.state not in EXCLUDED_STATES]
    labels = [r.cell.label for r in kept if r.cell.label is not None]
    diff = compute_differential(labels, uncertain=sum(r.cell.label is None for r in kept))
    set_aside = Counter(r.state for r in cells if r.state in ("not_identifiable", "not_counted"))
    if not set_aside:
        return diff
    return replace(
        diff, not_counted={**diff.not_counted, **{f"{k} (reviewer)": v for k, v in set_aside.items()}}
    )


class DiagnosisModelRef:
    """The diagnosis model of a slide's run record, loaded on first use (None when unavailable)."""

    def __init__(self, refs: Sequence[ModelRef]) -> None:
        self.ref = next((m for m in refs if m.task == "diagnosis"), None)
        self._model: Any = None
        self.problem: str | None = (
            None if self.ref is not None else "the analysis ran without a diagnosis model"
        )
        self._loaded = False
        self.cache: dict[tuple[tuple[str, int], ...], DiagnosisResult] = {}

    def get(self) -> Any:
        if not self._loaded:
            self._loaded = True
            self._model = self._load()
        return self._model

    def _load(self) -> Any:
        from marrowscope.errors import InputError
        from marrowscope.models.diagnosis import load_diagnosis_model
        from marrowscope.models.registry import resolve_model

        if self.ref is None:
            return None
        try:
            return load_diagnosis_model(self.ref.path, sha256=self.ref.sha256)
        except InputError as first:
            try:  # the run's bundled model, from this installation, if it is the same file
                path, _ = resolve_model(self.ref.name, task="diagnosis")
                return load_diagnosis_model(path, sha256=self.ref.sha256)
            except InputError:
                self.problem = f"diagnosis model {self.ref.name} unavailable ({first.problem})"
                log.warning("%s; the live tally shows no suggestion", self.problem)
                return None


def reviewed_diagnosis(diff: Differential, model: DiagnosisModelRef) -> DiagnosisResult | None:
    """Suggestion and rule baseline for the corrected differential (the function ``analyze`` uses)."""
    from marrowscope.engines.pipeline import diagnose

    m = model.get()
    if m is None or diff.n_counted == 0 or model.ref is None:
        return None
    key = tuple(sorted(diff.counts.items()))  # the suggestion is a function of the counts alone
    hit = model.cache.get(key)
    if hit is None:
        hit = diagnose(diff, m, model.ref.name)
        if len(model.cache) > 512:
            model.cache.clear()
        model.cache[key] = hit
    return hit
