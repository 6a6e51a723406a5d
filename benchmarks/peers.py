"""Our default detector and classifier against established peers: same data, machine, process and budget.

1. **Detector**: our default detector's recipe, ``--ours-detector marrow`` (``detector-marrow``:
   ``engines.train_detector.marrow_recipe_config``, MobileNetV3-FPN Faster R-CNN at 0.25 µm/px, one class
   ``cell`` = white cells, fine-tuned from the bundled ``detector-synth`` as that recipe is, with the
   test-time RPN setting of the bundled ``detector-marrow``), or ``--ours-detector blood``
   (``detector-blood``: ``blood_recipe_config``, three classes WBC/RBC/Platelet from scratch at 0.1 µm/px),
   against an
   Ultralytics YOLO (``yolov8n.yaml``: built from its yaml, no pretrained weights) trained with
   Ultralytics' own recipe (its defaults: imgsz 640, mosaic, SGD/AdamW "auto", warm-up, EMA; its own
   ``time=`` budget, which re-fits the schedule after each epoch), on the same images and classes: BCCD
   ``train`` (x3, as the recipes list it) plus the TXL-PBC ``train`` images that copy no BCCD field (for
   ``marrow``: white-cell boxes as ``cell``, red cells and platelets background, for both sides). TXL-PBC
   ``val`` is held out of both so that its per-source WBC AP@0.5 is a held-out number. Only the blood
   fields: the marrow recipe's synthetic cohort is left out (the same data for both), so ``ours`` here is
   not the bundled model. Both are selected on BCCD ``val``; ours at the epochs fitted to the budget (a
   timed calibration of 14 steps, as ``benchmarks/sweep_detector_blood.py`` does), YOLO by its own
   ``best.pt``. Both are scored by the SAME code (:func:`marrowscope.eval.detection.evaluate_detections`,
   pycocotools AP@0.5) on BCCD ``test`` (per class) and TXL-PBC ``val`` per source (white cells). Each model
   runs at its own training scale: ours resamples to its µm/px (fields taken at 0.075 µm/px), YOLO
   letterboxes every image to 640 px (BCCD fields stay at 0.075 µm/px). ms per 2048² ROI at 0.11 µm/px (the
   ROI of ``benchmarks/bench_detector.py``): ours ``detect_region`` (read at its µm/px, tiles, merge), YOLO
   the ROI read at 0.075 µm/px by the same reader (3004 px) and predicted in one pass at imgsz 3008.
2. **Classifier**: our recipe (``marrowscope train classifier --dataset pbc:... --augment romanowsky``:
   ``msresnet_s`` from scratch, 64 px at 0.45 µm/px, AdamW, warm-up + cosine, class-balanced sampling,
   EMA, temperature on the validation split, colour standardisation on as in ``classifier-pbc``) against
   ``timm.create_model('resnet18', pretrained=False)`` trained with timm's ``train.py`` defaults
   (``create_optimizer_v2`` SGD-Nesterov lr 0.1 x batch/256, weight decay 2e-5; ``create_scheduler_v2``
   cosine with warm-up; label smoothing 0.1; ``create_transform`` random-resized crop, flip, colour
   jitter 0.4, ImageNet normalisation) on the same crops (PBC train split of ``train classifier``,
   64 px at 0.45 µm/px, 1.25x context to crop from) for the same budget. Both are scored by
   :func:`marrowscope.engines.domain_shift.score_crops` (no TTA) on the PBC held-out split (``pbc8``)
   and BCCD white cells (``bccd-wbc``); cells/s from ``classify_crops`` (no TTA) on 2,048 crops.

Run (CPU-heavy: under the shared lock):

    flock /work/cpu.lock nice -n 10 .venv/bin/python benchmarks/peers.py --data-root ../shared/data \\
        --budget-min 8 --clf-budget-min 5 --threads 2 --work runs/peers --out benchmarks/results/peers.json

Prints a markdown table; writes every number to ``--out`` (JSON) and the table to ``WORK/table.md``.
Needs the ``peers`` extra (``pip install marrowscope[peers]``: ultralytics); nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

log = logging.getLogger("peers")

YOLO_IMGSZ = 640  # Ultralytics' default training size; BCCD's 640 x 480 fields are taken as they are
YOLO_MPP = 0.075  # the scale YOLO learns BCCD fields at (BLOOD_FIELD_MPP, letterboxed at 1:1)
ROI_PX, ROI_MPP = 2048, 0.11


# --- data --------------------------------------------------------------------------------------------------
def detector_data(root: Path, recipe: str = "marrow") -> dict[str, Any]:
    """Training (BCCD train x3 + TXL-PBC train minus copies of BCCD fields), BCCD val/test, TXL val per
    source, in the classes of ``recipe`` (``blood``: WBC/RBC/Platelet; ``marrow``: white cells as
    ``cell``)."""
    from marrowscope.data.crops import PBC_MPP
    from marrowscope.data.detection_datasets import (
        BLOOD_CLASSES,
        BLOOD_FIELD_MPP,
        NUCLEATED_MAPPING,
        blood_recipe_samples,
        voc_samples,
    )
    from marrowscope.data.ood_datasets import txl_detection_by_source

    classes, mapping, wbc = (("cell",), NUCLEATED_MAPPING, "cell") if recipe == "marrow" else \
        (BLOOD_CLASSES, None, "WBC")
    train, val = blood_recipe_samples(root, classes=classes, mapping=mapping, txl_splits=("train",))
    test = voc_samples(root / "bccd" / "BCCD", classes, "test", mpp=BLOOD_FIELD_MPP, mapping=mapping)
    mpps = {"bccd": BLOOD_FIELD_MPP, "bcd": BLOOD_FIELD_MPP, "raabin": BLOOD_FIELD_MPP, "pbc": PBC_MPP}
    by_source = txl_detection_by_source(root / "txl_pbc", classes, splits=("val",), mpp=mpps, mapping=mapping)
    return {"recipe": recipe, "classes": classes, "wbc_class": wbc, "train": train, "val": val, "test": test,
            "txl_val": by_source, "txl_mpp": mpps}


# --- one scoring path for both detectors -------------------------------------------------------------------
def score_detector(predict: Callable[[np.ndarray, Any], Any], samples: Sequence[Any],
                   classes: Sequence[str]) -> Any:
    """``predict(rgb, sample) -> Detections`` on every sample, scored by the project's detection metrics."""
    from marrowscope.eval.detection import evaluate_detections

    preds, truths = [], []
    for s in samples:
        image = s.load()
        truth = s.annotations
        if truth.width is None or truth.height is None:
            truth = replace(truth, width=image.shape[1], height=image.shape[0])
        preds.append(predict(image, s))
        truths.append(truth)
    return evaluate_detections(preds, truths, classes)


def detector_scores(predict: Callable[[np.ndarray, Any], Any], data: dict[str, Any]) -> dict[str, Any]:
    m = score_detector(predict, data["test"], data["classes"])
    out: dict[str, Any] = {"bccd_test": {"ap50": m.ap50, "ap": m.ap, "ap50_per_class": dict(m.ap50_per_class),
                                         "n_images": m.n_images}}
    for src, samples in data["txl_val"].items():
        ms = score_detector(predict, samples, data["classes"])
        out[f"txl_val_{src}"] = {"wbc_ap50": ms.ap50_per_class.get(data["wbc_class"]),
                                 "n_images": ms.n_images}
    return out


def median_seconds(f: Callable[[], Any], runs: int) -> tuple[float, list[float]]:
    f()  # warm-up
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return statistics.median(times), times


# --- our detector ------------------------------------------------------------------------------------------
def train_ours_detector(data: dict[str, Any], work: Path, budget_min: float, threads: int,
                        seed: int, quick: bool = False, scratch: bool = False) -> tuple[Path, dict[str, Any]]:
    from marrowscope.engines.checkpoints import load_checkpoint
    from marrowscope.engines.train_detector import prepare_samples, train_detector
    from sweep_detector_blood import _step_seconds

    t0 = time.monotonic()
    cfg = replace(recipe_config(data["recipe"], seed, threads, scratch, data.get("augment", "basic")),
                  device="cpu")
    if data.get("scale_range"):
        cfg = replace(cfg, augment=replace(cfg.augment, scale_range=tuple(data["scale_range"])))
    if data.get("classes") or data["recipe"] == "marrow":  # the blood fields' boxes: WBC as cell unless told
        cfg = replace(cfg, classes=tuple(data.get("classes") or ("cell",)))
    state = None
    if cfg.init_weights:
        from marrowscope.models.registry import resolve_model
        from marrowscope.models.weights import load_weights

        path, sha = resolve_model(cfg.init_weights, task="detector")
        state, spec, _ = load_weights(path, task="detector", sha256=sha)
        if tuple(spec.classes) != tuple(cfg.classes):  # as train_detector does: the predictor starts fresh
            from marrowscope.engines.train_detector import BOX_PREDICTOR

            state = {k: v for k, v in state.items() if not k.startswith(BOX_PREDICTOR)}
    # calibrate on images drawn from the whole training list (BCCD fields come first, TXL-PBC's after)
    pick = np.random.default_rng(seed).permutation(len(data["train"]))[:64]
    t_step = _step_seconds(cfg, prepare_samples([data["train"][int(i)] for i in pick], cfg.classes, cfg.mpp),
                           "cpu", n=6 if quick else 14, state=state)
    steps = len(data["train"]) // cfg.batch_size
    left = budget_min * 60 - (time.monotonic() - t0) - 30  # loading and resampling the images
    # BN recalibration + validation ~ 25 s each (every 2 epochs and after the last)
    epochs = max(1, int(left / (steps * t_step * 1.1 + 25.0 / cfg.eval_every)))
    # a hard stop a little past the budget (a loaded machine): the last epoch's validation must still run
    cfg = replace(cfg, epochs=epochs, max_minutes=1.15 * budget_min - (time.monotonic() - t0) / 60)
    log.info("ours: %d train, %.2f s/step, %d steps/epoch -> %d epochs", len(data["train"]), t_step, steps,
             epochs)
    res = train_detector(data["train"], data["val"], cfg, work / "det_ours", resume=False, progress=False)
    best = res.best_weights
    if best is None:  # the hard stop came before the first epoch's end: the weights as they stand
        best = _weights_at_stop(res.last_checkpoint, data["train"], cfg)
    seconds = time.monotonic() - t0
    hist = [{"epoch": h.epoch, "loss": h.loss, "val_ap50": h.val_ap50} for h in res.history]
    return best, {"train_wall_s": seconds, "weights": best.name, "step_s_calibrated": t_step,
                  "epochs": epochs, "steps_planned": epochs * steps, "finished": res.finished,
                  "steps_done": int(load_checkpoint(res.last_checkpoint)["global_step"]), "history": hist,
                  "scale": f"{cfg.mpp} um/px (fields at 0.075 um/px resampled), 512 px tiles",
                  "recipe": data["recipe"], "init_weights": cfg.init_weights,
                  "augment": data.get("augment", "basic"), "scale_range": list(cfg.augment.scale_range)}


def recipe_config(recipe: str, seed: int, threads: int, scratch: bool = False, augment: str = "basic") -> Any:
    """Our side's training recipe; ``marrow`` fine-tunes the bundled ``detector-synth`` as the recipe does and
    takes the bundled ``detector-marrow``'s test-time RPN setting (picked on validation by its build);
    ``scratch``: the same recipe from randomly initialised weights, as YOLO trains here; ``augment``
    ``romanowsky``: the marrow recipe with the classifier's domain randomisation."""
    from marrowscope.engines.detector_runs import MARROW_INIT
    from marrowscope.engines.train_detector import blood_recipe_config, marrow_recipe_config
    from marrowscope.models.detector import load_detector

    if recipe == "blood":
        return blood_recipe_config(seed=seed, num_threads=threads)
    cfg = marrow_recipe_config(seed=seed, num_threads=threads, init_weights=None if scratch else MARROW_INIT,
                               romanowsky=augment == "romanowsky")
    bundled = load_detector("detector-marrow", device="cpu")
    rpn = {k: v for k, v in bundled.spec.params.items() if k.startswith("rpn_")}
    return replace(cfg, spec_params={**cfg.spec_params, **rpn})


def _weights_at_stop(last: Path, train: Sequence[Any], cfg: Any) -> Path:
    """A weights file from ``last.pt`` of a run stopped mid-epoch, with the BatchNorm statistics
    recomputed on the recipe's 200 images (what the loop does before it validates and saves)."""
    from marrowscope.engines.checkpoints import load_checkpoint
    from marrowscope.engines.train_detector import prepare_samples, recalibrate_bn
    from marrowscope.models.detector import build_detector, save_detector

    log.warning("our detector stopped before its first validation; using the weights at the stop")
    spec = cfg.spec()
    model = build_detector(spec)
    model.load_state_dict(load_checkpoint(last)["model"])
    order = np.random.default_rng([cfg.seed, 7919]).permutation(len(train))[: cfg.bn_images]
    images = [p.image for p in prepare_samples([train[int(i)] for i in order], cfg.classes, cfg.mpp)]
    recalibrate_bn(model, images, "cpu", cfg.batch_size, cfg.crop_size)
    out = last.parent / "at_stop.pt"
    save_detector(out, model.eval(), spec, half=False, extra={"stopped_mid_epoch": True})
    return out


def ours_detector_row(weights: Path, data: dict[str, Any], runs: int) -> dict[str, Any]:
    from bench_detector import _roi
    from marrowscope.engines.detect import detect_image, detect_region
    from marrowscope.eval.detection import input_mpp
    from marrowscope.io.slides.array import ArraySlide
    from marrowscope.models.detector import load_detector

    det = load_detector(weights, device="cpu")

    def predict(image: np.ndarray, s: Any) -> Any:
        return detect_image(image, det, mpp=input_mpp(s.mpp, det.spec.params, det.mpp))

    row = detector_scores(predict, data)
    slide = ArraySlide(_roi(), mpp=ROI_MPP)
    med, all_t = median_seconds(lambda: detect_region(slide, (0, 0, ROI_PX, ROI_PX), det), runs)
    row["roi_ms"] = 1000 * med
    row["roi_ms_all"] = [round(1000 * t, 1) for t in all_t]
    row["roi_model_px"] = round(ROI_PX * ROI_MPP / det.mpp)
    return row


# --- Ultralytics YOLO --------------------------------------------------------------------------------------
def _ultralytics(work: Path, threads: int) -> Any:
    """Import Ultralytics offline: settings under ``work``, no font download, ``threads`` torch threads."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_CONFIG_DIR", str(work / "ultralytics_config"))
    try:
        import ultralytics
    except ImportError as e:
        raise SystemExit("benchmarks/peers.py needs Ultralytics: pip install 'marrowscope[peers]'") from e
    import ultralytics.data.utils as udu
    import ultralytics.utils.torch_utils as utu

    udu.check_font = lambda *a, **k: None  # plots are off; never fetch Arial.ttf
    utu.NUM_THREADS = threads  # Ultralytics would pin CPU training to cpu_count - 1 = 1 thread here
    # no telemetry, no logger integrations (Ray Tune would hook in because ray is installed)
    ultralytics.settings.update({k: False for k in ("sync", "clearml", "comet", "dvc", "mlflow", "raytune",
                                                    "tensorboard", "wandb")})
    return ultralytics


def write_yolo_dataset(train: Sequence[Any], val: Sequence[Any], classes: Sequence[str], out: Path) -> Path:
    """The samples as an Ultralytics dataset: the project's YOLO writer (images linked) per split, and a
    ``train.txt`` image list in which a repeated sample (BCCD train x3) is listed as often as it repeats."""
    from marrowscope.io.annotations.yolo import write_yolo_folder

    for split, samples in (("train", train), ("val", val)):
        unique = {s.image_id: s.annotations for s in samples}
        write_yolo_folder(unique.values(), out, classes, split, images="link")
    lines = []
    for s in train:
        src = Path(str(s.annotations.image_path))
        # absolute(), not resolve(): Ultralytics must find the labels beside the link, not the target
        lines.append(str((out / "images" / "train" / f"{src.stem}{src.suffix}").absolute()))
    (out / "train.txt").write_text("\n".join(lines) + "\n")
    yaml = out / "peers.yaml"
    yaml.write_text(f"path: {out.resolve()}\ntrain: {(out / 'train.txt').resolve()}\nval: images/val\n"
                    f"names: {json.dumps(list(classes))}\n")
    return yaml


def train_yolo(data: dict[str, Any], work: Path, budget_min: float, threads: int, seed: int,
               arch: str) -> tuple[Path, dict[str, Any]]:
    _ultralytics(work, threads)
    from ultralytics import YOLO

    t0 = time.monotonic()
    yaml = write_yolo_dataset(data["train"], data["val"], data["classes"], work / "yolo_data")
    model = YOLO(arch)  # a yaml: built from scratch, no weights
    left_h = (budget_min * 60 - (time.monotonic() - t0)) / 3600
    # an absolute project: Ultralytics puts a relative one under runs/detect/
    model.train(data=str(yaml), time=left_h, epochs=100, imgsz=YOLO_IMGSZ, device="cpu", workers=threads,
                plots=False, amp=False, pretrained=False, project=str(work.resolve()), name="yolo",
                exist_ok=True, seed=seed, verbose=False, val=True)
    seconds = time.monotonic() - t0
    trainer = model.trainer
    best = Path(trainer.save_dir) / "weights" / "best.pt"
    info = {"train_wall_s": seconds, "epochs_planned_last": int(getattr(trainer, "epochs", 0)),
            "epochs_done": int(getattr(trainer, "epoch", -1)) + 1, "arch": arch,
            "scale": f"imgsz {YOLO_IMGSZ} letterbox (BCCD fields at {YOLO_MPP} um/px)",
            "args": {k: str(v) for k, v in vars(trainer.args).items()
                     if k in ("optimizer", "lr0", "batch", "imgsz", "mosaic", "warmup_epochs", "time",
                              "workers")}}
    csv = Path(trainer.save_dir) / "results.csv"
    if csv.exists():
        info["results_csv"] = csv.read_text().splitlines()
    if not best.exists():
        raise RuntimeError(f"YOLO ended without {best}")
    return best, info


def yolo_detections(model: Any, rgb: np.ndarray, classes: tuple[str, ...], imgsz: int) -> Any:
    from marrowscope.cells import Detections

    r = model.predict(np.ascontiguousarray(rgb[..., ::-1]), imgsz=imgsz, conf=0.001, iou=0.7, max_det=1000,
                      device="cpu", verbose=False)[0]
    b = r.boxes
    return Detections(b.xyxy.cpu().numpy().astype(float), b.conf.cpu().numpy().astype(float),
                      b.cls.cpu().numpy().astype(np.int64), classes)


def yolo_detector_row(weights: Path, data: dict[str, Any], work: Path, threads: int, runs: int
                      ) -> dict[str, Any]:
    _ultralytics(work, threads)
    import torch
    from ultralytics import YOLO

    from bench_detector import _roi
    from marrowscope.io.slides.array import ArraySlide

    model = YOLO(str(weights))
    torch.set_num_threads(threads)
    classes = tuple(data["classes"])
    row = detector_scores(lambda im, s: yolo_detections(model, im, classes, YOLO_IMGSZ), data)
    slide = ArraySlide(_roi(), mpp=ROI_MPP)
    side = round(ROI_PX * ROI_MPP / YOLO_MPP)
    imgsz = int(math.ceil(side / 32) * 32)

    def roi() -> Any:
        return yolo_detections(model, slide.read_region_mpp(0, 0, ROI_PX, ROI_PX, YOLO_MPP), classes, imgsz)

    med, all_t = median_seconds(roi, runs)
    row.update(roi_ms=1000 * med, roi_ms_all=[round(1000 * t, 1) for t in all_t], roi_model_px=side,
               roi_imgsz=imgsz)
    return row


# --- classifiers -------------------------------------------------------------------------------------------
def classifier_data(root: Path, size: int, mpp: float, cache_dir: Path | None) -> tuple[Any, Any]:
    """The train/validation split of ``train classifier`` on PBC (same loader, split function and seed)."""
    from marrowscope.data.classification_datasets import (
        PBC_CLASSES,
        grouped_split,
        load_image_dataset,
        scheme_for_classes,
    )

    sch = scheme_for_classes(PBC_CLASSES, "pbc_fine", "taxonomy classes covered by PBC (finest PBC level)")
    data, _ = load_image_dataset("pbc", root, PBC_CLASSES, mpp=mpp, size=round(size * 1.25), fit_size=size,
                                 cache_dir=cache_dir, scheme=sch)
    tr, va = grouped_split(data.labels, data.groups, 0.2, 0)
    return data.subset(tr), data.subset(va)


def _fit_epochs(step_s: float, steps_per_epoch: int, left_s: float, per_epoch_s: float = 0.0) -> int:
    return max(1, int(left_s / (steps_per_epoch * step_s * 1.1 + per_epoch_s)))


def train_ours_classifier(root: Path, work: Path, budget_min: float, threads: int, seed: int,
                          cache_dir: Path | None) -> tuple[Path, dict[str, Any]]:
    import copy

    import torch

    from marrowscope.data.cell_augment import augment_batch, romanowsky_config
    from marrowscope.data.classification_datasets import PBC_CLASSES
    from marrowscope.data.stain import estimate_stain_basis
    from marrowscope.engines.train_classifier import (
        TrainConfig,
        _to_float,
        classification_loss,
        train_from_dataset,
    )
    from marrowscope.models.classifier import create_classifier, load_classifier, make_spec, save_classifier

    t0 = time.monotonic()
    train, _ = classifier_data(root, 64, 0.45, cache_dir)
    cfg = TrainConfig(num_threads=threads, device="cpu", seed=seed)
    aug = romanowsky_config(estimate_stain_basis(train.images, seed=seed))
    clf = create_classifier(make_spec(PBC_CLASSES), seed=seed)
    net = clf.net.train()
    ema = copy.deepcopy(net).eval()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    times = []
    for _ in range(8):  # one training step as train_classifier takes it (augmentation on the batch)
        t = time.perf_counter()
        idx = rng.integers(0, len(train), cfg.batch_size)
        x = augment_batch(_to_float(train.images, idx, "cpu"), 64, aug, g)
        loss = classification_loss(net((x - 0.5) / 0.25), torch.from_numpy(train.targets[idx]),
                                   torch.from_numpy(train.target_kind[idx].astype(np.int64)))
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():  # the EMA update of every step
            for pe, pn in zip(ema.state_dict().values(), net.state_dict().values(), strict=True):
                if pe.dtype.is_floating_point:
                    pe.mul_(0.995).add_(pn.detach(), alpha=0.005)
        times.append(time.perf_counter() - t)
    step_s = float(np.median(times[2:]))
    steps = len(train) // cfg.batch_size
    left = budget_min * 60 - (time.monotonic() - t0) - 40  # reloading crops, temperature (TTA), OOD stats
    epochs = _fit_epochs(step_s, steps, left, per_epoch_s=0.5)
    cfg = replace(cfg, epochs=epochs, eval_every=epochs)
    log.info("ours classifier: %.3f s/step, %d steps/epoch -> %d epochs", step_s, steps, epochs)
    res = train_from_dataset(f"pbc:{root}", work / "clf_ours", input_size=64, mpp=0.45, config=cfg,
                             cache_dir=cache_dir, resume=False, progress=False, augment="romanowsky")
    seconds = time.monotonic() - t0
    out = work / "clf_ours" / "classifier-std.pt"  # colour standardisation on, as classifier-pbc ships
    save_classifier(out, load_classifier(res.weights, device="cpu").with_params(colour_standardise=True))
    return out, {"train_wall_s": seconds, "step_s_calibrated": step_s, "epochs": epochs,
                 "steps": epochs * steps, "n_train": res.n_train, "n_val": res.n_val,
                 "arch": "msresnet_s", "contract": "64 px at 0.45 um/px"}


def train_timm(root: Path, work: Path, budget_min: float, threads: int, seed: int, cache_dir: Path | None,
               size: int, mpp: float, batch: int, workers: int) -> tuple[Path, dict[str, Any]]:
    """timm ``train.py``'s defaults on the PBC training crops; returns a weights file with our contract."""
    import timm
    import torch
    from PIL import Image
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, create_transform
    from timm.loss import SoftTargetCrossEntropy
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2

    from marrowscope.models.classifier import CellClassifier, make_spec, save_classifier

    t0 = time.monotonic()
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    train, _ = classifier_data(root, size, mpp, cache_dir)
    n_cls = len(train.classes)
    net = timm.create_model("resnet18", pretrained=False, num_classes=n_cls)
    tf = create_transform(input_size=size, is_training=True, hflip=0.5, color_jitter=0.4,
                          interpolation="random", mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD)
    smoothing = 0.1
    # HARD rows: one-hot; PBC's set-valued rows (IG, NEUTROPHIL): uniform over the set; then smoothing 0.1
    # (for one-hot targets exactly timm's LabelSmoothingCrossEntropy(0.1))
    t_all = train.targets / np.clip(train.targets.sum(axis=1, keepdims=True), 1e-8, None)
    t_all = (t_all * (1 - smoothing) + smoothing / n_cls).astype(np.float32)

    class Crops(torch.utils.data.Dataset):  # type: ignore[type-arg]
        def __len__(self) -> int:
            return len(train)

        def __getitem__(self, i: int) -> tuple[Any, Any]:
            return tf(Image.fromarray(train.images[i])), torch.from_numpy(t_all[i])

    loader = torch.utils.data.DataLoader(Crops(), batch_size=batch, shuffle=True, drop_last=True,
                                         num_workers=workers, persistent_workers=workers > 0,
                                         generator=torch.Generator().manual_seed(seed))
    lr = 0.1 * batch / 256  # train.py: lr_base 0.1, linear scaling for SGD
    loss_fn = SoftTargetCrossEntropy()

    def make_opt() -> Any:
        return create_optimizer_v2(net, opt="sgd", lr=lr, weight_decay=2e-5, momentum=0.9)

    # calibration: a few real steps on a throw-away copy of the state
    import copy

    state0 = copy.deepcopy(net.state_dict())
    opt = make_opt()
    net.train()
    times = []
    it = iter(loader)
    for _ in range(6):
        t = time.perf_counter()
        x, y = next(it)
        loss = loss_fn(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t)
    step_s = float(np.median(times[2:]))
    net.load_state_dict(state0)
    steps = len(loader)
    left = budget_min * 60 - (time.monotonic() - t0) - 5
    epochs = _fit_epochs(step_s, steps, left)
    warmup = min(5, epochs // 4)  # train.py's 5 warm-up epochs, fewer when the budget has few epochs
    opt = make_opt()
    sched, _ = create_scheduler_v2(opt, sched="cosine", num_epochs=epochs, warmup_epochs=warmup,
                                   warmup_lr=1e-5, min_lr=0.0)
    log.info("timm resnet18: %.3f s/step, %d steps/epoch -> %d epochs (warm-up %d)", step_s, steps, epochs,
             warmup)
    sched.step(0)
    losses = []
    for epoch in range(epochs):
        net.train()
        tot = 0.0
        for x, y in loader:
            loss = loss_fn(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            tot += float(loss.item())
        sched.step(epoch + 1)
        losses.append(tot / steps)
    seconds = time.monotonic() - t0
    spec = make_spec(train.classes, arch="timm:resnet18", scheme="pbc_fine", input_size=size, mpp=mpp,
                     mean=tuple(IMAGENET_DEFAULT_MEAN), std=tuple(IMAGENET_DEFAULT_STD),
                     params={"scheme_def": _pbc_fine_def()})
    out = work / "clf_timm" / "resnet18.pt"
    out.parent.mkdir(parents=True, exist_ok=True)
    save_classifier(out, CellClassifier(net=net.eval(), spec=spec, device="cpu"))
    return out, {"train_wall_s": seconds, "step_s_calibrated": step_s, "epochs": epochs,
                 "warmup_epochs": warmup,
                 "steps": epochs * steps, "batch": batch, "lr": lr, "loss_per_epoch": losses,
                 "arch": "timm resnet18", "contract": f"{size} px at {mpp} um/px", "workers": workers}


def _pbc_fine_def() -> dict[str, Any]:
    from marrowscope.data.classification_datasets import PBC_CLASSES, scheme_for_classes

    sch = scheme_for_classes(PBC_CLASSES, "pbc_fine", "taxonomy classes covered by PBC (finest PBC level)")
    return {"name": sch.name, "classes": list(sch.classes), "mapping": dict(sch.mapping),
            "description": sch.description}


def classifier_row(weights: Path, root: Path, cache_dir: Path | None, n_speed: int) -> dict[str, Any]:
    from domain_shift import pbc_crops, pbc_heldout_items
    from marrowscope.data.ood_datasets import load_eval_crops
    from marrowscope.engines.classify import classify_crops
    from marrowscope.engines.domain_shift import score_crops
    from marrowscope.models.classifier import load_classifier

    clf = load_classifier(weights, device="cpu")
    sets = {"pbc_heldout": (pbc_crops(pbc_heldout_items(root / "pbc_acevedo2020", cache_dir), clf.mpp,
                                      clf.input_size), "pbc8"),
            "bccd_wbc": (load_eval_crops(f"bccd-wbc:{root / 'bccd'}", mpp=clf.mpp, size=clf.input_size),
                         None)}
    row: dict[str, Any] = {}
    for key, (crops, scheme) in sets.items():
        rep = score_crops(clf, crops, tta=1, eval_scheme=scheme)
        row[key] = {"macro_f1": rep.macro_f1, "macro_f1_min10": rep.extra["macro_f1_min_support"],
                    "accuracy": rep.accuracy, "n": len(crops), "n_scored": rep.n_images}
    imgs = sets["pbc_heldout"][0].images
    speed = np.ascontiguousarray(np.resize(imgs, (n_speed, *imgs.shape[1:])))
    med, all_t = median_seconds(lambda: classify_crops(clf, speed, tta=1), 3)
    row.update(cells_per_s=n_speed / med, seconds_all=[round(t, 3) for t in all_t], n_speed=n_speed)
    return row


# --- report ------------------------------------------------------------------------------------------------
def _ratio(a: Any, b: Any) -> float | None:
    return None if a is None or b is None or not b else float(a) / float(b)


def _f(v: Any, d: int = 3) -> str:
    return "—" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{float(v):.{d}f}"


def render(res: dict[str, Any]) -> str:
    out = []
    if "detector" in res:
        d = res["detector"]
        o, y = d["ours"], d["yolo"]
        keys = [("BCCD test mean AP@0.5", lambda r: r["bccd_test"]["ap50"])]
        for c in o["bccd_test"]["ap50_per_class"]:
            keys.append((f"BCCD test {c} AP@0.5", lambda r, c=c: r["bccd_test"]["ap50_per_class"].get(c)))
        for k in sorted(k for k in o if k.startswith("txl_val_")):
            keys.append((f"TXL-PBC val {k[8:]} WBC AP@0.5 (n {o[k]['n_images']})",
                         lambda r, k=k: r[k]["wbc_ap50"]))
        keys.append(("ms per 2048² ROI at 0.11 µm/px", lambda r: r["roi_ms"]))
        init = " from scratch" if d.get("ours_init") == "scratch" else ""
        out += [f"| detector | ours (detector-{d.get('recipe', 'blood')} recipe{init}) | "
                "YOLO (Ultralytics recipe) | ours / YOLO |",
                "|---|---|---|---|"]
        for name, get in keys:
            a, b = get(o), get(y)
            digits = 0 if name.startswith("ms") else 3
            out.append(f"| {name} | {_f(a, digits)} | {_f(b, digits)} | {_f(_ratio(a, b), 2)} |")
        ot, yt = d["ours_train"], d["yolo_train"]
        out.append(f"| training wall time (min) | {ot['train_wall_s'] / 60:.1f} ({ot['epochs']} epochs) | "
                   f"{yt['train_wall_s'] / 60:.1f} ({yt['epochs_done']} epochs) | |")
    if "classifier" in res:
        c = res["classifier"]
        o, t = c["ours"], c["timm"]
        out += ["", "| classifier (no TTA) | ours (classifier-pbc recipe) | timm ResNet-18 (timm recipe) | "
                "ours / timm |", "|---|---|---|---|"]
        for name, get, dg in (
            ("PBC held-out macro F1 (pbc8)", lambda r: r["pbc_heldout"]["macro_f1"], 3),
            ("BCCD WBC macro F1 (types ≥ 10)", lambda r: r["bccd_wbc"]["macro_f1_min10"], 3),
            ("BCCD WBC macro F1 (all types)", lambda r: r["bccd_wbc"]["macro_f1"], 3),
            ("cells/s", lambda r: r["cells_per_s"], 0),
        ):
            a, b = get(o), get(t)
            out.append(f"| {name} | {_f(a, dg)} | {_f(b, dg)} | {_f(_ratio(a, b), 2)} |")
        ot, tt = c["ours_train"], c["timm_train"]
        out.append(f"| training wall time (min) | {ot['train_wall_s'] / 60:.1f} ({ot['epochs']} epochs) | "
                   f"{tt['train_wall_s'] / 60:.1f} ({tt['epochs']} epochs) | |")
    return "\n".join(out) + "\n"


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(["git", *args], cwd=HERE.parent, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-root", type=Path, default=Path("../shared/data"))
    ap.add_argument("--budget-min", type=float, default=8.0, help="wall-clock training budget per detector")
    ap.add_argument("--clf-budget-min", type=float, default=5.0, help="the same per classifier")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ours-detector", choices=("marrow", "blood"), default="marrow",
                    help="our side: the default detector's recipe (marrow) or detector-blood's")
    ap.add_argument("--ours-init", choices=("recipe", "scratch"), default="recipe",
                    help="our detector from the recipe's initial weights (marrow: detector-synth) "
                         "or from scratch")
    ap.add_argument("--reuse-yolo", type=Path, default=None,
                    help="take the YOLO side (training record and scores) from this earlier results JSON")
    ap.add_argument("--yolo", default="yolov8n.yaml", help="Ultralytics model yaml (from scratch)")
    ap.add_argument("--timm-size", type=int, default=64, help="timm ResNet-18 crop side (px)")
    ap.add_argument("--timm-mpp", type=float, default=0.45, help="timm ResNet-18 crop scale (µm/px)")
    ap.add_argument("--timm-batch", type=int, default=128, help="timm train.py's default batch")
    ap.add_argument("--timm-workers", type=int, default=1)
    ap.add_argument("--runs", type=int, default=3, help="timed ROI passes (median)")
    ap.add_argument("--n-speed", type=int, default=2048, help="crops for cells/s")
    ap.add_argument("--only", choices=("detector", "classifier"), default=None)
    ap.add_argument("--subset", type=int, default=0, help="plumbing check: at most N images per set")
    ap.add_argument("--work", type=Path, default=Path("runs/peers"))
    ap.add_argument("--cache-dir", type=Path, default=Path("runs/cache"))
    ap.add_argument("--out", type=Path, default=HERE / "results" / "peers.json")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    import torch

    torch.set_num_threads(a.threads)
    a.work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    res: dict[str, Any] = {"meta": {
        "command": " ".join([Path(sys.executable).name, *sys.argv]), "machine": platform.platform(),
        "cpu_count": os.cpu_count(), "threads": a.threads, "python": platform.python_version(),
        "torch": torch.__version__, "load_avg_start": os.getloadavg(), "commit": _git("rev-parse", "HEAD"),
        "main_commit": _git("rev-parse", "main"), "budget_min": a.budget_min,
        "clf_budget_min": a.clf_budget_min, "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}}
    a.out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:  # after each part, so that a failure later keeps what was measured
        a.out.write_text(json.dumps(res, indent=1, default=float) + "\n")

    if a.only in (None, "detector"):
        data = detector_data(a.data_root, a.ours_detector)
        if a.subset:
            data = {**data, "train": data["train"][: a.subset], "val": data["val"][: max(2, a.subset // 8)],
                    "test": data["test"][: max(2, a.subset // 8)],
                    "txl_val": {k: v[: max(2, a.subset // 8)] for k, v in data["txl_val"].items()}}
        ours_w, ours_t = train_ours_detector(data, a.work, a.budget_min, a.threads, a.seed,
                                             quick=bool(a.subset), scratch=a.ours_init == "scratch")
        res["meta"]["load_avg_after_det_ours"] = os.getloadavg()
        import ultralytics

        res["meta"]["ultralytics"] = ultralytics.__version__
        res["detector"] = {
            "recipe": a.ours_detector, "ours_init": a.ours_init,
            "data": {"n_train": len(data["train"]), "n_val": len(data["val"]), "n_test": len(data["test"]),
                     "txl_val_by_source": {k: len(v) for k, v in data["txl_val"].items()},
                     "txl_val_mpp_ours": data["txl_mpp"]},
            "ours_train": ours_t, "ours": ours_detector_row(ours_w, data, a.runs)}
        if a.reuse_yolo is not None:  # the YOLO side of an earlier run on the same data and budget
            earlier = json.loads(a.reuse_yolo.read_text())["detector"]
            res["detector"].update(yolo_train={**earlier["yolo_train"], "reused_from": str(a.reuse_yolo)},
                                   yolo=earlier["yolo"])
        else:
            yolo_w, yolo_t = train_yolo(data, a.work, a.budget_min, a.threads, a.seed, a.yolo)
            res["meta"]["load_avg_after_det_yolo"] = os.getloadavg()
            res["detector"].update(yolo_train=yolo_t,
                                   yolo=yolo_detector_row(yolo_w, data, a.work, a.threads, a.runs))
        torch.set_num_threads(a.threads)
        save()
    if a.only in (None, "classifier"):
        import timm

        res["meta"]["timm"] = timm.__version__
        root = a.data_root / "pbc_acevedo2020"
        ours_c, ours_ct = train_ours_classifier(root, a.work, a.clf_budget_min, a.threads, a.seed,
                                                a.cache_dir)
        timm_c, timm_ct = train_timm(root, a.work, a.clf_budget_min, a.threads, a.seed, a.cache_dir,
                                     a.timm_size, a.timm_mpp, a.timm_batch, a.timm_workers)
        torch.set_num_threads(a.threads)
        res["classifier"] = {"ours_train": ours_ct, "timm_train": timm_ct,
                             "ours": classifier_row(ours_c, a.data_root, a.cache_dir, a.n_speed),
                             "timm": classifier_row(timm_c, a.data_root, a.cache_dir, a.n_speed)}
    res["meta"].update(seconds=time.time() - t0, load_avg_end=os.getloadavg())
    table = render(res)
    res["table"] = table
    save()
    (a.work / "table.md").write_text(table)
    print(table)
    print(f"{res['meta']['seconds'] / 60:.1f} min; results in {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
