"""The batch index page: one row per slide with its blast %, interval, suggestion and a report link."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from marrowscope import __version__, alerts
from marrowscope.io.atomic import write_text_atomic
from marrowscope.report.results import RESEARCH_NOTICE
from marrowscope.report.status import SlideStatus


def _meaning(code: str) -> str:
    k = alerts.codes().get(code)
    return k.meaning if k is not None else code


def _row(s: SlideStatus, out_dir: Path) -> dict[str, Any]:
    link = None
    if s.folder is not None and (Path(s.folder) / "report.html").is_file():
        folder = Path(s.folder)
        if folder.resolve().is_relative_to(out_dir.resolve()):
            link = f"{folder.resolve().relative_to(out_dir.resolve()).as_posix()}/report.html"
        else:
            link = (folder / "report.html").resolve().as_uri()
    return {
        "slide": s.slide_id or Path(s.source).name,
        "status": s.status,
        "n": "" if s.n_counted is None else s.n_counted,
        "blast": "" if s.blast_fraction is None else f"{100 * s.blast_fraction:.1f} %",
        "ci": "" if s.blast_ci is None else f"{100 * s.blast_ci[0]:.1f}–{100 * s.blast_ci[1]:.1f} %",
        "flags": ", ".join(s.flags),
        "suggestion": s.suggestion or "",
        "headline": s.headline,
        "uncertain": s.uncertain_between is not None,
        "warnings": [{"code": c, "meaning": _meaning(c)} for c in s.warnings],
        "models": list(s.models),
        "p": "" if s.suggestion_p is None else f"{100 * s.suggestion_p:.0f} %",
        "rule": s.rule_baseline or "",
        "disagree": bool(s.suggestion and s.rule_baseline and s.suggestion != s.rule_baseline),
        "regions": s.rois_from or "",
        "link": link,
        "reason": s.reason or "",
        "source": s.source,
    }


def render_index(statuses: Sequence[SlideStatus], out_dir: str | Path) -> str:
    import jinja2

    from marrowscope.report.html import _environment

    env: jinja2.Environment = _environment()
    rows = [_row(s, Path(out_dir)) for s in statuses]
    return str(env.get_template("index.html.j2").render(
        rows=rows, notice=RESEARCH_NOTICE, version=__version__,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        n_failed=sum(r["status"] == "failed" for r in rows),
    ))


def write_index(path: str | Path, statuses: Sequence[SlideStatus], out_dir: str | Path) -> Path:
    return write_text_atomic(path, render_index(statuses, out_dir))
