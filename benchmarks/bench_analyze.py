"""Seconds per slide and peak memory of a whole-slide analysis (500-cell differential) on the CPU.

Writes one synthetic slide (6144 x 6144 px at 0.11 µm/px, DICOM, 2 ROIs: the demo slide until the demo
grew to 4 ROIs on 8192 px) unless one is given,
then times ``analyze_batch`` end to end (open, region choice, detection, classification, counting,
diagnosis, all outputs incl. report.html) with the bundled models or the models given.

Run: .venv/bin/python benchmarks/bench_analyze.py [--threads 2] [--slide DIR] [--rois]
         [--detector NAME|PATH] [--classifier NAME|PATH] [--diagnosis NAME|PATH] [--runs 2]
Prints one JSON line per run and a summary (median seconds per slide, peak RSS).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2, help="torch threads (CPU cores to use)")
    ap.add_argument("--slide", type=Path, default=None, help="a slide or DICOM folder (default: demo slide)")
    ap.add_argument("--rois", action="store_true", help="count the slide's annotated ROIs only")
    ap.add_argument("--detector", default="detector-synth")
    ap.add_argument("--classifier", default="classifier-synth")
    ap.add_argument("--diagnosis", default="diagnosis-synth")
    ap.add_argument("--target-cells", type=int, default=500)
    ap.add_argument("--tta", type=int, default=None, help="classifier test-time views (default: config)")
    ap.add_argument("--score-threshold", type=float, default=None,
                    help="detector operating threshold (default: the weights' own)")
    ap.add_argument("--runs", type=int, default=2)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    from dataclasses import replace

    from marrowscope.engines.batch import analyze_batch
    from marrowscope.engines.pipeline import AnalysisConfig, load_models

    cfg = AnalysisConfig(detector=args.detector, classifier=args.classifier, diagnosis=args.diagnosis,
                         target_cells=args.target_cells, use_annotated_rois=args.rois)
    if args.tta is not None:
        cfg = replace(cfg, tta=args.tta)
    if args.score_threshold is not None:
        cfg = replace(cfg, score_threshold=args.score_threshold)
    work = Path(tempfile.mkdtemp(prefix="bench_analyze_"))
    slide = args.slide
    if slide is None:
        from marrowscope.data.synth.cohort import SynthConfig, generate_cohort

        slide = work / "slide"
        generate_cohort(SynthConfig(n_patients=1, seed=0, slide_size=6144, roi_size=2048, n_rois=2,
                                    cells_per_roi=150, kind_weights={"roi_only": 1.0}), slide)
    t0 = time.perf_counter()
    models = load_models(cfg, device="cpu")
    load_s = time.perf_counter() - t0
    times = []
    for k in range(args.runs):
        out = work / f"out{k}"
        t0 = time.perf_counter()
        s = analyze_batch([slide], out, cfg, models=models, progress=False)
        dt = time.perf_counter() - t0
        st = s.slides[0]
        if st.status != "done":
            raise SystemExit(f"analysis failed: {st.reason}")
        summary = json.loads((Path(st.folder or out) / "summary.json").read_text())
        times.append(dt)
        print(json.dumps({"run": k, "seconds": round(dt, 2), "n_counted": st.n_counted,
                          "n_objects": summary["n_objects"], "regions": len(summary["regions"]),
                          "timings": {a: round(b, 2) for a, b in summary["run"]["timings"].items()}}))
        shutil.rmtree(out, ignore_errors=True)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({
        "median_seconds_per_slide": round(statistics.median(times), 2),
        "model_load_seconds": round(load_s, 2),
        "peak_rss_mib": round(peak_mib), "threads": args.threads, "target_cells": args.target_cells,
        "load_avg_1_5_15": [round(x, 1) for x in os.getloadavg()],
        "rois_only": args.rois, "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "models": [m.name for m in models.refs],
    }))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
