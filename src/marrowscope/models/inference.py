"""Inference-time speed-ups that keep the results: precision and BatchNorm folding.

Precision: fp32; bf16 weights and activations where the hardware computes bf16 natively (the
detector's backbone, the whole classifier; see their loaders); int8 for the classifier on CPUs
(static quantization with activation ranges calibrated offline and stored with the weights,
:mod:`marrowscope.models.quantize`; the detector stays fp32 under int8).

On CPUs with AMX (Sapphire Rapids and newer Xeons) bf16 convolutions run several times faster than fp32
(``classifier-marrow`` 5.7x). AVX-512 BF16 alone does not pay: on a Xeon with ``avx512_bf16`` but no AMX
the bundled classifier ran at 454 cells/s in bf16 against 631 in fp32 and ``detector-marrow`` took
0.485 s per 2048² ROI against 0.470 s, so ``auto`` keeps fp32 there and on every CPU without AMX.
Accuracy under bf16 is measured per bundled model (``benchmarks/bench_speed.py``, docs/benchmarks.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from marrowscope.errors import InputError

PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "int8")


def cpu_has_bf16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """True when this CPU has AMX bf16 tiles (``amx_bf16``), where bf16 inference pays off; AVX-512 BF16
    alone is slower than fp32 for these models (module docstring)."""
    try:
        flags = Path(cpuinfo).read_text(errors="replace").split()
    except OSError:
        return False
    return "amx_bf16" in flags


def resolve_precision(precision: str, device: str, *, int8: bool = False) -> str:
    """The precision a model runs at. ``auto`` -> ``bf16`` on a CPU with AMX or a CUDA device that
    supports it; else ``int8`` on a CPU when the model can run it (``int8``: a classifier whose weights
    carry an int8 calibration); else ``fp32``. ``int8`` asked of a model that cannot run it (the
    detector) -> ``fp32``; on a GPU it is an error (int8 kernels here are CPU kernels)."""
    if precision not in PRECISIONS:
        raise InputError(precision, f"unknown precision (choose from {', '.join(PRECISIONS)})")
    if precision == "int8" and device != "cpu":
        raise InputError(device, "--precision int8 runs on the CPU only; use auto, fp32 or bf16 on a GPU")
    if precision == "int8":
        return "int8" if int8 else "fp32"
    if precision != "auto":
        return precision
    if device.startswith("cuda"):
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device == "cpu" and cpu_has_bf16():
        return "bf16"
    return "int8" if device == "cpu" and int8 else "fp32"


def fold_batchnorm(net: Any) -> int:
    """Fold every eval-mode ``BatchNorm2d`` that directly follows a ``Conv2d`` inside an
    ``nn.Sequential`` into that convolution (``torch.nn.utils.fusion.fuse_conv_bn_eval``) and replace
    it by ``nn.Identity``; returns how many were folded. For inference only: the network's outputs are
    unchanged up to float rounding, its state dict is not (do not save a folded network)."""
    from torch import nn
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    n = 0
    for module in list(net.modules()):
        if not isinstance(module, nn.Sequential):
            continue
        names = list(module._modules)
        for a, b in zip(names, names[1:], strict=False):
            conv, bn = module._modules[a], module._modules[b]
            if (isinstance(conv, nn.Conv2d) and type(bn) is nn.BatchNorm2d and not bn.training
                    and not conv.training and bn.track_running_stats):
                module._modules[a] = fuse_conv_bn_eval(conv, bn)
                module._modules[b] = nn.Identity()
                n += 1
    return n
