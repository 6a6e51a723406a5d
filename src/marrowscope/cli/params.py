"""Shared parse-time checks of CLI numbers and choices (typer callbacks): a bad value stops the command
with one line, e.g. ``Invalid value for '--epochs': must be at least 1, got 0``, before any work."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

import typer

N = TypeVar("N", int, float)


def at_least(lowest: float, *, above: bool = False) -> Callable[[Any], Any]:
    """``value >= lowest`` (``> lowest`` with ``above``); None (an unset optional) passes."""

    def check(value: N | None) -> N | None:
        if value is None:
            return value
        if value != value or (value <= lowest if above else value < lowest):  # NaN fails too
            word = "greater than" if above else "at least"
            raise typer.BadParameter(f"must be {word} {lowest:g}, got {value}")
        return value

    return check


def between(lowest: float, highest: float, *, open_high: bool = False) -> Callable[[Any], Any]:
    """``lowest <= value <= highest`` (``< highest`` with ``open_high``); None passes."""

    def check(value: float | None) -> float | None:
        if value is None:
            return value
        ok = lowest <= value < highest if open_high else lowest <= value <= highest
        if not ok:
            right = ")" if open_high else "]"
            raise typer.BadParameter(f"must be in [{lowest:g}, {highest:g}{right}, got {value}")
        return value

    return check


def one_of(*choices: Any) -> Callable[[Any], Any]:
    """The value must be one of ``choices`` (None passes)."""

    def check(value: Any) -> Any:
        if value is not None and value not in choices:
            raise typer.BadParameter(f"{value!r} is not one of {', '.join(map(str, choices))}")
        return value

    return check


POSITIVE = at_least(1)
NON_NEGATIVE = at_least(0)
POSITIVE_FLOAT = at_least(0.0, above=True)
NON_NEGATIVE_FLOAT = at_least(0.0)
PROBABILITY = between(0.0, 1.0)
FRACTION = between(0.0, 1.0, open_high=True)
def device(value: str | None) -> str | None:
    """``cpu``, ``cuda``, ``cuda:N`` or ``mps`` (``auto``: cuda when available); a GPU that is not there
    is refused here, not later (:func:`marrowscope.runtime.resolve_device` does the check)."""
    if value is None or value == "auto":
        return value
    from marrowscope.errors import InputError
    from marrowscope.runtime import resolve_device

    try:
        return resolve_device(value)
    except InputError as e:
        raise typer.BadParameter(e.problem) from e


def pixel_size(value: str | None) -> float | str | None:
    """``--mpp``: a positive number of µm/px, or ``auto`` (read from the slide's red cells where it has
    none); None passes."""
    if value is None or value.strip().lower() == "auto":
        return None if value is None else "auto"
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if not math.isfinite(number):
        raise typer.BadParameter(f"must be a pixel size in µm/px (e.g. 0.25) or 'auto', got {value!r}")
    return POSITIVE_FLOAT(number)
