"""Resume checkpoints of the training loops: tensors and plain values only, never pickled code.

A checkpoint is a dict of tensors, numbers, strings, lists and dicts (model and optimiser state dicts,
RNG states as uint8 tensors, history, config). It is loaded with ``torch.load(weights_only=True)``, so a
file planted in an output folder (e.g. an object whose ``__reduce__`` runs a command) is refused with an
:class:`~marrowscope.errors.InputError` instead of being executed.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from marrowscope.errors import InputError
from marrowscope.io.atomic import atomic_path


def rng_state() -> dict[str, Any]:
    """The torch CPU generator's state and, when CUDA is in use, every CUDA device's (uint8 tensors)."""
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` saved (CUDA states only where CUDA is present now)."""
    torch.set_rng_state(state["cpu"])
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(cuda)[: torch.cuda.device_count()])


def save_checkpoint(path: str | Path, state: Mapping[str, Any]) -> Path:
    """Write ``state`` atomically (a kill mid-write leaves the previous checkpoint intact)."""
    with atomic_path(path) as tmp:
        torch.save(dict(state), tmp)
    return Path(path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`; anything else is refused, never run."""
    p = Path(path)
    try:
        ck = torch.load(p, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError, ValueError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(p, "refusing to load this checkpoint: it is not a plain tensors-and-values "
                            "checkpoint written by marrowscope (it may hold code; "
                            f"{first[:160]}); delete it or train into a new --out") from None
    if not isinstance(ck, dict):
        raise InputError(p, "not a marrowscope training checkpoint; delete it or train into a new --out")
    return ck
