"""How well does a field's own red cells give its pixel size? (``marrowscope.data.scale``, no labels)

Every TXL-PBC field (``train`` and ``val`` of its four sources; TXL ``test`` is never read) is measured
twice: by :func:`marrowscope.data.scale.estimate_red_cell_scale` (granulometry of the stained mask) and
by its red-cell boxes (median box side = 7.5 µm, ``estimate_mpp``: the rule behind BCCD's 0.075 µm/px).
The estimator reads a red cell's *stained* diameter, a little smaller than its box, so it is calibrated:
``c`` = median of ln(estimate / boxes) over ``train`` fields. Each source is reported with ``c`` taken from
the **other three** sources' ``train`` fields (what a lab the calibration never saw gets), and the
calibration shipped with the package (``src/marrowscope/data/red_cell_scale.json``, written by this
script: ``c`` over all four sources' ``train`` fields) is the one ``analyze --mpp auto`` uses.

Run (~5 min on 2 cores; writes every field's numbers, which ``txl_loso.py --estimated`` reads):

    .venv/bin/python benchmarks/red_cell_scale.py --data-root ../shared/data \\
        --out benchmarks/results/red_cell_scale.json --doc docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
PACKAGE_CALIBRATION = HERE.parent / "src" / "marrowscope" / "data" / "red_cell_scale.json"


def begin_marker(out: Path) -> str:
    """The doc block a results file renders into (one block per file, so several runs can be shown)."""
    return f"<!-- BEGIN GENERATED {out.stem} from benchmarks/results/{out.name} by red_cell_scale.py -->"


def measure_fields(data_root: Path) -> list[dict[str, Any]]:
    from marrowscope.data.detection_datasets import BLOOD_CLASSES, estimate_mpp
    from marrowscope.data.ood_datasets import txl_detection_by_source
    from marrowscope.data.scale import RED_CELL_UM, ScaleConfig, estimate_red_cell_scale

    out = []
    for split in ("train", "val"):
        for src, samples in txl_detection_by_source(data_root / "txl_pbc", BLOOD_CLASSES,
                                                    splits=(split,)).items():
            for s in samples:
                est = estimate_red_cell_scale(s.load(), ScaleConfig(calibration=1.0))  # raw
                out.append({"image_id": s.image_id, "source": src, "split": split,
                            "box_mpp": estimate_mpp([s.annotations], "RBC", RED_CELL_UM),
                            **({} if est is None else {"est_mpp": est.mpp, "peak_share": est.peak_share})})
    return out


def log_ratios(fields: list[dict[str, Any]], *, sources: set[str], split: str = "train") -> np.ndarray:
    return np.array([np.log(f["est_mpp"] / f["box_mpp"]) for f in fields
                     if f["source"] in sources and f["split"] == split and f.get("est_mpp") and f["box_mpp"]])


def calibration(fields: list[dict[str, Any]], sources: set[str]) -> float:
    """``c``: median ln(estimate / boxes) over the ``train`` fields of ``sources``."""
    r = log_ratios(fields, sources=sources)
    if not len(r):
        raise ValueError(f"no train field of {sorted(sources)} has both an estimate and red-cell boxes")
    return float(np.median(r))


def calibrated_mpps(fields: list[dict[str, Any]], held_out: str) -> dict[str, float]:
    """Each field of ``held_out`` at its estimated scale, calibrated on the other sources' train fields."""
    c = calibration(fields, {f["source"] for f in fields} - {held_out})
    return {f["image_id"]: float(f["est_mpp"] * np.exp(-c)) for f in fields
            if f["source"] == held_out and f.get("est_mpp")}


def summarise(fields: list[dict[str, Any]]) -> dict[str, Any]:
    sources = sorted({f["source"] for f in fields})
    rows = {}
    for src in sources:
        c = calibration(fields, set(sources) - {src})
        mine = [f for f in fields if f["source"] == src]
        both = [f for f in mine if f.get("est_mpp") and f["box_mpp"]]
        err = np.array([np.log(f["est_mpp"] / f["box_mpp"]) - c for f in both])
        rows[src] = {
            "fields": len(mine), "no_estimate": sum(1 for f in mine if not f.get("est_mpp")),
            "box_mpp_median": float(np.median([f["box_mpp"] for f in both])),
            "est_mpp_median": float(np.median([f["est_mpp"] for f in both])),
            "calibration_from_others": c,
            "calibrated_mpp_median": float(np.median([f["est_mpp"] * np.exp(-c) for f in both])),
            "abs_log_err_median": float(np.median(np.abs(err))),
            "abs_log_err_p90": float(np.percentile(np.abs(err), 90)),
            "within_10pct": float(np.mean(np.abs(err) <= np.log(1.1))),
        }
    return {"sources": rows, "calibration_all": calibration(fields, set(sources))}


def table(summary: dict[str, Any]) -> str:
    rows = ["| source | fields (no estimate) | µm/px from red-cell boxes (median) | estimated, raw | "
            "calibrated on the other three | per-field error, median | 90th percentile | within 10 % |",
            "|---|---|---|---|---|---|---|---|"]
    for src, r in summary["sources"].items():
        rows.append(f"| {src} | {r['fields']} ({r['no_estimate']}) | {r['box_mpp_median']:.4f} | "
                    f"{r['est_mpp_median']:.4f} | {r['calibrated_mpp_median']:.4f} | "
                    f"{100 * np.expm1(r['abs_log_err_median']):.0f} % | "
                    f"{100 * np.expm1(r['abs_log_err_p90']):.0f} % | "
                    f"{100 * r['within_10pct']:.0f} % |")
    return "\n".join(rows) + "\n"


def render(res: dict[str, Any]) -> str:
    m, s = res["meta"], res["summary"]
    cal = np.exp(-s["calibration_all"])
    return (f"Command: `{m['command']}`; {m['cpu_count']} cores, {m['seconds'] / 60:.1f} min "
            f"({1000 * m['seconds'] / max(1, m['fields']):.0f} ms per field)."
            + (f" Note: {m['note']}." if "note" in m else "") + f"\n\n{table(s)}\n"
            f"Calibration over all four sources' `train` fields (the run wrote it to the package): "
            f"estimated µm/px x "
            f"{cal:.3f}, i.e. a red cell's stained diameter is read as {7.5 * cal:.2f} µm.")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-root", type=Path, default=Path("../shared/data"))
    ap.add_argument("--out", type=Path, default=HERE / "results" / "red_cell_scale.json")
    ap.add_argument("--doc", type=Path, default=None, help="rewrite this doc's generated block")
    ap.add_argument("--render-only", action="store_true", help="re-render --doc from --out")
    a = ap.parse_args(argv)
    if a.render_only:
        res = json.loads(a.out.read_text())
    else:
        if not (a.data_root / "txl_pbc").exists():
            print(f"error: {a.data_root / 'txl_pbc'} not found; pass --data-root (the shared data folder)",
                  file=sys.stderr)
            return 2
        t0 = time.time()
        fields = measure_fields(a.data_root)
        summary = summarise(fields)
        res = {"meta": {"command": " ".join([Path(sys.executable).name, *sys.argv]),
                        "cpu_count": os.cpu_count(), "seconds": time.time() - t0, "fields": len(fields)},
               "summary": summary, "fields": fields}
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(res, indent=0) + "\n")
        PACKAGE_CALIBRATION.write_text(json.dumps({
            "factor": float(np.exp(-summary["calibration_all"])),
            "about": "estimated µm/px x factor = µm/px by red-cell boxes (median box side 7.5 µm); "
                     "median over TXL-PBC train fields of all four sources",
            "measured_by": res["meta"]["command"]}, indent=1) + "\n")
    print(table(res["summary"]))
    if a.doc is not None:
        from marrowscope.models.cards import write_generated_block

        write_generated_block(a.doc, begin_marker(a.out), render(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
