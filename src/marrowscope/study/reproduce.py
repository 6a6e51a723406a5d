"""The paper's study end to end: split, detector, classifier, diagnosis (``marrowscope reproduce``).

Each stage calls the library functions the ``train``/``evaluate`` commands call
(:func:`~marrowscope.engines.train_detector.train_detector` and
:func:`~marrowscope.eval.detection.evaluate_detector`;
:func:`~marrowscope.engines.train_classifier.train_calibrated` and
:func:`~marrowscope.eval.classification.score_predictions`;
:func:`~marrowscope.engines.batch.analyze_batch` and
:func:`~marrowscope.eval.diagnosis.evaluate_diagnosis`) and runs under the
:class:`~marrowscope.study.runner.StageRunner`, so it is skipped when its inputs and config are unchanged
and resumes from its checkpoints when it was interrupted.

- ``split``: patient-level, stratified by diagnosis, seeded (:mod:`marrowscope.study.splits`), written to
  ``OUT/splits.csv``; or the user's ``--splits FILE``.
- ``detector``: one class ``cell``, trained on every box inside the ROIs of the training patients
  (validation patients pick ``best.pt``); AP@0.5 and AP@[.5:.95] on the test patients' ROIs with
  bootstrap intervals over test patients.
- ``classifier``: the ``bmdeep33`` scheme by default; consensus labels, per-session labels as soft
  targets; macro AUC, macro F1, balanced accuracy and the per-class table on the test patients.
- ``diagnosis``: repeated patient-grouped cross-validation on true counts and on the counts the trained
  detector + classifier give on each patient's ROIs, with bootstrap intervals and the rule baseline.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from marrowscope.engines.train_classifier import TrainConfig
from marrowscope.engines.train_detector import DetectorTrainConfig, synth_recipe_config
from marrowscope.errors import InputError
from marrowscope.study.inputs import StudyInputs, inspect_inputs
from marrowscope.study.runner import StageRecord, StageRunner
from marrowscope.study.splits import PatientSplit, SplitConfig, read_splits, split_patients, write_splits

log = logging.getLogger(__name__)

STAGES: tuple[str, ...] = ("split", "detector", "classifier", "diagnosis")
#: needed earlier stages of each stage
NEEDS: Mapping[str, tuple[str, ...]] = {
    "split": (),
    "detector": ("split",),
    "classifier": ("split",),
    "diagnosis": ("split", "detector", "classifier"),
}
#: config fields that do not change a result (left out of fingerprints)
_RUNTIME_FIELDS = ("device", "num_threads", "max_minutes", "checkpoint_every_s", "workers")


@dataclass(frozen=True)
class DiagnosisStudyConfig:
    estimator: str = "logreg"
    folds: int = 5
    repeats: int = 5
    n_boot: int = 1000
    train_on: str = "matched"


@dataclass(frozen=True)
class ReproduceConfig:
    """Everything that shapes the study's numbers (plus the device and threads, which do not)."""

    seed: int = 0
    split: SplitConfig = field(default_factory=SplitConfig)
    detector: DetectorTrainConfig = field(default_factory=lambda: synth_recipe_config(epochs=10))
    classifier: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=30, eval_every=5))
    scheme: str = "bmdeep33"
    classifier_arch: str = "msresnet_s"
    classifier_input_size: int = 64
    classifier_mpp: float = 0.45
    diagnosis: DiagnosisStudyConfig = field(default_factory=DiagnosisStudyConfig)
    n_boot_models: int = 200  # bootstrap resamples of test patients for the detector/classifier CIs
    analysis_tta: int = 4
    # detector score for the predicted counts (None: the trained detector's operating threshold); the quick
    # schedule's one-epoch detector scores few boxes above 0.5, and whether any does is luck of the draw
    analysis_score_threshold: float | None = None
    context_um: float = 25.0  # margin around each ROI in the classifier's patches (detector's: none)
    cache_codec: str = "webp90"  # how the patch cache stores pixels (marrowscope.data.patches.CODECS)
    cache_dir: str = ""  # the ROI patch cache (default OUT/patches; not part of any fingerprint)
    quick: bool = False

    @staticmethod
    def quick_config(seed: int = 0) -> ReproduceConfig:
        """A short schedule for tests and smoke runs (numbers are not meaningful)."""
        det = replace(
            synth_recipe_config(epochs=1),
            repeats=2,
            batch_size=2,
            crop_size=256,
            warmup_iters=2,
            bn_images=8,
            eval_every=1,
        )
        return ReproduceConfig(
            seed=seed,
            detector=det,
            classifier=TrainConfig(epochs=2, batch_size=32, warmup_epochs=0, eval_every=1),
            diagnosis=DiagnosisStudyConfig(folds=3, repeats=2, n_boot=100),
            n_boot_models=30,
            analysis_tta=1,
            analysis_score_threshold=0.05,
            quick=True,
        )

    def with_runtime(self, device: str | None, threads: int) -> ReproduceConfig:
        return replace(
            self,
            detector=replace(self.detector, device=device, num_threads=threads, seed=self.seed),
            classifier=replace(self.classifier, device=device, num_threads=threads, seed=self.seed),
        )


def _shape(cfg: Any) -> dict[str, Any]:
    d = asdict(cfg)
    for k in _RUNTIME_FIELDS:
        d.pop(k, None)
    return d


@dataclass(frozen=True)
class StudyResult:
    out: Path
    json_path: Path
    md_path: Path
    records: Mapping[str, StageRecord]
    results: Mapping[str, Any]
    warnings: tuple[str, ...]


# ------------------------------------------------------------------------------------------------ stages


def _split_stage(
    inputs: StudyInputs, cfg: ReproduceConfig, splits_file: Path | None, out: Path, runner: StageRunner
) -> tuple[StageRecord, PatientSplit]:
    given = read_splits(splits_file, known=inputs.diagnoses) if splits_file is not None else None
    stage_inputs: dict[str, Any] = {
        "patients": dict(sorted(inputs.diagnoses.items())),
        "config": asdict(replace(cfg.split, seed=cfg.seed)),
    }
    if given is not None:
        stage_inputs = {"given": dict(sorted(given.assignment.items()))}

    def run(folder: Path) -> dict[str, Any]:
        split = given or split_patients(inputs.diagnoses, replace(cfg.split, seed=cfg.seed))
        write_splits(split, folder / "splits.csv")
        return {"assignment": dict(split.assignment), "diagnoses": dict(split.diagnoses)}

    rec = runner.run("split", stage_inputs, run)
    split = PatientSplit(dict(rec.result["assignment"]), dict(rec.result["diagnoses"]))
    split.check()
    out_csv = out / "splits.csv"
    if splits_file is None or out_csv.resolve() != Path(splits_file).resolve():
        write_splits(split, out_csv)
    return rec, split


def _split_inputs(split: PatientSplit, inputs: StudyInputs) -> dict[str, Any]:
    pats = tuple(sorted(split.assignment))
    return {"split": dict(sorted(split.assignment.items())), "files": inputs.fingerprint_of(pats)}


def _cache(
    inputs: StudyInputs, split: PatientSplit, cfg: ReproduceConfig, progress: bool, *, mpp: float,
    context_um: float,
) -> Any:
    """The ROI patch cache of the split's patients at ``mpp`` with a ``context_um`` margin (built on
    first use; patches already there are reused). The detector reads its ROIs without a margin; the
    classifier's crops need one around cells on an ROI's edge."""
    from marrowscope.data.patches import build_roi_cache

    entries = [e for e in inputs.cohort.patients if e.patient_id in split.assignment]
    return build_roi_cache(
        entries,
        Path(cfg.cache_dir),
        mpps=(mpp,),
        context_um=context_um,
        codec=cfg.cache_codec,
        progress=progress,
    )


def _detector_parts(
    inputs: StudyInputs, split: PatientSplit, cfg: ReproduceConfig, store: Any
) -> dict[str, list[Any]]:
    """The ROIs of the train/val/test patients as detector samples, from the patch cache."""
    from marrowscope.data.detection_datasets import cohort_samples

    samples = cohort_samples(
        inputs.root,
        ("cell",),
        patients=tuple(split.assignment),
        cache=store,
        cache_mpp=cfg.detector.mpp,
        cache_context_um=0.0,
    )
    parts = {s: [x for x in samples if split.assignment.get(x.group) == s] for s in ("train", "val", "test")}
    for s in ("train", "test"):
        if not parts[s]:
            raise InputError(
                inputs.root,
                f"no ROI with boxes for the {s} patients "
                f"({', '.join(split.patients(s))}); check their ANN series",
            )
    return parts


def _train_detector(
    parts: Mapping[str, list[Any]], cfg: ReproduceConfig, folder: Path, progress: bool
) -> Any:
    from marrowscope.engines.train_detector import train_detector

    res = train_detector(
        parts["train"], parts["val"], cfg.detector, folder / "train", resume=True, progress=progress
    )
    if not res.finished or res.best_weights is None:
        raise InputError(folder, "detector training stopped before the end; run the same command again")
    return res


def _detector_inputs(inputs: StudyInputs, split: PatientSplit, cfg: ReproduceConfig) -> dict[str, Any]:
    return {
        **_split_inputs(split, inputs),
        "config": _shape(cfg.detector),
        "n_boot": cfg.n_boot_models,
        "context_um": 0.0,
        "cache_codec": cfg.cache_codec,
    }


def _detector_stage(
    inputs: StudyInputs, split: PatientSplit, cfg: ReproduceConfig, runner: StageRunner, progress: bool,
    world_size: int = 1,
) -> StageRecord:
    def run(folder: Path) -> dict[str, Any]:
        from marrowscope.engines.evaluate import evaluate_detector
        from marrowscope.models.detector import load_detector
        from marrowscope.models.weights import sha256_file

        store = _cache(inputs, split, cfg, progress, mpp=cfg.detector.mpp, context_um=0.0)
        parts = _detector_parts(inputs, split, cfg, store)
        res = _train_detector(parts, cfg, folder, progress)
        det = load_detector(str(res.best_weights), device=cfg.detector.device)
        m = evaluate_detector(
            det,
            parts["test"],
            folder / "test",
            progress=progress,
            ci_groups=[x.group for x in parts["test"]],
            n_boot=cfg.n_boot_models,
            seed=cfg.seed,
            context={"weights": str(res.best_weights), "split": "test"},
        )
        return {
            "ap50": m.ap50,
            "ap50_ci": list(m.ap50_ci or ()),
            "ap": m.ap,
            "ap_ci": list(m.ap_ci or ()),
            "precision": m.precision,
            "recall": m.recall,
            "threshold": m.threshold,
            "n_images": {s: len(v) for s, v in parts.items()},
            "n_boxes_test": int(sum(m.n_true.values())),
            "weights": str(res.best_weights),
            "weights_sha256": sha256_file(res.best_weights),
            "train_seconds": res.train_seconds,
            "epochs": len(res.history),
            "train_processes": world_size,
        }

    return runner.run("detector", _detector_inputs(inputs, split, cfg), run)


def _patient_of(crop_id: str) -> str:
    return crop_id.split("/", 1)[0]


def _bootstrap_classification(
    probs: np.ndarray,
    classes: Sequence[str],
    truth: Sequence[str],
    patients: Sequence[str],
    model_scheme: Any,
    n_boot: int,
    seed: int,
) -> dict[str, list[float]]:
    from marrowscope.eval.classification import score_predictions

    names = sorted(set(patients))
    members = {p: [i for i, x in enumerate(patients) if x == p] for p in names}
    rng = np.random.default_rng([seed, 3301])
    f1s, aucs, bals = [], [], []
    for _ in range(n_boot):
        idx = [i for k in rng.integers(0, len(names), len(names)) for i in members[names[int(k)]]]
        rep = score_predictions(probs[idx], classes, [truth[i] for i in idx], model_scheme=model_scheme)
        f1s.append(rep.macro_f1)
        bals.append(rep.balanced_accuracy)
        if rep.macro_auc is not None:
            aucs.append(rep.macro_auc)

    def ci(v: list[float]) -> list[float]:
        v = [x for x in v if np.isfinite(x)]
        return [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] if v else []

    return {"macro_f1_ci": ci(f1s), "macro_auc_ci": ci(aucs), "balanced_accuracy_ci": ci(bals)}


def _classifier_data(
    inputs: StudyInputs, split: PatientSplit, cfg: ReproduceConfig, store: Any, progress: bool
) -> tuple[Any, dict[str, int], dict[str, Any], np.ndarray]:
    """The consensus-labelled cells inside the ROIs (crops from the patch cache): the whole set, the
    skipped labels, the train/val parts and the test indices."""
    from marrowscope import taxonomy
    from marrowscope.data.classification_datasets import load_slide_dataset

    sch = taxonomy.load_scheme(cfg.scheme)
    data, skipped = load_slide_dataset(
        "cohort",
        inputs.root,
        sch.classes,
        mpp=cfg.classifier_mpp,
        size=round(cfg.classifier_input_size * 1.25),
        scheme=sch,
        progress=progress,
        keep_all=True,
        cache=store,
        rois_only=True,
    )
    pats = [_patient_of(i) for i in data.ids]
    where = np.array([split.assignment.get(p, "") for p in pats])
    mapped = data.targets.sum(axis=1) > 0
    parts = {s: data.subset(np.nonzero((where == s) & mapped)[0]) for s in ("train", "val")}
    test_idx = np.nonzero(where == "test")[0]
    for s, n in (("train", len(parts["train"])), ("test", len(test_idx))):
        if n == 0:
            raise InputError(
                inputs.root,
                f"no consensus-labelled cell for the {s} patients "
                f"({', '.join(split.patients(s))}); check their consensus series",
            )
    return data, skipped, parts, test_idx


def _train_classifier(
    inputs: StudyInputs, parts: Mapping[str, Any], cfg: ReproduceConfig, folder: Path, progress: bool
) -> Any:
    from marrowscope import taxonomy
    from marrowscope.engines.train_classifier import train_calibrated

    res = train_calibrated(
        parts["train"],
        parts["val"],
        folder / "train",
        scheme=taxonomy.load_scheme(cfg.scheme),
        arch=cfg.classifier_arch,
        input_size=cfg.classifier_input_size,
        mpp=cfg.classifier_mpp,
        config=cfg.classifier,
        resume=True,
        progress=progress,
        extra={"dataset": f"cohort:{inputs.root}", "study": "reproduce"},
    )
    if not res.train.finished:
        raise InputError(folder, "classifier training stopped before the end; run the same command again")
    return res


def _classifier_inputs(inputs: StudyInputs, split: PatientSplit, cfg: ReproduceConfig) -> dict[str, Any]:
    return {
        **_split_inputs(split, inputs),
        "config": _shape(cfg.classifier),
        "scheme": cfg.scheme,
        "arch": cfg.classifier_arch,
        "input_size": cfg.classifier_input_size,
        "mpp": cfg.classifier_mpp,
        "n_boot": cfg.n_boot_models,
        "context_um": cfg.context_um,
        "cache_codec": cfg.cache_codec,
        "cells": "in the ROIs",
    }


def _classifier_stage(
    inputs: StudyInputs, split: PatientSplit, cfg: ReproduceConfig, runner: StageRunner, progress: bool,
    world_size: int = 1,
) -> StageRecord:
    def run(folder: Path) -> dict[str, Any]:
        from marrowscope.data.classification_datasets import scheme_of_spec
        from marrowscope.engines.classify import classify_crops
        from marrowscope.eval.classification import score_predictions, write_report
        from marrowscope.models.classifier import load_classifier
        from marrowscope.models.weights import sha256_file

        size = cfg.classifier_input_size
        store = _cache(inputs, split, cfg, progress, mpp=cfg.classifier_mpp, context_um=cfg.context_um)
        data, skipped, parts, test_idx = _classifier_data(inputs, split, cfg, store, progress)
        res = _train_classifier(inputs, parts, cfg, folder, progress)
        clf = load_classifier(str(res.weights), device=cfg.classifier.device)
        test = data.subset(test_idx)
        import torch

        from marrowscope.data.cell_augment import center_crop

        crops = (
            center_crop(torch.from_numpy(test.images).permute(0, 3, 1, 2), size).permute(0, 2, 3, 1).numpy()
        )
        pred = classify_crops(clf, np.ascontiguousarray(crops), tta=8)
        model_scheme = scheme_of_spec(clf.spec)
        rep = score_predictions(
            pred.probabilities,
            clf.classes,
            list(test.labels),
            model_scheme=model_scheme,
            uncertain=pred.uncertain,
        )
        write_report(rep, folder / "test")
        cis = _bootstrap_classification(
            pred.probabilities,
            clf.classes,
            list(test.labels),
            [_patient_of(i) for i in test.ids],
            model_scheme,
            cfg.n_boot_models,
            cfg.seed,
        )
        per_class = {
            k: {"precision": v.precision, "recall": v.recall, "f1": v.f1, "support": v.support, "auc": v.auc}
            for k, v in rep.per_class.items()
        }
        return {
            "macro_auc": rep.macro_auc,
            "macro_f1": rep.macro_f1,
            "balanced_accuracy": rep.balanced_accuracy,
            "accuracy": rep.accuracy,
            "ece": rep.ece,
            **cis,
            "per_class": per_class,
            "n_cells": {"train": len(parts["train"]), "val": len(parts["val"]), "test": len(test)},
            "skipped_labels": dict(skipped),
            "scheme": cfg.scheme,
            "weights": str(res.weights),
            "weights_sha256": sha256_file(res.weights),
            "temperature": res.temperature,
            "epochs": res.train.epochs_done,
            "train_processes": world_size,
        }

    return runner.run("classifier", _classifier_inputs(inputs, split, cfg), run)


def _diagnosis_stage(
    inputs: StudyInputs,
    split: PatientSplit,
    det: StageRecord,
    clf: StageRecord,
    cfg: ReproduceConfig,
    runner: StageRunner,
    device: str | None,
    progress: bool,
) -> StageRecord:
    def run(folder: Path) -> dict[str, Any]:
        from marrowscope.engines.batch import analyze_batch
        from marrowscope.engines.pipeline import AnalysisConfig, load_models
        from marrowscope.eval.diagnosis import evaluate_diagnosis, write_evaluation
        from marrowscope.io.counts import predicted_counts_from_summaries, read_counts

        patients = sorted(split.assignment)
        truth = read_counts(inputs.root)
        truth = truth.subset([p for p in truth.patient_ids if p in split.assignment])
        acfg = AnalysisConfig(
            detector=str(det.result["weights"]),
            classifier=str(clf.result["weights"]),
            diagnosis=None,
            tta=cfg.analysis_tta,
            seed=cfg.seed,
            score_threshold=cfg.analysis_score_threshold,
        )
        entries = [e for e in inputs.cohort.patients if e.patient_id in split.assignment]
        # a slide's SM series folder; in an ROI-only download its header (rois/slides/<uid>.json)
        sources = [
            f if f.endswith(".json") else str(Path(f).parent) for f in (e.slide_files[0] for e in entries)
        ]
        summary = analyze_batch(
            sources, folder / "analyze", acfg, models=load_models(acfg, device=device), progress=progress
        )
        failed = [f"{s.slide_id}: {s.reason}" for s in summary.failures]
        for line in failed:
            log.warning("predicted counts: %s", line)
        try:
            pred = predicted_counts_from_summaries(folder / "analyze")
        except InputError as e:  # every slide failed (e.g. a detector that finds nothing)
            log.warning("no predicted counts: %s", e)
            pred, failed = None, [*failed, f"no predicted counts: {e}"]
        d = cfg.diagnosis
        ev = evaluate_diagnosis(
            truth,
            pred,
            estimator=d.estimator,
            n_splits=d.folds,
            n_repeats=d.repeats,
            seed=cfg.seed,
            train_on=d.train_on,
            n_boot=d.n_boot,
            settings=("true_counts", "predicted_counts"),
        )
        write_evaluation(folder / "evaluation", evaluation=ev)
        out: dict[str, Any] = {
            "n_patients": len(patients),
            "messages": list(ev.messages),
            "failed_slides": failed,
            "excluded": dict(ev.excluded),
        }
        for name, res in ev.settings.items():
            out[name] = {
                "macro_f1": res.model.macro_f1,
                "ci": list(res.model.ci),
                "rule_baseline": res.rules.macro_f1,
                "rule_baseline_ci": list(res.rules.ci),
                "per_class_f1": dict(res.model.per_class_f1),
                "n_patients": len(res.patient_ids),
            }
        return out

    stage_inputs = {
        **_split_inputs(split, inputs),
        "config": asdict(cfg.diagnosis),
        "tta": cfg.analysis_tta,
        "detector": det.result["weights_sha256"],
        "classifier": clf.result["weights_sha256"],
    }
    return runner.run("diagnosis", stage_inputs, run)


# ------------------------------------------------------------------------------------------------ torchrun


def _split_only(inputs: StudyInputs, cfg: ReproduceConfig, splits_file: Path | None) -> PatientSplit:
    """The split the split stage makes (it is deterministic), without writing anything."""
    given = read_splits(splits_file, known=inputs.diagnoses) if splits_file is not None else None
    split = given or split_patients(inputs.diagnoses, replace(cfg.split, seed=cfg.seed))
    split.check()
    return split


def _distributed_training(
    inputs: StudyInputs,
    split: PatientSplit,
    cfg: ReproduceConfig,
    runner: StageRunner,
    wanted: set[str],
    ctx: Any,
    progress: bool,
) -> None:
    """Under torchrun: every rank trains the model stages not done yet, with DistributedDataParallel (the
    training loops shard each global batch; rank 0 writes the checkpoints). Rank 0 builds the patch
    cache first while the others wait. Evaluation is left to rank 0, which then runs the stages as one
    process and finds the training finished in the stages' folders (an interrupted run resumes from the
    same checkpoints on every rank)."""
    from marrowscope.data.patches import PatchStore

    todo = [
        s
        for s, fn in (("detector", _detector_inputs), ("classifier", _classifier_inputs))
        if s in wanted and runner.done(s, fn(inputs, split, cfg)) is None
    ]
    scales = {"detector": (cfg.detector.mpp, 0.0), "classifier": (cfg.classifier_mpp, cfg.context_um)}
    if ctx.is_main:
        for s in todo:
            _cache(inputs, split, cfg, progress, mpp=scales[s][0], context_um=scales[s][1])
    ctx.barrier()  # the others read the cache rank 0 built
    store = PatchStore(cfg.cache_dir)
    for s in todo:
        if s == "detector":
            folder = runner.folder(s, _detector_inputs(inputs, split, cfg))
            _train_detector(_detector_parts(inputs, split, cfg, store), cfg, folder, progress and ctx.is_main)
        else:
            folder = runner.folder(s, _classifier_inputs(inputs, split, cfg))
            parts = _classifier_data(inputs, split, cfg, store, False)[2]
            _train_classifier(inputs, parts, cfg, folder, progress and ctx.is_main)
        ctx.barrier()  # rank 0 has written the weights (the classifier's calibrated ones too)


@contextmanager
def _as_one_process() -> Iterator[None]:
    """Rank 0 after the distributed training: the training loops see a single process (no collective
    calls while the other ranks are gone)."""
    import os

    saved = os.environ.get("WORLD_SIZE")
    os.environ["WORLD_SIZE"] = "1"
    try:
        yield
    finally:
        if saved is not None:
            os.environ["WORLD_SIZE"] = saved


# ------------------------------------------------------------------------------------------------ driver


def _fold_warnings(split: PatientSplit, folds: int) -> list[str]:
    out = []
    by_dx: dict[str, list[str]] = {}
    for p, d in split.diagnoses.items():
        if p in split.assignment:
            by_dx.setdefault(d, []).append(p)
    for d, pats in sorted(by_dx.items()):
        if len(pats) < folds:
            out.append(
                f"diagnosis {d}: only {len(pats)} patient(s) ({', '.join(sorted(pats))}) for {folds} "
                f"cross-validation folds; fewer folds are used"
                + ("" if len(pats) >= 2 else " and the diagnosis is left out")
            )
    return out


def reproduce(
    data: str | Path,
    out: str | Path,
    config: ReproduceConfig | None = None,
    *,
    stages: Sequence[str] = STAGES,
    splits_file: str | Path | None = None,
    device: str | None = None,
    threads: int = 1,
    progress: bool = True,
) -> StudyResult | None:
    """Run (or resume) the study on the cohort folder ``data`` into ``out``; see the module docstring.
    Under ``torchrun`` the training stages use every process (:func:`_distributed_training`); the
    processes other than rank 0 return None once the models are trained."""
    import os

    from marrowscope.models.detector import default_device

    bad = [s for s in stages if s not in STAGES]
    if bad:
        raise InputError("--stages", f"unknown stage(s) {', '.join(bad)}; choose from {', '.join(STAGES)}")
    dev = device or default_device()
    cfg = (config or ReproduceConfig()).with_runtime(dev, threads)
    out_dir = Path(out)
    if not cfg.cache_dir:
        cfg = replace(cfg, cache_dir=str(out_dir / "patches"))
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    inputs = inspect_inputs(data)
    runner = StageRunner(out_dir)
    wanted = set(stages)
    for s in stages:  # a stage needs the ones before it: run them too (skipped when already done)
        wanted.update(NEEDS[s])
    split_file = Path(splits_file) if splits_file else None
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:  # torchrun: all ranks train the models, then rank 0 alone runs the stages
        from marrowscope.engines.distributed import distributed_context

        ctx = distributed_context(dev)
        if ctx.is_main:
            _split_stage(inputs, cfg, split_file, out_dir, runner)
        split = _split_only(inputs, cfg, split_file)
        _distributed_training(inputs, split, cfg, runner, wanted, ctx, progress)
        if not ctx.is_main:
            return None
        with _as_one_process():
            return _run_stages(
                inputs, cfg, split_file, out_dir, runner, wanted, dev, progress, t0, data, world
            )
    return _run_stages(inputs, cfg, split_file, out_dir, runner, wanted, dev, progress, t0, data, 1)


def _run_stages(
    inputs: StudyInputs,
    cfg: ReproduceConfig,
    split_file: Path | None,
    out_dir: Path,
    runner: StageRunner,
    wanted: set[str],
    dev: str,
    progress: bool,
    t0: float,
    data: str | Path,
    world: int,
) -> StudyResult:
    from marrowscope.study.table import write_tables

    warnings = list(inputs.warnings)
    split_rec, split = _split_stage(inputs, cfg, split_file, out_dir, runner)
    warnings += _fold_warnings(split, cfg.diagnosis.folds)
    for w in warnings[len(inputs.warnings) :]:
        log.warning("%s", w)
    records: dict[str, StageRecord] = {"split": split_rec}
    if "detector" in wanted:
        records["detector"] = _detector_stage(inputs, split, cfg, runner, progress, world)
    if "classifier" in wanted:
        records["classifier"] = _classifier_stage(inputs, split, cfg, runner, progress, world)
    if "diagnosis" in wanted:
        records["diagnosis"] = _diagnosis_stage(
            inputs, split, records["detector"], records["classifier"], cfg, runner, dev, progress
        )
    results = {
        "data": str(data),
        "out": str(out_dir),
        "config": json.loads(json.dumps(asdict(cfg), default=str)),
        "seconds": time.perf_counter() - t0,
    }
    json_path, md_path = write_tables(out_dir, split, records, results, warnings, dev)
    return StudyResult(
        out_dir, json_path, md_path, records, json.loads(json_path.read_text()), tuple(warnings)
    )
