"""A stage runner keyed by a fingerprint of each stage's inputs and config.

A stage is a function of a folder: ``run(name, inputs, fn)`` hashes ``inputs`` (canonical JSON: the
config that shapes the result, the hashes of the input files, the results of earlier stages it uses)
into a fingerprint and calls ``fn(OUT/<name>/<fingerprint[:12]>)``. The stage writes everything there
(training checkpoints included, so an interrupted stage resumes inside the same folder) and returns a
JSON-able result, which is stored as ``stage.json`` beside its outputs. A later run with the same
fingerprint finds ``stage.json`` and skips the stage; a changed input or config gets a new folder, so
nothing computed before is overwritten or lost. ``OUT/stages.json`` records which folder each stage's
latest result is in.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from marrowscope.io.atomic import write_text_atomic

log = logging.getLogger(__name__)

STAGE_FILE = "stage.json"
INDEX_FILE = "stages.json"


def fingerprint(obj: Any) -> str:
    """sha256 of the canonical JSON of ``obj`` (sorted keys; dataclasses as dicts)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_json_default)
    return hashlib.sha256(text.encode()).hexdigest()


def _json_default(o: Any) -> Any:
    if hasattr(o, "__dataclass_fields__"):
        return asdict(o)
    if isinstance(o, (set, frozenset)):
        return sorted(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON-able in a fingerprint: {type(o).__name__}")


@dataclass(frozen=True)
class StageRecord:
    name: str
    fingerprint: str
    folder: str
    result: Mapping[str, Any]
    seconds: float  # wall time of the call that completed the stage
    started: str
    finished: str
    resumed: bool = False  # the folder held partial work (checkpoints) when the completing call began
    skipped: bool = False  # this run found the stage done and reused it
    inputs: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("skipped")
        return d


class StageRunner:
    """Runs named stages under ``out`` (see the module docstring)."""

    def __init__(self, out: str | Path) -> None:
        self.out = Path(out)
        self.records: dict[str, StageRecord] = {}

    def folder(self, name: str, inputs: Mapping[str, Any]) -> Path:
        return self.out / name / fingerprint({"stage": name, **inputs})[:12]

    def done(self, name: str, inputs: Mapping[str, Any]) -> StageRecord | None:
        """The stored record of this stage with these inputs, if it completed before."""
        fp = fingerprint({"stage": name, **inputs})
        path = self.out / name / fp[:12] / STAGE_FILE
        if not path.is_file():
            return None
        try:
            d = json.loads(path.read_text())
        except (OSError, ValueError):
            log.warning("%s: unreadable; the stage runs again", path)
            return None
        if d.get("fingerprint") != fp:
            return None
        return StageRecord(**{**d, "skipped": True})

    def run(
        self, name: str, inputs: Mapping[str, Any], fn: Callable[[Path], Mapping[str, Any]]
    ) -> StageRecord:
        prev = self.done(name, inputs)
        if prev is not None:
            log.info("stage %s: inputs and config unchanged (%s); skipped", name, prev.fingerprint[:12])
            self.records[name] = prev
            self._write_index()
            return prev
        fp = fingerprint({"stage": name, **inputs})
        folder = self.out / name / fp[:12]
        resumed = folder.is_dir() and any(folder.iterdir())
        folder.mkdir(parents=True, exist_ok=True)
        started = datetime.now(UTC).isoformat(timespec="seconds")
        log.info("stage %s -> %s%s", name, folder, " (resuming)" if resumed else "")
        t0 = time.perf_counter()
        result = dict(fn(folder))
        rec = StageRecord(
            name=name,
            fingerprint=fp,
            folder=str(folder),
            result=result,
            seconds=time.perf_counter() - t0,
            started=started,
            finished=datetime.now(UTC).isoformat(timespec="seconds"),
            resumed=resumed,
            inputs=json.loads(json.dumps(dict(inputs), default=_json_default)),
        )
        write_text_atomic(folder / STAGE_FILE, json.dumps(rec.to_dict(), indent=2, sort_keys=True) + "\n")
        self.records[name] = rec
        self._write_index()
        return rec

    def _write_index(self) -> None:
        path = self.out / INDEX_FILE
        try:
            index = json.loads(path.read_text()) if path.is_file() else {}
        except (OSError, ValueError):
            index = {}
        for name, rec in self.records.items():
            index[name] = {
                "fingerprint": rec.fingerprint,
                "folder": str(Path(rec.folder).relative_to(self.out)),
            }
        write_text_atomic(path, json.dumps(index, indent=2, sort_keys=True) + "\n")
