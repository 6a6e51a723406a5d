"""Helpers for the reader fuzz tests (tests/io/test_fuzz_readers.py and benchmarks/fuzz.py).

Mutations start from valid files written by the project's own writers: byte-level (truncation, byte
flips, inserted/deleted/duplicated bytes, a number or word replaced by a hostile token), and
structure-level for JSON (a value replaced by one of another type, a key removed) and CSV (a cell
replaced, a column dropped or renamed). :func:`outcome` runs a reader under a watchdog and accepts only
a result or the project's own one-line error.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import signal
from collections.abc import Callable, Iterator
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from marrowscope.errors import MarrowscopeError

# examples per reader: bounded in the default test run; benchmarks/fuzz.py raises it
EXAMPLES = int(os.environ.get("MARROWSCOPE_FUZZ_EXAMPLES", "100"))
# A reader that does not return within this many seconds counts as a hang (Hypothesis' own deadline is
# off: on a shared 2-core machine a loaded example can take a second without being a bug).
HANG_SECONDS = int(os.environ.get("MARROWSCOPE_FUZZ_HANG_SECONDS", "20"))

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=os.environ.get("MARROWSCOPE_FUZZ_RANDOM", "") == "",  # reproducible unless asked
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)

HOSTILE_TOKENS = (
    "", "nan", "NaN", "inf", "-inf", "Infinity", "1e309", "-1", "0", "-0", "1.5", "9" * 400, "null",
    "None", "true", "[]", "{}", '"', "'", ",", ";", "\\", "\x00", "\n", "é", "\ufeff", "=1+2", "0x10",
    "  ", "1,2", "<a>", "&amp;",
)


class Hang(BaseException):  # noqa: N818 - not an Exception, so a reader's `except Exception` cannot hide it
    """A reader ran past the watchdog."""


@contextlib.contextmanager
def watchdog(seconds: int = HANG_SECONDS) -> Iterator[None]:
    def on_alarm(*_: object) -> None:
        raise Hang(f"the reader did not return within {seconds} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def accepted(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> str:
    """``"ok"`` when ``fn`` returns, ``"error"`` when it raises a MarrowscopeError with a one-line message;
    anything else (another exception type, a multi-line or empty message) fails the test."""
    try:
        fn(*args, **kwargs)
    except MarrowscopeError as e:
        msg = str(e)
        assert msg.strip(), f"{type(e).__name__} with an empty message"
        assert "\n" not in msg and "\r" not in msg, f"message is not one line: {msg!r}"
        return "error"
    return "ok"


def outcome(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> str:
    """:func:`accepted` under the watchdog: a hang fails the test too."""
    with watchdog():
        return accepted(fn, *args, **kwargs)


# ------------------------------------------------------------------------------------------------ bytes

_TOKEN = re.compile(rb"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|[A-Za-z_]+")


@st.composite
def mutated_bytes(draw: st.DrawFn, seed: bytes, *, max_ops: int = 4, head: int | None = None) -> bytes:
    """``seed`` after 1..max_ops random edits; ``head`` limits edit positions to the first bytes."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, max_ops))):
        n = len(data)
        top = max(0, min(n, head) if head is not None else n)
        op = draw(st.sampled_from(("truncate", "flip", "insert", "delete", "duplicate", "token")))
        if op == "truncate":
            del data[draw(st.integers(0, n)):]
        elif op == "flip" and top:
            i = draw(st.integers(0, top - 1))
            data[i] ^= draw(st.integers(1, 255))
        elif op == "insert":
            i = draw(st.integers(0, top))
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete" and top:
            i = draw(st.integers(0, top - 1))
            del data[i : i + draw(st.integers(1, 64))]
        elif op == "duplicate" and top:
            i = draw(st.integers(0, top - 1))
            j = draw(st.integers(0, top))
            data[j:j] = data[i : i + draw(st.integers(1, 256))]
        elif op == "token":
            spans = [m.span() for m in _TOKEN.finditer(bytes(data[:top]))]
            if spans:
                a, b = draw(st.sampled_from(spans))
                data[a:b] = draw(st.sampled_from(HOSTILE_TOKENS)).encode("utf-8")
    return bytes(data)


# ------------------------------------------------------------------------------------------------ JSON

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12)
    | st.sampled_from(HOSTILE_TOKENS),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=12,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node[:6]):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def mutated_json(draw: st.DrawFn, seed: bytes, *, max_ops: int = 3) -> bytes:
    """``seed`` (JSON) with values replaced by others of any type, keys removed or list items dropped."""
    doc = json.loads(seed)
    for _ in range(draw(st.integers(1, max_ops))):
        paths = _paths(doc)
        path = draw(st.sampled_from(paths))
        if not path:
            if draw(st.booleans()):
                doc = draw(json_values)
            continue
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        last = path[-1]
        if draw(st.integers(0, 2)) == 0:
            del parent[last]
        else:
            parent[last] = draw(json_values)
    return json.dumps(doc).encode("utf-8")


# ------------------------------------------------------------------------------------------------ CSV


@st.composite
def mutated_csv(draw: st.DrawFn, seed: bytes, *, sep: str = ",", max_ops: int = 3) -> bytes:
    """``seed`` (CSV) with cells replaced, a column dropped or a header renamed."""
    rows = list(csv.reader(io.StringIO(seed.decode("utf-8-sig")), delimiter=sep))
    cell_text = st.sampled_from(HOSTILE_TOKENS) | st.text(max_size=10) | st.integers().map(str) \
        | st.floats().map(repr)
    for _ in range(draw(st.integers(1, max_ops))):
        if not rows or not rows[0]:
            break
        op = draw(st.sampled_from(("cell", "cell", "cell", "drop_column", "rename", "drop_row", "ragged")))
        ncol = len(rows[0])
        if op == "cell":
            r = draw(st.integers(0, len(rows) - 1))
            if rows[r]:
                rows[r][draw(st.integers(0, len(rows[r]) - 1))] = draw(cell_text)
        elif op == "drop_column":
            c = draw(st.integers(0, ncol - 1))
            rows = [[v for i, v in enumerate(row) if i != c] for row in rows]
        elif op == "rename":
            rows[0][draw(st.integers(0, ncol - 1))] = draw(cell_text)
        elif op == "drop_row" and len(rows) > 1:
            del rows[draw(st.integers(1, len(rows) - 1))]
        elif op == "ragged":
            r = draw(st.integers(0, len(rows) - 1))
            rows[r] = rows[r] + [draw(cell_text)] if draw(st.booleans()) else rows[r][:-1]
    buf = io.StringIO()
    csv.writer(buf, delimiter=sep, lineterminator="\n").writerows(rows)
    return buf.getvalue().encode("utf-8")


def text_mutations(seed: bytes, *, sep: str = ",") -> st.SearchStrategy[bytes]:
    return st.one_of(mutated_bytes(seed), mutated_csv(seed, sep=sep))
