"""What a model was trained on, read from its own metadata (bundled ``meta.json`` or the weights file).

``meta.json`` (and a weights file's ``extra`` / a diagnosis model's ``training_summary``) carry
``training_data`` (a description: which datasets, how many images or patients), ``training_data_kind``
(``"synthetic"``, ``"real"`` or ``"mixed"``) and ``training_datasets`` (dataset names). ``training_data``
may also be a dict holding the three as ``description`` / ``kind`` / ``datasets``. A model that says
nothing is ``"unknown"``: the pipeline warns about it rather than guessing from the text.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

KINDS: tuple[str, ...] = ("synthetic", "real", "mixed", "unknown")


@dataclass(frozen=True)
class TrainingData:
    """A model's training data: description, kind (:data:`KINDS`) and dataset names."""

    description: str = ""
    kind: str = "unknown"
    datasets: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"training_data_kind must be one of {KINDS}, got {self.kind!r}")

    @property
    def synthetic_only(self) -> bool:
        return self.kind == "synthetic"

    def to_dict(self) -> dict[str, Any]:
        return {"training_data": self.description, "training_data_kind": self.kind,
                "training_datasets": list(self.datasets)}


def training_data_from_meta(meta: Mapping[str, Any]) -> TrainingData:
    """From a ``meta.json`` dict, a weights ``extra`` dict or a diagnosis ``training_summary``."""
    td = meta.get("training_data")
    if isinstance(td, Mapping):
        desc, kind, datasets = td.get("description", ""), td.get("kind"), td.get("datasets", ())
    else:
        desc = td if td is not None else meta.get("source", "")
        kind, datasets = meta.get("training_data_kind"), meta.get("training_datasets", ())
    kind = str(kind) if kind in KINDS else "unknown"
    return TrainingData(str(desc or ""), kind, tuple(str(d) for d in (datasets or ())))


def _bundled_meta(path: Path) -> Mapping[str, Any] | None:
    import json

    from marrowscope.models.registry import list_models

    rp = path.resolve()
    for m in list_models():
        if m.path.resolve() == rp:
            meta: Mapping[str, Any] = json.loads((m.path.parent / "meta.json").read_text(encoding="utf-8"))
            return meta
    return None


def training_data_of(path: str | Path, task: str) -> TrainingData:
    """The training data of the model file at ``path`` (a bundled one's ``meta.json`` first)."""
    p = Path(path)
    meta = _bundled_meta(p)
    if meta is not None:
        return training_data_from_meta(meta)
    try:
        if task == "diagnosis":
            from marrowscope.models.diagnosis import load_diagnosis_model

            return training_data_from_meta(load_diagnosis_model(p).training_summary)
        from marrowscope.models.weights import load_weights

        _, _, extra = load_weights(p, task=task)
        return training_data_from_meta(extra)
    except Exception as e:  # noqa: BLE001 - provenance must not stop an analysis that loaded the model
        log.warning("%s: cannot read the training data description (%s)", p, e)
        return TrainingData()
