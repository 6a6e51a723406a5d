"""Unit costs of the `reproduce` stages, measured on a small synthetic cohort of real-size ROIs, and the
time they add up to for a 48-patient cohort and for the real dataset (an extrapolation, printed as such).

Measured (each with the library functions the stages call):
- ROI cache: seconds and bytes per ROI (2048 px at 0.11 µm/px; at 0.25 µm/px without a margin and at
  0.45 µm/px with 25 µm, webp90);
- detector: seconds per training step of the default schedule (synth recipe: 4 crops of 384 px at
  0.25 µm/px, MobileNetV3-FPN), timed over one epoch;
- classifier: seconds per training step (64 crops, msresnet_s at 64 px), timed over one epoch;
- predicted counts: seconds per ROI of `analyze_batch` with the bundled detector-synth/classifier-synth.

Run: nice -n 10 .venv/bin/python benchmarks/bench_reproduce.py [--patients 4] [--threads 1] [--out DIR]
Prints one JSON document (unit costs, the extrapolation and the assumptions it uses).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    import torch

    from marrowscope import taxonomy
    from marrowscope.data.classification_datasets import load_slide_dataset
    from marrowscope.data.detection_datasets import cohort_samples
    from marrowscope.data.patches import build_roi_cache
    from marrowscope.data.synth.cohort import SynthConfig, generate_cohort
    from marrowscope.engines.batch import analyze_batch
    from marrowscope.engines.pipeline import AnalysisConfig
    from marrowscope.engines.train_classifier import TrainConfig, train_classifier
    from marrowscope.engines.train_detector import train_detector
    from marrowscope.io.cohort import discover_cohort
    from marrowscope.models.classifier import make_spec
    from marrowscope.study.reproduce import ReproduceConfig

    torch.set_num_threads(args.threads)
    work = args.out or Path(tempfile.mkdtemp(prefix="bench_repro_"))
    cohort = work / "cohort"
    t0 = time.perf_counter()
    generate_cohort(
        SynthConfig(
            n_patients=args.patients, seed=31, slide_size=6144, roi_size=2048, n_rois=2, cells_per_roi=120
        ),
        cohort,
    )
    synth_s = time.perf_counter() - t0
    entries = discover_cohort(cohort).patients
    d = ReproduceConfig()
    t0 = time.perf_counter()
    # as the reproduce stages build it: detector ROIs without a margin, classifier ROIs with one
    build_roi_cache(entries, work / "patches", mpps=(d.detector.mpp,), context_um=0.0, codec=d.cache_codec)
    store = build_roi_cache(
        entries, work / "patches", mpps=(d.classifier_mpp,), context_um=d.context_um, codec=d.cache_codec
    )
    n_rois = len(store.find(mpp=d.detector.mpp))
    cache_s = time.perf_counter() - t0
    cache_bytes = sum(e.nbytes for e in store.entries.values())

    samples = cohort_samples(cohort, ("cell",), cache=store, cache_mpp=d.detector.mpp, cache_context_um=0.0)
    det_cfg = replace(
        d.detector, epochs=1, eval_every=99, bn_images=0, num_threads=args.threads, device="cpu"
    )
    res = train_detector(samples, [], det_cfg, work / "det", resume=False, progress=False)
    det_steps = max(1, len(samples) * det_cfg.repeats // det_cfg.batch_size)
    det_step_s = res.history[0].seconds / det_steps

    sch = taxonomy.load_scheme(d.scheme)
    crops, _ = load_slide_dataset(
        "cohort",
        cohort,
        sch.classes,
        mpp=d.classifier_mpp,
        size=round(d.classifier_input_size * 1.25),
        scheme=sch,
        cache=store,
    )
    spec = make_spec(
        sch.classes,
        arch=d.classifier_arch,
        scheme=sch.name,
        input_size=d.classifier_input_size,
        mpp=d.classifier_mpp,
    )
    ccfg = replace(TrainConfig(epochs=1, eval_every=99), num_threads=args.threads, device="cpu")
    t0 = time.perf_counter()
    train_classifier(spec, crops, None, work / "clf", ccfg, resume=False, progress=False)
    clf_steps = max(1, len(crops) // ccfg.batch_size)
    clf_step_s = (time.perf_counter() - t0) / clf_steps

    t0 = time.perf_counter()
    sources = [str(Path(e.slide_files[0]).parent) for e in entries[:2]]
    analyze_batch(
        sources, work / "analyze", AnalysisConfig.synthetic(diagnosis=None, tta=d.analysis_tta),
        progress=False
    )
    per_roi_analysis = (time.perf_counter() - t0) / (2 * 2)

    def total(
        n_patients: int,
        rois_per_patient: float,
        cells_per_roi: float,
        det_step: float,
        clf_step: float,
        analysis_roi: float,
        cache_roi: float,
    ) -> dict[str, float]:
        train_p = n_patients * (1 - d.split.test_fraction - d.split.val_fraction)
        rois = n_patients * rois_per_patient
        det = d.detector.epochs * (train_p * rois_per_patient * d.detector.repeats // d.detector.batch_size)
        clf = d.classifier.epochs * (train_p * rois_per_patient * cells_per_roi // d.classifier.batch_size)
        out = {
            "cache_min": rois * cache_roi / 60,
            "detector_train_min": det * det_step / 60,
            "classifier_train_min": clf * clf_step / 60,
            "predicted_counts_min": rois * analysis_roi / 60,
        }
        out["total_min"] = sum(out.values())
        return {k: round(v, 1) for k, v in out.items()}

    doc = {
        "measured": {
            "patients": args.patients,
            "rois": n_rois,
            "synth_s": round(synth_s, 1),
            "cache_s_per_roi": round(cache_s / n_rois, 3),
            "cache_mb_per_roi": round(cache_bytes / n_rois / 1e6, 2),
            "detector_s_per_step": round(det_step_s, 3),
            "detector_steps": det_steps,
            "classifier_s_per_step": round(clf_step_s, 3),
            "classifier_steps": clf_steps,
            "classifier_crops": len(crops),
            "analysis_s_per_roi": round(per_roi_analysis, 2),
        },
        "estimate_48_patients_this_cpu": total(
            48, 2, 120, det_step_s, clf_step_s, per_roi_analysis, cache_s / n_rois
        ),
        "estimate_real_dataset_this_cpu": total(
            246, 2, 160, det_step_s, clf_step_s, per_roi_analysis, cache_s / n_rois
        ),
        "assumptions": {
            "real_dataset": "246 patients, ~2 ROIs of 2048 px each, ~160 boxes per ROI (~40k boxes)",
            "schedule": "ReproduceConfig() defaults: detector 10 epochs x 8 repeats, batch 4; classifier 30 "
            "epochs, batch 64; split 62.5/12.5/25 %",
            "not_included": "detector/classifier test evaluation and bootstrap (minutes), diagnosis CV "
            "(seconds)",
        },
        "threads": args.threads,
        "machine": platform.platform(),
        "cpu_count": os.cpu_count(),
        "load_1min_end": os.getloadavg()[0],
        "torch": torch.__version__,
    }
    print(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
