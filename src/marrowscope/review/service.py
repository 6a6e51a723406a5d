"""What the routes call: the slides of one output folder, their corrections, tally, tiles and exports.

Plain Python (no web framework): every method takes validated values and returns JSON-ready dicts
or bytes, raising :class:`SlideNotFound` (404), :class:`EditRejected` (422) or :class:`EditConflict`
(409) with a message that says what to change.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from marrowscope import taxonomy
from marrowscope.cells import Cell
from marrowscope.counting import Differential
from marrowscope.report.results import DiagnosisResult
from marrowscope.review.catalog import Catalog, CatalogEntry, SlideNotFound
from marrowscope.review.queue import review_queue
from marrowscope.review.store import EditRejected, ReviewStore
from marrowscope.review.tally import (
    DiagnosisModelRef,
    ReviewedCell,
    apply_corrections,
    first_free_id,
    reviewed_diagnosis,
    reviewed_differential,
)
from marrowscope.review.tiles import TileSource, open_tile_source

log = logging.getLogger(__name__)

#: Keys that reclassify, in class order (the page shows them); the other keys are commands.
CLASS_KEYS = "1234567890qwertyuiopasdfghlzcvmQWERTYUIOPASDFGHLZCVM"
MIN_BOX_PX = 4.0
SET_ASIDE = {"not_identifiable": "not_identifiable", "not_counted": "not_counted"}

__all__ = ["ReviewService", "SlideNotFound"]


def _color(label: str | None) -> str:
    from marrowscope.report.html import label_color

    return label_color(label)


def _pct(x: float) -> float:
    return round(100 * x, 2)


def _iv(v: Sequence[float]) -> list[float]:
    return [_pct(v[0]), _pct(v[1])]


def tally_dict(
    diff: Differential,
    dx: DiagnosisResult | None,
    target: int | None,
    cells: Sequence[ReviewedCell],
    problem: str | None,
) -> dict[str, Any]:
    states = Counter(r.state for r in cells)
    return {
        "n_counted": diff.n_counted,
        "target": target,
        "rows": [
            {
                "label": k,
                "count": v,
                "pct": _pct(diff.proportions[k]),
                "ci": _iv(diff.intervals[k]),
                "color": _color(k),
                "blast": taxonomy.is_blast_equivalent(k),
            }
            for k, v in sorted(diff.counts.items(), key=lambda kv: taxonomy.differential_rank(kv[0]))
        ],
        "blast": {
            "count": diff.blast_count,
            "pct": _pct(diff.blast_fraction),
            "ci": _iv(diff.blast_interval),
            "lymphoid": _pct(diff.lymphoid_blast_fraction),
            "myeloid": _pct(diff.myeloid_blast_fraction),
        },
        "me_ratio": None if diff.me_ratio is None else round(diff.me_ratio, 3),
        "flags": [
            {"name": f.name, "ci": _iv(f.interval), "cells_needed": f.cells_needed} for f in diff.flags
        ],
        "not_counted": dict(diff.not_counted),
        "diagnosis": None
        if dx is None
        else {
            "model": dx.model,
            "suggestion": dx.suggestion,
            "p": round(dx.probabilities.get(dx.suggestion, math.nan), 4),
            "probabilities": {k: round(v, 4) for k, v in dx.probabilities.items()},
            "rule_baseline": dx.rule_baseline,
            "rule_reason": dx.rule_reason,
        },
        "diagnosis_problem": problem if dx is None else None,
        "review": {
            s: states.get(s, 0)
            for s in (
                "pending",
                "accepted",
                "reclassified",
                "added",
                "deleted",
                "not_identifiable",
                "not_counted",
            )
        },
    }


class ReviewService:
    def __init__(self, out_dir: str | Path, reviewer: str) -> None:
        self.catalog = Catalog(out_dir)
        self.store = ReviewStore(self.catalog.out_dir)
        self.reviewer = reviewer
        self._tiles: dict[str, TileSource] = {}
        self._dx: dict[tuple[str, str], DiagnosisModelRef] = {}
        self._index: dict[str, dict[int, Cell]] = {}
        self._lock = threading.Lock()

    # ---------------------------------------------------------------------------------------- helpers

    def _cells(self, key: str) -> list[ReviewedCell]:
        return apply_corrections(self.catalog.result(key).cells, self.store.corrections(key))

    def _find(self, key: str, cell_id: int) -> ReviewedCell:
        for r in self._cells(key):
            if r.cell_id == cell_id:
                return r
        raise SlideNotFound(f"{key}/cells/{cell_id}", "no such cell on this slide")

    def _dx_model(self, key: str) -> DiagnosisModelRef:
        refs = self.catalog.result(key).run.models
        ref = next((m for m in refs if m.task == "diagnosis"), None)
        k = ("", "") if ref is None else (ref.path, ref.sha256)
        with self._lock:
            if k not in self._dx:
                self._dx[k] = DiagnosisModelRef(refs)
            return self._dx[k]

    def tiles(self, key: str) -> TileSource:
        e = self.catalog.get(key)
        with self._lock:
            if key not in self._tiles:
                s = e.summary["slide"]
                self._tiles[key] = open_tile_source(s["path"], mpp=s.get("mpp"))
            return self._tiles[key]

    def classes(self, key: str) -> list[str]:
        """Labels offered for reclassification: the classifier's classes, then any other label in use."""
        res = self.catalog.result(key)
        names = next((list(c.probabilities) for c in res.cells.cells if c.probabilities), [])
        names = [n for n in names if n in taxonomy.LABELS]
        extra = sorted({c.label for c in res.cells.cells if c.label is not None} - set(names))
        return names + [n for n in extra if n in taxonomy.LABELS]

    def _label(self, key: str, label: object) -> str:
        if not isinstance(label, str) or label not in taxonomy.LABELS:
            raise EditRejected(
                f"unknown label {label!r}; use a taxonomy label such as "
                f"{', '.join(self.classes(key)[:5])} (docs/taxonomy.md)"
            )
        return label

    # ---------------------------------------------------------------------------------------- reading

    def _summary_row(self, e: CatalogEntry) -> dict[str, Any]:
        review = self.store.review(e.key)
        d = e.summary.get("differential") or {}
        dx = e.summary.get("diagnosis") or {}
        row: dict[str, Any] = {
            "id": e.key,
            "slide_id": e.slide_id,
            "status": review.status,
            "reviewer": review.reviewer,
            "at": review.validated_at or review.at,
            "n_counted": d.get("n_counted"),
            "target": e.target_cells,
            "blast_pct": None if d.get("blast_fraction") is None else _pct(d["blast_fraction"]),
            "blast_ci": None if d.get("blast_interval") is None else _iv(d["blast_interval"]),
            "suggestion": dx.get("suggestion"),
            "rule_baseline": dx.get("rule_baseline"),
            "source": "model",
        }
        if review.status != "not reviewed":
            t = self.differential(e.key)
            row.update(
                n_counted=t["n_counted"],
                blast_pct=t["blast"]["pct"],
                blast_ci=t["blast"]["ci"],
                source="reviewed",
            )
            if t["diagnosis"] is not None:
                row.update(
                    suggestion=t["diagnosis"]["suggestion"], rule_baseline=t["diagnosis"]["rule_baseline"]
                )
        return row

    def slides(self) -> list[dict[str, Any]]:
        return [self._summary_row(e) for e in self.catalog.entries.values()]

    def slide(self, key: str) -> dict[str, Any]:
        e = self.catalog.get(key)
        res = self.catalog.result(key)
        s = res.slide
        review = self.store.review(key)
        return {
            "id": key,
            "slide_id": s.slide_id,
            "width": s.width,
            "height": s.height,
            "mpp": s.mpp,
            "format": s.format,
            "status": review.status,
            "reviewer": review.reviewer,
            "validated_at": review.validated_at,
            "target": e.target_cells,
            "me": self.reviewer,
            "regions": [{"id": r.roi_id, "box": list(r.box), "source": r.source} for r in res.regions],
            "classes": [
                {
                    "label": n,
                    "key": CLASS_KEYS[i] if i < len(CLASS_KEYS) else None,
                    "color": _color(n),
                    "countable": taxonomy.is_countable(n),
                }
                for i, n in enumerate(self.classes(key))
            ],
            "model_report": f"/files/{key}/report.html",
        }

    def cells(self, key: str) -> dict[str, Any]:
        cells = self._cells(key)
        return {
            "cells": [r.to_dict() for r in cells],
            "queue": [{"id": q.cell_id, "reasons": list(q.reasons)} for q in review_queue(cells)],
        }

    def differential(self, key: str, cells: list[ReviewedCell] | None = None) -> dict[str, Any]:
        cells = self._cells(key) if cells is None else cells
        diff = reviewed_differential(cells)
        m = self._dx_model(key)
        dx = reviewed_diagnosis(diff, m)
        return tally_dict(diff, dx, self.catalog.get(key).target_cells, cells, m.problem)

    def audit(self, key: str) -> list[dict[str, Any]]:
        self.catalog.get(key)
        return [vars(e) for e in self.store.audit_log(key)]

    # ---------------------------------------------------------------------------------------- editing

    def edit(self, key: str, cell_id: int, body: Mapping[str, Any]) -> dict[str, Any]:
        """``{"label": L}`` reclassify (or accept when L is the model's), ``{"action": "accept" | "reset" |
        "not_identifiable" | "not_counted" | "restore"}``; optional ``"version"`` (the one the client saw)."""
        r = self._find(key, cell_id)
        version = body.get("version")
        if version is not None and (not isinstance(version, int) or isinstance(version, bool)):
            raise EditRejected("version must be an integer (the cell's version the edit is based on)")
        action = body.get("action")
        label = r.cell.label
        if "label" in body:
            label = self._label(key, body["label"])
            state = "added" if r.added else ("accepted" if label == r.model_label else "reclassified")
            action = "reclassify"
        elif action == "accept":
            if label is None:
                raise EditRejected(
                    "the classifier abstained on this cell: give it a label instead of accepting"
                )
            state = "added" if r.added else ("accepted" if label == r.model_label else "reclassified")
        elif action in ("reset", "restore"):
            state, label = ("added", label) if r.added else ("pending", r.model_label)
        elif action in SET_ASIDE:
            state = SET_ASIDE[action]
        else:
            raise EditRejected(
                'give a label ({"label": ...}) or an action: accept, reset, not_identifiable, not_counted'
            )
        new = self.store.set_cell(
            key,
            cell_id,
            state=state,
            label=label,
            reviewer=self.reviewer,
            model_label=r.model_label,
            action=str(action),
            expected_version=version,
            is_added=r.added,
        )
        return self._after(key, cell_id, new.version)

    def delete(self, key: str, cell_id: int, version: int | None) -> dict[str, Any]:
        r = self._find(key, cell_id)
        new = self.store.set_cell(
            key,
            cell_id,
            state="deleted",
            label=r.cell.label,
            reviewer=self.reviewer,
            model_label=r.model_label,
            action="delete",
            expected_version=version,
            is_added=r.added,
        )
        return self._after(key, cell_id, new.version)

    def add(self, key: str, box: object, label: object) -> dict[str, Any]:
        res = self.catalog.result(key)
        lab = self._label(key, label)
        if not (
            isinstance(box, list)
            and len(box) == 4
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box)
        ):
            raise EditRejected("box must be [x1, y1, x2, y2] in level-0 pixels")
        x1, y1, x2, y2 = (float(v) for v in box)
        w, h = res.slide.width, res.slide.height
        if not all(math.isfinite(v) for v in (x1, y1, x2, y2)) or not (
            0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
        ):
            raise EditRejected(
                f"box {box} is outside the slide (0..{w} x 0..{h} px) or empty (need x1 < x2, y1 < y2)"
            )
        if x2 - x1 < MIN_BOX_PX or y2 - y1 < MIN_BOX_PX:
            raise EditRejected(
                f"box {box} is smaller than {MIN_BOX_PX:.0f} px; draw it around the whole cell"
            )
        new = self.store.add_cell(key, (x1, y1, x2, y2), lab, self.reviewer, first_free_id(res.cells))
        return self._after(key, new.cell_id, new.version)

    def _after(self, key: str, cell_id: int, version: int) -> dict[str, Any]:
        cells = self._cells(key)  # read once: the cell and the tally from the same state
        cell = next(r for r in cells if r.cell_id == cell_id)
        return {
            "cell": cell.to_dict(),
            "tally": self.differential(key, cells),
            "status": self.store.review(key).status,
        }

    def validate(self, key: str) -> dict[str, Any]:
        self.catalog.get(key)
        review = self.store.validate(key, self.reviewer)
        ex = self.export(key)
        return {
            "status": review.status,
            "reviewer": review.reviewer,
            "validated_at": review.validated_at,
            "exports": ex,
        }

    def export(self, key: str) -> dict[str, Any]:
        from marrowscope.review.exports import write_review_exports

        cells = self._cells(key)
        diff = reviewed_differential(cells)
        dx = reviewed_diagnosis(diff, self._dx_model(key))
        target = self.store.folder / key
        src = self.tiles(key)
        with src.lock:
            ex = write_review_exports(
                target,
                self.catalog.result(key),
                cells,
                dx,
                self.store.review(key),
                self.store.audit_log(key),
                src.slide,
                model_report=str(self.catalog.get(key).folder / "report.html"),
            )
        files = {"table": ex.table, "geojson": ex.geojson, "report": ex.report, "dicom_ann": ex.dicom_ann}
        return {
            "folder": str(ex.folder),
            "dicom_ann_skipped": ex.dicom_ann_skipped,
            **{k: None if v is None else f"/review-files/{key}/{v.name}" for k, v in files.items()},
        }

    # ---------------------------------------------------------------------------------------- pixels

    def crop(self, key: str, cell_id: int) -> bytes:
        with self._lock:
            if key not in self._index:
                self._index[key] = {
                    int(rid): c for c in self.catalog.result(key).cells.cells if (rid := c.row_id) is not None
                }
        model = self._index[key].get(cell_id)  # model cells: no need to read the corrections
        box, label = (
            (model.box, model.label) if model is not None else (self._find(key, cell_id).cell.box, None)
        )
        return self.tiles(key).crop(box, _color(label), key=cell_id)

    def warm_up(self) -> None:
        """Load what the first requests need (cell tables, diagnosis models), so the first tally is quick."""
        for key in self.catalog.keys:
            try:
                self.catalog.result(key)
                self._dx_model(key).get()
            except Exception as e:  # noqa: BLE001 - the request itself will report the problem
                log.debug("warm-up of %s failed: %s", key, e)

    def close(self) -> None:
        for t in self._tiles.values():
            t.close()
