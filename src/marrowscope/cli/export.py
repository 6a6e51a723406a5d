"""CLI: ``marrowscope export OUT --format dataset-csv``: analyze outputs in the dataset's CSV frame."""

from __future__ import annotations

from pathlib import Path

import typer

from marrowscope.cli.app import app


@app.command("export")
def export_cmd(
    out: Path = typer.Argument(..., help="An analyze --out folder (or one slide's folder in it)."),
    fmt: str = typer.Option("dataset-csv", "--format", help="dataset-csv: predictions in the dataset "
                            "cells CSV (MRXS) frame, to join with its labels by cell_id or box."),
    to: Path | None = typer.Option(None, "--to",
                                   help="Output file (default OUT/predictions_dataset_frame.csv)."),
) -> None:
    """Export predictions in another coordinate frame."""
    from marrowscope.errors import InputError
    from marrowscope.report.export import FORMATS, export_dataset_csv

    if fmt not in FORMATS:
        raise InputError(fmt, f"unknown export format; choose one of {', '.join(FORMATS)}")
    res = export_dataset_csv(out, to)
    for folder, why in res.skipped:
        typer.echo(f"skipped {folder}: {why}", err=True)
    typer.echo(f"{res.n_cells} cells of {len(res.slides)} slide(s) in the dataset CSV frame: {res.path}")
