"""CLI: ``marrowscope info PATH`` prints what a slide, annotation file or cohort folder holds."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from marrowscope.cli import params
from marrowscope.cli.app import app
from marrowscope.io.inspect import format_summary, inspect_path, to_jsonable


@app.command("info")
def info(
    path: Path = typer.Argument(..., help="A slide (DICOM folder/file, MRXS, SVS, TIFF, PNG, WebP), an "
                                "annotation file (DICOM ANN, GeoJSON, dataset CSV, marrowscope's "
                                "cells.parquet or cells.csv) or a cohort folder."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    mpp: float | None = typer.Option(None, "--mpp", callback=params.POSITIVE_FLOAT,
                                     help="Pixel size (µm/px) for slides without one."),
    no_counts: bool = typer.Option(
        False, "--no-counts", help="Cohorts: read headers only (skip per-label counts)."
    ),
) -> None:
    """Print what a slide, annotation file or cohort folder holds."""
    summary = inspect_path(path, count_labels=not no_counts, mpp=mpp)
    if as_json:
        typer.echo(json.dumps(to_jsonable(summary), indent=2, sort_keys=False))
    else:
        typer.echo(format_summary(summary))
