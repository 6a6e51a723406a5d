"""Benchmarks that write numbers into docs and cards: domain_shift.py's doc block, and the helpers that turn
val_parts.py / evaluate / domain_shift outputs into classifier-marrow's card sections."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from bundle_classifier_marrow import choice_metrics, evaluate_output, precision_metrics  # noqa: E402
from domain_shift import main as domain_shift_main  # noqa: E402


def _row(model: str, f1: float, precision: str = "fp32") -> dict:
    return {"model": model, "kind": "classifier", "precision": precision,
            "pbc_heldout": {"macro_f1": f1, "n": 465},
            "bccd_wbc": {"macro_f1_min10": 0.5, "n": 316, "ood_auroc": 0.93},
            "txl_pbc": {"macro_f1": 0.9, "n": 427}, "matek": {"n_correct": 5, "n": 18, "ood_auroc": 0.96}}


def test_domain_shift_writes_its_table_into_a_named_doc_block(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    out.mkdir()
    res = {"meta": {"command": "domain_shift.py --out ds", "machine": "m", "seconds": 12.0, "threads": 2},
           "rows": [_row("runs/a.pt", 0.9361)]}
    (out / "results.json").write_text(json.dumps(res))
    doc = tmp_path / "doc.md"
    doc.write_text("# Doc\n\nbefore\n")
    assert domain_shift_main(["--out", str(out), "--render-only", "--doc", str(doc), "--block", "x"]) == 0
    text = doc.read_text()
    assert "before" in text and "| `runs/a.pt` | 0.936 (n 465) |" in text and "12 s" in text
    res["rows"][0]["pbc_heldout"]["macro_f1"] = 0.5  # re-rendered in place, not appended again
    (out / "results.json").write_text(json.dumps(res))
    domain_shift_main(["--out", str(out), "--render-only", "--doc", str(doc), "--block", "x"])
    text = doc.read_text()
    assert text.count("BEGIN GENERATED domain_shift x") == 1
    assert "0.500 (n 465)" in text and "0.936" not in text
    with pytest.raises(SystemExit):
        domain_shift_main(["--out", str(out), "--render-only", "--doc", str(doc)])  # no --block


def test_card_section_helpers_map_benchmark_outputs_to_card_keys(tmp_path: Path) -> None:
    vp = {"datasets": ["pbc:P", "synth:S"], "weights": {
        "runs/r/classifier.pt": {"pbc:P": {"scheme": "pbc8", "macro_f1": 0.9},
                                 "synth:S": {"scheme": "bmdeep33", "macro_f1": 0.7}, "mean_macro_f1": 0.8}}}
    p = tmp_path / "vp.json"
    p.write_text(json.dumps(vp))
    assert choice_metrics(p) == {"r/classifier": {"pbc8": 0.9, "bmdeep33": 0.7, "mean": 0.8}}
    skew = tmp_path / "vp_skew.json"
    skew.write_text(json.dumps({**vp, "skewed": True}))
    assert set(choice_metrics(p, skew)) == {"r/classifier", "r/classifier skewed"}
    one = tmp_path / "vp_one.json"
    one.write_text(json.dumps({"datasets": ["pbc:P"], "weights": {"w.pt": {
        "pbc:P": {"scheme": "pbc8", "macro_f1": 0.9}, "mean_macro_f1": 0.9}}}))
    assert choice_metrics(one) == {"w": {"pbc8": 0.9}}
    ev = tmp_path / "metrics.json"
    ev.write_text(json.dumps({"macro_f1": 0.3, "macro_f1_min_support": 0.4, "n_images": 316}))
    got = evaluate_output(ev)
    assert (got["macro_f1_min10"], got["n"]) == (0.4, 316)
    pm = precision_metrics({"rows": [_row("w", 0.93), _row("w (int8)", 0.92, "int8")]})
    assert pm["int8"]["pbc_heldout"]["macro_f1"] == 0.92 and pm["fp32"]["matek"]["n_correct"] == 5
