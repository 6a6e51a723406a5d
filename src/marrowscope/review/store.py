"""The correction layer: one SQLite file beside the model's outputs, one transaction per edit.

``OUT/marrowscope-review/review.sqlite`` holds three tables:

* ``edits``: the audit log, append-only: who, when, which cell, old → new (state, label, box).
* ``cells``: the current correction of each edited cell (cells never edited keep the model's label and
  are ``pending``), with a version number that every edit increments.
* ``slides``: the slide's review status (``in review`` after the first edit, ``validated`` once locked)
  with the reviewer and the time.

Every edit runs in one ``BEGIN IMMEDIATE`` transaction (WAL journal, ``synchronous=FULL``): it is on
disk when the call returns, a killed server loses at most the edit in flight, and edits from several
browser tabs or processes are serialised. An edit may carry the version of the cell it was based on;
a stale version is refused (:class:`EditConflict`), so one tab never silently overwrites another's
edit of the same cell. Edits of different cells never conflict.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from marrowscope.errors import MarrowscopeError

STORE_DIR = "marrowscope-review"
DB_NAME = "review.sqlite"

#: Review states of a cell. ``pending``: the model's label, not looked at; ``accepted``: the label was
#: confirmed; ``reclassified``: the reviewer changed it; ``added``: a cell the detector missed;
#: ``deleted``: a false detection (or a removed added cell); ``not_identifiable`` / ``not_counted``:
#: kept out of the denominator and reported.
STATES: tuple[str, ...] = (
    "pending",
    "accepted",
    "reclassified",
    "added",
    "deleted",
    "not_identifiable",
    "not_counted",
)
EXCLUDED_STATES: frozenset[str] = frozenset({"deleted", "not_identifiable", "not_counted"})
SLIDE_STATUSES: tuple[str, ...] = ("not reviewed", "in review", "validated")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS edits (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    slide TEXT NOT NULL,
    cell_id INTEGER,
    action TEXT NOT NULL,
    old_state TEXT, new_state TEXT,
    old_label TEXT, new_label TEXT,
    box TEXT,
    reviewer TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS edits_slide ON edits (slide, seq);
CREATE TABLE IF NOT EXISTS cells (
    slide TEXT NOT NULL,
    cell_id INTEGER NOT NULL,
    state TEXT NOT NULL,
    label TEXT,
    box TEXT,
    version INTEGER NOT NULL,
    PRIMARY KEY (slide, cell_id)
);
CREATE TABLE IF NOT EXISTS slides (
    slide TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    reviewer TEXT,
    at TEXT,
    validated_at TEXT
);
"""


class EditConflict(MarrowscopeError):
    """The edit was based on an outdated version of the cell, or the slide is validated (HTTP 409)."""


class EditRejected(MarrowscopeError):
    """The edit is not valid (unknown state, missing label...; HTTP 422)."""


@dataclass(frozen=True)
class CellCorrection:
    """The reviewer's current word on one cell. ``box`` only for added cells (level-0 x1, y1, x2, y2)."""

    cell_id: int
    state: str
    label: str | None
    version: int
    box: tuple[float, float, float, float] | None = None


@dataclass(frozen=True)
class SlideReview:
    slide: str
    status: str
    reviewer: str | None = None
    at: str | None = None
    validated_at: str | None = None


@dataclass(frozen=True)
class Edit:
    """One row of the audit log."""

    seq: int
    slide: str
    cell_id: int | None
    action: str
    old_state: str | None
    new_state: str | None
    old_label: str | None
    new_label: str | None
    box: tuple[float, float, float, float] | None
    reviewer: str
    at: str


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _box(text: str | None) -> tuple[float, float, float, float] | None:
    if not text:
        return None
    v = json.loads(text)
    return (float(v[0]), float(v[1]), float(v[2]), float(v[3]))


class ReviewStore:
    """Corrections of every slide of one output folder (see the module docstring)."""

    def __init__(self, out_dir: str | Path) -> None:
        self.folder = Path(out_dir) / STORE_DIR
        self.path = self.folder / DB_NAME
        self.folder.mkdir(exist_ok=True)
        self._local = threading.local()  # one connection per thread (the server's worker threads)
        with self._connect() as con:
            con.executescript(_SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        con: sqlite3.Connection | None = getattr(self._local, "con", None)
        if con is None:
            con = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=True)
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=FULL")
            self._local.con = con
        yield con

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    # ------------------------------------------------------------------------------------------ reading

    def corrections(self, slide: str) -> dict[int, CellCorrection]:
        with self._connect() as con:
            rows = con.execute(
                "SELECT cell_id, state, label, version, box FROM cells WHERE slide = ?", (slide,)
            ).fetchall()
        return {int(r[0]): CellCorrection(int(r[0]), r[1], r[2], int(r[3]), _box(r[4])) for r in rows}

    def review(self, slide: str) -> SlideReview:
        with self._connect() as con:
            r = con.execute(
                "SELECT status, reviewer, at, validated_at FROM slides WHERE slide = ?", (slide,)
            ).fetchone()
        return SlideReview(slide, "not reviewed") if r is None else SlideReview(slide, r[0], r[1], r[2], r[3])

    def audit_log(self, slide: str | None = None) -> list[Edit]:
        q = (
            "SELECT seq, slide, cell_id, action, old_state, new_state, old_label, new_label, box, "
            "reviewer, at "
            "FROM edits" + (" WHERE slide = ?" if slide is not None else "") + " ORDER BY seq"
        )
        with self._connect() as con:
            rows = con.execute(q, (slide,) if slide is not None else ()).fetchall()
        return [Edit(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], _box(r[8]), r[9], r[10]) for r in rows]

    # ------------------------------------------------------------------------------------------ editing

    def _check_open(self, con: sqlite3.Connection, slide: str) -> None:
        r = con.execute(
            "SELECT status, reviewer, validated_at FROM slides WHERE slide = ?", (slide,)
        ).fetchone()
        if r is not None and r[0] == "validated":
            raise EditConflict(f"slide {slide} was validated by {r[1]} on {r[2]}; it is locked")

    def _touch(self, con: sqlite3.Connection, slide: str, reviewer: str, at: str) -> None:
        con.execute(
            "INSERT INTO slides (slide, status, reviewer, at) VALUES (?, 'in review', ?, ?) "
            "ON CONFLICT(slide) DO UPDATE SET status = 'in review', reviewer = excluded.reviewer, "
            "at = excluded.at",
            (slide, reviewer, at),
        )

    def _log(
        self,
        con: sqlite3.Connection,
        slide: str,
        cell_id: int | None,
        action: str,
        old: CellCorrection | None,
        new: CellCorrection | None,
        reviewer: str,
        at: str,
    ) -> None:
        box = new.box if new is not None and new.box is not None else (old.box if old is not None else None)
        con.execute(
            "INSERT INTO edits (slide, cell_id, action, old_state, new_state, old_label, new_label, box, "
            "reviewer, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                slide,
                cell_id,
                action,
                None if old is None else old.state,
                None if new is None else new.state,
                None if old is None else old.label,
                None if new is None else new.label,
                None if box is None else json.dumps(list(box)),
                reviewer,
                at,
            ),
        )

    def set_cell(
        self,
        slide: str,
        cell_id: int,
        *,
        state: str,
        label: str | None,
        reviewer: str,
        model_label: str | None,
        action: str,
        expected_version: int | None = None,
        is_added: bool = False,
    ) -> CellCorrection:
        """Record the reviewer's new ``state`` / ``label`` for one cell (model or added) in one transaction.

        ``model_label``: the model's label of the cell (the state of a never-edited cell); ``is_added``
        says the cell exists only in the correction layer. ``expected_version``: the version the client
        saw (0 for a never-edited cell); another version raises :class:`EditConflict`."""
        if state not in STATES:
            raise EditRejected(f"unknown review state {state!r}; use one of {', '.join(STATES)}")
        with self._transaction() as con:
            self._check_open(con, slide)
            r = con.execute(
                "SELECT cell_id, state, label, version, box FROM cells WHERE slide = ? AND cell_id = ?",
                (slide, cell_id),
            ).fetchone()
            old = (
                CellCorrection(int(r[0]), r[1], r[2], int(r[3]), _box(r[4]))
                if r is not None
                else CellCorrection(cell_id, "pending", model_label, 0)
            )
            if is_added and r is None:
                raise EditRejected(f"cell {cell_id} does not exist on slide {slide}")
            if expected_version is not None and expected_version != old.version:
                raise EditConflict(
                    f"cell {cell_id} was changed meanwhile (version {old.version}, this edit was based on "
                    f"version {expected_version}: now {old.state} {old.label or ''}); reload and edit again"
                )
            new = CellCorrection(cell_id, state, label, old.version + 1, old.box)
            at = _now()
            con.execute(
                "INSERT INTO cells (slide, cell_id, state, label, box, version) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(slide, cell_id) DO UPDATE SET state = excluded.state, label = excluded.label, "
                "version = excluded.version",
                (
                    slide,
                    cell_id,
                    state,
                    label,
                    None if old.box is None else json.dumps(list(old.box)),
                    new.version,
                ),
            )
            self._log(con, slide, cell_id, action, old, new, reviewer, at)
            self._touch(con, slide, reviewer, at)
        return new

    def add_cell(
        self,
        slide: str,
        box: tuple[float, float, float, float],
        label: str,
        reviewer: str,
        first_free_id: int,
    ) -> CellCorrection:
        """A cell the detector missed; its id is the next free one (at least ``first_free_id``)."""
        with self._transaction() as con:
            self._check_open(con, slide)
            top = con.execute("SELECT MAX(cell_id) FROM cells WHERE slide = ?", (slide,)).fetchone()[0]
            cell_id = max(first_free_id, -1 if top is None else int(top) + 1)
            new = CellCorrection(cell_id, "added", label, 1, box)
            con.execute(
                "INSERT INTO cells (slide, cell_id, state, label, box, version) VALUES (?, ?, ?, ?, ?, ?)",
                (slide, cell_id, "added", label, json.dumps(list(box)), 1),
            )
            at = _now()
            self._log(con, slide, cell_id, "add", None, new, reviewer, at)
            self._touch(con, slide, reviewer, at)
        return new

    def validate(self, slide: str, reviewer: str) -> SlideReview:
        """Lock the slide: no further edits; records who validated it and when."""
        with self._transaction() as con:
            self._check_open(con, slide)
            at = _now()
            con.execute(
                "INSERT INTO slides (slide, status, reviewer, at, validated_at) "
                "VALUES (?, 'validated', ?, ?, ?) "
                "ON CONFLICT(slide) DO UPDATE SET status = 'validated', reviewer = excluded.reviewer, "
                "at = excluded.at, validated_at = excluded.validated_at",
                (slide, reviewer, at, at),
            )
            self._log(con, slide, None, "validate", None, None, reviewer, at)
        return SlideReview(slide, "validated", reviewer, at, at)

    def counts_by_slide(self) -> Mapping[str, int]:
        """Number of edits per slide (for the cohort page)."""
        with self._connect() as con:
            rows = con.execute("SELECT slide, COUNT(*) FROM edits WHERE cell_id IS NOT NULL GROUP BY slide")
            return {str(r[0]): int(r[1]) for r in rows.fetchall()}
