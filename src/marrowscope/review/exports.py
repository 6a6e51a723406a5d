"""Exports of a reviewed slide, into ``OUT/marrowscope-review/<slide>/`` (the model's folder is untouched).

* ``cells_reviewed.parquet`` / ``.csv``: the corrected cell table (the project's cell-table format;
  false detections left out; cells marked not identifiable / not counted have no label, so they stay
  out of any recount), ``review_states.csv`` (per cell: model label, review state, label, version) and
  ``audit_log.csv`` (every edit: who, when, cell, old → new);
* ``cells_reviewed.geojson`` (QuPath), with the same writer as the model's GeoJSON;
* ``reviewed.dcm``: a MANUAL DICOM ANN series referencing the slide (DICOM slides only), with the same
  writer as the model's ``predictions.dcm``;
* ``report.html``: the report re-rendered from the corrected differential with the same template as the
  model's, marked "reviewed by … on …".

The folder is written whole or not at all (:func:`marrowscope.io.atomic.atomic_dir`).
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from marrowscope import __version__, alerts
from marrowscope.cells import CellAnnotations
from marrowscope.io.atomic import atomic_dir, normal_permissions
from marrowscope.io.csvsafe import escape_row
from marrowscope.io.slides.base import SlideReader
from marrowscope.report.results import DiagnosisResult, SlideResult
from marrowscope.review.store import Edit, SlideReview
from marrowscope.review.tally import ReviewedCell, reviewed_differential

log = logging.getLogger(__name__)

TABLE_STEM = "cells_reviewed"
GEOJSON = "cells_reviewed.geojson"
DICOM_ANN = "reviewed.dcm"
REPORT = "report.html"
STATES_CSV = "review_states.csv"
AUDIT_CSV = "audit_log.csv"


@dataclass(frozen=True)
class ReviewExport:
    folder: Path
    table: Path
    geojson: Path
    report: Path
    dicom_ann: Path | None
    dicom_ann_skipped: str | None


def export_annotations(model: CellAnnotations, cells: Sequence[ReviewedCell]) -> CellAnnotations:
    """The corrected cells: deleted ones out; not identifiable / not counted without a label."""
    out = []
    for r in cells:
        if r.state == "deleted":
            continue
        c = r.cell if r.state not in ("not_identifiable", "not_counted") else r.cell.with_label(None)
        out.append(c)
    return replace(model.with_cells(out), source="marrowscope review")


def _csv(rows: Sequence[Sequence[object]]) -> str:
    buf = io.StringIO()
    csv.writer(buf).writerows(escape_row(r) for r in rows)  # a reviewer name like =cmd() stays text
    return buf.getvalue()


def _states_csv(cells: Sequence[ReviewedCell]) -> str:
    rows: list[Sequence[object]] = [("cell_id", "model_label", "state", "label", "version", "added")]
    rows += [
        (r.cell_id, r.model_label or "", r.state, r.cell.label or "", r.version, int(r.added)) for r in cells
    ]
    return _csv(rows)


def _audit_csv(edits: Sequence[Edit]) -> str:
    rows: list[Sequence[object]] = [
        (
            "seq",
            "at",
            "reviewer",
            "cell_id",
            "action",
            "old_state",
            "new_state",
            "old_label",
            "new_label",
            "box",
        )
    ]
    rows += [
        (
            e.seq,
            e.at,
            e.reviewer,
            "" if e.cell_id is None else e.cell_id,
            e.action,
            e.old_state or "",
            e.new_state or "",
            e.old_label or "",
            e.new_label or "",
            "" if e.box is None else " ".join(f"{v:.1f}" for v in e.box),
        )
        for e in edits
    ]
    return _csv(rows)


def _write_ann(
    ann: CellAnnotations, slide: SlideReader | None, path: Path, review: SlideReview
) -> str | None:
    base = getattr(slide, "base_dataset", None)
    if slide is None or base is None or slide.info.format != "dicom":
        return "the slide is not DICOM; a DICOM ANN must reference a DICOM slide"
    labelled = ann.with_cells(c for c in ann.cells if c.label is not None)
    if not labelled.cells:
        return "no labelled cells"
    from marrowscope.io.annotations.dicom_ann_writer import write_dicom_ann

    write_dicom_ann(
        labelled,
        path,
        source_image=base(),
        kind="consensus",
        generation="MANUAL",
        series_description=f"marrowscope reviewed cells ({review.status})"[:64],
        software_versions=f"marrowscope {__version__} review",
    )
    return None


def reviewed_result(
    model: SlideResult, cells: Sequence[ReviewedCell], diagnosis: DiagnosisResult | None
) -> SlideResult:
    """``model`` with the corrected cells, differential and diagnosis (for the reviewed report)."""
    ann = export_annotations(model.cells, cells)
    diff = reviewed_differential(cells)
    n_by_roi: dict[int, int] = {}
    for c in ann.cells:
        if c.roi_id is not None:
            n_by_roi[c.roi_id] = n_by_roi.get(c.roi_id, 0) + 1
    regions = tuple(replace(r, n_cells=n_by_roi.get(r.roi_id, 0)) for r in model.regions)
    return replace(
        model,
        cells=ann,
        differential=diff,
        diagnosis=diagnosis,
        regions=regions,
        warnings=tuple(w for w in model.warnings if w.code != alerts.THRESHOLD_UNDECIDED.code),
    )


def write_review_exports(
    target: Path,
    model: SlideResult,
    cells: Sequence[ReviewedCell],
    diagnosis: DiagnosisResult | None,
    review: SlideReview,
    edits: Sequence[Edit],
    slide: SlideReader | None,
    model_report: str,
) -> ReviewExport:
    """Write every export of one reviewed slide into ``target`` (see the module docstring)."""
    from marrowscope.io.annotations.geojson import write_geojson
    from marrowscope.io.annotations.table import write_cell_table
    from marrowscope.report.html import write_report

    result = reviewed_result(model, cells, diagnosis)
    classes = next((list(c.probabilities) for c in model.cells.cells if c.probabilities), None)
    n_changed = sum(r.state not in ("pending", "accepted") for r in cells)
    n_seen = sum(r.state != "pending" for r in cells)
    with atomic_dir(target) as tmp:
        write_cell_table(result.cells, tmp / TABLE_STEM, classes=classes)
        (tmp / STATES_CSV).write_text(_states_csv(cells), encoding="utf-8")
        (tmp / AUDIT_CSV).write_text(_audit_csv(edits), encoding="utf-8")
        write_geojson(result.cells, tmp / GEOJSON)
        try:
            skipped = _write_ann(result.cells, slide, tmp / DICOM_ANN, review)
        except Exception as e:  # noqa: BLE001 - a failed ANN must not cost the other exports
            log.warning("reviewed DICOM ANN not written: %s", e)
            skipped = f"writing the DICOM ANN failed ({type(e).__name__}: {e})"
        files = {
            "cells_parquet": f"{TABLE_STEM}.parquet",
            "cells_csv": f"{TABLE_STEM}.csv",
            "geojson": GEOJSON,
            "dicom_ann": None if skipped else DICOM_ANN,
            "dicom_ann_skipped": skipped,
            "review_states": STATES_CSV,
            "audit_log": AUDIT_CSV,
        }
        banner = {
            "reviewer": review.reviewer or "unknown",
            "at": review.validated_at or review.at or "",
            "status": review.status,
            "model_report": model_report,
            "summary": f"{n_seen} of {len(cells)} objects reviewed, {n_changed} corrected",
        }
        write_report(result, slide, tmp / REPORT, files=files, review=banner)
        normal_permissions(tmp)
    return ReviewExport(
        target,
        target / f"{TABLE_STEM}.parquet",
        target / GEOJSON,
        target / REPORT,
        None if skipped else target / DICOM_ANN,
        skipped,
    )
