"""Training loop for the Faster R-CNN cell detector (plain ``train_one_epoch`` style).

Images are resampled once to the model's mpp and kept in memory; each step draws a batch, applies the
microscopy augmentations (:mod:`marrowscope.data.augment`) and a random crop of ``crop_size`` pixels.
The learning rate warms up linearly, then follows a cosine to 1 % over the whole schedule.

Checkpoints: ``OUT/last.pt`` (model, optimiser, RNG states, position; written every
``checkpoint_every_s`` seconds and at each epoch end) lets a stopped run resume exactly where it was;
``OUT/best.pt`` is a weights file with its contract (see :mod:`marrowscope.models.weights`) for the best
validation AP@0.5 (or the last epoch when there is no validation set). Every augmentation draw is
seeded by (seed, epoch, sample), so a resumed run sees the same data as an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from marrowscope.data.augment import AugmentConfig, Augmenter, rescale, stain_basis_of
from marrowscope.data.detection_datasets import DetectionSample
from marrowscope.models.detector import (
    DEFAULT_ARCH,
    Detector,
    build_detector,
    detector_spec,
    image_tensor,
    save_detector,
)
from marrowscope.models.weights import WeightsSpec
from marrowscope.runtime import isolated_state

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DetectorTrainConfig:
    classes: tuple[str, ...]
    arch: str = DEFAULT_ARCH
    mpp: float = 0.15  # µm/px the model works at
    tile_size: int = 512  # inference tile side at ``mpp``
    crop_size: int = 384  # training crop side at ``mpp``
    epochs: int = 12
    batch_size: int = 8
    repeats: int = 1  # each image appears this many times per epoch (random crops of large ROIs)
    eval_every: int = 1  # validate every N epochs (and after the last)
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_iters: int = 100
    grad_clip: float = 10.0
    seed: int = 0
    num_threads: int = 1
    checkpoint_every_s: float = 300.0
    max_minutes: float | None = None  # stop (resumably) after this much wall time in this call
    device: str | None = None
    backbone_weights: str | None = None
    init_weights: str | None = None  # start from these detector weights: file or bundled name, same arch/mpp
    spec_params: dict[str, Any] = field(default_factory=dict)  # extra WeightsSpec params (notes, defaults)
    min_visible: float = 0.5  # keep a crop-cut box when this fraction of it stays visible
    bn_images: int = 200  # training images that recompute BatchNorm statistics before each validation
    precision: str = "fp32"  # forward pass in fp32, bf16 or fp16 (autocast; fp16 with a GradScaler)
    workers: int = 0  # DataLoader processes that augment the next steps' crops (0: in the training loop)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    select_classes: tuple[str, ...] | None = None  # their mean val AP@0.5 picks the best epoch (None: all)

    def spec(self) -> WeightsSpec:
        return detector_spec(self.classes, arch=self.arch, mpp=self.mpp, tile_size=self.tile_size,
                             **self.spec_params)


@dataclass(frozen=True)
class EpochRecord:
    epoch: int
    loss: float
    seconds: float
    val_ap50: float | None = None
    val_ap: float | None = None
    val_ap50_per_class: dict[str, float] | None = None


@dataclass(frozen=True)
class TrainResult:
    best_weights: Path | None
    last_checkpoint: Path
    history: tuple[EpochRecord, ...]
    finished: bool  # False when stopped by ``max_minutes`` (run again to resume)
    train_seconds: float  # total over all resumed calls


@dataclass(frozen=True)
class _Prepared:
    image: np.ndarray  # RGB at the model's mpp
    boxes: np.ndarray  # (N, 4) at the model's mpp
    labels: np.ndarray  # (N,) 1-based class indices


def prepare_samples(samples: Sequence[DetectionSample], classes: Sequence[str], mpp: float,
                    progress: bool = False) -> list[_Prepared]:
    """Load every image and resample it (and its boxes) to ``mpp``."""
    index = {c: i + 1 for i, c in enumerate(classes)}
    out = []
    it: Any = samples
    if progress:
        from tqdm import tqdm

        it = tqdm(samples, desc="load", unit="img", mininterval=10)
    for s in it:
        img = s.load()
        boxes = s.annotations.boxes_array().reshape(-1, 4)
        labels = np.array([index[c.label] for c in s.annotations.cells if c.label is not None],
                          dtype=np.int64)
        if len(labels) != len(boxes):
            raise ValueError(f"{s.image_id}: unlabelled boxes; map labels to the model classes first")
        factor = (s.mpp / mpp) if s.mpp is not None else 1.0
        img, boxes = rescale(img, boxes, factor)
        out.append(_Prepared(np.ascontiguousarray(img), boxes, labels))
    return out


def _crop(image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, size: int, rng: np.random.Generator,
          min_visible: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    h, w = image.shape[:2]
    x0 = int(rng.integers(0, w - size + 1)) if w > size else 0
    y0 = int(rng.integers(0, h - size + 1)) if h > size else 0
    image = image[y0 : y0 + size, x0 : x0 + size]
    ch, cw = image.shape[:2]
    if boxes.shape[0] == 0:
        return image, boxes, labels
    b = boxes - np.array([x0, y0, x0, y0], dtype=np.float64)
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    c = np.stack([b[:, 0].clip(0, cw), b[:, 1].clip(0, ch), b[:, 2].clip(0, cw), b[:, 3].clip(0, ch)], axis=1)
    carea = (c[:, 2] - c[:, 0]).clip(0) * (c[:, 3] - c[:, 1]).clip(0)
    big_enough = (c[:, 2] - c[:, 0] >= 2) & (c[:, 3] - c[:, 1] >= 2)
    keep = (carea >= min_visible * np.maximum(area, 1e-9)) & big_enough
    return image, c[keep], labels[keep]


def augment_samples(samples: Sequence[_Prepared], rngs: Sequence[np.random.Generator], aug: Augmenter,
                    config: DetectorTrainConfig) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Augment and crop each prepared sample with its own generator: (image, boxes, labels) arrays."""
    out = []
    window = _window_size(config)
    for p, rng in zip(samples, rngs, strict=True):
        img, boxes, labels = p.image, p.boxes, p.labels
        if max(img.shape[:2]) > window:  # augment only what the crop can reach (a 900 px ROI: 3.5x fewer px)
            img, boxes, labels = _crop(img, boxes, labels, window, rng, config.min_visible)
        img, boxes = aug.image_boxes(img, boxes, rng)
        out.append(_crop(img, boxes, labels, config.crop_size, rng, config.min_visible))
    return out


def _window_size(config: DetectorTrainConfig) -> int:
    """The side of the random window cut before augmenting: after the smallest scale jitter it still
    covers the training crop, so every crop the full image could give stays possible."""
    smallest = min(1.0, *config.augment.scale_range)
    return int(np.ceil(config.crop_size / max(smallest, 1e-3))) + 1


def _stain_basis(train_p: Sequence[_Prepared], config: DetectorTrainConfig, out: Path | None
                 ) -> np.ndarray | None:
    """For ``augment.romanowsky``: the OD basis of (up to 256 of) the training images, drawn under the seed,
    written to ``out/stain_basis.json``; otherwise ``None``."""
    if not config.augment.romanowsky:
        return None
    from marrowscope.io.atomic import write_text_atomic

    pick = np.random.default_rng(config.seed).permutation(len(train_p))[:256]
    basis = stain_basis_of([train_p[int(i)].image for i in pick], seed=config.seed)
    logger.info("Romanowsky stain basis of %d training images: %s", len(pick), np.round(basis, 3).tolist())
    if out is not None:
        write_text_atomic(out / "stain_basis.json", json.dumps({"stain_basis": basis.tolist(),
                                                                 "n_images": len(pick)}) + "\n")
    return basis


def batch_tensors(items: Sequence[tuple[Any, Any, Any]], device: str
                  ) -> tuple[list[Any], list[dict[str, Any]]]:
    """Augmented arrays (or the uint8 tensors a DataLoader worker made of them, pinned for a GPU) as
    the model's (images, targets) on ``device``."""
    import torch

    images, targets = [], []
    for img, boxes, labels in items:
        if isinstance(img, np.ndarray):
            images.append(image_tensor(img, device))
        else:  # the same conversion as image_tensor, from an already pinned uint8 tensor
            images.append(img.to(device, non_blocking=True).permute(2, 0, 1).float().div(255.0))
        targets.append({
            "boxes": torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4).to(device),
            "labels": torch.as_tensor(labels, dtype=torch.int64).to(device),
        })
    return images, targets


def training_batch(samples: Sequence[_Prepared], rngs: Sequence[np.random.Generator], aug: Augmenter,
                   config: DetectorTrainConfig, device: str) -> tuple[list[Any], list[dict[str, Any]]]:
    """Augment and crop each prepared sample with its own generator: the model's (images, targets)."""
    return batch_tensors(augment_samples(samples, rngs, aug, config), device)


class _StepData:
    """The augmented samples of each remaining step of an epoch, as a map-style dataset for a DataLoader
    (``workers`` > 0): item k is step k's list of (image, boxes, labels), drawn with the same per-sample
    generators as the in-loop path, so the numbers do not depend on the number of workers."""

    def __init__(self, train_p: Sequence[_Prepared], steps: Sequence[Sequence[int]], epoch: int,
                 aug: Augmenter, config: DetectorTrainConfig) -> None:
        self.train_p, self.steps, self.epoch, self.aug, self.config = train_p, steps, epoch, aug, config

    def __len__(self) -> int:
        return len(self.steps)

    def __getitem__(self, k: int) -> list[tuple[Any, np.ndarray, np.ndarray]]:
        import torch

        n = len(self.train_p)
        idx = self.steps[k]
        items = augment_samples([self.train_p[int(i) % n] for i in idx],
                                [np.random.default_rng([self.config.seed, self.epoch, int(i)]) for i in idx],
                                self.aug, self.config)
        return [(torch.from_numpy(np.require(img, dtype=np.uint8, requirements=("C", "W"))), b, lab)
                for img, b, lab in items]


def _as_is(item: Any) -> Any:
    return item


_ARCH_PARAMS = ("anchor_sizes", "aspect_ratios", "fpn_channels", "representation_size")


#: the state-dict prefix of the per-class layers (classification and box regression)
BOX_PREDICTOR = "roi_heads.box_predictor."


def _arch_fields(spec: dict[str, Any]) -> dict[str, Any]:
    """The parts of a spec that shape the weights (thresholds and notes may change on resume)."""
    keep = {k: spec.get(k) for k in ("task", "arch", "classes", "mpp", "input_size", "mean", "std")}
    keep["params"] = {k: spec.get("params", {}).get(k) for k in _ARCH_PARAMS}
    return keep


def _lr_at(step: int, total: int, cfg: DetectorTrainConfig) -> float:
    if step < cfg.warmup_iters:
        return cfg.lr * (0.01 + 0.99 * step / max(1, cfg.warmup_iters))
    t = (step - cfg.warmup_iters) / max(1, total - cfg.warmup_iters)
    return cfg.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def recalibrate_bn(model: Any, images: Sequence[np.ndarray], device: str, batch_size: int = 8,
                   crop: int = 512) -> int:
    """Recompute every BatchNorm's running mean/variance as the plain average over ``images``.

    Trained from scratch for a short schedule, running statistics (momentum 0.01 in MobileNetV3) lag far
    behind the weights and make eval-mode outputs useless; this "precise BN" pass fixes that. Only the
    backbone runs (no proposal sampling), so no random number is drawn. Returns the images used."""
    import torch

    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns or not images:
        return 0
    was_training = model.training
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            batch = [image_tensor(im[:crop, :crop], device) for im in images[i : i + batch_size]]
            image_list, _ = model.transform(batch)
            model.backbone(image_list.tensors)
    for m, mom in zip(bns, momenta, strict=True):
        m.momentum = mom
    model.train(was_training)
    return len(images)


def _bn_images(train_p: Sequence[_Prepared], seed: int, n: int) -> list[np.ndarray]:
    order = np.random.default_rng([seed, 7919]).permutation(len(train_p))[:n]
    return [train_p[int(i)].image for i in order]


def validate(model: Any, spec: WeightsSpec, val: Sequence[_Prepared], device: str,
             batch_size: int = 4) -> Any:
    """AP of ``model`` on prepared validation images (already at the model's mpp)."""
    from marrowscope.cells import Box, Cell, CellAnnotations
    from marrowscope.engines.detect import detect_image
    from marrowscope.eval.detection import evaluate_detections

    was_training = model.training
    # the training tiles and memory format: validation must not change the model being trained
    det = Detector(model, spec, device, tile_stretch=1.0, optimise=False)
    preds, truths = [], []
    for p in val:
        preds.append(detect_image(p.image, det, batch_size=batch_size))
        cells = tuple(Cell(Box(*map(float, b)), spec.classes[int(lab) - 1])
                      for b, lab in zip(p.boxes, p.labels, strict=True) if b[2] > b[0] and b[3] > b[1])
        truths.append(CellAnnotations(cells, width=p.image.shape[1], height=p.image.shape[0]))
    model.train(was_training)
    return evaluate_detections(preds, truths, spec.classes,
                               threshold=float(spec.params.get("operating_threshold", 0.5)))


def _selection_ap(metrics: Any, classes: Sequence[str] | None) -> float:
    """The validation AP@0.5 that picks the best epoch: the mean over ``classes`` (None: every class)."""
    if not classes:
        return float(metrics.ap50)
    vals = [metrics.ap50_per_class.get(c, float("nan")) for c in classes]
    vals = [v for v in vals if v == v]
    return float(np.mean(vals)) if vals else float(metrics.ap50)


@isolated_state
def train_detector(train: Sequence[DetectionSample], val: Sequence[DetectionSample],
                   config: DetectorTrainConfig, out_dir: str | Path, *, resume: bool = True,
                   progress: bool = True) -> TrainResult:
    """Train (or resume) a detector; see the module doc for the files written under ``out_dir``."""
    import torch

    from marrowscope.engines.checkpoints import load_checkpoint, rng_state, save_checkpoint, set_rng_state
    from marrowscope.engines.distributed import (
        autocast,
        device_record,
        distributed_context,
        grad_scaler,
        rank_device,
        speed_settings,
    )
    from marrowscope.io.atomic import prepare_output_dir, write_text_atomic
    from marrowscope.models.detector import default_device

    out = prepare_output_dir(out_dir)
    torch.set_num_threads(max(1, config.num_threads))
    device = config.device or default_device()
    dist = distributed_context(device)  # torchrun: this rank's share of each global batch, rank-0 writes
    device = rank_device(device, dist)
    speed_settings(device)
    spec = config.spec()
    torch.manual_seed(config.seed)
    # channels-last: ~15 % less time per CPU training step (MobileNetV3-FPN, 4 crops of 384 px)
    model = build_detector(spec, config.backbone_weights).to(device).to(memory_format=torch.channels_last)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    ddp = dist.wrap(model, device)
    scaler = grad_scaler(device, config.precision)
    last_path, best_path = out / "last.pt", out / "best.pt"
    epoch, step_in_epoch, global_step, best_ap, spent = 0, 0, 0, -1.0, 0.0
    history: list[EpochRecord] = []
    if config.init_weights and not (resume and last_path.is_file()):
        from marrowscope.errors import InputError
        from marrowscope.models.registry import resolve_model
        from marrowscope.models.weights import load_weights

        init_path, init_sha = resolve_model(config.init_weights, task="detector")  # a file or a bundled name
        sd, init_spec, _ = load_weights(init_path, task="detector", sha256=init_sha)
        mine, theirs = _arch_fields(spec.to_dict()), _arch_fields(init_spec.to_dict())
        if {**theirs, "classes": mine["classes"]} != mine:
            raise InputError(config.init_weights, "initial weights have another architecture or mpp")
        if theirs["classes"] != mine["classes"]:  # all but the box predictor, which starts fresh
            sd = {k: v for k, v in sd.items() if not k.startswith(BOX_PREDICTOR)}
            missing, unexpected = model.load_state_dict(sd, strict=False)
            if unexpected or any(not k.startswith(BOX_PREDICTOR) for k in missing):
                raise InputError(config.init_weights, "initial weights do not fit this detector")
            logger.info("initialised from %s (classes %s; the box predictor for %s starts fresh)",
                        config.init_weights, theirs["classes"], mine["classes"])
        else:
            model.load_state_dict(sd)
            logger.info("initialised from %s", config.init_weights)
    if resume and last_path.is_file():
        ck = load_checkpoint(last_path)
        if _arch_fields(ck["spec"]) != _arch_fields(spec.to_dict()):
            raise ValueError(f"{last_path}: checkpoint was made with another model contract; use a new --out")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        epoch, step_in_epoch, global_step = ck["epoch"], ck["step_in_epoch"], ck["global_step"]
        best_ap, spent = ck["best_ap"], ck["seconds"]
        history = [EpochRecord(**h) for h in ck["history"]]
        set_rng_state(ck["rng"] if "rng" in ck else {"cpu": ck["torch_rng"]})  # older checkpoints
        logger.info("resumed from %s at epoch %d step %d", last_path, epoch, step_in_epoch)
    if dist.is_main:
        write_text_atomic(out / "config.json", json.dumps(
            {**asdict(config), "n_train": len(train), "n_val": len(val), "spec": spec.to_dict(),
             "run": device_record(device)},
            indent=2, default=str) + "\n")

    if epoch >= config.epochs:  # finished: a kill after the last checkpoint may have cut history.json
        if dist.is_main:
            write_text_atomic(out / "history.json", json.dumps([asdict(h) for h in history], indent=2) + "\n")
        return TrainResult(best_path if best_path.exists() else None, last_path, tuple(history), True, spent)
    train_p = prepare_samples(train, config.classes, config.mpp, progress)
    val_p = prepare_samples(val, config.classes, config.mpp, progress) if val else []
    aug = Augmenter(config.augment, stain_basis=_stain_basis(train_p, config, out if dist.is_main else None))
    n = len(train_p)
    n_epoch = n * max(1, config.repeats)
    steps_per_epoch = max(1, n_epoch // config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    t_call = time.monotonic()
    t_ckpt = time.monotonic()

    def save_last() -> None:
        if not dist.is_main:
            return
        state = {
            "spec": spec.to_dict(), "model": model.state_dict(), "optimizer": opt.state_dict(),
            "epoch": epoch,
            "step_in_epoch": step_in_epoch, "global_step": global_step, "best_ap": best_ap,
            "seconds": spent + time.monotonic() - t_call, "history": [asdict(h) for h in history],
            "rng": rng_state(), "config": json.loads(json.dumps(asdict(config), default=str)),
        }
        save_checkpoint(last_path, state)

    stopped = False
    model.train()
    while epoch < config.epochs:
        order = np.random.default_rng([config.seed, epoch]).permutation(n_epoch)
        t_epoch = time.monotonic()
        losses: list[float] = []
        bar: Any = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=steps_per_epoch, initial=step_in_epoch, unit="step", mininterval=20,
                       desc=f"epoch {epoch + 1}/{config.epochs}")
        prefetch: Any = None
        if config.workers > 0:  # augmentation in worker processes, a few steps ahead
            from torch.utils.data import DataLoader

            steps = [dist.shard(order[k * config.batch_size : (k + 1) * config.batch_size].tolist())
                     for k in range(step_in_epoch, steps_per_epoch)]
            prefetch = iter(DataLoader(_StepData(train_p, steps, epoch, aug, config),  # type: ignore[arg-type]
                                       batch_size=None,
                                       shuffle=False, num_workers=config.workers, collate_fn=_as_is,
                                       pin_memory=device.startswith("cuda"),
                                       generator=torch.Generator().manual_seed(0)))  # not the model's RNG
        while step_in_epoch < steps_per_epoch:
            if prefetch is not None:
                images, targets = batch_tensors(next(prefetch), device)
            else:
                batch = order[step_in_epoch * config.batch_size : (step_in_epoch + 1) * config.batch_size]
                idx = dist.shard(batch.tolist())  # torchrun: this rank's part (same per-sample draws)
                images, targets = training_batch(
                    [train_p[int(i) % n] for i in idx],
                    [np.random.default_rng([config.seed, epoch, int(i)]) for i in idx], aug, config, device)
            for g in opt.param_groups:
                g["lr"] = _lr_at(global_step, total_steps, config)
            with autocast(device, config.precision):
                loss_dict = ddp(images, targets)
            loss = sum(v.float() for v in loss_dict.values())
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss is {loss.item()} at step {global_step}; lower --lr")
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
            scaler.step(opt)
            scaler.update()
            losses.append(dist.mean(float(loss.item())))
            step_in_epoch += 1
            global_step += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", lr=f"{opt.param_groups[0]['lr']:.2e}",
                                refresh=False)
            if time.monotonic() - t_ckpt > config.checkpoint_every_s:
                save_last()
                t_ckpt = time.monotonic()
            over = config.max_minutes is not None and time.monotonic() - t_call > 60 * config.max_minutes
            if dist.any(over):  # every rank stops at the same step
                stopped = True
                break
        if bar is not None:
            bar.close()
        if stopped:
            save_last()
            logger.info("stopped after %.1f min at epoch %d step %d; run again to resume",
                        (time.monotonic() - t_call) / 60, epoch, step_in_epoch)
            break
        rec = EpochRecord(epoch=epoch + 1, loss=float(np.mean(losses)) if losses else float("nan"),
                          seconds=time.monotonic() - t_epoch)
        # without validation the latest epoch counts as best; with it, only validated epochs compete
        ap: float | None = None if val_p else float(epoch + 1)
        last_epoch = epoch + 1 == config.epochs
        validating = bool(val_p) and ((epoch + 1) % max(1, config.eval_every) == 0 or last_epoch)
        if validating or not val_p:  # the weights saved below carry fresh BatchNorm statistics
            recalibrate_bn(model, _bn_images(train_p, config.seed, config.bn_images), device,
                           config.batch_size, config.crop_size)
        if validating:
            m = validate(model, spec, val_p, device)
            model.train()
            rec = EpochRecord(rec.epoch, rec.loss, rec.seconds, m.ap50, m.ap, dict(m.ap50_per_class))
            ap = _selection_ap(m, config.select_classes)
        history.append(rec)
        logger.info("epoch %d: loss %.4f, val AP50 %s (%.0f s)", rec.epoch, rec.loss, rec.val_ap50,
                    rec.seconds)
        epoch += 1
        step_in_epoch = 0
        if ap is not None and ap > best_ap:
            best_ap = ap
            if dist.is_main:
                save_detector(best_path, model, spec, half=False,
                              extra={"epoch": rec.epoch, "val_ap50": rec.val_ap50, "seed": config.seed,
                                     "run": device_record(device)})
        save_last()
        t_ckpt = time.monotonic()
        if dist.is_main:
            write_text_atomic(out / "history.json", json.dumps([asdict(h) for h in history], indent=2) + "\n")
    dist.barrier()  # the other ranks see rank 0's files from here on
    total = spent + time.monotonic() - t_call
    best = best_path if best_path.exists() else None
    return TrainResult(best, last_path, tuple(history), not stopped, total)


def blood_recipe_config(*, seed: int = 0, num_threads: int = 1, epochs: int = 12,
                        max_minutes: float | None = None, init_weights: str | None = None
                        ) -> DetectorTrainConfig:
    """The ``detector-blood`` recipe: MobileNetV3-FPN from scratch at 0.1 µm/px (blood fields resampled
    by 0.75; 0.15 µm/px lost 0.02-0.03 AP@0.5, mostly on platelets), random 384 px crops, AdamW 1e-3,
    batch 8, cosine over ``epochs``, validation every 2 epochs; about 1 h on 2 idle CPU cores."""
    from marrowscope.data.detection_datasets import BLOOD_CLASSES, BLOOD_FIELD_MPP

    return DetectorTrainConfig(
        classes=BLOOD_CLASSES, arch=DEFAULT_ARCH, mpp=0.1, tile_size=512, crop_size=384, epochs=epochs,
        batch_size=8, eval_every=2, lr=1e-3, weight_decay=1e-4, warmup_iters=100, seed=seed,
        num_threads=num_threads, checkpoint_every_s=180.0, max_minutes=max_minutes,
        augment=AugmentConfig(scale_range=(0.8, 1.25)), init_weights=init_weights,
        spec_params={"default_input_mpp": BLOOD_FIELD_MPP},
    )


def synth_recipe_config(*, seed: int = 0, num_threads: int = 1, epochs: int = 10,
                        max_minutes: float | None = None) -> DetectorTrainConfig:
    """The ``detector-synth`` recipe: one class ``cell`` at 0.25 µm/px (marrow ROIs of 2048 px at
    0.11 µm/px become ~900 px), 384 px random crops, each ROI 8 times per epoch, batch 4."""
    return DetectorTrainConfig(
        classes=("cell",), arch=DEFAULT_ARCH, mpp=0.25, tile_size=512, crop_size=384, epochs=epochs,
        batch_size=4, repeats=8, eval_every=5, lr=1e-3, weight_decay=1e-4, warmup_iters=50, seed=seed,
        num_threads=num_threads, checkpoint_every_s=180.0, max_minutes=max_minutes,
    )


#: ``detector-marrow``'s classes: nucleated cells, and red cells as a class of their own (so that a pale or
#: blue-grey red cell is learnt as something, not only as background); only ``cell`` is counted
MARROW_CLASSES: tuple[str, ...] = ("cell", "red_cell")


def marrow_recipe_config(*, seed: int = 0, num_threads: int = 1, epochs: int = 4,
                         max_minutes: float | None = None, init_weights: str | None = None,
                         romanowsky: bool = False, classes: tuple[str, ...] = MARROW_CLASSES
                         ) -> DetectorTrainConfig:
    """The ``detector-marrow`` recipe: classes ``cell`` (nucleated cells) and ``red_cell``, the best epoch
    picked on ``cell`` alone (``classes=("cell",)``: the one-class recipe of earlier bundles), at 0.25
    µm/px, the scale and speed of ``detector-synth`` (a 2048 px marrow ROI at 0.11 µm/px is 2 x 2 tiles),
    fine-tuned from its weights by default on real blood fields plus a synthetic cohort
    (:func:`~marrowscope.data.detection_datasets.marrow_recipe_samples`); wider colour and blur jitter than
    the other recipes (other labs' stains and optics), AdamW 5e-4, batch 4, cosine over ``epochs``.
    ``romanowsky``: the classifier's domain randomisation instead of that colour and blur jitter
    (:class:`~marrowscope.data.augment.AugmentConfig` ``romanowsky``)."""
    from marrowscope.data.detection_datasets import BLOOD_FIELD_MPP

    return DetectorTrainConfig(
        classes=classes, arch=DEFAULT_ARCH, mpp=0.25, tile_size=512, crop_size=384, epochs=epochs,
        batch_size=4, eval_every=2, lr=5e-4, weight_decay=1e-4, warmup_iters=50, seed=seed,
        num_threads=num_threads, checkpoint_every_s=180.0, max_minutes=max_minutes,
        augment=AugmentConfig(scale_range=(0.8, 1.25), stain_sigma=0.08, saturation=0.3, hue=0.05,
                              blur=0.3, blur_sigma=(0.3, 1.5), romanowsky=romanowsky),
        init_weights=init_weights, spec_params={"default_input_mpp": BLOOD_FIELD_MPP},
        select_classes=("cell",),
    )
