"""CLI: ``marrowscope train detector`` and ``marrowscope evaluate detector``."""

from __future__ import annotations

from pathlib import Path

import typer

from marrowscope.cli import params
from marrowscope.cli.app import evaluate_app, renamed_option, train_app

_DATASET_HELP = (
    "FORMAT:PATH[:EXTRA] with FORMAT voc, yolo, coco or cohort. EXTRA is a split for voc/yolo "
    "(e.g. yolo:TXL_PBC:val; default all splits) or the images folder for coco."
)


@train_app.command("detector")
def train_detector_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="Run folder: checkpoints (last.pt, best.pt), history"),
    dataset: list[str] = typer.Option([], "--dataset", "-d", help=_DATASET_HELP + " Repeatable."),
    val_dataset: list[str] = typer.Option(
        [], "--val-dataset", help="Validation data (same syntax); default: a grouped split of --dataset."),
    recipe: str | None = typer.Option(
        None, "--recipe", callback=params.one_of("blood", "synth", "marrow"),
        help="'blood': detector-blood (BCCD + TXL-PBC under --data-root); 'synth': detector-synth "
             "(with --dataset cohort:DIR); 'marrow': detector-marrow (classes cell and red_cell; blood "
             "fields under --data-root + --dataset cohort:DIR written with synth --box-red-cells, "
             "fine-tuned from detector-synth)."),
    data_root: Path = typer.Option(Path("../shared/data"), "--data-root", help="Data folder for --recipe."),
    classes: str | None = typer.Option(
        None, "--classes", help="Comma-separated model classes (default: the dataset's; 'cell' for cohort)."),
    class_map: list[str] = typer.Option([], "--class-map", help="NAME=CLASS for dataset labels (repeatable)"),
    arch: str = typer.Option("fasterrcnn_mobilenet_v3_fpn", "--arch",
                             help="fasterrcnn_mobilenet_v3_fpn (CPU default) or fasterrcnn_resnet50_fpn."),
    model_mpp: float | None = typer.Option(
        None, "--model-mpp", callback=params.POSITIVE_FLOAT,
        help="µm/px the model works at (its weights' scale; default 0.15)."),
    old_mpp: float | None = typer.Option(None, "--mpp", hidden=True, callback=params.POSITIVE_FLOAT,
                                         help="Deprecated: --model-mpp."),
    input_mpp: float | None = typer.Option(
        None, "--input-mpp", callback=params.POSITIVE_FLOAT,
        help="µm/px of images that carry no pixel size (default: taken at --model-mpp)."),
    epochs: int | None = typer.Option(
        None, "--epochs", min=1, help="Epochs (default: the recipe's; 12 without a recipe)."),
    batch_size: int = typer.Option(8, "--batch-size", min=1),
    lr: float = typer.Option(1e-3, "--lr", callback=params.POSITIVE_FLOAT),
    val_fraction: float = typer.Option(0.1, "--val-fraction", callback=params.FRACTION,
                                       help="Grouped validation split of --dataset."),
    seed: int = typer.Option(0, "--seed", callback=params.NON_NEGATIVE),
    threads: int = typer.Option(1, "--threads", min=1, help="CPU threads (1 is best on a busy machine)."),
    max_minutes: float | None = typer.Option(
        None, "--max-minutes", callback=params.NON_NEGATIVE_FLOAT,
        help="Stop after this long (resumable: run the same command again)"),
    no_resume: bool = typer.Option(False, "--no-resume", help="Start over even if OUT/last.pt exists."),
    device: str | None = typer.Option(None, "--device", callback=params.device,
                                      help="cpu or cuda (default: cuda when present)."),
    init_weights: Path | None = typer.Option(
        None, "--init-weights",
        help="Start from these detector weights (same architecture and scale; with other classes the box "
             "predictor starts fresh), e.g. to fine-tune."),
    backbone_weights: Path | None = typer.Option(
        None, "--backbone-weights", help="Optional local ImageNet state dict for the backbone."),
    precision: str = typer.Option("fp32", "--precision", help="fp32, bf16 or fp16 (mixed precision)."),
    workers: int = typer.Option(0, "--workers", min=0,
                                help="DataLoader processes augmenting ahead (same results for any number)."),
    augment: str | None = typer.Option(
        None, "--augment", callback=params.one_of("basic", "romanowsky"),
        help="Photometric augmentation: 'basic' (colour, HED stain and blur jitter) or 'romanowsky' "
             "(stain-space jitter in a basis estimated from the training images, hue/saturation/gamma, blur, "
             "resolution loss, noise, JPEG). Default: the recipe's."),
) -> None:
    """Train a Faster R-CNN cell detector (from scratch by default); resumes from OUT/last.pt.
    Under ``torchrun --nproc_per_node N -m marrowscope train detector ...`` each process trains on its
    share of every batch (DistributedDataParallel); rank 0 writes the checkpoints."""
    from dataclasses import replace

    from marrowscope.cli.classifier import _precision
    from marrowscope.engines.detector_runs import DetectorRunRequest, parse_class_map, prepare_detector_run
    from marrowscope.engines.train_detector import train_detector

    mpp = renamed_option(old_mpp, model_mpp, "--mpp", "--model-mpp")
    run = prepare_detector_run(DetectorRunRequest(
        datasets=tuple(dataset), val_datasets=tuple(val_dataset), recipe=recipe, data_root=data_root,
        classes=tuple(c.strip() for c in classes.split(",") if c.strip()) if classes else None,
        class_map=parse_class_map(class_map), arch=arch, model_mpp=0.15 if mpp is None else mpp,
        input_mpp=input_mpp, epochs=epochs, batch_size=batch_size, lr=lr, val_fraction=val_fraction,
        seed=seed, threads=threads, max_minutes=max_minutes, device=device,
        init_weights=str(init_weights) if init_weights else None,
        backbone_weights=str(backbone_weights) if backbone_weights else None, augment=augment,
    ))
    train, val, cfg = run.train, run.val, run.config
    cfg = replace(cfg, precision=_precision(precision), workers=workers)
    typer.echo(f"training {cfg.arch} on {len(train)} images (validation {len(val)}), classes "
               f"{', '.join(cfg.classes)}, {cfg.epochs} epochs at {cfg.mpp} µm/px -> {out}", err=True)
    res = train_detector(train, val, cfg, out, resume=not no_resume)
    last = res.history[-1] if res.history else None
    if not res.finished:
        typer.echo(f"stopped after --max-minutes; run the same command to resume ({res.last_checkpoint})")
        return
    ap = f", validation AP@0.5 {last.val_ap50:.3f}" if last and last.val_ap50 is not None else ""
    typer.echo(f"done in {res.train_seconds / 60:.1f} min{ap}; best weights: {res.best_weights}")


@evaluate_app.command("detector")
def evaluate_detector_cmd(
    weights: str = typer.Option(..., "--weights", "-w", help="Weights file or bundled model name."),
    dataset: str = typer.Option(..., "--dataset", "-d", help=_DATASET_HELP),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for metrics.json, pr_curve.png, examples/."),
    mpp: float | None = typer.Option(
        None, "--mpp", callback=params.POSITIVE_FLOAT,
        help="µm/px of the images (default: their own, else the weights' default)."),
    threshold: float | None = typer.Option(
        None, "--threshold", callback=params.PROBABILITY,
        help="Score threshold for precision/recall (default: the weights')."),
    class_map: list[str] = typer.Option([], "--class-map", help="NAME=CLASS for dataset labels (repeatable)"),
    batch_size: int = typer.Option(4, "--batch-size", min=1),
    examples: int = typer.Option(4, "--examples", min=0, help="Images drawn with true and predicted boxes."),
    device: str | None = typer.Option(None, "--device", callback=params.device,
                                      help="cpu or cuda (default: cuda when present)."),
) -> None:
    """AP@0.5, COCO AP@[.5:.95], per class, precision/recall at the threshold; writes OUT/metrics.json."""
    from marrowscope.engines.detector_runs import evaluate_detector_on_dataset, parse_class_map

    m = evaluate_detector_on_dataset(
        weights, dataset, out, image_mpp=mpp,
        threshold=threshold, class_map=parse_class_map(class_map), batch_size=batch_size, examples=examples,
        device=device,
    )
    per = ", ".join(f"{c} {v:.3f}" for c, v in m.ap50_per_class.items() if v == v)
    typer.echo(f"{m.n_images} images: AP@0.5 {m.ap50:.3f} ({per}); AP@[.5:.95] {m.ap:.3f}; "
               f"precision {m.precision:.3f}, recall {m.recall:.3f} at score {m.threshold:.2f}; wrote {out}")
