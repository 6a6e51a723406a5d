"""Bundle a ``classifier-marrow`` training run; its card's numbers come from the commands that measured them.

Every section of the bundled ``metrics.json`` (title, note, metric keys, targets) is kept as it is and its
numbers replaced by the new measurement, so the card cannot carry numbers of other weights:

    marrowscope quantize --weights runs/m30-raw/classifier.pt --dataset pbc:../shared/data/pbc_acevedo2020 \\
        --dataset synth:runs/synth24 --out runs/int8/m30-raw.pt --cache-dir runs/cache
    # evaluate classifier --out E for bccd-wbc, matek, txl-pbc and synth:runs/synth_test6 (E/metrics.json)
    python benchmarks/bundle_classifier_marrow.py export --weights runs/int8/m30-raw.pt \\
        --domain-shift runs/ds_m30/results.json --row runs/m30-raw/classifier.pt \\
        --evals runs/bundle30 --choice runs/bundle30/val_choice.json --reproduced "2026-12-03, ..."
    benchmarks/domain_shift.py --classifiers classifier-marrow --precisions fp32 int8 --out runs/ds_int8_m30
    python benchmarks/bundle_classifier_marrow.py int8 --domain-shift runs/ds_int8_m30/results.json \\
        --reproduced "2026-12-03, classifier-marrow (the bundled fp16 file), 8-view TTA"

``domain-shift`` re-bundles a classifier whose card sections all come from one ``domain_shift.py`` row
(``classifier-pbc``: PBC held-out, BCCD, TXL re-crops, Matek), plus, with ``--choice``, a
``validation_choice`` section from ``val_parts.py``'s outputs (several files: unskewed and ``--skewed``):

    python benchmarks/bundle_classifier_marrow.py domain-shift --model classifier-pbc \
        --weights runs/s10/classifier-pbc-bn3.pt --domain-shift runs/s10/ds_bn/results.json \
        --row runs/s10/classifier-pbc-bn3.pt --choice runs/s10/vp_pbc_all.json --reproduced "2026-12-03, ..."

``--evals DIR`` holds ``ev_bccd-wbc``, ``ev_matek``, ``ev_txl-pbc`` and ``ev_synth`` (``evaluate
classifier --out``); ``--choice`` is ``benchmarks/val_parts.py``'s output, the validation numbers the
weights and their inference options were chosen on (section ``validation_choice``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

#: card section -> the domain_shift.py row's set (phase ``domain-shift``)
ROW_SETS = {"pbc8_validation": "pbc_heldout", "bccd_wbc": "bccd_wbc", "txl_pbc_pbc_source": "txl_pbc",
            "matek_bm_samples": "matek"}
EVALS = {"bccd_wbc": "ev_bccd-wbc", "matek_bm_samples": "ev_matek", "txl_pbc_pbc_source": "ev_txl-pbc",
         "synth_test": "ev_synth"}


def evaluate_output(path: Path) -> dict[str, Any]:
    """``evaluate classifier``'s metrics.json under the card's key names."""
    d = json.loads(path.read_text())
    d.setdefault("macro_f1_min10", d.get("macro_f1_min_support"))
    d.setdefault("n", d.get("n_images"))
    return d


def choice_metrics(*paths: Path) -> dict[str, Any]:
    """val_parts.py's outputs as ``<weights>.{pbc8, bmdeep33, mean}`` (macro F1 on each validation part;
    ``<weights>``: the file path without ``runs/`` and ``.pt``, plus `` skewed`` for a ``--skewed`` run;
    ``mean`` only where there are several parts)."""
    out: dict[str, Any] = {}
    for path in paths:
        d = json.loads(path.read_text())
        for w, r in d["weights"].items():
            parts = {r[k]["scheme"]: r[k]["macro_f1"] for k in d["datasets"]}
            key = w.removeprefix("runs/").removesuffix(".pt") + (" skewed" if d.get("skewed") else "")
            out[key] = {**parts, "mean": r["mean_macro_f1"]} if len(parts) > 1 else parts
    return out


def precision_metrics(res: dict[str, Any]) -> dict[str, Any]:
    """domain_shift.py ``--precisions`` rows as ``<precision>.<set>.<metric>``."""
    return {r["precision"]: {
        "pbc_heldout": {"macro_f1": r["pbc_heldout"]["macro_f1"]},
        "bccd_wbc": {"macro_f1_min10": r["bccd_wbc"]["macro_f1_min10"],
                     "ood_auroc": r["bccd_wbc"]["ood_auroc"]},
        "txl_pbc": {"macro_f1": r["txl_pbc"]["macro_f1"]},
        "matek": {"n_correct": r["matek"]["n_correct"], "ood_auroc": r["matek"]["ood_auroc"]},
    } for r in res["rows"]}


def main(argv: list[str] | None = None) -> int:
    from marrowscope.models.cards import METRICS_FILE, load_metrics, section_from_eval, sync_bundle
    from marrowscope.models.classifier import export_classifier
    from marrowscope.models.provenance import training_data_from_meta
    from marrowscope.models.registry import BUNDLED_DIR

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("phase", choices=("export", "int8", "domain-shift"))
    ap.add_argument("--weights", type=Path, help="export: the fp32 weights (with their int8 calibration)")
    ap.add_argument("--domain-shift", type=Path, required=True, help="domain_shift.py's results.json")
    ap.add_argument("--row", help="export: the results row of these weights (its 'model')")
    ap.add_argument("--evals", type=Path, help="export: folder of the evaluate outputs")
    ap.add_argument("--choice", type=Path, nargs="+", help="val_parts.py's output(s)")
    ap.add_argument("--choice-title", help="domain-shift: the title of a new validation_choice section")
    ap.add_argument("--choice-command", help="domain-shift: the commands of a new validation_choice section")
    ap.add_argument("--choice-note", default="", help="domain-shift: its note")
    ap.add_argument("--description", help="domain-shift: a new meta.json description")
    ap.add_argument("--reproduced", required=True)
    ap.add_argument("--model", default="classifier-marrow")
    a = ap.parse_args(argv)
    folder = BUNDLED_DIR / a.model
    before = load_metrics(folder)
    templates = {s["id"]: s for s in before["sections"]}
    res = json.loads(a.domain_shift.read_text())
    ds_cmd = res["meta"]["command"]

    def section(sid: str, src: dict[str, Any], command: str | None = None) -> dict[str, Any]:
        t = templates[sid]
        # the choice scores several weights: the date, and its command names them
        rep = (f"{a.reproduced.split(',')[0]}, the weights its command names, 8-view TTA"
               if sid == "validation_choice" else a.reproduced)
        return section_from_eval(src, section_id=sid, title=t["title"], command=command or t["command"],
                                 reproduced=rep, note=t.get("note", ""),
                                 keys=None if sid == "validation_choice" else list(t["metrics"]),
                                 targets=t.get("targets", []))

    if a.phase == "int8":
        new = section("int8", precision_metrics(res), ds_cmd)
        before["sections"] = [new if s["id"] == "int8" else s for s in before["sections"]]
        (folder / METRICS_FILE).write_text(json.dumps(before, indent=2) + "\n")
        sync_bundle(folder)
        return 0
    if a.phase == "domain-shift":
        if not (a.weights and a.row):
            ap.error("domain-shift needs --weights and --row")
        (row,) = [r for r in res["rows"] if r["model"] == a.row]
        fresh = {sid: section(sid, row[key], ds_cmd) for sid, key in ROW_SETS.items() if sid in templates}
        sections = [fresh.get(s["id"], s) for s in before["sections"]]
        if a.choice:
            if "validation_choice" not in templates:  # a card without one yet
                if not (a.choice_title and a.choice_command):
                    ap.error("a first validation_choice section needs --choice-title and --choice-command")
                templates["validation_choice"] = {"title": a.choice_title, "command": a.choice_command,
                                                  "note": a.choice_note, "metrics": {}}
            choice = section("validation_choice", choice_metrics(*a.choice))
            sections = [s for s in sections if s["id"] != "validation_choice"] + [choice]
        meta = json.loads((folder / "meta.json").read_text())
        export_classifier(a.weights, folder, name=a.model, training_data=training_data_from_meta(meta),
                          description=a.description or meta["description"], sections=sections)
        return 0
    if not (a.weights and a.row and a.evals and a.choice):
        ap.error("export needs --weights, --row, --evals and --choice")
    (row,) = [r for r in res["rows"] if r["model"] == a.row]
    ood = {"auroc_pbc_vs_bccd": row["bccd_wbc"]["ood_auroc"], "auroc_pbc_vs_matek": row["matek"]["ood_auroc"]}
    fresh = {"pbc8_validation": section("pbc8_validation", row["pbc_heldout"], ds_cmd),
             "ood": section("ood", ood, ds_cmd),
             "validation_choice": section("validation_choice", choice_metrics(*a.choice)),
             **{sid: section(sid, evaluate_output(a.evals / d / "metrics.json")) for sid, d in EVALS.items()}}
    # the int8 section stays until the int8 phase re-measures the new file
    sections = [fresh.get(s["id"], s) for s in before["sections"]]
    meta = json.loads((folder / "meta.json").read_text())
    export_classifier(a.weights, folder, name=a.model, training_data=training_data_from_meta(meta),
                      description=meta["description"], sections=sections)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
