"""Multi-process training helpers (``torchrun --nproc_per_node N -m marrowscope train ...``), GPU speed
settings and the device record; the training loops call them at a few fixed points.

Data parallelism without changing the schedule: every rank draws the same *global* batch (same seeded
order, same per-sample augmentation draws as a single process) and keeps its share of it
(:meth:`DistContext.shard`: rank ``r`` of ``N`` takes samples ``r, r + N, ...``: DistributedSampler's
rule applied to each global batch). DistributedDataParallel averages the gradients, so the number of
optimizer steps, the learning-rate schedule and the checkpoints are those of one process with the same
``--batch-size``; only batch statistics (BatchNorm over a rank's share, Faster R-CNN's proposal sampling
per image set) differ, which bounds how closely the loss curves agree (docs/reproduction.md, the test
in tests/test_distributed.py). Rank 0 alone writes checkpoints, weights and logs; a resumed run loads the
same ``last.pt`` on every rank.

Single process (no ``WORLD_SIZE`` in the environment): every helper is a no-op.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, items: Sequence[Any]) -> list[Any]:
        """This rank's part of a global batch (all of it in a single process). A global batch smaller
        than the number of ranks is an error (a rank would have nothing to train on)."""
        if not self.enabled:
            return list(items)
        if len(items) < self.world_size:
            from marrowscope.errors import InputError

            raise InputError("--batch-size", f"a batch of {len(items)} cannot be shared by {self.world_size} "
                                             "processes; use a batch size of at least --nproc_per_node")
        return list(items[self.rank :: self.world_size])

    def wrap(self, model: Any, device: str) -> Any:
        """``model`` in DistributedDataParallel (the model itself in a single process)."""
        if not self.enabled:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.local_rank] if device.startswith("cuda") else None
        return DistributedDataParallel(model, device_ids=ids)

    def mean(self, value: float) -> float:
        """The mean of ``value`` over ranks (for logged losses)."""
        if not self.enabled:
            return value
        import torch
        import torch.distributed as dist

        t = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(t)
        return float(t.item()) / self.world_size

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on one (e.g. a time budget ran out)."""
        if not self.enabled:
            return flag
        import torch
        import torch.distributed as dist

        t = torch.tensor([1.0 if flag else 0.0])
        dist.all_reduce(t)
        return bool(t.item() > 0)

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()


def distributed_context(device: str | None = None) -> DistContext:
    """Join the process group torchrun set up (``WORLD_SIZE`` > 1): NCCL on CUDA, gloo on the CPU; each
    rank uses GPU ``LOCAL_RANK``. A single process gets the no-op context."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    import torch
    import torch.distributed as dist

    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = (device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
    backend = "nccl" if cuda else "gloo"
    if not dist.is_initialized():
        if cuda:
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend)
    log.info("rank %d of %d (%s)", rank, world, backend)
    return DistContext(rank=rank, world_size=world, local_rank=local, backend=backend)


def rank_device(device: str, ctx: DistContext) -> str:
    """``cuda`` becomes this rank's GPU ``cuda:LOCAL_RANK`` under torchrun."""
    if ctx.enabled and device == "cuda":
        return f"cuda:{ctx.local_rank}"
    return device


def speed_settings(device: str) -> None:
    """cuDNN autotuning for fixed-size training inputs on a GPU (results stay seeded, not bit-exact)."""
    if device.startswith("cuda"):
        import torch

        torch.backends.cudnn.benchmark = True


def autocast(device: str, precision: str) -> AbstractContextManager[Any]:
    """Mixed precision for the forward pass: ``precision`` is ``fp32`` (off), ``bf16`` or ``fp16``."""
    if precision == "fp32":
        return nullcontext()
    if precision not in ("bf16", "fp16"):
        raise ValueError(f"precision must be fp32, bf16 or fp16, got {precision!r}")
    import torch

    kind = "cuda" if device.startswith("cuda") else "cpu"
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=kind, dtype=dtype)


def grad_scaler(device: str, precision: str) -> Any:
    """A GradScaler for fp16 on CUDA (disabled otherwise: bf16 and fp32 need none)."""
    import torch

    return torch.amp.GradScaler("cuda", enabled=precision == "fp16" and device.startswith("cuda"))


def device_record(device: str) -> dict[str, Any]:
    """The device and GPU model for a run record."""
    import platform

    import torch

    rec: dict[str, Any] = {"device": device, "gpu_model": None, "cuda": torch.version.cuda,
                           "cpu": platform.processor() or platform.machine(),
                           "world_size": int(os.environ.get("WORLD_SIZE", "1"))}
    if device.startswith("cuda") and torch.cuda.is_available():
        rec["gpu_model"] = torch.cuda.get_device_name(torch.device(device))
        rec["gpu_count"] = torch.cuda.device_count()
    return rec
