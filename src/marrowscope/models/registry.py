"""Bundled models: ``src/marrowscope/bundled/<name>/`` holds the weights, ``meta.json`` and ``card.md``.

``meta.json`` keys: name, task, file, sha256, classes, training_data, size_bytes, metrics (dict),
description. ``resolve_model(name_or_path)`` accepts a bundled name or a path to a weights file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from marrowscope.errors import InputError

BUNDLED_DIR = Path(__file__).resolve().parent.parent / "bundled"


@dataclass(frozen=True)
class BundledModel:
    name: str
    task: str
    path: Path
    sha256: str | None
    classes: tuple[str, ...]
    training_data: str
    size_bytes: int
    card: Path | None
    metrics: dict[str, Any] = field(default_factory=dict)
    description: str = ""


def list_models(bundled_dir: Path = BUNDLED_DIR) -> list[BundledModel]:
    models = []
    for meta_path in sorted(bundled_dir.glob("*/meta.json")):
        meta = json.loads(meta_path.read_text())
        weights = meta_path.parent / meta["file"]
        card = meta_path.parent / "card.md"
        models.append(
            BundledModel(
                name=meta["name"],
                task=meta["task"],
                path=weights,
                sha256=meta.get("sha256"),
                classes=tuple(meta.get("classes", ())),
                training_data=meta.get("training_data", ""),
                size_bytes=weights.stat().st_size if weights.exists() else 0,
                card=card if card.exists() else None,
                metrics=dict(meta.get("metrics", {})),
                description=meta.get("description", ""),
            )
        )
    return models


def is_explicit_path(name_or_path: str | Path) -> bool:
    """A :class:`Path`, or a string with a folder part or a suffix (``./detector-synth``, ``w.pt``)."""
    if isinstance(name_or_path, Path):
        return True
    s = str(name_or_path)
    return "/" in s or "\\" in s or s.startswith("~") or Path(s).suffix != ""


def resolve_model(name_or_path: str | Path, task: str | None = None) -> tuple[Path, str | None]:
    """Return ``(weights path, expected sha256 or None)`` for a bundled name or a file path.

    A bundled name always means the bundled file (a file of that name in the current folder does not
    replace it); a file there is used when named as a path (``./detector-synth``). For a path the
    expected hash is the bundled model's (when the path is a bundled file) or the file's sidecar
    ``<file>.sha256``; None when neither exists (the loaders then rely on the digest embedded in the
    file, or refuse it)."""
    from marrowscope.models.weights import read_sidecar

    if not is_explicit_path(name_or_path):
        for m in list_models():
            if m.name == str(name_or_path):
                if task is not None and m.task != task:
                    raise InputError(name_or_path, f"bundled model is a {m.task}, not a {task}")
                return m.path, m.sha256
    p = Path(name_or_path).expanduser()
    if p.is_file():
        for m in list_models():
            if m.path.exists() and m.path.resolve() == p.resolve():
                if task is not None and m.task != task:
                    raise InputError(name_or_path, f"bundled model is a {m.task}, not a {task}")
                return p, m.sha256
        return p, read_sidecar(p)
    names = ", ".join(m.name for m in list_models() if task is None or m.task == task) or "none"
    raise InputError(name_or_path, f"no such file or bundled model (bundled: {names})")


def write_bundle(
    out_dir: str | Path, *, name: str, task: str, file: Path, classes: tuple[str, ...], training_data: str,
    description: str = "", sections: list[dict[str, Any]] | None = None, extra: dict[str, Any] | None = None,
) -> Path:
    """Write a bundled model's ``meta.json`` and ``metrics.json`` beside its weights ``file`` and render
    the generated block of ``card.md`` (the hand-written rest of the card is kept; a stub is made
    when there is none). ``sections``: card sections (see :mod:`marrowscope.models.cards`), e.g. from
    :func:`marrowscope.models.cards.section_from_eval` over an ``evaluate --out`` metrics file."""
    from marrowscope.io.atomic import write_text_atomic
    from marrowscope.models.cards import METRICS_FILE, meta_metrics, sync_bundle
    from marrowscope.models.weights import sha256_file, write_meta

    out = Path(out_dir)
    metrics = {"model": name, "sections": list(sections or [])}
    write_text_atomic(out / METRICS_FILE, json.dumps(metrics, indent=2) + "\n")
    write_meta(out / "meta.json", {
        "name": name, "task": task, "file": file.name, "sha256": sha256_file(file), "classes": list(classes),
        "training_data": training_data, "size_bytes": file.stat().st_size, "metrics": meta_metrics(metrics),
        "description": description, **(extra or {}),
    })
    sync_bundle(out)
    return out / "meta.json"
