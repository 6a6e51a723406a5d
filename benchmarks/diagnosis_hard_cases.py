"""Where the rule baseline and the diagnosis model differ on fresh synthetic patients, by kind of case.

Draws ``--patients`` new patients (composition sampler with the hard cases of docs/synth.md, multinomial
counts of 500 objects, balanced diagnoses; seed ``--seed``, not the training seed 2026), scores the
bundled ``diagnosis-synth`` and the rule baseline on their true counts, and tabulates accuracy per
diagnosis and case kind, plus the patients where the two disagree. Also writes the counts table
(``--counts-csv``) so ``marrowscope evaluate diagnosis --cohort`` can cross-validate on the same patients.

Usage::

    .venv/bin/python benchmarks/diagnosis_hard_cases.py --patients 16 --seed 2027 --out /tmp/hard16.json \
        --counts-csv /tmp/hard16.csv
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--patients", type=int, default=16)
    ap.add_argument("--seed", type=int, default=2027)
    ap.add_argument("--model", default="diagnosis-synth")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--counts-csv", type=Path)
    args = ap.parse_args()

    import pandas as pd
    from sklearn.metrics import f1_score

    from marrowscope.data.synth.composition import assign_diagnoses, sample_counts, sample_patient
    from marrowscope.io.annotations.clinical import ClinicalRecord
    from marrowscope.io.counts import clinical_row, make_counts_table, write_counts_table
    from marrowscope.models.diagnosis import RuleBaseline, load_diagnosis_model, outcome_classes
    from marrowscope.models.registry import resolve_model

    rng = np.random.default_rng(args.seed)
    rows, diag, clinical, kinds = {}, {}, {}, {}
    for d in assign_diagnoses(args.patients, rng):
        p = sample_patient(d, rng)
        rows[p.patient_id] = {k: float(v) for k, v in sample_counts(p.composition, 500, rng).items()}
        diag[p.patient_id], kinds[p.patient_id] = p.diagnosis, p.case_kind
        clinical[p.patient_id] = clinical_row(ClinicalRecord(p.patient_id, p.sex, p.age, p.diagnosis,
                                                             p.ncit_code, dict(p.labs)))
    table = make_counts_table(rows, diag, clinical, source=f"hard-case benchmark (seed {args.seed})")
    if args.counts_csv is not None:
        write_counts_table(table, args.counts_csv)
    path, sha = resolve_model(args.model, task="diagnosis")
    model = load_diagnosis_model(path, sha256=sha)
    proba = model.predict_proba_table(table.frame())
    pred = [model.classes[i] for i in np.argmax(proba, axis=1)]
    mapping = outcome_classes(model.classes)
    rule = [str(mapping[RuleBaseline().explain(rows[pid]).outcome]) for pid in table.patient_ids]
    truth = [str(d) for d in table.diagnoses]
    per: dict[str, Counter[str]] = {}
    disagree = []
    for pid, t, m, r, top in zip(table.patient_ids, truth, pred, rule, proba.max(axis=1), strict=True):
        key = f"{t} {kinds[pid]}"
        c = per.setdefault(key, Counter())
        c["n"] += 1
        c["model_right"] += m == t
        c["rule_right"] += r == t
        if m != r:
            disagree.append({"patient": pid, "truth": t, "case_kind": kinds[pid], "model": m, "rule": r,
                             "model_top_p": float(top)})
    out = {
        "patients": args.patients, "seed": args.seed, "model": args.model,
        "macro_f1_model": float(f1_score(truth, pred, average="macro")),
        "macro_f1_rule_baseline": float(f1_score(truth, rule, average="macro")),
        "by_case": {k: dict(v) for k, v in sorted(per.items())},
        "disagreements": disagree,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"{args.patients} fresh patients (seed {args.seed}): macro F1 model {out['macro_f1_model']:.3f}, "
          f"rule baseline {out['macro_f1_rule_baseline']:.3f}")
    print("| diagnosis, case | n | model right | rule right |")
    print("|---|---|---|---|")
    for k, v in out["by_case"].items():
        print(f"| {k} | {v['n']} | {v.get('model_right', 0)} | {v.get('rule_right', 0)} |")
    print(f"model and rule differ on {len(disagree)} patients:")
    print(pd.DataFrame(disagree).to_string(index=False) if disagree else "none")


if __name__ == "__main__":
    main()
