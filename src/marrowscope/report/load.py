"""Read one slide's ``analyze`` outputs back: ``summary.json`` + ``cells.parquet`` as a :class:`SlideResult`.

The reader side of :func:`marrowscope.report.outputs.write_slide_outputs` (the review app and the
reviewed report start from it; nothing is recomputed and no model is run).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from marrowscope.alerts import THRESHOLD_UNDECIDED, ResultWarning, codes, register_code
from marrowscope.cells import CellAnnotations
from marrowscope.counting import DEFAULT_MAX_CELLS, Differential, Flag
from marrowscope.errors import InputError
from marrowscope.report.outputs import CELLS_STEM, SUMMARY
from marrowscope.report.results import (
    DiagnosisResult,
    ModelRef,
    RegionResult,
    RunRecord,
    SlideResult,
    SlideSummary,
)


def read_summary(folder: str | Path) -> dict[str, Any]:
    """The parsed ``summary.json`` of a slide folder (InputError when missing or damaged)."""
    p = Path(folder) / SUMMARY
    if not p.is_file():
        raise InputError(p, "not a slide output folder of `marrowscope analyze` (no summary.json)")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(
            p, f"cannot read summary.json ({e}); rerun `marrowscope analyze` on this slide"
        ) from e
    if not isinstance(data, dict) or "slide" not in data or "differential" not in data:
        raise InputError(p, "summary.json lacks 'slide' or 'differential'; rerun `marrowscope analyze`")
    return data


def _interval(v: Any) -> tuple[float, float]:
    return (float(v[0]), float(v[1]))


def _fraction(d: Mapping[str, Any], name: str) -> float:
    """``<name>_fraction`` (schema 2), or the same fraction under its schema-1 name ``<name>_pct``."""
    return float(d[f"{name}_fraction"] if f"{name}_fraction" in d else d[f"{name}_pct"])


def differential_from_dict(d: Mapping[str, Any]) -> Differential:
    """The inverse of :meth:`Differential.to_dict`."""
    extra = dict(d.get("extra") or {})
    return Differential(
        n_counted=int(d["n_counted"]),
        counts={k: int(v) for k, v in d["counts"].items()},
        proportions={k: float(v) for k, v in d["proportions"].items()},
        intervals={k: _interval(v) for k, v in d["intervals"].items()},
        lineage_counts={k: int(v) for k, v in d["lineage_counts"].items()},
        lineage_proportions={k: float(v) for k, v in d["lineage_proportions"].items()},
        lineage_intervals={k: _interval(v) for k, v in d["lineage_intervals"].items()},
        blast_count=int(d["blast_count"]),
        blast_fraction=_fraction(d, "blast"),
        blast_interval=_interval(d["blast_interval"]),
        lymphoid_blast_fraction=_fraction(d, "lymphoid_blast"),
        myeloid_blast_fraction=_fraction(d, "myeloid_blast"),
        unknown_blast_fraction=_fraction(d, "unknown_blast"),
        leukemic_blast_fraction=_fraction(d, "leukemic_blast"),
        me_ratio=None if d.get("me_ratio") is None else float(d["me_ratio"]),
        maturation=dict(d.get("maturation") or {}),
        not_counted={k: int(v) for k, v in (d.get("not_counted") or {}).items()},
        flags=tuple(
            Flag(
                f["name"],
                float(f["threshold"]),
                float(f["estimate"]),
                _interval(f["interval"]),
                f.get("cells_needed"),
                str(f.get("quantity", "blasts")),
                int(f.get("max_cells", DEFAULT_MAX_CELLS)),
            )
            for f in d.get("flags", [])
        ),
        z=float(d.get("z", 1.96)),
        extra={k: float(v) for k, v in extra.items()},
    )


def _diagnosis(d: Mapping[str, Any] | None) -> DiagnosisResult | None:
    if not d:
        return None
    return DiagnosisResult(
        model=str(d["model"]),
        classes=tuple(d["classes"]),
        probabilities={k: float(v) for k, v in d["probabilities"].items()},
        suggestion=str(d["suggestion"]),
        rule_baseline=str(d["rule_baseline"]),
        rule_reason=str(d.get("rule_reason", "")),
        unused_labels=tuple(d.get("unused_labels", ())),
        rule_outcome=str(d.get("rule_outcome", "")),
        rule_values={k: float(v) for k, v in (d.get("rule_values") or {}).items()},
        confidence_threshold=float(d.get("confidence_threshold", 0.0)),
        uncertain_between=None if not d.get("uncertain_between") else
        (str(d["uncertain_between"][0]), str(d["uncertain_between"][1])),
    )


def _run(d: Mapping[str, Any]) -> RunRecord:
    return RunRecord(
        marrowscope_version=str(d.get("marrowscope_version", "")),
        python=str(d.get("python", "")),
        platform=str(d.get("platform", "")),
        packages=dict(d.get("packages") or {}),
        models=tuple(ModelRef(m["name"], m["task"], m["path"], m["sha256"],
                              str(m.get("training_data", "")), str(m.get("training_data_kind", "unknown")),
                              tuple(m.get("training_datasets", ())))
                     for m in d.get("models", [])),
        config=dict(d.get("config") or {}),
        seed=int(d.get("seed", 0)),
        started=str(d.get("started", "")),
        seconds=float(d.get("seconds", 0.0)),
        timings=dict(d.get("timings") or {}),
        device=None if d.get("device") is None else str(d["device"]),
        precision=None if d.get("precision") is None else str(d["precision"]),
    )


def _warning(w: Any) -> ResultWarning:
    """A ``{code, message}`` warning; a schema-1 plain string is kept as its message."""
    if isinstance(w, Mapping):
        return ResultWarning.from_dict(w)
    code = THRESHOLD_UNDECIDED.code if str(w).startswith("blast interval") else "legacy"
    if code == "legacy" and code not in codes():
        register_code("legacy", "a warning written by marrowscope before warnings had codes", severity="info")
    return ResultWarning(code, str(w))


def read_slide_cells(folder: str | Path) -> CellAnnotations:
    """The slide's cell table (Parquet, with its regions and metadata; CSV when Parquet is missing)."""
    from marrowscope.io.annotations.table import read_cell_table

    f = Path(folder)
    pq = f / f"{CELLS_STEM}.parquet"
    return read_cell_table(pq if pq.is_file() else f / f"{CELLS_STEM}.csv")


def load_slide_result(folder: str | Path, summary: Mapping[str, Any] | None = None) -> SlideResult:
    """The :class:`SlideResult` that ``analyze`` wrote into ``folder``."""
    d = summary if summary is not None else read_summary(folder)
    s = d["slide"]
    slide = SlideSummary(
        path=str(s["path"]),
        slide_id=str(s["slide_id"]),
        format=str(s["format"]),
        width=int(s["width"]),
        height=int(s["height"]),
        mpp=None if s.get("mpp") is None else float(s["mpp"]),
        patient_id=s.get("patient_id"),
        frame=str(s.get("frame", "level0")),
        dataset_csv_offset=(None if s.get("dataset_csv_offset") is None
                            else _interval(s["dataset_csv_offset"])),
    )
    regions = tuple(
        RegionResult(
            roi_id=int(r["roi_id"]),
            box=_interval(r["box"][:2]) + _interval(r["box"][2:]),
            source=str(r["source"]),
            verdict=str(r["verdict"]),
            coverage=r.get("coverage"),
            nuclear=r.get("nuclear"),
            n_cells=int(r["n_cells"]),
        )
        for r in d.get("regions", [])
    )
    return SlideResult(
        slide=slide,
        regions=regions,
        cells=read_slide_cells(folder),
        differential=differential_from_dict(d["differential"]),
        diagnosis=_diagnosis(d.get("diagnosis")),
        run=_run(d.get("run") or {}),
        warnings=tuple(_warning(w) for w in d.get("warnings", [])),
        ood=d.get("ood"),
    )
