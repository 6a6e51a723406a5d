"""The study's results table: ``reproduction.json`` (machine-readable) and ``reproduction.md``.

The paper's numbers (Höfener et al. 2025, BoneMarrowWSI-PediatricLeukemia) sit beside ours under the same
keys; the paper reports no confidence intervals and no diagnosis F1 from true counts (``None``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from marrowscope.io.atomic import write_text_atomic
from marrowscope.study.runner import StageRecord
from marrowscope.study.splits import SPLITS, PatientSplit

#: the paper's headline numbers (docs/reproduction.md cites them)
PAPER: Mapping[str, float | None] = {
    "detection_ap50": 0.96,
    "classification_macro_auc": 0.98,
    "classification_macro_f1": 0.61,
    "diagnosis_macro_f1_true": None,
    "diagnosis_macro_f1_predicted": 0.90,
}
LABELS: Mapping[str, str] = {
    "detection_ap50": "Detection AP@0.5 (test patients' ROIs)",
    "detection_ap": "Detection AP@[.5:.95]",
    "classification_macro_auc": "Classification macro AUC (test patients)",
    "classification_macro_f1": "Classification macro F1",
    "classification_balanced_accuracy": "Classification balanced accuracy",
    "diagnosis_macro_f1_true": "Diagnosis macro F1, true counts (CV)",
    "diagnosis_macro_f1_predicted": "Diagnosis macro F1, predicted counts (CV)",
    "diagnosis_rule_baseline_true": "Rule baseline macro F1, true counts",
    "diagnosis_rule_baseline_predicted": "Rule baseline macro F1, predicted counts",
}


def _metrics(records: Mapping[str, StageRecord]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    ci: dict[str, list[float]] = {}
    if "detector" in records:
        r = records["detector"].result
        out["detection_ap50"], ci["detection_ap50"] = r["ap50"], r["ap50_ci"]
        out["detection_ap"], ci["detection_ap"] = r["ap"], r["ap_ci"]
    if "classifier" in records:
        r = records["classifier"].result
        out["classification_macro_auc"], ci["classification_macro_auc"] = r["macro_auc"], r["macro_auc_ci"]
        out["classification_macro_f1"], ci["classification_macro_f1"] = r["macro_f1"], r["macro_f1_ci"]
        out["classification_balanced_accuracy"] = r["balanced_accuracy"]
        ci["classification_balanced_accuracy"] = r["balanced_accuracy_ci"]
    if "diagnosis" in records:
        r = records["diagnosis"].result
        for key, setting in (("true", "true_counts"), ("predicted", "predicted_counts")):
            s = r.get(setting)
            if s is None:
                continue
            out[f"diagnosis_macro_f1_{key}"], ci[f"diagnosis_macro_f1_{key}"] = s["macro_f1"], s["ci"]
            out[f"diagnosis_rule_baseline_{key}"] = s["rule_baseline"]
            ci[f"diagnosis_rule_baseline_{key}"] = s["rule_baseline_ci"]
    for k in PAPER:
        out.setdefault(k, None)
    out["ci"] = ci
    return out


def _fmt(v: Any) -> str:
    return "—" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))


def _ci(v: Sequence[float] | None) -> str:
    return f"[{v[0]:.3f}, {v[1]:.3f}]" if v else "—"


def write_tables(
    out: Path,
    split: PatientSplit,
    records: Mapping[str, StageRecord],
    results: Mapping[str, Any],
    warnings: Sequence[str],
    device: str,
) -> tuple[Path, Path]:
    """Write ``OUT/reproduction.json`` and ``OUT/reproduction.md``; returns their paths."""
    from marrowscope import __version__
    from marrowscope.engines.distributed import device_record
    from marrowscope.report.results import environment

    py, plat, pkgs = environment()
    metrics = _metrics(records)
    run = {
        "marrowscope_version": __version__,
        "python": py,
        "platform": plat,
        "packages": pkgs,
        **device_record(device),
        "seed": results["config"]["seed"],
        "written": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds_this_run": results["seconds"],
        "stages": {
            n: {
                "seconds": r.seconds,
                "started": r.started,
                "finished": r.finished,
                "skipped": r.skipped,
                "resumed": r.resumed,
                "fingerprint": r.fingerprint,
                "folder": r.folder,
                **({"train_seconds": r.result["train_seconds"]} if "train_seconds" in r.result else {}),
            }
            for n, r in records.items()
        },
        "weights": {
            n: {"path": r.result["weights"], "sha256": r.result["weights_sha256"]}
            for n, r in records.items()
            if "weights_sha256" in r.result
        },
    }
    doc: dict[str, Any] = {
        **metrics,
        "paper": dict(PAPER),
        "n_patients": split.sizes(),
        "n_patients_by_diagnosis": split.sizes_by_diagnosis(),
        "quick": bool(results["config"].get("quick")),
        "stages": {n: dict(r.result) for n, r in records.items() if n != "split"},
        "warnings": list(warnings),
        "run": run,
        "data": results["data"],
        "config": results["config"],
    }
    json_path = write_text_atomic(
        out / "reproduction.json", json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n"
    )
    md_path = write_text_atomic(out / "reproduction.md", render_markdown(doc))
    return json_path, md_path


def render_markdown(doc: Mapping[str, Any]) -> str:
    """``reproduction.md`` from the content of ``reproduction.json``."""
    lines = ["# Reproduction of the BoneMarrowWSI-PediatricLeukemia study", ""]
    if doc.get("quick"):
        lines += ["**Quick schedule (`--quick`): a smoke run; the numbers below mean nothing.**", ""]
    lines += [
        f"Data: `{doc['data']}`",
        "",
        "| metric | paper | ours | 95 % CI (bootstrap over patients) |",
        "|---|---|---|---|",
    ]
    ci = doc.get("ci", {})
    for key, label in LABELS.items():
        if key not in doc and key not in doc["paper"]:
            continue
        lines.append(
            f"| {label} | {_fmt(doc['paper'].get(key))} | {_fmt(doc.get(key))} | {_ci(ci.get(key))} |"
        )
    lines += [
        "",
        "The paper reports no intervals and no diagnosis F1 from true counts (—). Diagnosis CV runs "
        "over all patients of the split file; the predicted counts of training patients come from "
        "models that saw those patients' cells.",
        "",
        "## Split (patients)",
        "",
        "| diagnosis | " + " | ".join(SPLITS) + " |",
        "|---|" + "---|" * len(SPLITS),
    ]
    for dx, sizes in doc["n_patients_by_diagnosis"].items():
        lines.append(f"| {dx} | " + " | ".join(str(sizes[s]) for s in SPLITS) + " |")
    lines.append("| **all** | " + " | ".join(str(doc["n_patients"][s]) for s in SPLITS) + " |")
    st = doc.get("stages", {})
    if "detector" in st:
        n = st["detector"]["n_images"]
        lines += [
            "",
            f"Detector ROIs: {n['train']} train / {n['val']} val / {n['test']} test "
            f"({st['detector']['n_boxes_test']} test boxes).",
        ]
    if "classifier" in st:
        c = st["classifier"]
        n = c["n_cells"]
        lines += [
            f"Classifier cells ({c['scheme']}): {n['train']} train / {n['val']} val / {n['test']} test.",
            "",
            "### Per class (test patients)",
            "",
            "| class | support | precision | recall | F1 | AUC |",
            "|---|---|---|---|---|---|",
        ]
        for name, m in c["per_class"].items():
            if m["support"]:
                lines.append(
                    f"| {name} | {m['support']} | {_fmt(m['precision'])} | {_fmt(m['recall'])} | "
                    f"{_fmt(m['f1'])} | {_fmt(m['auc'])} |"
                )
    run = doc["run"]
    lines += [
        "",
        "## Run record",
        "",
        f"- marrowscope {run['marrowscope_version']}, Python {run['python']}, {run['platform']}",
        "- " + ", ".join(f"{k} {v}" for k, v in sorted(run["packages"].items())),
        f"- device: {run['device']}"
        + (f" ({run['gpu_model']})" if run.get("gpu_model") else "")
        + f"; seed {run['seed']}",
        f"- written {run['written']}; this run {run['seconds_this_run']:.0f} s",
        "",
        "| stage | wall s (completing call) | skipped this run | resumed | folder |",
        "|---|---|---|---|---|",
    ]
    for name, s in run["stages"].items():
        lines.append(
            f"| {name} | {s['seconds']:.1f} | {'yes' if s['skipped'] else 'no'} | "
            f"{'yes' if s['resumed'] else 'no'} | `{s['folder']}` |"
        )
    if run["weights"]:
        lines += ["", "| weights | sha256 |", "|---|---|"]
        lines += [f"| `{w['path']}` | `{w['sha256']}` |" for w in run["weights"].values()]
    if doc.get("warnings"):
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in doc["warnings"]]
    return "\n".join(lines) + "\n"
