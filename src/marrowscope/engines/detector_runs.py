"""What ``marrowscope train detector`` and ``evaluate detector`` do, as library functions: assemble the
training and validation samples and the config from a recipe or datasets, and evaluate weights on a
dataset. The CLI only parses arguments and calls these."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from marrowscope.data import detection_datasets as dd
from marrowscope.engines.train_detector import (
    DetectorTrainConfig,
    blood_recipe_config,
    marrow_recipe_config,
    synth_recipe_config,
)
from marrowscope.errors import InputError
from marrowscope.eval.detection import DetectionMetrics

RECIPES = ("blood", "synth", "marrow")
#: photometric augmentation: the config's colour/HED/blur jitter, or the classifier's Romanowsky domain
#: randomisation (:class:`~marrowscope.data.augment.AugmentConfig` ``romanowsky``)
AUGMENTS = ("basic", "romanowsky")
#: the weights ``--recipe marrow`` fine-tunes unless given others (same class and scale)
MARROW_INIT = "detector-synth"


def parse_class_map(items: Sequence[str]) -> dict[str, str | None]:
    """``NAME=CLASS`` items (``NAME=`` drops those boxes) as a mapping for the dataset loaders."""
    out: dict[str, str | None] = {}
    for item in items:
        name, sep, target = item.partition("=")
        if not sep or not name:
            raise InputError(item, "--class-map takes NAME=CLASS (or NAME= to drop the boxes)")
        out[name] = target or None
    return out


@dataclass(frozen=True)
class DetectorRunRequest:
    """A training run as the user asks for it (recipe or datasets); see :func:`prepare_detector_run`."""

    datasets: tuple[str, ...] = ()
    val_datasets: tuple[str, ...] = ()
    recipe: str | None = None
    data_root: Path = Path("../shared/data")
    classes: tuple[str, ...] | None = None
    class_map: Mapping[str, str | None] = field(default_factory=dict)
    arch: str = "fasterrcnn_mobilenet_v3_fpn"
    model_mpp: float = 0.15
    input_mpp: float | None = None
    epochs: int | None = None
    batch_size: int = 8
    lr: float = 1e-3
    val_fraction: float = 0.1
    seed: int = 0
    threads: int = 1
    max_minutes: float | None = None
    device: str | None = None
    init_weights: str | None = None
    backbone_weights: str | None = None
    augment: str | None = None  # basic or romanowsky photometry; None: the recipe's (basic without one)


@dataclass(frozen=True)
class DetectorRun:
    train: list[dd.DetectionSample]
    val: list[dd.DetectionSample]
    config: DetectorTrainConfig


def prepare_detector_run(req: DetectorRunRequest) -> DetectorRun:
    """Training and validation samples and the training config for ``req``.

    ``recipe='blood'``: detector-blood's data (BCCD + TXL-PBC under ``data_root``) and schedule;
    ``recipe='synth'``: detector-synth's schedule on one ``cohort:DIR`` dataset; ``recipe='marrow'``:
    detector-marrow's (blood fields under ``data_root`` + one ``cohort:DIR``, from detector-synth's weights
    unless ``init_weights``); no recipe: the datasets
    (validation: ``val_datasets`` or a grouped split). ``epochs`` overrides a recipe's schedule."""
    init = req.init_weights
    if req.recipe == "blood":
        if req.datasets:
            raise InputError("--dataset", "--recipe blood brings its own data; leave out --dataset")
        train, val = dd.blood_recipe_samples(req.data_root)
        cfg = replace(blood_recipe_config(seed=req.seed, num_threads=req.threads, max_minutes=req.max_minutes,
                                          init_weights=init), device=req.device)
    elif req.recipe == "synth":
        if len(req.datasets) != 1 or not req.datasets[0].startswith("cohort:"):
            raise InputError("--dataset", "--recipe synth needs one --dataset cohort:DIR (synthetic cohort)")
        samples = dd.load_detection_dataset(req.datasets[0], ("cell",))
        train, val = dd.split_by_group(samples, 0.2, req.seed)
        cfg = replace(synth_recipe_config(seed=req.seed, num_threads=req.threads,
                                          max_minutes=req.max_minutes), device=req.device, init_weights=init)
    elif req.recipe == "marrow":
        if len(req.datasets) != 1 or not req.datasets[0].startswith("cohort:"):
            raise InputError("--dataset", "--recipe marrow needs one --dataset cohort:DIR (a synthetic "
                                          "cohort; the blood fields come from --data-root)")
        cohort = req.datasets[0].partition(":")[2]
        train, val = dd.marrow_recipe_samples(req.data_root, cohort, seed=req.seed)
        cfg = replace(marrow_recipe_config(seed=req.seed, num_threads=req.threads,
                                           max_minutes=req.max_minutes, init_weights=init or MARROW_INIT),
                      device=req.device)
    elif req.recipe is not None:
        raise InputError(req.recipe, f"unknown recipe (available: {', '.join(RECIPES)})")
    else:
        if not req.datasets:
            raise InputError("--dataset", "give at least one --dataset FORMAT:PATH (or --recipe blood)")
        names = req.classes or dd.dataset_classes(req.datasets[0])
        mapping = dict(req.class_map)
        samples = [s for d in req.datasets
                   for s in dd.load_detection_dataset(d, names, mpp=req.input_mpp, mapping=mapping)]
        if req.val_datasets:
            train = samples
            val = [s for d in req.val_datasets
                   for s in dd.load_detection_dataset(d, names, mpp=req.input_mpp, mapping=mapping)]
        else:
            train, val = dd.split_by_group(samples, req.val_fraction, req.seed)
        cfg = DetectorTrainConfig(
            classes=names, arch=req.arch, mpp=req.model_mpp, epochs=req.epochs or 12,
            batch_size=req.batch_size, lr=req.lr, seed=req.seed, num_threads=req.threads,
            max_minutes=req.max_minutes, device=req.device, backbone_weights=req.backbone_weights,
            init_weights=init, spec_params={"default_input_mpp": req.input_mpp} if req.input_mpp else {},
        )
    if req.recipe is not None and req.epochs is not None:  # e.g. a longer schedule on a GPU
        cfg = replace(cfg, epochs=req.epochs)
    if req.augment is not None:
        if req.augment not in AUGMENTS:
            raise InputError(req.augment, f"unknown augmentation; use {' or '.join(AUGMENTS)}")
        cfg = replace(cfg, augment=replace(cfg.augment, romanowsky=req.augment == "romanowsky"))
    return DetectorRun(list(train), list(val), cfg)


def evaluate_detector_on_dataset(
    weights: str, dataset: str, out: str | Path, *, image_mpp: float | None = None,
    threshold: float | None = None, class_map: Mapping[str, str | None] | None = None, batch_size: int = 4,
    examples: int = 4, device: str | None = None, progress: bool = True,
) -> DetectionMetrics:
    """Load detector ``weights`` (file or bundled name), evaluate it on ``dataset`` (``FORMAT:PATH``)
    and write ``out/metrics.json``, ``pr_curve.png`` and ``examples/``."""
    from marrowscope.engines.evaluate import evaluate_detector
    from marrowscope.models.detector import load_detector

    det = load_detector(weights, device=device)
    samples = dd.load_detection_dataset(dataset, det.classes, mapping=dict(class_map or {}))
    if not samples:
        raise InputError(dataset, "the dataset has no images")
    context: dict[str, Any] = {"weights": str(weights), "dataset": dataset}
    return evaluate_detector(det, samples, out, threshold=threshold, mpp=image_mpp, batch_size=batch_size,
                             n_examples=examples, progress=progress, context=context)
