"""CSV cells safe to open in a spreadsheet, read back exactly by marrowscope's own readers.

A cell starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is a formula to Excel and
LibreOffice (``=HYPERLINK(...)`` from a slide id would be live), so writers prefix it with ``'`` (the
OWASP advice); numbers (``-1.5``, ``+3``) stay as they are. A cell that already starts with ``'`` gets a
second one, so :func:`unescape_cell` undoes :func:`escape_cell` exactly for every string.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pandas as pd

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_QUOTE = "'"


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def escape_cell(value: Any) -> Any:
    """``value`` with a leading ``'`` when a spreadsheet would run it as a formula (strings only)."""
    if not isinstance(value, str) or not value:
        return value
    if value.startswith(_QUOTE) or (value.startswith(_FORMULA_START) and not _is_number(value)):
        return _QUOTE + value
    return value


def unescape_cell(value: Any) -> Any:
    """The inverse of :func:`escape_cell`."""
    if isinstance(value, str) and len(value) > 1 and value[0] == _QUOTE and (
            value[1] == _QUOTE or value[1:].startswith(_FORMULA_START)):
        return value[1:]
    return value


def escape_row(row: Iterable[Any]) -> list[Any]:
    return [escape_cell(v) for v in row]


def escape_frame(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``df`` with text cells, column names and a text index escaped (numbers untouched)."""
    out = df.copy()
    for c in out.columns:
        if out[c].dtype == object or pd.api.types.is_string_dtype(out[c].dtype):
            out[c] = out[c].map(escape_cell)
    out.columns = [escape_cell(c) for c in out.columns]
    if out.index.dtype == object:
        out.index = out.index.map(escape_cell)
    return out


def unescape_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Undo :func:`escape_frame` on a frame read from a CSV marrowscope wrote (in place; returned)."""
    for c in df.columns:
        if df[c].dtype == object or pd.api.types.is_string_dtype(df[c].dtype):
            df[c] = df[c].map(unescape_cell)
    df.columns = [unescape_cell(c) for c in df.columns]
    return df
