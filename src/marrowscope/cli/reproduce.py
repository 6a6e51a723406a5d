"""CLI: ``marrowscope reproduce``: the paper's study, stage by stage, resumable."""

from __future__ import annotations

from pathlib import Path

import typer

from marrowscope.cli.app import app


@app.command("reproduce")
def reproduce_cmd(
    data: Path = typer.Option(
        ..., "--data", "-d", help="Cohort folder as `marrowscope fetch` (or synth) writes it."
    ),
    out: Path = typer.Option(
        ...,
        "--out",
        "-o",
        help="Study folder: splits.csv, one folder per stage, reproduction.json and reproduction.md.",
    ),
    splits: Path | None = typer.Option(
        None, "--splits", help="Reuse this split CSV (patient_id,diagnosis,split)."
    ),
    stages: str = typer.Option(
        ",".join(("split", "detector", "classifier", "diagnosis")),
        "--stages",
        help="Comma-separated stages to run (the ones they need run too, or are reused).",
    ),
    device: str | None = typer.Option(None, "--device", help="cpu or cuda (default: cuda when present)."),
    threads: int = typer.Option(1, "--threads", min=1, help="CPU threads for torch."),
    quick: bool = typer.Option(False, "--quick", help="A short schedule for tests (numbers mean nothing)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the split and of every model."),
    precision: str = typer.Option("fp32", "--precision", help="fp32, bf16 or fp16 for the training stages."),
    workers: int = typer.Option(
        0, "--workers", min=0, help="DataLoader processes for detector augmentation."
    ),
) -> None:
    """Reproduce the paper's results table; stages whose inputs and config are unchanged are skipped."""
    from dataclasses import replace

    from marrowscope.cli.classifier import _precision
    from marrowscope.study.reproduce import ReproduceConfig, reproduce

    cfg = ReproduceConfig.quick_config(seed) if quick else ReproduceConfig(seed=seed)
    p = _precision(precision)
    cfg = replace(
        cfg,
        detector=replace(cfg.detector, precision=p, workers=workers),
        classifier=replace(cfg.classifier, precision=p),
    )
    res = reproduce(
        data,
        out,
        cfg,
        stages=[s.strip() for s in stages.split(",") if s.strip()],
        splits_file=splits,
        device=device,
        threads=threads,
    )
    if res is None:  # torchrun: a rank other than 0, done once the models are trained
        return
    for w in res.warnings:
        typer.echo(f"warning: {w}", err=True)
    r = res.results
    for key in (
        "detection_ap50",
        "classification_macro_auc",
        "classification_macro_f1",
        "diagnosis_macro_f1_true",
        "diagnosis_macro_f1_predicted",
    ):
        ours, paper = r.get(key), r["paper"].get(key)
        if ours is not None:
            typer.echo(f"{key:<30} ours {ours:.3f}   paper {paper if paper is not None else '—'}")
    for name, rec in res.records.items():
        typer.echo(f"stage {name:<11} {'skipped (unchanged)' if rec.skipped else f'{rec.seconds:.0f} s'}")
    typer.echo(f"wrote {res.json_path} and {res.md_path}")
