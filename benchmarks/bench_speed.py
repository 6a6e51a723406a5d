"""Inference speed-ups measured as ratios in one run, each with the accuracy it keeps.

Detectors (each ``--detector``): seconds per 2048 x 2048 ROI at 0.11 µm/px (the ROI of
``bench_detector.py``) for

- ``before``: the training tile (512 px), fp32, unoptimised (the inference path before this benchmark),
- ``tile``: training tiles stretched by up to 1/8 where that saves tiles (``TILE_STRETCH``), fp32,
  BatchNorm folded + channels-last,
- ``tile+bf16``: the same with the backbone under bf16 autocast (where the CPU has AMX / AVX-512 BF16),
- ``tile1024+bf16``: one 1,024 px tile per ROI at 0.25 µm/px (faster, but the context per tile differs
  from training's),

and, with ``--detector-eval NAME=DATASET`` (e.g. ``detector-synth=cohort:T``, the card's synthetic test
cohort), AP@0.5 and AP@[.5:.95] of every variant on that dataset.

Classifiers (each ``--classifier``): cells per second (wall, best of 3, 2,048 crops, no TTA) and cells
per CPU-second for fp32 unoptimised / fp32 optimised / bf16 optimised / int8 (classifiers whose weights
carry an int8 calibration; others skip the row), and, with ``--pbc ROOT``, pbc8
macro F1 on the PBC held-out split (``benchmarks/domain_shift.py``'s) plus the agreement of each
variant's labels with fp32's.

Run (idle machine): .venv/bin/python benchmarks/bench_speed.py --threads 2 \\
    --detector detector-synth --detector detector-blood --detector-eval detector-synth=cohort:T \\
    --classifier classifier-pbc --classifier classifier-synth --pbc ../shared/data/pbc_acevedo2020 \\
    --json benchmarks/results/bench_speed.json
(T: ``marrowscope synth --patients 4 --out T --seed 202 --labelled 0.7 --detection-only 0.3``.)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

DET_VARIANTS: dict[str, dict[str, Any]] = {
    "before": {"tile_size": None, "tile_stretch": 1.0, "precision": "fp32", "optimise": False},
    "tile": {"tile_size": None, "tile_stretch": 1.125, "precision": "fp32", "optimise": True},
    "tile+bf16": {"tile_size": None, "tile_stretch": 1.125, "precision": "bf16", "optimise": True},
    "tile1024+bf16": {"tile_size": 1024, "tile_stretch": 1.0, "precision": "bf16", "optimise": True},
}
CLF_VARIANTS: dict[str, dict[str, Any]] = {
    "before": {"precision": "fp32", "optimise": False},
    "optimised": {"precision": "fp32", "optimise": True},
    "optimised+bf16": {"precision": "bf16", "optimise": True},
    "int8": {"precision": "int8", "optimise": True},  # weights calibrated by `marrowscope quantize`
}


def _load_detector(name: str, v: dict[str, Any]) -> Any:
    from marrowscope.models.detector import load_detector

    return load_detector(name, device="cpu", tile_size=v["tile_size"], tile_stretch=v["tile_stretch"],
                         precision=v["precision"], optimise=v["optimise"])


def detector_speed(name: str, runs: int, evals: dict[str, str]) -> dict[str, Any]:
    from bench_detector import _roi
    from marrowscope.engines.detect import detect_region
    from marrowscope.io.slides.array import ArraySlide

    slide = ArraySlide(_roi(), mpp=0.11)
    out: dict[str, Any] = {"model": name, "variants": {}}
    for key, v in DET_VARIANTS.items():
        det = _load_detector(name, v)
        op = float(det.spec.params.get("operating_threshold", 0.5))
        detect_region(slide, (0, 0, 2048, 2048), det)  # warm-up
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            res = detect_region(slide, (0, 0, 2048, 2048), det)
            times.append(time.perf_counter() - t0)
        row: dict[str, Any] = {**v, "tile_size": det.tile_size, "max_tile_size": det.max_tile_size,
                               "precision": det.precision,
                               "seconds_per_roi": statistics.median(times), "seconds_all": times,
                               "boxes_at_operating_threshold": int((res.scores >= op).sum())}
        if name in evals:
            row.update(_detector_accuracy(det, evals[name]))
        out["variants"][key] = row
        print(json.dumps({"model": name, "variant": key, **row}), flush=True)
    base = out["variants"]["before"]["seconds_per_roi"]
    out["speedup"] = {k: base / r["seconds_per_roi"] for k, r in out["variants"].items()}
    return out


def _detector_accuracy(det: Any, dataset: str) -> dict[str, Any]:
    from marrowscope.data.detection_datasets import load_detection_dataset
    from marrowscope.engines.evaluate import evaluate_detector

    m = evaluate_detector(det, load_detection_dataset(dataset, det.classes))
    return {"eval_dataset": dataset, "ap50": m.ap50, "ap": m.ap, "recall": m.recall,
            "precision_at_op": m.precision}


def classifier_speed(name: str, n: int, pbc_root: Path | None) -> dict[str, Any]:
    from marrowscope.engines.classify import classify_crops
    from marrowscope.models.classifier import load_classifier

    out: dict[str, Any] = {"model": name, "n_crops": n, "variants": {}}
    heldout = None
    if pbc_root is not None:
        from domain_shift import pbc_crops, pbc_heldout_items

        heldout = pbc_heldout_items(pbc_root, None)
    ref_labels = None
    from marrowscope.errors import InputError

    for key, v in CLF_VARIANTS.items():
        try:
            clf = load_classifier(name, device="cpu", precision=v["precision"], optimise=v["optimise"])
        except InputError as e:  # int8 asked of weights without an int8 calibration
            print(json.dumps({"model": name, "variant": key, "skipped": str(e)}), flush=True)
            continue
        s = clf.input_size
        crops = np.random.default_rng(0).integers(0, 256, (n, s, s, 3), dtype=np.uint8)
        classify_crops(clf, crops[:256], tta=1)  # warm-up
        best, best_cpu = float("inf"), float("inf")
        for _ in range(3):
            t0, c0 = time.perf_counter(), time.process_time()
            classify_crops(clf, crops, tta=1)
            best, best_cpu = min(best, time.perf_counter() - t0), min(best_cpu, time.process_time() - c0)
        row: dict[str, Any] = {**v, "precision": clf.precision, "cells_per_s": n / best,
                               "cells_per_cpu_s": n / best_cpu}
        if heldout is not None:
            from marrowscope.engines.domain_shift import score_crops

            ec = pbc_crops(heldout, clf.mpp, clf.input_size)
            rep = score_crops(clf, ec, tta=1, eval_scheme="pbc8")
            labels = classify_crops(clf, ec.images, tta=1).probabilities.argmax(1)
            ref_labels = labels if ref_labels is None else ref_labels
            row.update({"pbc_heldout_macro_f1_tta1": rep.macro_f1, "n_pbc": len(ec.labels),
                        "label_agreement_with_before": float((labels == ref_labels).mean())})
        out["variants"][key] = row
        print(json.dumps({"model": name, "variant": key, **row}), flush=True)
    base = out["variants"]["before"]["cells_per_s"]
    out["speedup"] = {k: r["cells_per_s"] / base for k, r in out["variants"].items()}
    return out


def speed_begin(json_path: Path | None) -> str:
    """The doc block's first line: one block per result file (e.g. one per host kind)."""
    name = "benchmarks/results/bench_speed.json" if json_path is None else json_path.as_posix()
    return f"<!-- BEGIN GENERATED speed from {name} by bench_speed.py -->"


def _f(v: Any, nd: int = 3) -> str:
    return "–" if v is None else f"{v:.{nd}f}"


def render_markdown(result: dict[str, Any], command: str, begin: str) -> str:
    """The doc's speed tables (one row per model and variant) from a result of :func:`main`."""
    from marrowscope.models.cards import END

    m = result["machine"]
    head = (f"Command: `{command}`; {m['cpu_count']} cores, {m['threads']} torch threads, "
            f"torch {m['torch']}, "
            f"CPU: {m.get('cpu', '?')}, AMX bf16: {m['cpu_bf16']}, "
            f"AVX-512 VNNI: {m.get('avx512_vnni', '?')}, "
            f"load average {m['load_avg_start']:.2f} at the start and "
            f"{m['load_avg_end']:.2f} at the end. Ratios are against `before` in the same run.")
    lines = [begin, "", head, "",
             "| detector | variant | tile (max) | precision | s per 2048² ROI | speed-up "
             "| AP@0.5 | AP@[.5:.95] |", "|---|---|---|---|---|---|---|---|"]
    for r in result["detectors"]:
        for k, v in r["variants"].items():
            cells = [f"`{r['model']}`", k, f"{v['tile_size']} ({v['max_tile_size']})", v["precision"],
                     f"{v['seconds_per_roi']:.3f}", f"{r['speedup'][k]:.2f}×", _f(v.get("ap50"), 4),
                     _f(v.get("ap"), 4)]
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| classifier | variant | precision | cells/s | cells per CPU-s | speed-up "
              "| PBC held-out macro F1 (pbc8, no TTA) | labels as `before` |",
              "|---|---|---|---|---|---|---|---|"]
    for r in result["classifiers"]:
        for k, v in r["variants"].items():
            cells = [f"`{r['model']}`", k, v["precision"], f"{v['cells_per_s']:.0f}",
                     f"{v['cells_per_cpu_s']:.0f}",
                     f"{r['speedup'][k]:.2f}×", _f(v.get("pbc_heldout_macro_f1_tta1")),
                     _f(v.get("label_agreement_with_before"), 4)]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join([*lines, "", END]) + "\n"


def _cpu_flags() -> set[str]:
    try:
        return set(Path("/proc/cpuinfo").read_text(errors="replace").split())
    except OSError:
        return set()


def _cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text(errors="replace").splitlines()
    except OSError:
        return platform.processor()
    return next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--detector", action="append", default=[])
    ap.add_argument("--detector-eval", action="append", default=[], help="NAME=DATASET")
    ap.add_argument("--classifier", action="append", default=[])
    ap.add_argument("--n-crops", type=int, default=2048)
    ap.add_argument("--pbc", type=Path, default=None, help="pbc_acevedo2020 root (accuracy of each variant)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--doc", type=Path, default=None, help="rewrite this doc's generated speed table")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from marrowscope.models.inference import cpu_has_bf16

    if args.pbc is not None and not args.pbc.is_dir():
        raise SystemExit(f"--pbc {args.pbc}: not a folder (the PBC dataset is in ../shared/data)")
    evals = dict(e.split("=", 1) for e in args.detector_eval)
    result: dict[str, Any] = {
        "machine": {"cpu_count": os.cpu_count(), "threads": args.threads, "cpu_bf16": cpu_has_bf16(),
                    "cpu": _cpu_model(), "avx512_vnni": "avx512_vnni" in _cpu_flags(),
                    "python": platform.python_version(), "torch": torch.__version__,
                    "load_avg_start": os.getloadavg()[0]},
        "detectors": [detector_speed(d, args.runs, evals) for d in args.detector],
        "classifiers": [classifier_speed(c, args.n_crops, args.pbc) for c in args.classifier],
    }
    result["machine"]["load_avg_end"] = os.getloadavg()[0]
    rows = result["detectors"] + result["classifiers"]
    print(json.dumps({"speedup": {r["model"]: r["speedup"] for r in rows},
                      "load_avg": [result["machine"]["load_avg_start"], result["machine"]["load_avg_end"]]}))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1), encoding="utf-8")
    if args.doc:
        from marrowscope.models.cards import replace_block

        command = "python benchmarks/bench_speed.py " + " ".join(sys.argv[1:])
        text = args.doc.read_text(encoding="utf-8")
        begin = speed_begin(args.json)
        first = speed_begin(None)
        if begin not in text and first in text:  # another result file: its block follows the first one
            from marrowscope.models.cards import END

            i = text.index(END, text.index(first)) + len(END)
            text = f"{text[:i]}\n\n{begin}\n{END}{text[i:]}"
        args.doc.write_text(replace_block(text, render_markdown(result, command, begin), begin=begin),
                            encoding="utf-8")


if __name__ == "__main__":
    main()
