"""The ``cell`` AP@0.5 of a detector on ``detector-marrow``'s validation set (BCCD ``val`` white cells and
the recipe cohort's validation patients), pooled and per part, through ``evaluate_detector`` as loaded for
inference: one measurement for a bundled one-class model and a rebuilt two-class one alike (a one-class
model is scored on the ``cell`` truths only). For bundle rules written before a rebuild is trained.

    .venv/bin/python benchmarks/detector_val_baseline.py --weights detector-marrow --cohort C48 \\
        --json benchmarks/results/detector_marrow_val_baseline.json
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def cell_val(weights: str, data_root: Path, cohort: Path) -> dict[str, Any]:
    from marrowscope.data.detection_datasets import marrow_recipe_samples
    from marrowscope.engines.evaluate import evaluate_detector
    from marrowscope.models.detector import load_detector

    _, val = marrow_recipe_samples(data_root, cohort)
    det = load_detector(weights, device="cpu", precision="auto")
    if len(det.classes) == 1:
        val = [replace(s, annotations=replace(s.annotations, cells=tuple(
            c for c in s.annotations.cells if c.label == "cell"))) for s in val]
    parts = {"pooled": val, "bccd_val": [s for s in val if s.mpp == 0.075],
             "cohort_val": [s for s in val if s.mpp != 0.075]}
    out: dict[str, Any] = {"weights": weights, "classes": list(det.classes)}
    for name, samples in parts.items():
        m = evaluate_detector(det, samples)
        out[name] = {"cell_ap50": m.ap50_per_class.get("cell"), "cell_recall": m.recall_per_class.get("cell"),
                     "cell_precision": m.precision_per_class.get("cell"), "n_images": m.n_images,
                     "n_cell_truths": m.n_true.get("cell")}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", required=True, help="a bundled name or a weights file")
    ap.add_argument("--cohort", type=Path, required=True)
    ap.add_argument("--data-root", type=Path, default=Path("../shared/data"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    import torch

    torch.set_num_threads(a.threads)
    text = json.dumps(cell_val(a.weights, a.data_root, a.cohort), indent=1)
    if a.json:
        a.json.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
