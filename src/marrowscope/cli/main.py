"""Entry point: registers every command module and turns errors into one-line messages."""

from __future__ import annotations

import sys
import traceback

import click

from marrowscope.cli.app import STATE, app
from marrowscope.errors import MarrowscopeError

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
)


def _register() -> None:
    import importlib

    for name in _COMMAND_MODULES:
        importlib.import_module(f"marrowscope.cli.{name}")


def main(argv: list[str] | None = None) -> int:
    _register()
    try:
        app(args=argv, standalone_mode=False)
    except click.exceptions.Exit as e:
        return int(e.exit_code or 0)
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except click.exceptions.Abort:
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
