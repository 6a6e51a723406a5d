"""CLI: ``marrowscope models``: the bundled models (name, task, classes, training data, size)."""

from __future__ import annotations

import json

import typer

from marrowscope.cli.app import app


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.0f} kB"


@app.command("models")
def models_cmd(
    as_json: bool = typer.Option(False, "--json", help="Print JSON (one object per model) for machines."),
) -> None:
    """List the models bundled with marrowscope."""
    from marrowscope.models.registry import list_models

    models = list_models()
    if as_json:
        rows = [
            {"name": m.name, "task": m.task, "classes": list(m.classes), "training_data": m.training_data,
             "size_bytes": m.size_bytes, "sha256": m.sha256, "path": str(m.path),
             "card": str(m.card) if m.card else None, "metrics": m.metrics, "description": m.description}
            for m in models
        ]
        typer.echo(json.dumps(rows, indent=2))
        return
    if not models:
        typer.echo("no bundled models")
        return
    for m in models:
        classes = ", ".join(m.classes) if len(m.classes) <= 6 else f"{len(m.classes)} classes"
        typer.echo(f"{m.name}  [{m.task}]  {_size(m.size_bytes)}")
        typer.echo(f"    classes: {classes}")
        typer.echo(f"    trained on: {m.training_data}")
        if m.metrics:
            shown = ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                              for k, v in list(m.metrics.items())[:4])
            typer.echo(f"    measured: {shown}")
