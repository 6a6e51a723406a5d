"""The status of one slide in a batch: what ``analyze`` reports per slide, in ``batch_summary.json``,
``cohort.csv`` and the index page. It lives in ``report`` so that both the engines (which produce it)
and the report pages (which show it) import it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SlideStatus:
    source: str
    slide_id: str | None
    status: str  # "done", "skipped" (done in an earlier run) or "failed"
    reason: str | None = None
    folder: str | None = None
    n_counted: int | None = None
    blast_pct: float | None = None
    blast_ci: tuple[float, float] | None = None
    suggestion: str | None = None
    suggestion_p: float | None = None
    rule_baseline: str | None = None
    flags: tuple[str, ...] = ()
    rois_from: str | None = None
    seconds: float | None = None
    redone_because: str | None = None  # a finished folder was there but could not be reused: why
