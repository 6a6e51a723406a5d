"""Detection as ``analyze`` runs it, field plus context, under different tile stretches: AP and seconds.

``analyze`` detects in each field (2048 px at 0.11 µm/px) with ``context_um`` (25 µm) of context on every
side, so that a cell on the field's edge is seen whole; the field's cells are those whose box centre lies
in the field. At ``detector-marrow``'s 0.25 µm/px that region is ~1,100 px: 3 x 3 tiles of 512 px
(576 px tiles, the default stretch, still need three per side), or 2 x 2 tiles of 640 px.

For every ROI of each cohort (``synth`` writes the ground truth of every boxed object in a ROI) this
reads the ROI plus context, detects with each ``--stretch`` and scores the detections whose centre is
in the ROI against the ROI's boxes (AP@0.5 and AP@[.5:.95], pycocotools via
:func:`marrowscope.eval.detection.evaluate_detections`), and times ``detect_region`` per ROI (median of
``--runs`` passes over all ROIs after a warm-up). Choose the stretch on a validation cohort; report the
test cohort beside it.

Run: .venv/bin/python benchmarks/bench_field_tiles.py --cohort val=V --cohort test=T \\
         --stretch 1.125 --stretch 1.25 --json benchmarks/results/field_tiles.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))


def field_rois(cohort: Path, context_um: float) -> list[tuple[Any, Any, Any]]:
    """(slide, region with context, ROI annotations in region pixels) for every ROI of ``cohort``."""
    from marrowscope.cells import Box, CellAnnotations
    from marrowscope.io.cohort import discover_cohort, load_patient_annotations
    from marrowscope.io.slides import open_slide

    out = []
    for entry in discover_cohort(cohort).patients:
        ann = load_patient_annotations(entry, "boxes", with_sessions=False)
        if not ann.regions:
            continue
        slide = open_slide(list(entry.slide_files))
        m = context_um / float(slide.info.mpp or 0.11)
        for region in ann.regions:
            rb = region.box
            seen = Box(max(0.0, rb.x1 - m), max(0.0, rb.y1 - m), min(float(slide.info.width), rb.x2 + m),
                       min(float(slide.info.height), rb.y2 + m))
            inside = [replace(c, label="cell") for c in ann.cells if rb.contains_point(*c.box.center)]
            truth = CellAnnotations(cells=tuple(inside), width=slide.info.width, height=slide.info.height)
            out.append((slide, seen, rb, truth))
    return out


def evaluate(det: Any, rois: list[Any], threshold: float) -> dict[str, Any]:
    from marrowscope.cells import Detections
    from marrowscope.engines.detect import detect_region
    from marrowscope.eval.detection import evaluate_detections

    preds = []
    for slide, seen, rb, _ in rois:
        d = detect_region(slide, seen, det)
        keep = [i for i, b in enumerate(d.boxes) if rb.contains_point((b[0] + b[2]) / 2, (b[1] + b[3]) / 2)]
        preds.append(Detections(d.boxes[keep], d.scores[keep], d.labels[keep], d.classes))
    m = evaluate_detections(preds, [r[3] for r in rois], det.classes, threshold=threshold)
    return {"ap50": m.ap50, "ap": m.ap, "precision": m.precision, "recall": m.recall,
            "n_rois": len(rois), "n_truth": sum(len(r[3].cells) for r in rois)}


def seconds_per_roi(det: Any, rois: list[Any], runs: int) -> list[float]:
    from marrowscope.engines.detect import detect_region

    detect_region(rois[0][0], rois[0][1], det)  # warm-up
    per = []
    for _ in range(runs):
        t = time.perf_counter()
        for slide, seen, _, _ in rois:
            detect_region(slide, seen, det)
        per.append((time.perf_counter() - t) / len(rois))
    return per


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--detector", default="detector-marrow")
    ap.add_argument("--cohort", action="append", required=True, help="NAME=DIR (synthetic cohort with ROIs)")
    ap.add_argument("--stretch", action="append", type=float, required=True)
    ap.add_argument("--context-um", type=float, default=25.0, help="analyze's context (AnalysisConfig)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args(argv)
    import torch

    from marrowscope.data.tiling import fitted_tile_size
    from marrowscope.engines.pipeline import AnalysisConfig, _detector_threshold
    from marrowscope.models.detector import load_detector

    torch.set_num_threads(a.threads)
    meta = {"command": " ".join(["python", *sys.argv]), "machine": platform.platform(), "threads": a.threads,
            "torch": torch.__version__, "load_avg_start": os.getloadavg(), "context_um": a.context_um}
    res: dict[str, Any] = {"meta": meta, "rows": []}
    cohorts = {k: field_rois(Path(v), a.context_um) for k, _, v in (c.partition("=") for c in a.cohort)}
    for stretch in a.stretch:
        det = load_detector(a.detector, device="cpu", precision=a.precision, tile_stretch=stretch)
        slide, seen = next(iter(cohorts.values()))[0][:2]
        side = round(seen.width * float(slide.info.mpp or 0.11) / det.mpp)
        tile = fitted_tile_size(side, side, det.tile_size, min(128, det.tile_size // 2), det.max_tile_size)
        row: dict[str, Any] = {"stretch": stretch, "max_tile": det.max_tile_size, "region_px": side,
                               "tile": tile, "precision": det.precision}
        for name, rois in cohorts.items():
            row[name] = evaluate(det, rois, _detector_threshold(det, AnalysisConfig()))
            per = seconds_per_roi(det, rois, a.runs)
            row[name].update(s_per_field=statistics.median(per), s_per_field_all=per)
        res["rows"].append(row)
        print(json.dumps(row), flush=True)
    res["meta"]["load_avg_end"] = os.getloadavg()
    if a.json is not None:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
