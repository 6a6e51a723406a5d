"""CLI: ``marrowscope review OUT`` (a local web app to check and correct each differential)."""

from __future__ import annotations

from pathlib import Path

import typer

from marrowscope.cli.app import app

LOCALHOST = "127.0.0.1"


@app.command("review")
def review(
    out: Path = typer.Argument(..., help="Output folder of `marrowscope analyze` (one slide or a cohort)."),
    port: int = typer.Option(8765, "--port", min=0, max=65535, help="Port to listen on (0: any free port)."),
    host: str = typer.Option(
        LOCALHOST,
        "--host",
        help="Address to listen on; anything but 127.0.0.1 exposes the slides to the network.",
    ),
    reviewer: str | None = typer.Option(
        None, "--reviewer", help="Name recorded with every edit (default: login)."
    ),
) -> None:
    """Serve the review app: deep-zoom viewer, queue, gallery, live tally, corrections with an audit log."""
    from marrowscope.review.launch import open_review, reviewer_name

    who = reviewer or reviewer_name()
    server = open_review(out, host=host, port=port, reviewer=who)
    if host != LOCALHOST:
        typer.echo(
            f"WARNING: listening on {host}: anyone who can reach this address and has the token can read "
            "the slides and change the review; use the default 127.0.0.1 unless you mean it.",
            err=True,
        )
    typer.echo(f"reviewing {len(server.service.catalog.keys)} slide(s) in {out} as {who}")
    typer.echo(f"corrections and exports: {server.service.store.folder}")
    typer.echo(f"open {server.url}")
    typer.echo("Ctrl+C stops the server (every edit is already saved).")
    server.run()
