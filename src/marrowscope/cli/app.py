"""The Typer application and its command groups; command modules register themselves here."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="marrowscope",
    help="Bone-marrow aspirate smear slides to a differential count and a leukemia diagnosis suggestion.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
train_app = typer.Typer(help="Train a model (detector, classifier, diagnosis).", no_args_is_help=True)
evaluate_app = typer.Typer(help="Evaluate a model on a dataset.", no_args_is_help=True)
app.add_typer(train_app, name="train")
app.add_typer(evaluate_app, name="evaluate")

STATE = {"debug": False}


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress details."),
) -> None:
    import logging

    STATE["debug"] = debug
    logging.basicConfig(
        level=logging.DEBUG if debug else (logging.INFO if verbose else logging.WARNING),
        format="%(levelname)s %(name)s: %(message)s",
    )
