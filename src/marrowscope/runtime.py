"""Process-wide state, borrowed and given back: library calls never leave the global torch/NumPy seed
or torch's thread count changed (a caller's own random stream and settings survive a call).

- :func:`seeded` forks torch's CPU (and current CUDA device) generator, seeds it, and restores it after;
- :func:`torch_threads` sets torch's intra-op thread count for a block and restores it after;
- :func:`isolated_state` is a decorator for long library calls (training loops) that seed the global
  generators and set threads inside: everything they change is restored when they return or raise.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


def _cuda_devices() -> list[int]:
    import torch

    return [torch.cuda.current_device()] if torch.cuda.is_available() and torch.cuda.is_initialized() else []


@contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Run a block with torch's global generator seeded to ``seed``; restore the caller's state after
    (``None``: only fork and restore)."""
    import torch

    with torch.random.fork_rng(devices=_cuda_devices()):
        if seed is not None:
            torch.manual_seed(seed)
        yield


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run a block with ``n`` torch intra-op threads (``None`` or 0: leave as is); restore after."""
    import torch

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(max(1, int(n)))
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def isolated_state(fn: F) -> F:
    """Decorator: torch's and NumPy's global generators and torch's thread count are restored after
    ``fn`` (which may seed them or set threads for its own work)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import numpy as np

        np_state = np.random.get_state()
        try:
            with seeded(None), torch_threads(None):
                return fn(*args, **kwargs)
        finally:
            np.random.set_state(np_state)

    return wrapper  # type: ignore[return-value]


def resolve_device(device: str | None) -> str:
    """``None``/``"auto"``: cuda when available, else cpu. A named device (``cpu``, ``cuda``, ``cuda:N``,
    ``mps``) must exist: a clear :class:`~marrowscope.errors.InputError` otherwise (never a torch
    traceback half-way through). The CLI's ``--device`` check calls this too."""
    import re

    import torch

    from marrowscope.errors import InputError

    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    assert device is not None
    if not re.match(r"^(cpu|cuda(:\d+)?|mps)$", device):
        raise InputError("--device", f"{device!r} is not a device: use cpu or cuda (cuda:N for one GPU)")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError("--device", "CUDA is not available on this machine; use --device cpu")
        index = int(device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise InputError("--device", f"no GPU {index} (this machine has {torch.cuda.device_count()})")
    if device == "mps" and not torch.backends.mps.is_available():
        raise InputError("--device", "MPS is not available on this machine; use --device cpu")
    return device
