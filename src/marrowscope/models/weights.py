"""Weights that carry their contract: task, architecture, classes, scale, input size, normalisation.

A checkpoint is one ``torch.save`` file holding ``{"spec": dict, "state_dict": ..., "extra": ...}``.
Its sha256 is recorded in the bundled model's ``meta.json`` and in every run record, and loading
checks the task (and the hash when one is expected).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from marrowscope.errors import InputError
from marrowscope.io.atomic import atomic_path


@dataclass(frozen=True)
class WeightsSpec:
    """What a weights file promises to its user."""

    task: str  # "detector" | "classifier" | "diagnosis"
    arch: str  # registry name of the architecture, e.g. "fasterrcnn_mobilenet_v3_fpn"
    classes: tuple[str, ...]  # class names in output order (detector: without background)
    mpp: float | None = None  # µm/px the model expects its input at
    input_size: int | None = None  # crop side (classifier) or tile side (detector), pixels at ``mpp``
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.25, 0.25, 0.25)
    scheme: str | None = None  # class scheme name from the taxonomy
    params: Mapping[str, Any] = field(default_factory=dict)  # architecture kwargs, thresholds, T, ...

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["classes"] = list(self.classes)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        d["params"] = dict(self.params)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> WeightsSpec:
        return cls(
            task=str(d["task"]),
            arch=str(d["arch"]),
            classes=tuple(d["classes"]),
            mpp=None if d.get("mpp") is None else float(d["mpp"]),
            input_size=None if d.get("input_size") is None else int(d["input_size"]),
            mean=tuple(d.get("mean", (0.5, 0.5, 0.5))),  # type: ignore[arg-type]
            std=tuple(d.get("std", (0.25, 0.25, 0.25))),  # type: ignore[arg-type]
            scheme=d.get("scheme"),
            params=dict(d.get("params", {})),
        )


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_weights(
    path: str | Path, state_dict: Mapping[str, Any], spec: WeightsSpec, *, half: bool = False,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """Write a checkpoint atomically; ``half`` stores floating tensors as fp16. Returns its sha256."""
    import torch

    sd = {
        k: (v.half() if half and torch.is_tensor(v) and v.is_floating_point() else v)
        for k, v in state_dict.items()
    }
    with atomic_path(path) as tmp:
        torch.save({"spec": spec.to_dict(), "state_dict": sd, "extra": dict(extra or {})}, tmp)
    return sha256_file(path)


def load_weights(
    path: str | Path, task: str | None = None, sha256: str | None = None
) -> tuple[dict[str, Any], WeightsSpec, dict[str, Any]]:
    """Load ``(state_dict (fp32), spec, extra)``; check the task and, if given, the hash."""
    import torch

    p = Path(path)
    if not p.is_file():
        raise InputError(p, "weights file not found")
    if sha256 is not None and sha256_file(p) != sha256:
        raise InputError(p, "weights file does not match its recorded sha256 (corrupt or replaced)")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
        spec = WeightsSpec.from_dict(ckpt["spec"])
    except Exception as e:  # noqa: BLE001 - any unpickling problem is a bad file for the user
        raise InputError(p, f"not a marrowscope weights file ({type(e).__name__}: {e})") from e
    if task is not None and spec.task != task:
        raise InputError(p, f"weights are for a {spec.task}, not a {task}")
    sd = {k: (v.float() if torch.is_tensor(v) and v.is_floating_point() else v)
          for k, v in ckpt["state_dict"].items()}
    return sd, spec, dict(ckpt.get("extra", {}))


def write_meta(path: str | Path, meta: Mapping[str, Any]) -> None:
    from marrowscope.io.atomic import write_text_atomic

    write_text_atomic(path, json.dumps(meta, indent=2, sort_keys=True) + "\n")
