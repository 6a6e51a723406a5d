"""The slides of an ``analyze`` output folder, read through :mod:`marrowscope.report.load` (read-only).

A slide's id in the app is the name of its folder in OUT (``report.outputs.safe_name`` of its slide
id), so every URL names a folder that exists; anything else is unknown (404).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from marrowscope.errors import InputError
from marrowscope.report.outputs import SUMMARY
from marrowscope.report.results import SlideResult
from marrowscope.review.store import STORE_DIR


@dataclass(frozen=True)
class CatalogEntry:
    key: str  # the folder name: the slide's id in URLs
    folder: Path
    summary: Mapping[str, Any]

    @property
    def slide_id(self) -> str:
        return str(self.summary["slide"]["slide_id"])

    @property
    def target_cells(self) -> int | None:
        t = ((self.summary.get("run") or {}).get("config") or {}).get("target_cells")
        return None if t is None else int(t)


class SlideNotFound(InputError):
    """No slide of that id in the output folder (HTTP 404)."""


class Catalog:
    """Slide folders of ``out_dir`` (each with a ``summary.json``), loaded lazily and cached."""

    def __init__(self, out_dir: str | Path) -> None:
        from marrowscope.report.load import read_summary

        self.out_dir = Path(out_dir).resolve()
        if not self.out_dir.is_dir():
            raise InputError(out_dir, "no such folder; pass the --out folder of `marrowscope analyze`")
        if (self.out_dir / SUMMARY).is_file():
            raise InputError(
                out_dir,
                "this is the folder of one slide; pass its parent (the --out folder of "
                "`marrowscope analyze`)",
            )
        entries: dict[str, CatalogEntry] = {}
        for f in sorted(p for p in self.out_dir.iterdir() if p.is_dir() and p.name != STORE_DIR):
            if (f / SUMMARY).is_file():
                entries[f.name] = CatalogEntry(f.name, f, read_summary(f))
        if not entries:
            raise InputError(
                out_dir,
                "no analysed slide here (no <slide>/summary.json); run "
                "`marrowscope analyze SLIDES --out OUT` first",
            )
        self.entries = entries
        self._results: dict[str, SlideResult] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> CatalogEntry:
        e = self.entries.get(key)
        if e is None:
            raise SlideNotFound(key, "no such slide in this output folder")
        return e

    def result(self, key: str) -> SlideResult:
        """The model's :class:`SlideResult` of the slide (read once)."""
        from marrowscope.report.load import load_slide_result

        e = self.get(key)
        with self._lock:
            if key not in self._results:
                self._results[key] = load_slide_result(e.folder, e.summary)
            return self._results[key]

    @cached_property
    def keys(self) -> tuple[str, ...]:
        return tuple(self.entries)
