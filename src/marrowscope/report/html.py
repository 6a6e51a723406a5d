"""The self-contained HTML report of one slide (Jinja2 template, inline CSS, images as data URIs).

:func:`report_context` turns a :class:`SlideResult` (and the open slide, for pictures) into plain
values; ``templates/report.html.j2`` lays them out. Nothing is fetched from outside the file.
"""

from __future__ import annotations

import json
import logging
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from marrowscope import alerts, taxonomy
from marrowscope.cells import Box, Cell
from marrowscope.counting import Flag
from marrowscope.io.atomic import write_text_atomic
from marrowscope.io.slides.base import SlideReader
from marrowscope.report import figures
from marrowscope.report.colors import UNCERTAIN_COLOR, label_color
from marrowscope.report.results import RESEARCH_NOTICE, SlideResult

log = logging.getLogger(__name__)

LINEAGE_NAMES: Mapping[str, str] = {
    "blast": "Blasts and blast-like precursors",
    "neutrophilic": "Neutrophilic granulopoiesis",
    "eosinophilic": "Eosinophilic granulopoiesis",
    "basophilic": "Basophilic granulopoiesis",
    "erythroid": "Erythropoiesis (nucleated)",
    "lymphoid": "Lymphoid cells",
    "monocytic": "Monocytic cells",
    "plasma_cell": "Plasma cells",
    "megakaryocytic": "Megakaryocytic cells",
    "other_cell": "Other nucleated cells",
}
THRESHOLD_TEXT: Mapping[str, str] = {
    "5%": "5 % (upper limit of normal marrow blasts; MDS with increased blasts from 5 %)",
    "10%": "10 % (ICC: AML with recurrent genetic abnormalities, MDS/AML 10–19 %)",
    "AML 20%": "20 % (WHO: acute myeloid leukemia)",
    "ALL 25%": "25 % (pediatric protocols: M3 marrow, acute lymphoblastic leukemia)",
}


def pretty(name: str) -> str:
    """``segmented_neutrophil`` -> ``Segmented neutrophil``."""
    s = name.replace("_", " ")
    return s[:1].upper() + s[1:]


def pct(x: float | None, digits: int = 1) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.{digits}f} %"


def interval(iv: Sequence[float], digits: int = 1) -> str:
    return f"{100 * iv[0]:.{digits}f}–{100 * iv[1]:.{digits}f} %"


def ratio(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f} : 1"


@dataclass(frozen=True)
class _Row:
    name: str
    label: str
    color: str
    count: int
    pct: str
    ci: str
    p: float
    lo: float
    hi: float
    is_blast: bool
    description: str


def _scheme_classes(result: SlideResult) -> list[str]:
    """The classifier's classes (from the cells' probability vectors), in its order."""
    for c in result.cells.cells:
        if c.probabilities:
            return list(c.probabilities)
    return []


def _differential_rows(result: SlideResult) -> tuple[list[dict[str, Any]], float]:
    """Lineage groups (in taxonomy order) with their class rows, and the bar scale (fraction at 100 %).

    Every countable class the classifier knows is listed, with 0 when none was found (a differential
    lists its categories even when empty; the interval shows how many could have been missed)."""
    from marrowscope.counting import wilson_interval

    d = result.differential
    n = d.n_counted
    known_classes = [c for c in _scheme_classes(result) if c in taxonomy.LABELS]
    names = set(d.counts) | {c for c in known_classes if taxonomy.is_countable(c)}
    by_lineage: dict[str, list[str]] = defaultdict(list)
    for name in names:
        by_lineage[taxonomy.lineage_of(name)].append(name)
    top = max([iv[1] for iv in d.intervals.values()] + [d.blast_interval[1], 0.1])
    scale = min(1.0, math.ceil(top * 10) / 10)
    groups = []
    known = [x for x in taxonomy.LINEAGES if x in by_lineage]
    for lin in known + sorted(set(by_lineage) - set(taxonomy.LINEAGES)):
        rows = []
        for name in taxonomy.in_differential_order(by_lineage[lin]):
            k = d.counts.get(name, 0)
            p = d.proportions.get(name, 0.0)
            lo, hi = d.intervals.get(name) or wilson_interval(0, n)
            info = taxonomy.LABELS.get(name)
            rows.append(_Row(name, pretty(name), label_color(name), k, pct(p),
                             interval((lo, hi)), p, lo, hi, taxonomy.is_blast_equivalent(name),
                             info.description if info is not None else ""))
        k = d.lineage_counts.get(lin, 0)
        lp = d.lineage_proportions.get(lin, 0.0)
        liv = d.lineage_intervals.get(lin) or wilson_interval(0, n)
        groups.append({
            "lineage": lin, "label": LINEAGE_NAMES.get(lin, pretty(lin)), "count": k,
            "pct": pct(lp), "ci": interval(liv), "p": lp, "lo": liv[0], "hi": liv[1], "rows": rows,
        })
    return groups, scale


def _not_counted(result: SlideResult) -> list[dict[str, Any]]:
    out = []
    for name, n in result.differential.not_counted.items():
        if name == "uncertain":
            label = "Uncertain (classifier abstained)"
            why = "top class probability below the model's threshold"
        elif name == "unlabeled":
            label, why = "Unlabelled objects", "detected but not classified"
        else:
            info = taxonomy.LABELS.get(name)
            label, why = pretty(name), (info.description if info is not None else "")
        out.append({"label": label, "count": n, "why": why, "color": label_color(name)})
    return out


def flag_need(f: Flag) -> str:
    """What would decide a straddled threshold, within the tool's own cell cap."""
    if f.cells_needed is None:
        return (f"cannot be decided within the {f.max_cells}-cell cap at this proportion; "
                "review the blasts instead")
    return f"about {f.cells_needed} more countable cells would decide it (if the proportion holds)"


def _flags(result: SlideResult) -> list[dict[str, Any]]:
    out = []
    for f in result.differential.flags:
        what = "lymphoid blasts incl. unassigned" if f.quantity == "lymphoid_blasts" else "blasts"
        out.append({"name": f.name, "text": THRESHOLD_TEXT.get(f.name, f.name), "estimate": pct(f.estimate),
                    "ci": interval(f.interval), "need": flag_need(f), "what": what})
    return out


def _diagnosis(result: SlideResult) -> dict[str, Any] | None:
    dx = result.diagnosis
    if dx is None:
        return None
    probs = sorted(dx.probabilities.items(), key=lambda kv: -kv[1])
    between = dx.uncertain_between
    return {
        "model": dx.model,
        "suggestion": dx.suggestion,
        "headline": dx.headline,
        "uncertain": between is not None,
        "between_p": "" if between is None else " / ".join(pct(dx.probabilities[c], 0) for c in between),
        "threshold": pct(dx.confidence_threshold, 0),
        "p": pct(dx.probabilities.get(dx.suggestion, 0.0), 0),
        "rows": [{"name": k, "p": v, "pct": pct(v), "top": k == dx.suggestion, "rule": k == dx.rule_baseline}
                 for k, v in probs],
        "rule": dx.rule_baseline,
        "rule_reason": dx.rule_reason,
        "agree": dx.rule_baseline == dx.suggestion,
        "unused": [pretty(x) for x in dx.unused_labels],
    }


def _legend(cells: Sequence[Cell]) -> list[dict[str, str]]:
    seen = taxonomy.in_differential_order({c.label for c in cells if c.label is not None})
    out = [{"label": pretty(n), "color": label_color(n)} for n in seen]
    if any(c.label is None for c in cells):
        out.append({"label": "Uncertain", "color": UNCERTAIN_COLOR})
    return out


def _field_pictures(result: SlideResult, slide: SlideReader, max_fields: int) -> list[dict[str, Any]]:
    """Every counted region with its boxes (the ``max_fields`` with most cells when there are more)."""
    cells = result.cells.cells
    by_roi: dict[int, list[Cell]] = defaultdict(list)
    for c in cells:
        if c.roi_id is not None:
            by_roi[c.roi_id].append(c)
    regions = sorted(result.regions, key=lambda r: -r.n_cells)[:max_fields]
    regions.sort(key=lambda r: [x.roi_id for x in result.regions].index(r.roi_id))
    out = []
    for r in regions:
        fbox = Box(*r.box)
        in_field = by_roi.get(r.roi_id, [])
        try:
            img = figures.field_with_boxes(slide, fbox, in_field, label_color, max_size=900)
        except Exception as e:  # noqa: BLE001 - a picture must not cost the report
            log.warning("field picture of region %s failed: %s", r.roi_id, e)
            continue
        um = "" if result.slide.mpp is None else (
            f", {fbox.width * result.slide.mpp:.0f} × {fbox.height * result.slide.mpp:.0f} µm")
        out.append({"uri": figures.to_data_uri(img), "legend": _legend(in_field),
                    "caption": f"{r.source} {r.roi_id}: {len(in_field)} objects{um}; "
                               "box colour = predicted class"})
    return out


def _pictures(result: SlideResult, slide: SlideReader, per_class: int,
              max_fields: int = 24) -> dict[str, Any]:
    cells = result.cells.cells
    regions = [(Box(*r.box), f"{'ROI' if r.source == 'annotated ROI' else 'F'}{r.roi_id} ({r.n_cells})")
               for r in result.regions]
    pics: dict[str, Any] = {"overview": None, "fields": [], "n_regions": len(result.regions), "gallery": []}
    try:
        pics["overview"] = figures.to_data_uri(figures.overview_with_regions(slide, regions, max_size=900))
    except Exception as e:  # noqa: BLE001 - a picture must not cost the report
        log.warning("overview picture failed: %s", e)
    pics["fields"] = _field_pictures(result, slide, max_fields)
    by_class: dict[str, list[Cell]] = defaultdict(list)
    for c in cells:
        by_class[c.label if c.label is not None else "uncertain"].append(c)

    def rank(n: str) -> tuple[bool, bool, tuple[int, int, str]]:  # as the differential: counted first
        counted = n in taxonomy.LABELS and taxonomy.is_countable(n)
        return (n == "uncertain", not counted, taxonomy.differential_rank(n))

    keys = sorted(by_class, key=rank)
    try:
        items = figures.gallery(slide, {k: by_class[k] for k in keys}, per_class=per_class, size=80,
                                color_of=label_color)
    except Exception as e:  # noqa: BLE001
        log.warning("gallery failed: %s", e)
        items = {}
    for k in keys:
        if k in items:
            counted = k in result.differential.counts
            pics["gallery"].append({
                "label": "Uncertain" if k == "uncertain" else pretty(k), "n": len(by_class[k]),
                "color": label_color(None if k == "uncertain" else k), "counted": counted,
                "images": [{"src": it.uri, "id": "" if it.detection_id is None else it.detection_id,
                            "p": "–" if it.probability is None else f"{100 * it.probability:.0f} %"}
                           for it in items[k]],
            })
    return pics


def _warnings(result: SlideResult) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """(warnings about the models, shown beside the differential; the others). Threshold flags have
    their own box and are left out here."""
    about: list[dict[str, str]] = []
    other: list[dict[str, str]] = []
    for w in result.warnings:
        if w.code == alerts.THRESHOLD_UNDECIDED.code:
            continue
        (about if w.kind.about_models else other).append({"code": w.code, "message": w.message})
    return about, other


def report_context(result: SlideResult, slide: SlideReader | None, *, files: Mapping[str, Any] | None = None,
                   per_class: int = 12, review: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Everything the template shows, as plain values. ``review``: who reviewed the differential and when
    (keys reviewer, at, status, summary, model_report), shown as a banner; None for the model's report."""
    d = result.differential
    groups, scale = _differential_rows(result)
    run = result.run
    cfg = dict(run.config)
    target = cfg.get("target_cells")
    pics = _pictures(result, slide, per_class) if slide is not None else {
        "overview": None, "fields": [], "n_regions": len(result.regions), "gallery": []}
    model_warnings, other_warnings = _warnings(result)
    s = result.slide
    area = sum((r.box[2] - r.box[0]) * (r.box[3] - r.box[1]) for r in result.regions)
    area_mm2 = None if s.mpp is None else area * s.mpp * s.mpp / 1e6
    size_um = "" if s.mpp is None else f"{s.width * s.mpp / 1000:.1f} × {s.height * s.mpp / 1000:.1f} mm"
    return {
        "notice": RESEARCH_NOTICE,
        "slide": {"id": s.slide_id, "path": s.path, "format": s.format, "width": s.width, "height": s.height,
                  "mpp": "unknown" if s.mpp is None else f"{s.mpp:.4g} µm/px", "size_um": size_um},
        "n_counted": d.n_counted,
        "n_objects": len(result.cells),
        "n_not_counted": d.n_not_counted,
        "target": target,
        "blast": {"count": d.blast_count, "pct": pct(d.blast_fraction), "ci": interval(d.blast_interval),
                  "lymphoid": pct(d.lymphoid_blast_fraction), "myeloid": pct(d.myeloid_blast_fraction),
                  "unknown": pct(d.unknown_blast_fraction), "leukemic": pct(d.leukemic_blast_fraction),
                  "p": d.blast_fraction, "lo": d.blast_interval[0], "hi": d.blast_interval[1]},
        "thresholds": [{"name": n, "t": t} for n, t in (("5 %", 0.05), ("10 %", 0.10), ("20 %", 0.20),
                                                        ("25 %", 0.25))],
        "me_ratio": ratio(d.me_ratio),
        "i_mg": "–" if d.maturation.get("i_mg") is None else f"{d.maturation['i_mg']:.2f}",
        "i_me": "–" if d.maturation.get("i_me") is None else f"{d.maturation['i_me']:.2f}",
        "eos": pct(d.extra.get("eosinophil_fraction")),
        "baso": pct(d.extra.get("basophil_fraction")),
        "groups": groups,
        "scale": scale,
        "scale_pct": f"{100 * scale:.0f} %",
        "not_counted": _not_counted(result),
        "flags": _flags(result),
        "diagnosis": _diagnosis(result),
        "area_mm2": "–" if area_mm2 is None else f"{area_mm2:.2f} mm²",
        "regions": [
            {"id": r.roi_id, "source": r.source, "verdict": r.verdict, "n": r.n_cells,
             "coverage": pct(r.coverage, 0), "box": ", ".join(f"{v:.0f}" for v in r.box)}
            for r in result.regions
        ],
        "model_warnings": model_warnings,
        "warnings": other_warnings,
        "pics": pics,
        "run": {
            "version": run.marrowscope_version, "python": run.python, "platform": run.platform,
            "packages": dict(run.packages), "models": [m.to_dict() for m in run.models], "seed": run.seed,
            "started": run.started, "seconds": f"{run.seconds:.1f}",
            "timings": {k: f"{v:.1f} s" for k, v in run.timings.items()},
            "config": json.dumps(cfg, indent=2, default=str),
        },
        "files": dict(files or {}),
        "review": None if review is None else dict(review),
    }


def _environment() -> Any:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("marrowscope.report", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )


def render_report(result: SlideResult, slide: SlideReader | None, *, files: Mapping[str, Any] | None = None,
                  per_class: int = 12, review: Mapping[str, Any] | None = None) -> str:
    """The report as one HTML string."""
    ctx = report_context(result, slide, files=files, per_class=per_class, review=review)
    return str(_environment().get_template("report.html.j2").render(**ctx))


def write_report(result: SlideResult, slide: SlideReader | None, path: str | Path, *,
                 files: Mapping[str, Any] | None = None, per_class: int = 12,
                 review: Mapping[str, Any] | None = None) -> Path:
    """Write the report to ``path`` (atomically)."""
    html = render_report(result, slide, files=files, per_class=per_class, review=review)
    return write_text_atomic(path, html)
