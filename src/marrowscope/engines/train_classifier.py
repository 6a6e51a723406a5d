"""Training loop of the cell classifier.

- Imbalance: class-balanced sampling (``balance="sampler"``, weights ``1 / count ** balance_power``)
  or a class-balanced loss (``balance="loss"``), plus logit adjustment (``logit_adjust`` = tau: the
  training logits get ``tau * log(prior)`` added, so the model learns balanced posteriors).
- Targets: hard, soft (per-session expert votes) and set-valued (coarse labels, partial-label loss),
  see :mod:`marrowscope.data.classification_datasets`.
- Augmentation: :mod:`marrowscope.data.cell_augment` (rotation, flips, scale/shift, stain and colour
  jitter, blur, noise), on the training device.
- Deterministic under ``seed`` (the sampler and augmentation generators are seeded per epoch, so a
  resumed run continues exactly); a checkpoint after every epoch in ``out_dir/checkpoint.pt``;
  ``resume=True`` picks it up. An exponential moving average (EMA) of the weights is what gets saved.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

from marrowscope.data.cell_augment import AugmentConfig, augment_batch, center_crop
from marrowscope.data.classification_datasets import SET, CropSet
from marrowscope.engines.checkpoints import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from marrowscope.errors import InputError
from marrowscope.io.atomic import prepare_output_dir, write_text_atomic
from marrowscope.models.classifier import CellClassifier, create_classifier, save_classifier
from marrowscope.models.weights import WeightsSpec
from marrowscope.runtime import isolated_state

log = logging.getLogger(__name__)


DatasetPart = tuple[str, str, CropSet, dict[str, int]]  # (argument, format, crops, unmapped labels)

@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 60
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 5e-4
    warmup_epochs: int = 2
    label_smoothing: float = 0.05
    balance: str = "sampler"  # "sampler" | "loss" | "none"
    balance_power: float = 0.5
    logit_adjust: float = 0.0  # tau; 0 disables
    ema_decay: float = 0.995
    seed: int = 0
    num_threads: int = 1
    device: str | None = None  # None: cuda when available
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    eval_every: int = 1
    max_minutes: float | None = None  # stop (after a checkpoint) when exceeded; resume continues
    precision: str = "fp32"  # forward pass in fp32, bf16 or fp16 (autocast; fp16 with a GradScaler)


@dataclass(frozen=True)
class TrainResult:
    weights: Path  # final EMA weights (fp16)
    best_weights: Path | None
    epochs_done: int
    history: tuple[Mapping[str, float], ...]
    finished: bool


def _class_keys(ds: CropSet) -> list[str]:
    """One key per crop for balancing: its class, or the set of classes for SET rows."""
    keys = []
    for row, kind in zip(ds.targets, ds.target_kind, strict=True):
        if kind == SET:
            keys.append("|".join(ds.classes[i] for i in np.nonzero(row > 0)[0]))
        else:
            keys.append(ds.classes[int(row.argmax())])
    return keys


def sample_weights(ds: CropSet, power: float) -> np.ndarray:
    keys = _class_keys(ds)
    counts: dict[str, int] = {}
    for k in keys:
        counts[k] = counts.get(k, 0) + 1
    w = np.array([1.0 / counts[k] ** power for k in keys], dtype=np.float64)
    return w / w.sum()


def class_prior(ds: CropSet) -> np.ndarray:
    """Class frequencies (SET rows spread evenly over their classes), smoothed."""
    t = ds.targets / np.clip(ds.targets.sum(axis=1, keepdims=True), 1e-8, None)
    p = t.sum(axis=0) + 1.0
    return np.asarray(p / p.sum(), dtype=np.float64)


def classification_loss(
    logits: torch.Tensor, targets: torch.Tensor, kind: torch.Tensor, *, label_smoothing: float = 0.0,
    class_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean loss over a batch of hard/soft (cross-entropy) and set-valued (partial-label) targets."""
    logp = F.log_softmax(logits, dim=1)
    is_set = kind == SET
    t = targets / targets.sum(dim=1, keepdim=True).clamp_min(1e-8)
    if label_smoothing > 0:
        t = t * (1 - label_smoothing) + label_smoothing / logits.shape[1]
    ce = -(t * logp).sum(dim=1)
    masked = logp.masked_fill(targets <= 0, float("-inf"))
    set_loss = -torch.logsumexp(masked, dim=1)
    loss = torch.where(is_set, set_loss, ce)
    if class_weight is not None:
        w = (t * class_weight.view(1, -1)).sum(dim=1)
        return (loss * w).sum() / w.sum()
    return loss.mean()


def _lr_at(step: int, total: int, warmup: int, base: float) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    prog = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1 + math.cos(math.pi * min(1.0, prog)))


def _to_float(images: np.ndarray, idx: np.ndarray, device: str) -> torch.Tensor:
    x = torch.from_numpy(images[idx])
    if device.startswith("cuda"):  # pinned host memory: an asynchronous copy to the GPU
        x = x.pin_memory().to(device, non_blocking=True)
    else:
        x = x.to(device)
    return x.permute(0, 3, 1, 2).float() / 255.0


def predict_logits(clf: CellClassifier, images: np.ndarray, batch_size: int = 256,
                   net: torch.nn.Module | None = None) -> np.ndarray:
    """Centre-view logits of (N, S, S, 3) uint8 crops (S >= input size), no TTA."""
    m = net if net is not None else clf.net
    m.eval()
    mean = torch.tensor(clf.spec.mean, device=clf.device).view(1, 3, 1, 1)
    std = torch.tensor(clf.spec.std, device=clf.device).view(1, 3, 1, 1)
    out = []
    with torch.inference_mode():
        for s in range(0, len(images), batch_size):
            x = center_crop(_to_float(images, np.arange(s, min(s + batch_size, len(images))), clf.device),
                            clf.input_size)
            out.append(m((x - mean) / std).float().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, len(clf.classes)), dtype=np.float32)


def init_state_from(net: torch.nn.Module, init_net: torch.nn.Module, init_classes: tuple[str, ...],
                    classes: tuple[str, ...], *, source: str | Path = "init") -> int:
    """Load ``init_net``'s weights into ``net`` (same architecture); returns how many classes carried over.

    With the same classes every tensor is copied. With other classes (e.g. a PBC model's 11 classes
    starting a 33-class marrow model) the classification head (the last ``Linear`` layer) is copied row
    by row for the classes both lists hold, by name; the rows of the other classes keep ``net``'s fresh
    initialisation. Raises :class:`InputError` when no class is shared or another tensor does not fit."""
    own = net.state_dict()
    other = init_net.state_dict()
    if set(own) != set(other):
        raise InputError(source, "initial weights have other layers than the model to train")
    heads = [n for n, m in init_net.named_modules() if isinstance(m, torch.nn.Linear)]
    head = heads[-1] if heads else ""
    head_keys = {f"{head}.weight", f"{head}.bias"} if tuple(classes) != tuple(init_classes) else set()
    shared = [(classes.index(c), init_classes.index(c)) for c in classes if c in init_classes]
    if head_keys and not shared:
        raise InputError(source, f"initial weights share no class with {list(classes)}; start from "
                                 "weights with some of these classes or without --init-weights")
    dst = torch.tensor([d for d, _ in shared], dtype=torch.long)
    src = torch.tensor([s for _, s in shared], dtype=torch.long)
    state: dict[str, torch.Tensor] = {}
    for k, t in own.items():
        v = other[k].float() if other[k].is_floating_point() else other[k]
        if k in head_keys and v.shape[0] == len(init_classes) and t.shape[0] == len(classes):
            row = t.detach().clone()
            row[dst] = v[src].to(row.dtype)
            state[k] = row
        elif v.shape == t.shape:
            state[k] = v
        else:
            raise InputError(source, f"initial weights: layer {k} has shape {tuple(v.shape)}, the model "
                                     f"{tuple(t.shape)}")
    net.load_state_dict(state)
    return len(shared)


@isolated_state
def train_classifier(
    spec: WeightsSpec, train: CropSet, val: CropSet | None, out_dir: str | Path, config: TrainConfig,
    *, resume: bool = True, progress: bool = True,
    score_fn: Callable[[np.ndarray, CropSet], Mapping[str, float]] | None = None,
    select_metric: str = "macro_f1", init_weights: str | Path | None = None,
) -> TrainResult:
    """Train a classifier for ``spec`` on ``train``; checkpoints in ``out_dir``.

    ``score_fn(val_logits, val)`` returns validation metrics (default: accuracy and macro F1 over the
    model's classes on HARD rows); ``select_metric`` picks ``best.pt``. ``weights.pt`` is the last EMA.
    ``init_weights``: start from these weights (bundled name or file; same architecture and classes),
    i.e. fine-tune them.
    """
    from tqdm import tqdm

    from marrowscope.engines.distributed import (
        autocast,
        distributed_context,
        grad_scaler,
        rank_device,
        speed_settings,
    )

    if tuple(train.classes) != tuple(spec.classes):
        raise InputError("train", f"training classes {train.classes} differ from the spec {spec.classes}")
    if train.images.shape[1] < spec.pixel_size:
        raise InputError("train", f"crops of {train.images.shape[1]} px are smaller than the input size "
                                  f"{spec.input_size}")
    out = prepare_output_dir(out_dir)
    torch.set_num_threads(max(1, config.num_threads))
    device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dist = distributed_context(device)  # torchrun: this rank's share of each global batch, rank-0 writes
    device = rank_device(device, dist)
    speed_settings(device)
    torch.manual_seed(config.seed)
    np.random.seed(config.seed % (2**32))
    clf = create_classifier(spec, device=device, seed=config.seed)
    net = clf.net
    if init_weights is not None:
        from marrowscope.models.classifier import load_classifier

        init = load_classifier(init_weights, device=device)
        if init.spec.arch != spec.arch or init.spec.params.get("norm", "bn") != spec.params.get("norm", "bn"):
            raise InputError(init_weights, f"initial weights are {init.spec.arch}, not {spec.arch} with "
                                           f"norm {spec.params.get('norm', 'bn')}")
        mapped = init_state_from(net, init.net, init.spec.classes, spec.classes, source=init_weights)
        log.info("initialised from %s (%d of %d classes carried over)", init_weights, mapped,
                 len(spec.classes))
    ema = copy.deepcopy(net).eval()
    for p in ema.parameters():
        p.requires_grad_(False)
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    ddp = dist.wrap(net, device)
    scaler = grad_scaler(device, config.precision)
    n = len(train)
    steps_per_epoch = max(1, n // config.batch_size)
    total = steps_per_epoch * config.epochs
    ckpt_path = out / "checkpoint.pt"
    history: list[dict[str, float]] = []
    start_epoch = 0
    best = -math.inf
    if resume and ckpt_path.is_file():
        ck = load_checkpoint(ckpt_path, map_location=device)
        if ck.get("spec") != spec.to_dict() or ck.get("config") != _config_dict(config):
            raise InputError(ckpt_path, "checkpoint belongs to a different spec or config; use a new --out "
                                        "folder or remove the checkpoint")
        net.load_state_dict(ck["net"])
        ema.load_state_dict(ck["ema"])
        opt.load_state_dict(ck["opt"])
        start_epoch = int(ck["epoch"])
        history = list(ck["history"])
        best = float(ck["best"])
        if "rng" in ck:
            set_rng_state(ck["rng"])
        log.info("resumed from %s at epoch %d", ckpt_path, start_epoch)
    prior = torch.tensor(class_prior(train), dtype=torch.float32, device=device)
    adjust = config.logit_adjust * torch.log(prior) if config.logit_adjust > 0 else None
    cw = None
    if config.balance == "loss":
        cw = (1.0 / prior) ** config.balance_power
        cw = cw / cw.mean()
    probs = sample_weights(train, config.balance_power) if config.balance == "sampler" else None
    mean = torch.tensor(spec.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, device=device).view(1, 3, 1, 1)
    targets_all = torch.from_numpy(train.targets)
    kinds_all = torch.from_numpy(train.target_kind.astype(np.int64))
    size = spec.pixel_size
    t_start = time.time()
    finished = True
    for epoch in range(start_epoch, config.epochs):
        g = torch.Generator().manual_seed(config.seed * 100003 + epoch)
        torch.manual_seed(config.seed * 100003 + epoch)  # dropout: reproducible after a resume too
        rng = np.random.default_rng(config.seed * 100003 + epoch)
        n_draw = steps_per_epoch * config.batch_size
        order = (rng.choice(n, size=n_draw, replace=True, p=probs) if probs is not None
                 else rng.permutation(np.resize(np.arange(n), n_draw)))
        net.train()
        run_loss = 0.0
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch",
                   disable=not progress, leave=False)
        for b in bar:
            step = epoch * steps_per_epoch + b
            for gr in opt.param_groups:
                gr["lr"] = _lr_at(step, total, config.warmup_epochs * steps_per_epoch, config.lr)
            idx = order[b * config.batch_size : (b + 1) * config.batch_size]
            x = augment_batch(_to_float(train.images, idx, device), size, config.augment, g)
            if dist.enabled:  # the whole batch is drawn (same draws as one process); this rank's part used
                mine = dist.shard(range(len(idx)))
                x, idx = x[mine], idx[mine]
            with autocast(device, config.precision):
                logits = ddp((x - mean) / std)
            logits = logits.float()
            if adjust is not None:
                logits = logits + adjust
            loss = classification_loss(logits, targets_all[idx].to(device), kinds_all[idx].to(device),
                                       label_smoothing=config.label_smoothing, class_weight=cw)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            d = min(config.ema_decay, (1 + step) / (10 + step))
            with torch.no_grad():
                for pe, pn in zip(ema.state_dict().values(), net.state_dict().values(), strict=True):
                    if pe.dtype.is_floating_point:
                        pe.mul_(d).add_(pn.detach(), alpha=1 - d)
                    else:
                        pe.copy_(pn)
            run_loss += dist.mean(float(loss.item()))
            bar.set_postfix(loss=f"{run_loss / (b + 1):.3f}")
        rec: dict[str, float] = {"epoch": float(epoch + 1), "loss": run_loss / steps_per_epoch,
                                 "minutes": (time.time() - t_start) / 60}
        ema_clf = CellClassifier(net=ema, spec=spec, device=device)
        due = (epoch + 1) % config.eval_every == 0 or epoch + 1 == config.epochs
        if val is not None and len(val) and due:
            vl = predict_logits(ema_clf, val.images)
            rec.update((score_fn or default_score)(vl, val))
            if rec.get(select_metric, -math.inf) > best:
                best = rec[select_metric]
                if dist.is_main:
                    save_classifier(out / "best.pt", ema_clf, extra={"epoch": epoch + 1, **rec})
        history.append(rec)
        log.info("epoch %d: %s", epoch + 1, json.dumps(rec))
        if dist.is_main:
            save_checkpoint(ckpt_path, {"net": net.state_dict(), "ema": ema.state_dict(),
                                        "opt": opt.state_dict(), "epoch": epoch + 1, "history": history,
                                        "best": float(best), "spec": spec.to_dict(),
                                        "config": _config_dict(config), "rng": rng_state()})
            write_text_atomic(out / "history.json", json.dumps(history, indent=1) + "\n")
        over = config.max_minutes is not None and (time.time() - t_start) / 60 > config.max_minutes
        if dist.any(over) and epoch + 1 < config.epochs:  # every rank stops at the same epoch
            log.warning("time budget of %.0f min used at epoch %d; rerun to resume", config.max_minutes,
                        epoch + 1)
            finished = False
            break
    # again here: a run killed after its last checkpoint but before history.json resumes with no epoch left
    if dist.is_main:
        write_text_atomic(out / "history.json", json.dumps(history, indent=1) + "\n")
    ema_clf = CellClassifier(net=ema, spec=spec, device=device)
    if dist.is_main:
        save_classifier(out / "weights.pt", ema_clf, extra={"epochs": len(history)})
    dist.barrier()  # the other ranks see rank 0's files from here on
    best_path = out / "best.pt"
    return TrainResult(weights=out / "weights.pt", best_weights=best_path if best_path.is_file() else None,
                       epochs_done=len(history), history=tuple(history), finished=finished)


def default_score(logits: np.ndarray, ds: CropSet) -> dict[str, float]:
    from sklearn.metrics import f1_score

    hard = ds.target_kind != SET
    if not hard.any():
        return {}
    y = ds.targets[hard].argmax(axis=1)
    p = logits[hard].argmax(axis=1)
    return {"accuracy": float((y == p).mean()),
            "macro_f1": float(f1_score(y, p, average="macro", labels=np.unique(y), zero_division=0))}


def _config_dict(c: TrainConfig) -> dict[str, Any]:
    d = asdict(replace(c, max_minutes=None, num_threads=0, device=None))
    return json.loads(json.dumps(d))


# --- the dataset-level recipe (what `marrowscope train classifier` runs) ---------------------------------
@dataclass(frozen=True)
class DatasetTrainResult:
    weights: Path  # calibrated final weights (out_dir/classifier.pt)
    train: TrainResult
    n_train: int
    n_val: int
    temperature: float
    val_metrics: Mapping[str, Any]


def train_from_dataset(
    dataset: str | Sequence[str], out_dir: str | Path, *, scheme: str | None = None, arch: str | None = None,
    input_size: int | None = None, mpp: float | None = None, context: float = 1.25,
    config: TrainConfig | None = None, val_fraction: float = 0.2, split_seed: int = 0,
    eval_scheme: str | None = None, src_mpp: float | None = None, cache_dir: Path | None = None,
    uncertain_threshold: float = 0.5, resume: bool = True, progress: bool = True,
    norm: str | None = None, augment: str = "basic", init_weights: str | Path | None = None,
    synthetic_classes: str = "all", standardise: bool = False,
) -> DatasetTrainResult:
    """Load ``dataset`` (``FORMAT:PATH``, or several), split it by near-duplicate/patient groups, train,
    fit the temperature on the validation part (with 8-view TTA) and write ``out_dir/classifier.pt``
    plus ``out_dir/val/metrics.json``.

    ``pbc`` alone: classes default to the taxonomy classes PBC covers (:data:`PBC_CLASSES`), scored on
    the validation part at PBC's 8 groups (scheme ``pbc8``). Other formats, and several datasets:
    classes of ``scheme`` (default ``bmdeep33``).

    Several datasets (e.g. real PBC crops and the synthetic cohort): each is split on its own (same
    fraction and seed, so a dataset's validation part is the one it has when trained alone) and the
    parts are joined. ``synthetic_classes``: ``all`` keeps every cell of the ``synth`` datasets;
    ``missing`` keeps only the synthetic cells of classes that no other (real) dataset has.

    ``norm``: ``bn`` or ``gn`` for the ``msresnet`` backbones (stored in the weights' params).
    ``augment``: ``basic`` (the config's augmentation) or ``romanowsky`` (domain randomisation,
    :func:`~marrowscope.data.cell_augment.romanowsky_config`, with a stain basis estimated from the
    training crops); the basis and the training crops' colour statistics are stored in the weights
    (``params['stain_basis']``, ``params['colour_reference']``), and the OOD statistics of
    :mod:`marrowscope.engines.ood` (``params['ood']``). ``init_weights`` may have other classes (see
    :func:`init_state_from`).

    ``standardise``: colour standardisation at training **and** inference. Every training and
    validation unit (a real dataset's part as a whole; each slide, i.e. patient, of a ``synth``
    dataset) is mapped onto the training crops' colour reference with its own statistics before
    training, as inference maps each slide or set (``params['colour_standardise']``), so the network
    learns on the colours it will be shown. The OOD statistics stay on the unstandardised crops.
    """
    from marrowscope import taxonomy
    from marrowscope.data.classification_datasets import (
        PBC_CLASSES,
        concat_crop_sets,
        parse_dataset_arg,
        scheme_for_classes,
    )
    from marrowscope.models.classifier import DEFAULT_INPUT_SIZE, DEFAULT_MPP

    cfg = config or TrainConfig()
    names = [dataset] if isinstance(dataset, str) else list(dataset)
    if not names:
        raise InputError("--dataset", "no dataset given")
    if synthetic_classes not in ("all", "missing"):
        raise InputError(synthetic_classes, "unknown --synthetic-classes; use all or missing")
    parsed = [parse_dataset_arg(d) for d in names]
    size = int(input_size or DEFAULT_INPUT_SIZE)
    m = float(mpp or DEFAULT_MPP)
    if len(parsed) == 1 and parsed[0][0] == "pbc" and scheme is None:
        classes: tuple[str, ...] = PBC_CLASSES
        sch = scheme_for_classes(classes, "pbc_fine", "taxonomy classes covered by PBC (finest PBC level)")
        scheme_name = "pbc_fine"
        eval_scheme = eval_scheme or "pbc8"
    else:
        sch = taxonomy.load_scheme(scheme or "bmdeep33")
        classes, scheme_name = tuple(sch.classes), sch.name
    out = prepare_output_dir(out_dir)  # writable, stale temporaries gone: before the data is read
    parts = load_dataset_parts(names, classes, sch, mpp=m, size=size, context=context, src_mpp=src_mpp,
                               cache_dir=cache_dir, progress=progress,
                               synthetic_classes=synthetic_classes)
    splits = split_parts(parts, val_fraction, split_seed)
    units = colour_units(parts, splits) if standardise else None
    train = concat_crop_sets([t for t, _ in splits])
    val = concat_crop_sets([v for _, v in splits])
    record: dict[str, Any] = {"dataset": names[0] if len(names) == 1 else names, "val_fraction": val_fraction,
                              "split_seed": split_seed, "train": list(train.ids), "val": list(val.ids),
                              "unmapped": parts[0][3] if len(parts) == 1 else {n: u for n, _, _, u in parts}}
    if len(parts) > 1:
        record["synthetic_classes"] = synthetic_classes
        record["per_dataset"] = {n: {"train": len(t), "val": len(v)}
                                 for (n, _, _, _), (t, v) in zip(parts, splits, strict=True)}
    if int(os.environ.get("RANK", "0")) == 0:  # torchrun: rank 0 writes
        write_text_atomic(out / "split.json", json.dumps(record, indent=0) + "\n")
    desc = []
    for (name, f, _, _), (t, v) in zip(parts, splits, strict=True):
        kind = "synthetic cohort (marrowscope synth), " if f == "synth" else ""
        desc.append(f"{kind}{name}: {len(t)} training / {len(v)} validation crops")
    return train_calibrated(train, val, out, scheme=sch, scheme_name=scheme_name, arch=arch, input_size=size,
                            mpp=m, config=cfg, eval_scheme=eval_scheme,
                            uncertain_threshold=uncertain_threshold, resume=resume, progress=progress,
                            extra={"dataset": record["dataset"]}, training_data=(
                                "; ".join(desc) + f" (grouped split per dataset, validation fraction "
                                f"{val_fraction}, seed {split_seed})"),
                            norm=norm, augment=augment, init_weights=init_weights, colour_units=units)


def colour_units(parts: Sequence[DatasetPart], splits: Sequence[tuple[CropSet, CropSet]]
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(training, validation) colour-standardisation unit of every crop, in ``concat_crop_sets`` order:
    one unit per real dataset part, one per slide (patient group) of a ``synth`` part."""
    tr_u, va_u = [], []
    for k, ((_n, f, _d, _u), (t, v)) in enumerate(zip(parts, splits, strict=True)):
        base = k << 32
        tr_u.append(base + (t.groups if f == "synth" else np.zeros(len(t), np.int64)))
        va_u.append(base + (v.groups if f == "synth" else np.zeros(len(v), np.int64)))
    return (np.concatenate(tr_u).astype(np.int64), np.concatenate(va_u).astype(np.int64))


def load_dataset_parts(
    names: Sequence[str], classes: Sequence[str], sch: Any, *, mpp: float, size: int, context: float = 1.25,
    src_mpp: float | None = None, cache_dir: Path | None = None, progress: bool = True,
    synthetic_classes: str = "all",
) -> list[DatasetPart]:
    """Every ``FORMAT:PATH`` of ``names`` as training-size crops (``size * context`` px at ``mpp``)
    over ``classes``, as ``train classifier`` reads them (``synthetic_classes`` as there)."""
    from marrowscope.data.classification_datasets import load_image_dataset, parse_dataset_arg

    parsed = [parse_dataset_arg(d) for d in names]
    parts: list[DatasetPart] = []
    for name, (fmt, root) in zip(names, parsed, strict=True):
        if fmt in ("pbc", "imagefolder"):
            data, unmapped = load_image_dataset(fmt, root, classes, mpp=mpp, size=round(size * context),
                                                src_mpp=src_mpp, fit_size=size, cache_dir=cache_dir,
                                                progress=progress, scheme=sch)
        else:
            from marrowscope.data.classification_datasets import load_slide_dataset

            data, unmapped = load_slide_dataset(fmt, root, classes, mpp=mpp, size=round(size * context),
                                                scheme=sch, progress=progress)
        parts.append((name, fmt, data, unmapped))
    if synthetic_classes == "missing" and any(f != "synth" for _, f, _, _ in parts):
        real = np.zeros(len(classes), dtype=bool)
        for _, f, d, _ in parts:
            if f != "synth":
                real |= d.targets.max(axis=0) > 0
        for k, (name, f, d, unmapped) in enumerate(parts):
            if f == "synth":  # a synthetic cell stays when its main class has no real example
                keep = np.nonzero(~real[d.targets.argmax(axis=1)])[0]
                dropped = {"(class covered by real data)": len(d) - len(keep)}
                parts[k] = (name, f, d.subset(keep), {**unmapped, **dropped})
    return parts


def split_parts(parts: Sequence[DatasetPart], val_fraction: float, split_seed: int
                ) -> list[tuple[CropSet, CropSet]]:
    """(training, validation) of each part: its own grouped split (near-duplicate / patient groups)."""
    from marrowscope.data.classification_datasets import grouped_split

    out = []
    for _name, _f, d, _u in parts:
        tr_idx, va_idx = grouped_split(d.labels, d.groups, val_fraction, split_seed)
        out.append((d.subset(tr_idx), d.subset(va_idx)))
    return out


def train_calibrated(
    train: CropSet, val: CropSet, out_dir: str | Path, *, scheme: Any, scheme_name: str | None = None,
    arch: str | None = None, input_size: int | None = None, mpp: float | None = None,
    config: TrainConfig | None = None, eval_scheme: str | None = None, uncertain_threshold: float = 0.5,
    resume: bool = True, progress: bool = True, extra: Mapping[str, Any] | None = None,
    training_data: str | None = None,
    norm: str | None = None, augment: str = "basic", init_weights: str | Path | None = None,
    colour_units: tuple[np.ndarray, np.ndarray] | None = None,
) -> DatasetTrainResult:
    """Train on ``train`` crops (classes of ``scheme``), fit the temperature on ``val`` (8-view TTA) and
    write ``out_dir/classifier.pt`` (what :func:`train_from_dataset` and the ``reproduce`` study run).
    ``norm``, ``augment``, ``init_weights``: see :func:`train_from_dataset`. ``colour_units``: the
    (training, validation) standardisation unit of each crop; given, both are colour-standardised
    per unit before training and the weights ask for standardisation at inference."""
    from marrowscope import taxonomy
    from marrowscope.engines.classify import fit_temperature, softmax, tta_logits
    from marrowscope.models.classifier import (
        DEFAULT_ARCH,
        DEFAULT_INPUT_SIZE,
        DEFAULT_MPP,
        load_classifier,
        make_spec,
    )

    cfg = config or TrainConfig()
    sch = scheme
    scheme_name = scheme_name or sch.name
    classes = tuple(train.classes)
    size = int(input_size or DEFAULT_INPUT_SIZE)
    m = float(mpp or DEFAULT_MPP)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    scheme_def = {"name": sch.name, "classes": list(sch.classes), "mapping": dict(sch.mapping),
                  "description": sch.description}
    params: dict[str, Any] = {"scheme_def": scheme_def} if scheme_name not in taxonomy.list_schemes() else {}
    if norm is not None:
        params["norm"] = norm
    if augment not in ("basic", "romanowsky"):
        raise InputError(augment, "unknown augmentation recipe; use basic or romanowsky")
    from marrowscope.data.stain import colour_stats, estimate_stain_basis

    basis = estimate_stain_basis(train.images, seed=cfg.seed)
    params["stain_basis"] = basis.round(6).tolist()
    reference = colour_stats(train.images, basis)
    params["colour_reference"] = reference.to_dict()
    raw_train, raw_val = train, val  # the OOD statistics are fitted on these
    if colour_units is not None:
        from marrowscope.data.stain import standardise_units

        params["colour_standardise"] = True
        train = replace(train, images=standardise_units(train.images, colour_units[0], basis, reference))
        if len(val):
            val = replace(val, images=standardise_units(val.images, colour_units[1], basis, reference))
    if augment == "romanowsky":
        from marrowscope.data.cell_augment import romanowsky_config

        cfg = replace(cfg, augment=romanowsky_config(basis))
    spec = make_spec(classes, arch=arch or DEFAULT_ARCH, scheme=scheme_name, input_size=size, mpp=m,
                     params=params)
    score = _scheme_score(eval_scheme, classes) if eval_scheme else None
    res = train_classifier(spec, train, val if len(val) else None, out, cfg, resume=resume, progress=progress,
                           score_fn=score, init_weights=init_weights)
    if int(os.environ.get("RANK", "0")) != 0:  # torchrun: rank 0 calibrates and writes classifier.pt
        return DatasetTrainResult(weights=out / "classifier.pt", train=res, n_train=len(train),
                                  n_val=len(val), temperature=float("nan"), val_metrics={})
    clf = load_classifier(res.weights, device=cfg.device)
    temperature = 1.0
    metrics: dict[str, Any] = {}
    if len(val):
        from marrowscope.data.cell_augment import center_crop
        from marrowscope.engines.classify import classify_crops  # noqa: F401 - same path as prediction

        chw = torch.from_numpy(val.images).permute(0, 3, 1, 2)
        crops = center_crop(chw, size).permute(0, 2, 3, 1).numpy()
        logits = tta_logits(clf, np.ascontiguousarray(crops), tta=8)
        temperature = fit_temperature(logits, val.targets)
        metrics = dict((score or default_score)(np.log(softmax(logits, temperature) + 1e-12), val))
        metrics["temperature"] = temperature
        write_text_atomic(out / "val_metrics.json", json.dumps(metrics, indent=1) + "\n")
    clf = clf.with_params(temperature=temperature, uncertain_threshold=uncertain_threshold)
    if training_data is not None:  # the weights say what they were trained on
        clf = replace(clf, spec=replace(clf.spec, training_data=training_data))
    from marrowscope.engines.ood import has_features, with_ood_stats

    if has_features(clf):  # OOD statistics for analyze's per-slide score (engines.ood)
        clf = with_ood_stats(clf, raw_train, raw_val if len(raw_val) else None, seed=cfg.seed)
    from marrowscope.engines.distributed import device_record

    save_classifier(out / "classifier.pt", clf, extra={**dict(extra or {}), "run": device_record(clf.device),
                                                       "epochs": res.epochs_done, "augment": augment,
                                                       "init_weights": str(init_weights or ""),
                                                       "standardise_training": colour_units is not None,
                                                       "n_train": len(train), "n_val": len(val)})
    return DatasetTrainResult(weights=out / "classifier.pt", train=res, n_train=len(train), n_val=len(val),
                              temperature=temperature, val_metrics=metrics)


def _scheme_score(
    eval_scheme: str, classes: tuple[str, ...]
) -> Callable[[np.ndarray, CropSet], dict[str, float]]:
    """Validation score at the granularity of ``eval_scheme`` (probabilities summed into its classes)."""
    from marrowscope import taxonomy
    from marrowscope.engines.classify import softmax
    from marrowscope.eval.classification import (
        aggregate_probabilities,
        evaluate_probabilities,
        scheme_mapping,
    )

    sch = taxonomy.load_scheme(eval_scheme)
    eval_classes, mapping = scheme_mapping(classes, eval_scheme)

    def score(logits: np.ndarray, ds: CropSet) -> dict[str, float]:
        probs, cols, _ = aggregate_probabilities(softmax(logits), classes, eval_classes, mapping)
        truth = [sch.map_label(lab) for lab in ds.labels]
        keep = [i for i, t in enumerate(truth) if t is not None]
        rep = evaluate_probabilities(probs[keep], [str(truth[i]) for i in keep], cols)
        out = {"macro_f1": rep.macro_f1, "accuracy": rep.accuracy, "balanced_accuracy": rep.balanced_accuracy}
        if rep.macro_auc is not None:
            out["macro_auc"] = rep.macro_auc
        out.update({f"fine_{k}": v for k, v in default_score(logits, ds).items()})
        return out

    return score
