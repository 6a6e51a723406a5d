"""CLI: ``marrowscope train classifier``, ``marrowscope evaluate classifier`` and ``marrowscope quantize``."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from marrowscope.cli import params
from marrowscope.cli.app import app, evaluate_app, renamed_option, train_app
from marrowscope.models.inference import PRECISIONS

_DATASET_HELP = ("FORMAT:PATH with FORMAT pbc, imagefolder, synth, cohort or reviewed (an analyze output "
                 "folder reviewed with `marrowscope review`); for evaluation also bccd-wbc, matek or "
                 "txl-pbc[:SOURCE] (out-of-domain crop sets).")
_ARCH_HELP = "msresnet_s, msresnet_m, tv:<name> or timm:<name>."
_EVAL_OUT_HELP = "Output folder: metrics.json, confusion.png, predictions.csv."


def _precision(value: str) -> str:
    from marrowscope.errors import InputError

    if value not in ("fp32", "bf16", "fp16"):
        raise InputError("--precision", f"{value!r} is not fp32, bf16 or fp16")
    return value


@train_app.command("classifier")
def train_classifier_cmd(
    dataset: list[str] = typer.Option(..., "--dataset", help=_DATASET_HELP + " Repeat to train on several "
                                      "(e.g. real PBC crops and the synthetic cohort); each is split on "
                                      "its own."),
    out: Path = typer.Option(..., "--out", help="Output folder (checkpoints, classifier.pt, metrics)."),
    scheme: str | None = typer.Option(None, "--scheme", help="Class scheme (default: bmdeep33; pbc: the "
                                      "taxonomy classes PBC covers)."),
    arch: str = typer.Option("msresnet_s", "--arch", help=_ARCH_HELP),
    input_size: int = typer.Option(64, "--input-size", callback=params.at_least(8),
                                   help="Crop side in pixels (weights contract)."),
    model_mpp: float | None = typer.Option(
        None, "--model-mpp", callback=params.POSITIVE_FLOAT,
        help="µm/px of the model's crops (weights contract; default 0.45)."),
    old_mpp: float | None = typer.Option(None, "--mpp", hidden=True, callback=params.POSITIVE_FLOAT,
                                         help="Deprecated: --model-mpp."),
    epochs: int = typer.Option(50, "--epochs", callback=params.POSITIVE),
    batch_size: int = typer.Option(64, "--batch-size", callback=params.POSITIVE),
    lr: float = typer.Option(3e-3, "--lr", callback=params.POSITIVE_FLOAT),
    balance: str = typer.Option("sampler", "--balance", callback=params.one_of("sampler", "loss", "none"),
                               help="sampler, loss or none."),
    logit_adjust: float = typer.Option(0.0, "--logit-adjust", callback=params.NON_NEGATIVE_FLOAT,
                                       help="Logit adjustment tau (0 = off)."),
    val_fraction: float = typer.Option(0.2, "--val-fraction", callback=params.FRACTION),
    seed: int = typer.Option(0, "--seed", callback=params.NON_NEGATIVE),
    threads: int = typer.Option(1, "--threads", callback=params.POSITIVE, help="CPU threads for torch."),
    device: str | None = typer.Option(None, "--device", callback=params.device,
                                      help="cpu or cuda (default: cuda when present)."),
    max_minutes: float | None = typer.Option(None, "--max-minutes", callback=params.NON_NEGATIVE_FLOAT,
                                             help="Stop after a checkpoint once "
                                             "exceeded; rerun the same command to resume."),
    src_mpp: float | None = typer.Option(None, "--src-mpp", callback=params.POSITIVE_FLOAT,
                                          help="µm/px of crop images (pbc: 0.1)."),
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help="Cache of decoded crops."),
    eval_every: int = typer.Option(5, "--eval-every", callback=params.POSITIVE),
    no_resume: bool = typer.Option(False, "--no-resume", help="Ignore an existing checkpoint."),
    norm: str | None = typer.Option(None, "--norm", help="bn or gn (msresnet backbones; default bn)."),
    augment: str = typer.Option("basic", "--augment", help="basic or romanowsky (stain-space jitter in a "
                                "basis estimated from the data, resolution loss, JPEG)."),
    init_weights: str | None = typer.Option(None, "--init-weights", help="Fine-tune these weights (bundled "
                                            "name or file; same architecture and classes)."),
    precision: str = typer.Option("fp32", "--precision", help="fp32, bf16 or fp16 (mixed precision)."),
    synthetic_classes: str = typer.Option("all", "--synthetic-classes",
                                          callback=params.one_of("all", "missing"),
                                          help="With several datasets: all (every synthetic cell) or "
                                          "missing (only synthetic cells of classes no real dataset has)."),
    standardise: bool = typer.Option(False, "--standardise-colour",
                                     help="Colour-standardise every dataset (each synthetic slide) onto the "
                                     "training crops' stain statistics before training, and every slide or "
                                     "set at inference."),
) -> None:
    """Train a cell classifier (resumes from OUT/checkpoint.pt); under torchrun, on every process."""
    from marrowscope.engines.train_classifier import TrainConfig, train_from_dataset

    mpp = renamed_option(old_mpp, model_mpp, "--mpp", "--model-mpp")
    mpp = 0.45 if mpp is None else mpp
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, balance=balance, logit_adjust=logit_adjust,
                      seed=seed, num_threads=threads, device=device, max_minutes=max_minutes,
                      eval_every=eval_every, precision=_precision(precision))
    res = train_from_dataset(dataset[0] if len(dataset) == 1 else dataset, out, scheme=scheme, arch=arch,
                             input_size=input_size, mpp=mpp,
                             config=cfg, val_fraction=val_fraction, split_seed=seed, src_mpp=src_mpp,
                             cache_dir=cache_dir, resume=not no_resume, norm=norm, augment=augment,
                             init_weights=init_weights,
                             synthetic_classes=synthetic_classes, standardise=standardise)
    state = "finished" if res.train.finished else "stopped early (rerun to resume)"
    typer.echo(f"{state}: {res.train.epochs_done} epochs, {res.n_train} train / {res.n_val} val crops")
    typer.echo(f"weights: {res.weights}")
    if res.val_metrics:
        typer.echo("validation: " + json.dumps({k: round(v, 4) for k, v in res.val_metrics.items()}))


@evaluate_app.command("classifier")
def evaluate_classifier_cmd(
    weights: str = typer.Option(..., "--weights", help="Bundled model name or weights file."),
    dataset: str = typer.Option(..., "--dataset", help=_DATASET_HELP),
    out: Path = typer.Option(..., "--out", help=_EVAL_OUT_HELP),
    tta: int = typer.Option(8, "--tta", callback=params.one_of(1, 2, 4, 8),
                            help="Test-time views: 1, 2, 4 or 8."),
    scheme: str | None = typer.Option(None, "--scheme", help="Score in this class scheme (pbc: pbc8)."),
    threshold: float | None = typer.Option(None, "--threshold", callback=params.PROBABILITY,
                                           help="Uncertain below this probability."),
    src_mpp: float | None = typer.Option(None, "--src-mpp", callback=params.POSITIVE_FLOAT,
                                          help="µm/px of crop images (pbc: 0.1)."),
    precision: str = typer.Option("fp32", "--precision", callback=params.one_of(*PRECISIONS),
                                  help="Run the classifier at fp32 (the reference), bf16, int8 or auto "
                                       "(as analyze would)."),
) -> None:
    """Score a classifier on a labelled dataset at the dataset's granularity."""
    from marrowscope.engines.evaluate import evaluate_classifier

    rep = evaluate_classifier(weights, dataset, out, tta=tta, eval_scheme=scheme, src_mpp=src_mpp,
                              threshold=threshold, progress=True, precision=precision)
    auc = "n/a" if rep.macro_auc is None else f"{rep.macro_auc:.4f}"
    typer.echo(f"n={rep.n_images} macro F1 {rep.macro_f1:.4f}  macro AUC {auc}  "
               f"balanced accuracy {rep.balanced_accuracy:.4f}  ECE {rep.ece:.4f}")
    for note in rep.notes:
        typer.echo(f"note: {note}")
    typer.echo(f"metrics: {out / 'metrics.json'}")


@app.command("quantize")
def quantize_cmd(
    weights: str = typer.Option(..., "--weights", help="Bundled classifier name or weights file."),
    dataset: list[str] = typer.Option(..., "--dataset", help="The datasets the model was trained on, as "
                                      "given to `train classifier` (only their training parts are used)."),
    out: Path = typer.Option(..., "--out", help="Weights file to write (the input is never overwritten)."),
    max_crops: int = typer.Option(2048, "--max-crops", help="Crops to calibrate on (drawn per dataset)."),
    val_fraction: float = typer.Option(0.2, "--val-fraction", callback=params.PROBABILITY,
                                       help="As in training: the split whose validation part is left out."),
    split_seed: int = typer.Option(0, "--split-seed", help="As in training."),
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help="Crop cache (as in training)."),
) -> None:
    """Calibrate a classifier for int8 inference (`--precision int8`, and `auto` on CPUs without AMX)."""
    from marrowscope.engines.int8_calibration import calibrate_weights

    res = calibrate_weights(weights, dataset, out, max_crops=max_crops, val_fraction=val_fraction,
                            split_seed=split_seed, cache_dir=cache_dir)
    typer.echo(f"calibrated {res.n_ranges} activations on {res.n_crops} crops "
               f"({', '.join(f'{k}: {v}' for k, v in res.per_dataset.items())})")
    typer.echo(f"weights: {res.weights}")
