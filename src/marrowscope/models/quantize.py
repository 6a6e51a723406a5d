"""int8 inference for the cell classifier on CPUs without AMX: static post-training quantization.

The classifier's body (every layer but the last ``Linear``) is quantized with PyTorch's FX graph mode
(``torch.ao.quantization``, the ``x86`` backend: per-channel symmetric int8 weights, unsigned 7-bit
activations, oneDNN/FBGEMM kernels that use AVX-512 VNNI where the CPU has it); the last layer stays
fp32, so the network is still ``Sequential(body, Linear)``. The OOD score (:mod:`marrowscope.engines.ood`)
keeps using the fp32 network (``CellClassifier.fp32_net``): its statistics and slide threshold were fitted
on fp32 features, and the int8 body's features sit measurably further from them (the in-domain crops'
median distance rose by about a seventh for ``classifier-marrow``), which would flag slides that are not
out of distribution. That costs one fp32 pass over the (at most 256) cells the slide's OOD score samples.

Activation ranges are **calibrated once, offline**, on the model's own training crops
(:func:`calibrate_int8`: histogram observers, the L2-optimal range of each activation) and stored with
the weights (``params['int8']``); loading (:func:`quantize_int8`) only reads them, so int8 results do
not depend on the slide being analysed. The speed and the labels it keeps are measured per bundled model
by ``benchmarks/bench_speed.py`` (docs/benchmarks.md).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from contextlib import contextmanager
from typing import Any

from marrowscope.errors import InputError

BACKEND = "x86"
PARAM = "int8"  # the weights' params key holding the calibration


@contextmanager
def _quiet() -> Any:
    """torch.ao's FX quantization warns on every call that it is being migrated to torchao; the API is
    the one torch ships, and the warning says nothing about the model."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.ao\..*")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        yield


def _split(net: Any) -> tuple[Any, Any]:
    from torch import nn

    if not (isinstance(net, nn.Sequential) and isinstance(net[-1], nn.Linear)):
        raise InputError(type(net).__name__, "int8 needs a Sequential network ending in a Linear layer "
                                             "(the built-in msresnet architectures); use --precision fp32")
    return net[:-1], net[-1]


def _mapping(observer: Any) -> Any:
    import torch
    from torch.ao.quantization import QConfig, get_default_qconfig_mapping

    default = get_default_qconfig_mapping(BACKEND).global_qconfig
    assert default is not None
    qconfig = QConfig(activation=observer.with_args(dtype=torch.quint8, reduce_range=True),
                      weight=default.weight)
    return get_default_qconfig_mapping(BACKEND).set_global(qconfig)


def _observers(prepared: Any) -> dict[str, Any]:
    from torch.ao.quantization.observer import ObserverBase

    return {n: m for n, m in prepared.named_modules() if isinstance(m, ObserverBase)}


def _prepare(body: Any, observer: Any, example: Any) -> Any:
    import copy

    from torch.ao.quantization.quantize_fx import prepare_fx

    with _quiet():
        return prepare_fx(copy.deepcopy(body).eval(), _mapping(observer), (example,))


def calibrate_int8(net: Any, batches: Iterable[Any]) -> dict[str, list[float]]:
    """Activation ranges ``{observer: [lo, hi]}`` of ``net``'s body over normalised fp32 ``batches``
    (N, 3, S, S): the range each histogram observer chose, as the min/max that gives the same scale and
    zero point."""
    import torch
    from torch.ao.quantization.observer import HistogramObserver

    body, _ = _split(net)
    prepared = None
    n = 0
    with torch.inference_mode(False), torch.no_grad():
        for x in batches:
            if prepared is None:
                prepared = _prepare(body, HistogramObserver, x[:1].float())
            prepared(x.float())
            n += len(x)
    if prepared is None or n == 0:
        raise InputError("calibration", "no crops to calibrate int8 on")
    out: dict[str, list[float]] = {}
    with _quiet():
        for name, obs in _observers(prepared).items():
            scale, zp = (float(v) for v in obs.calculate_qparams())
            out[name] = [(obs.quant_min - zp) * scale, (obs.quant_max - zp) * scale]
    return out


def quantize_int8(net: Any, ranges: Mapping[str, Any], input_size: int) -> Any:
    """``Sequential(int8 body, fp32 Linear)`` of the fp32 eval-mode ``net`` with the stored activation
    ``ranges`` (from :func:`calibrate_int8` on the same architecture)."""
    import torch
    from torch import nn
    from torch.ao.quantization.observer import MinMaxObserver
    from torch.ao.quantization.quantize_fx import convert_fx

    if not int8_available():
        raise InputError("int8", f"this torch build has no {BACKEND} quantized engine; use --precision fp32")
    torch.backends.quantized.engine = BACKEND
    body, head = _split(net)
    prepared = _prepare(body, MinMaxObserver, torch.zeros(1, 3, input_size, input_size))
    obs = _observers(prepared)
    if set(obs) != set(ranges):
        raise InputError("int8", f"the weights' int8 calibration ({len(ranges)} ranges) does not fit the "
                                 f"network ({len(obs)} activations); recalibrate or use --precision fp32")
    for name, o in obs.items():
        lo, hi = (float(v) for v in ranges[name])
        o.min_val = torch.tensor(lo)
        o.max_val = torch.tensor(hi)
    with _quiet():
        qbody = convert_fx(prepared)
    return nn.Sequential(qbody, head).eval()


def int8_available() -> bool:
    """Whether this torch build has the quantized engine the calibration is for (x86 CPUs; not ARM)."""
    import torch

    return BACKEND in torch.backends.quantized.supported_engines


def int8_ranges(params: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The stored activation ranges of a classifier's params, or None when it carries none."""
    d = params.get(PARAM)
    return None if not isinstance(d, Mapping) else d.get("ranges")
