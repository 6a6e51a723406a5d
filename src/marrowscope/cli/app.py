"""The Typer application and its command groups; command modules register themselves here."""

from __future__ import annotations

import sys
from typing import TypeVar

import typer

from marrowscope.errors import InputError

#: ``-h`` beside ``--help`` on every command (click passes it on to every sub-context)
CONTEXT = {"help_option_names": ["-h", "--help"]}
#: options of the root command that may also be written after the subcommand (``marrowscope info -v X``)
GLOBAL_FLAGS = ("-v", "--verbose", "--debug")

app = typer.Typer(
    name="marrowscope",
    help="Bone-marrow aspirate smear slides to a differential count and a leukemia diagnosis suggestion.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings=CONTEXT,
)
train_app = typer.Typer(help="Train a model (detector, classifier, diagnosis).", no_args_is_help=True,
                        context_settings=CONTEXT)
evaluate_app = typer.Typer(help="Evaluate a model on a dataset.", no_args_is_help=True,
                           context_settings=CONTEXT)
app.add_typer(train_app, name="train")
app.add_typer(evaluate_app, name="evaluate")

STATE = {"debug": False}

T = TypeVar("T")


def renamed_option(old_value: T | None, new_value: T | None, old: str, new: str) -> T | None:
    """The value of an option renamed from ``old`` to ``new``: the old spelling still works, with a
    deprecation note on stderr; giving both with different values is an error."""
    if old_value is None:
        return new_value
    print(f"marrowscope: note: {old} is deprecated here, use {new} (same meaning)", file=sys.stderr)
    if new_value is not None and new_value != old_value:
        raise InputError(old, f"conflicts with {new}; give only {new}")
    return old_value


def _show_version(value: bool) -> None:
    if value:
        from marrowscope import __version__

        typer.echo(f"marrowscope {__version__}")
        raise typer.Exit(0)


def hoist_global_flags(argv: list[str]) -> list[str]:
    """Move ``-v``/``--verbose``/``--debug`` written after the subcommand to the front, so they work in
    either place (``marrowscope -v info X`` and ``marrowscope info X -v``). Arguments after ``--`` stay."""
    end = argv.index("--") if "--" in argv else len(argv)
    flags = [a for a in argv[:end] if a in GLOBAL_FLAGS]
    rest = [a for a in argv[:end] if a not in GLOBAL_FLAGS]
    return flags + rest + argv[end:]


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Full tracebacks on errors (also after the command)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress (also after the command)."),
    version: bool = typer.Option(False, "--version", is_eager=True, callback=_show_version,
                                 help="Print the version and exit."),
) -> None:
    import logging

    STATE["debug"] = debug
    logging.basicConfig(
        level=logging.DEBUG if debug else (logging.INFO if verbose else logging.WARNING),
        format="%(levelname)s %(name)s: %(message)s",
    )
