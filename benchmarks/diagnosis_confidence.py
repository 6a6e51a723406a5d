"""How often is a diagnosis suggestion right at a given top probability? Sets the "uncertain" threshold.

Out-of-fold probabilities of the bundled recipe (``DiagnosisClassifier``, logreg on count features, as
``diagnosis-synth``) on synthetic patients with the hard cases (composition sampler + multinomial counts
of 500 objects; 5-fold stratified CV, repeated). For each candidate threshold t it reports the share of
suggestions at or above t and their accuracy, and the accuracy of those below, and how often a
suggestion is right as a function of its top probability (isotonic regression of right/wrong on the top
probability: P(right | p)). The chosen threshold is the lowest p at which P(right | p) reaches
``--target`` (0.9: a suggestion shown plainly is right at least 9 times in 10 at its own probability,
not only on average); below it the report says "uncertain between A and B".

Usage::

    nice -n 10 .venv/bin/python benchmarks/diagnosis_confidence.py --patients 400 --out /tmp/conf.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--patients", type=int, default=400)
    ap.add_argument("--seed", type=int, default=2031)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--target", type=float, default=0.90)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    from marrowscope import taxonomy
    from marrowscope.data.synth_counts import synthetic_counts_table
    from marrowscope.models.diagnosis import DiagnosisClassifier

    t0 = time.perf_counter()
    table = synthetic_counts_table(args.patients, seed=args.seed, n_objects=500)
    table = table.with_labels(sorted(set(table.counts.columns) | set(taxonomy.ORIGINAL_LABELS)))
    X, y = table.frame(), np.array([str(d) for d in table.diagnoses])  # noqa: N806
    tops, right = [], []
    for r in range(args.repeats):
        cv = StratifiedKFold(5, shuffle=True, random_state=r)
        proba = cross_val_predict(DiagnosisClassifier(estimator="logreg", random_state=r), X, y, cv=cv,
                                  method="predict_proba")
        classes = np.array(sorted(set(y)))
        tops.append(proba.max(axis=1))
        right.append(classes[proba.argmax(axis=1)] == y)
    top, ok = np.concatenate(tops), np.concatenate(right)
    rows = []
    for t in np.round(np.arange(0.30, 0.96, 0.05), 2):
        hi = top >= t
        rows.append({"threshold": float(t), "share_confident": float(hi.mean()),
                     "accuracy_confident": float(ok[hi].mean()) if hi.any() else None,
                     "accuracy_uncertain": float(ok[~hi].mean()) if (~hi).any() else None,
                     "n_uncertain": int((~hi).sum())})
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(increasing=True, y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(top, ok)
    grid = np.round(np.arange(0.30, 1.0, 0.01), 2)
    p_right = iso.predict(grid)
    chosen = next((float(g) for g, v in zip(grid, p_right, strict=True) if v >= args.target), None)
    curve = [{"p": float(g), "p_right": float(v)} for g, v in zip(grid[::5], p_right[::5], strict=True)]
    bins = []
    for lo in np.arange(0.25, 1.0, 0.125):
        m = (top >= lo) & (top < lo + 0.125 + (1e-9 if lo + 0.125 >= 1 else 0))
        if m.any():
            bins.append({"p_from": float(lo), "p_to": float(min(1.0, lo + 0.125)), "n": int(m.sum()),
                         "mean_top_p": float(top[m].mean()), "accuracy": float(ok[m].mean())})
    out = {"command": "benchmarks/diagnosis_confidence.py " + " ".join(
               f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out"),
           "patients": args.patients, "seed": args.seed, "repeats": args.repeats, "target": args.target,
           "overall_accuracy": float(ok.mean()), "thresholds": rows, "reliability": bins,
           "p_right_curve": curve,
           "chosen_threshold": chosen, "seconds": time.perf_counter() - t0}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"{args.patients} patients x {args.repeats} repeats, overall OOF accuracy {ok.mean():.3f}")
    print("| threshold | share ≥ t | accuracy ≥ t | accuracy < t (n) |")
    print("|---|---|---|---|")
    for r in rows:
        below = ("–" if r["accuracy_uncertain"] is None
                 else f"{r['accuracy_uncertain']:.3f} ({r['n_uncertain']})")
        above = "–" if r["accuracy_confident"] is None else f"{r['accuracy_confident']:.3f}"
        print(f"| {r['threshold']:.2f} | {r['share_confident']:.3f} | {above} | {below} |")
    print("reliability:", json.dumps(bins))
    print("P(right | top p), isotonic:", ", ".join(f"{c['p']:.2f}: {c['p_right']:.2f}" for c in curve))
    print(f"chosen threshold (lowest p with P(right | p) >= {args.target}): {chosen}")


if __name__ == "__main__":
    main()
