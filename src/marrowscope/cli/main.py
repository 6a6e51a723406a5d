"""Entry point: registers every command module and turns errors into one-line messages."""

from __future__ import annotations

import sys
import traceback

import click
import typer

from marrowscope.cli.app import STATE, app, hoist_global_flags
from marrowscope.errors import MarrowscopeError

try:  # typer >= 0.29 bundles its own copy of click with its own exception classes
    from typer._click import exceptions as _tclick
except ImportError:  # pragma: no cover - older typer uses click itself
    _tclick = click.exceptions  # type: ignore[assignment,misc]

_CLICK_ERRORS = (click.ClickException, _tclick.ClickException)
_EXITS = (click.exceptions.Exit, typer.Exit)
_ABORTS = (click.exceptions.Abort, typer.Abort)

# Each module adds its commands to ``app`` (or its train/evaluate groups) on import.
_COMMAND_MODULES = (
    "synth",
    "info",
    "fetch",
    "detector",
    "classifier",
    "diagnosis",
    "models",
    "analyze",
    "reproduce",
    "export",
    "review",
)


def _register() -> None:
    import importlib

    for name in _COMMAND_MODULES:
        importlib.import_module(f"marrowscope.cli.{name}")


def main(argv: list[str] | None = None) -> int:
    _register()
    args = hoist_global_flags(list(sys.argv[1:] if argv is None else argv))
    try:
        # without standalone mode, click returns the code of a ``typer.Exit(n)`` instead of exiting
        rv = app(args=args, prog_name="marrowscope", standalone_mode=False)
    except _EXITS as e:
        return int(e.exit_code or 0)
    except _CLICK_ERRORS as e:
        e.show()
        return int(e.exit_code)
    except _ABORTS:
        print("marrowscope: aborted", file=sys.stderr)
        return 130
    except MarrowscopeError as e:
        if STATE["debug"]:
            traceback.print_exc()
        print(f"marrowscope: error: {e}", file=sys.stderr)
        return e.exit_code
    except (OSError, ValueError) as e:
        if STATE["debug"]:
            traceback.print_exc()
        print(f"marrowscope: error: {e} (rerun with --debug for details)", file=sys.stderr)
        return 1
    return rv if isinstance(rv, int) else 0


if __name__ == "__main__":
    sys.exit(main())
