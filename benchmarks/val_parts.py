"""A classifier on the validation parts of a training run: the only numbers a recipe may be chosen on.

Run (from the repository root), for weights trained with ``train classifier --dataset ... --out RUN``:

    .venv/bin/python benchmarks/val_parts.py --run RUN --weights RUN/classifier.pt [more weights] \
        --out runs/val_parts.json

The datasets, the split fraction and seed are read from ``RUN/split.json``; the parts are rebuilt with
the training code (``load_dataset_parts`` + ``split_parts``) and checked against the ids recorded
there. Each validation part is scored at its granularity: PBC (``pbc:``) at PBC's 8 groups
(``pbc8``), the synthetic cohort (``synth:``) at ``bmdeep33`` over the crops with a hard label.
Weights that ask for colour standardisation are given each unit's crops in one call, as inference
does (one call per real dataset part, one per synthetic slide), so they standardise per unit.

``--skewed``: the PBC part is classified in label-skewed calls instead: for each label, its crops with
a quarter as many of the others drawn at random (seed 0), so every crop is classified in a call where its
own label makes up 80 % of the crops (what per-call statistics, colour standardisation or BatchNorm
adaptation, meet in a leukaemic marrow region); each crop is scored from its own label's call.

Prints one line per weights file and writes every number to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from marrowscope.data.cell_augment import center_crop


def centre(images: np.ndarray, size: int) -> np.ndarray:
    import torch

    t = center_crop(torch.from_numpy(images).permute(0, 3, 1, 2), size)
    return np.ascontiguousarray(t.permute(0, 2, 3, 1).numpy())


def skewed_calls(labels: list[Any], seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """(call crops, crops scored from that call) per label: the label's crops + a quarter as many others."""
    keys = np.array([str(lab) for lab in labels])
    rng = np.random.default_rng(seed)
    out = []
    for k in sorted(set(keys)):
        own, rest = np.nonzero(keys == k)[0], np.nonzero(keys != k)[0]
        extra = rng.choice(rest, min(len(rest), len(own) // 4), replace=False)
        out.append((np.r_[own, extra], own))
    return out


def score_part(clf: Any, fmt: str, val: Any, units: np.ndarray, tta: int, skewed: bool = False
               ) -> dict[str, Any]:
    from marrowscope.data.classification_datasets import SET, scheme_of_spec
    from marrowscope.engines.classify import classify_crops
    from marrowscope.eval.classification import score_predictions

    crops = centre(val.images, clf.input_size)
    probs = np.zeros((len(val), len(clf.classes)), dtype=np.float64)
    calls = ([(np.nonzero(units == u)[0],) * 2 for u in np.unique(units)]  # one call per unit, as inference
             if not (skewed and fmt == "pbc") else skewed_calls(list(val.labels)))
    for sel, scored in calls:
        p = classify_crops(clf, crops[sel], tta=tta).probabilities
        probs[scored] = p[: len(scored)]  # the scored crops come first in each call
    scheme = "pbc8" if fmt == "pbc" else "bmdeep33"
    keep = np.arange(len(val)) if fmt == "pbc" else np.nonzero(np.asarray(val.target_kind) != SET)[0]
    labels = [val.labels[i] for i in keep]
    rep = score_predictions(probs[keep], clf.classes, labels, eval_scheme=scheme,
                            model_scheme=scheme_of_spec(clf.spec))
    return {"scheme": scheme, "macro_f1": rep.macro_f1, "accuracy": rep.accuracy, "n": int(len(keep)),
            "n_calls": len(calls)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", type=Path, required=True, help="training run folder (its split.json)")
    ap.add_argument("--weights", nargs="+", required=True)
    ap.add_argument("--cache-dir", type=Path, default=Path("runs/cache"))
    ap.add_argument("--tta", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--skewed", action="store_true",
                    help="the PBC part in label-skewed calls (80 %% one label)")
    a = ap.parse_args(argv)

    import torch

    from marrowscope.data.classification_datasets import scheme_of_spec
    from marrowscope.engines.train_classifier import colour_units, load_dataset_parts, split_parts
    from marrowscope.models.classifier import load_classifier

    torch.set_num_threads(a.threads)
    rec = json.loads((a.run / "split.json").read_text(encoding="utf-8"))
    names = rec["dataset"] if isinstance(rec["dataset"], list) else [rec["dataset"]]
    first = load_classifier(a.weights[0], device="cpu")
    sch = scheme_of_spec(first.spec)
    parts = load_dataset_parts(names, first.classes, sch, mpp=first.mpp, size=first.input_size,
                               cache_dir=a.cache_dir, progress=False,
                               synthetic_classes=rec.get("synthetic_classes", "all"))
    splits = split_parts(parts, rec["val_fraction"], rec["split_seed"])
    val_ids = [i for _, v in splits for i in v.ids]
    if val_ids != list(rec["val"]):
        print(f"error: the rebuilt validation parts differ from {a.run / 'split.json'} (data or code "
              "changed since that run); score with the code and data it was trained on", file=sys.stderr)
        return 2
    _, va_units = colour_units(parts, splits)
    results: dict[str, Any] = {"run": str(a.run), "datasets": names, "tta": a.tta, "skewed": a.skewed,
                               "weights": {}}
    for w in a.weights:
        clf = load_classifier(w, device="cpu")
        row: dict[str, Any] = {"sha256": clf.sha256,
                               "colour_standardise": bool(clf.spec.params.get("colour_standardise")),
                               "bn_adapt": bool(clf.spec.params.get("bn_adapt"))}
        offset = 0
        for (name, fmt, _, _), (_, v) in zip(parts, splits, strict=True):
            row[name] = score_part(clf, fmt, v, va_units[offset:offset + len(v)], a.tta, a.skewed)
            offset += len(v)
        row["mean_macro_f1"] = float(np.mean([row[n]["macro_f1"] for n, _, _, _ in parts]))
        results["weights"][w] = row
        print(f"{w}: " + "  ".join(f"{n} {row[n]['scheme']} {row[n]['macro_f1']:.3f} (n {row[n]['n']})"
                                   for n, _, _, _ in parts) + f"  mean {row['mean_macro_f1']:.3f}")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
