"""Weights that carry their contract: task, architecture, classes, scale, input size, normalisation,
the training data and (when measured, in ``params['ood']``) the statistics an out-of-distribution check
compares against.

A checkpoint is one ``torch.save`` file holding ``{"spec": dict, "state_dict": ..., "extra": ...,
"content_sha256": str}``. Every weights file is hash-checked on loading:

- a bundled model against the sha256 in its ``meta.json``;
- a file given by path against its sidecar ``<file>.sha256`` (``sha256sum`` format; written by
  :func:`save_weights` when asked, or by ``sha256sum``) when there is one;
- and always against the embedded ``content_sha256`` (a digest of the spec and every tensor's bytes,
  written by :func:`save_weights`), so an edited tensor is caught even without a sidecar.

A file with none of these is refused (with the command that records a hash for it); a truncated or
tampered file is refused with a one-line :class:`~marrowscope.errors.InputError`.
The spec is validated: a missing scale, input size, class list or normalisation is an error, never a
silent default.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from marrowscope.errors import InputError
from marrowscope.io.atomic import atomic_path

TASKS = ("detector", "classifier", "diagnosis")
#: tasks whose weights take pixels: they must state the scale and the input size
PIXEL_TASKS = ("detector", "classifier")
SIDECAR_SUFFIX = ".sha256"


class WeightsSpecError(ValueError):
    """A weights spec that breaks its contract (missing or invalid field)."""


def _triple(name: str, v: Any) -> tuple[float, float, float]:
    try:
        t = tuple(float(x) for x in v)
    except (TypeError, ValueError) as e:
        raise WeightsSpecError(f"{name} must be 3 numbers (RGB), got {v!r}") from e
    if len(t) != 3 or not all(math.isfinite(x) for x in t):
        raise WeightsSpecError(f"{name} must be 3 finite numbers (RGB), got {v!r}")
    return t  # type: ignore[return-value]


@dataclass(frozen=True)
class WeightsSpec:
    """What a weights file promises to its user. Construction validates the contract."""

    task: str  # "detector" | "classifier" | "diagnosis"
    arch: str  # registry name of the architecture, e.g. "fasterrcnn_mobilenet_v3_fpn"
    classes: tuple[str, ...]  # class names in output order (detector: without background)
    mpp: float | None = None  # µm/px the model expects its input at (required for pixel tasks)
    input_size: int | None = None  # crop side (classifier) or tile side (detector), pixels at ``mpp``
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.25, 0.25, 0.25)
    scheme: str | None = None  # class scheme name from the taxonomy
    params: Mapping[str, Any] = field(default_factory=dict)  # architecture kwargs, thresholds, T, ...
    #: what the model was trained on (datasets, real or synthetic); None: not recorded in the file
    training_data: str | None = None

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise WeightsSpecError(f"task {self.task!r} is not one of {', '.join(TASKS)}")
        if not isinstance(self.arch, str) or not self.arch:
            raise WeightsSpecError("arch (the architecture name) is missing")
        if not self.classes or not all(isinstance(c, str) and c for c in self.classes):
            raise WeightsSpecError(f"classes must be a non-empty list of names, got {list(self.classes)}")
        if len(set(self.classes)) != len(self.classes):
            raise WeightsSpecError(f"classes repeat a name: {list(self.classes)}")
        if self.task in PIXEL_TASKS:
            if self.mpp is None or not (isinstance(self.mpp, int | float) and math.isfinite(self.mpp)
                                        and self.mpp > 0):
                raise WeightsSpecError(f"a {self.task} must state its input scale mpp (µm/px > 0), "
                                       f"got {self.mpp!r}")
            if (self.input_size is None or isinstance(self.input_size, bool)
                    or not isinstance(self.input_size, int) or self.input_size < 8):
                raise WeightsSpecError(f"a {self.task} must state its input_size (pixels >= 8), "
                                       f"got {self.input_size!r}")
        _triple("mean", self.mean)
        std = _triple("std", self.std)
        if min(std) <= 0:
            raise WeightsSpecError(f"std must be positive, got {list(self.std)}")
        if self.training_data is not None and not isinstance(self.training_data, str):
            raise WeightsSpecError(f"training_data must be text, got {type(self.training_data).__name__}")
        ood = self.params.get("ood")
        if ood is not None and not isinstance(ood, Mapping):
            raise WeightsSpecError(f"params['ood'] must be a mapping of statistics, not {type(ood).__name__}")

    @property
    def ood_stats(self) -> Mapping[str, Any] | None:
        """Reference statistics of the training inputs for the out-of-distribution check
        (``params['ood']``, written by :mod:`marrowscope.engines.ood`), when measured."""
        ood = self.params.get("ood")
        return ood if isinstance(ood, Mapping) else None

    @property
    def pixel_mpp(self) -> float:
        """``mpp`` of a pixel model (validated present)."""
        if self.mpp is None:
            raise WeightsSpecError(f"a {self.task} spec without mpp")
        return float(self.mpp)

    @property
    def pixel_size(self) -> int:
        """``input_size`` of a pixel model (validated present)."""
        if self.input_size is None:
            raise WeightsSpecError(f"a {self.task} spec without input_size")
        return int(self.input_size)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["classes"] = list(self.classes)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        d["params"] = dict(self.params)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> WeightsSpec:
        """Read a spec; a missing required field is a :class:`WeightsSpecError` (no silent default)."""
        if not isinstance(d, Mapping):
            raise WeightsSpecError(f"spec must be a mapping, got {type(d).__name__}")
        required = ["task", "arch", "classes", "mean", "std"]
        if d.get("task") in PIXEL_TASKS:
            required += ["mpp", "input_size"]
        missing = [k for k in required if d.get(k) is None]
        if missing:
            raise WeightsSpecError(f"spec lacks {', '.join(missing)}")
        size = d["input_size"] if d.get("input_size") is not None else None
        if size is not None and (isinstance(size, bool) or float(size) != int(size)):
            raise WeightsSpecError(f"input_size must be a whole number of pixels, got {size!r}")
        return cls(
            task=str(d["task"]),
            arch=str(d["arch"]),
            classes=tuple(d["classes"]),
            mpp=None if d.get("mpp") is None else float(d["mpp"]),
            input_size=None if size is None else int(size),
            mean=_triple("mean", d["mean"]),
            std=_triple("std", d["std"]),
            scheme=d.get("scheme"),
            params=dict(d.get("params") or {}),
            training_data=d.get("training_data"),
        )


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sidecar_path(path: str | Path) -> Path:
    p = Path(path)
    return p.with_name(p.name + SIDECAR_SUFFIX)


def write_sidecar(path: str | Path, sha256: str | None = None) -> Path:
    """Write ``<file>.sha256`` (``sha256sum`` format) beside ``path``; returns the sidecar path."""
    from marrowscope.io.atomic import write_text_atomic

    p = Path(path)
    sha = sha256 or sha256_file(p)
    side = sidecar_path(p)
    write_text_atomic(side, f"{sha}  {p.name}\n")
    return side


def read_sidecar(path: str | Path) -> str | None:
    """The sha256 recorded in ``<file>.sha256``, or None when there is no sidecar."""
    side = sidecar_path(path)
    if not side.is_file():
        return None
    text = side.read_text(encoding="utf-8", errors="replace").split()
    sha = text[0].lower() if text else ""
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise InputError(side, "not a sha256 sidecar (expected '<64 hex digits>  <file name>')")
    return sha


def check_sha256(path: str | Path, expected: str, what: str = "weights file") -> None:
    """Raise :class:`InputError` unless ``path`` hashes to ``expected``."""
    actual = sha256_file(path)
    if actual != expected.lower():
        raise InputError(path, f"{what} does not match its recorded sha256 (corrupt, truncated or replaced: "
                               f"sha256 {actual[:12]}…, recorded {expected[:12]}…); fetch or export it again")


def content_sha256(spec: Mapping[str, Any], state_dict: Mapping[str, Any]) -> str:
    """A digest of the spec and every entry of the state dict (name, dtype, shape and bytes)."""
    import torch

    h = hashlib.sha256()
    h.update(json.dumps(spec, sort_keys=True, default=str).encode())
    for k in sorted(state_dict):
        v = state_dict[k]
        h.update(k.encode() + b"\0")
        if torch.is_tensor(v):
            t = v.detach().cpu().contiguous()
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        else:
            h.update(repr(v).encode())
    return h.hexdigest()


def save_weights(
    path: str | Path, state_dict: Mapping[str, Any], spec: WeightsSpec, *, half: bool = False,
    extra: Mapping[str, Any] | None = None, sidecar: bool = False,
) -> str:
    """Write a checkpoint atomically with its embedded content digest (and, with ``sidecar``, a sha256
    sidecar ``<file>.sha256`` for tools that check files by hash); ``half`` stores floating tensors as
    fp16. Returns the file's sha256."""
    import torch

    sd = {
        k: (v.half() if half and torch.is_tensor(v) and v.is_floating_point() else v)
        for k, v in state_dict.items()
    }
    spec_d = spec.to_dict()
    payload = {"spec": spec_d, "state_dict": sd, "extra": dict(extra or {}),
               "content_sha256": content_sha256(spec_d, sd)}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    sha = sha256_file(path)
    if sidecar:
        write_sidecar(path, sha)
    return sha


def load_weights(
    path: str | Path, task: str | None = None, sha256: str | None = None
) -> tuple[dict[str, Any], WeightsSpec, dict[str, Any]]:
    """Load ``(state_dict (fp32), spec, extra)`` after checking the file against every hash it has.

    ``sha256``: the expected file hash (a bundled model's ``meta.json``); otherwise the sidecar
    ``<file>.sha256`` is used when present. The embedded content digest is always checked. A file
    without any recorded hash is refused."""
    import torch

    p = Path(path)
    if not p.is_file():
        raise InputError(p, "weights file not found")
    expected = sha256 or read_sidecar(p)
    if expected is not None:
        check_sha256(p, expected)
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling problem is a bad file for the user
        raise InputError(p, f"cannot read the weights (truncated, or not a marrowscope weights file: "
                            f"{type(e).__name__}: {str(e)[:120]})") from e
    if not isinstance(ckpt, Mapping) or "spec" not in ckpt or "state_dict" not in ckpt:
        raise InputError(p, "not a marrowscope weights file (no spec/state_dict); train or export one "
                            "with marrowscope")
    try:
        spec = WeightsSpec.from_dict(ckpt["spec"])
    except (WeightsSpecError, TypeError, ValueError) as e:
        raise InputError(p, f"weights spec breaks the contract: {e}") from e
    embedded = ckpt.get("content_sha256")
    if embedded is not None and content_sha256(ckpt["spec"], ckpt["state_dict"]) != embedded:
        raise InputError(p, "weights content does not match its embedded sha256 (tensors or spec were "
                            "edited after saving); export the model again")
    if expected is None and embedded is None:
        raise InputError(p, f"weights file carries no sha256 (no embedded digest, no {p.name}"
                            f"{SIDECAR_SUFFIX} sidecar); if you trust it, record one with "
                            f"'sha256sum {p.name} > {p.name}{SIDECAR_SUFFIX}'")
    if task is not None and spec.task != task:
        raise InputError(p, f"weights are for a {spec.task}, not a {task}")
    sd = {k: (v.float() if torch.is_tensor(v) and v.is_floating_point() else v)
          for k, v in ckpt["state_dict"].items()}
    return sd, spec, dict(ckpt.get("extra", {}))


def write_meta(path: str | Path, meta: Mapping[str, Any]) -> None:
    from marrowscope.io.atomic import write_text_atomic

    write_text_atomic(path, json.dumps(meta, indent=2, sort_keys=True) + "\n")
