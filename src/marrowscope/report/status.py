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
    blast_fraction: float | None = None  # a fraction (0.2 = 20 %); cohort.csv shows blast_percent
    blast_ci: tuple[float, float] | None = None
    suggestion: str | None = None
    suggestion_p: float | None = None
    rule_baseline: str | None = None
    flags: tuple[str, ...] = ()
    rois_from: str | None = None
    seconds: float | None = None
    redone_because: str | None = None  # a finished folder was there but could not be reused: why
    uncertain_between: tuple[str, str] | None = None  # the suggestion's headline is "uncertain between"
    warnings: tuple[str, ...] = ()  # warning codes (summary.json ``warnings[].code``)
    models: tuple[str, ...] = ()  # "task name (training data kind)" per model

    @property
    def headline(self) -> str:
        """The suggestion as the report heads it ("uncertain between A and B" below the confidence)."""
        if self.uncertain_between is not None:
            return f"uncertain between {self.uncertain_between[0]} and {self.uncertain_between[1]}"
        return self.suggestion or ""
