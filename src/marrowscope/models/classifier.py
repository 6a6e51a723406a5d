"""Cell classifier: backbones by registry name, the weights contract, loading and saving.

Architectures (``arch`` in :class:`~marrowscope.models.weights.WeightsSpec`):

- ``msresnet_s`` / ``msresnet_m``: small residual CNNs written here (no extra dependency), built for
  64-96 px single-cell crops on CPUs; ``msresnet_s`` is the default (about 1.7 M parameters, under
  4 MB as fp16).
- ``tv:<name>``: any torchvision classification model (e.g. ``tv:resnet18``,
  ``tv:mobilenet_v3_small``, ``tv:efficientnet_b0``), built with ``weights=None``.
- ``timm:<name>``: any timm model (e.g. ``timm:resnet10t``), when timm is installed.

``params`` of the spec hold the architecture kwargs plus the calibration: ``temperature`` (float,
fitted on validation data) and ``uncertain_threshold`` (max calibrated probability below which a cell
is "uncertain"). The class list and its order come from the weights, never from the caller.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from marrowscope.errors import InputError, MissingDependencyError
from marrowscope.models.inference import fold_batchnorm, resolve_precision
from marrowscope.models.weights import WeightsSpec, load_weights, save_weights

if TYPE_CHECKING:
    import torch
    from torch import nn

    from marrowscope.models.provenance import TrainingData

log = logging.getLogger(__name__)

DEFAULT_ARCH = "msresnet_s"
DEFAULT_INPUT_SIZE = 64
DEFAULT_MPP = 0.45  # µm/px: a 64 px crop covers 28.8 µm, a large myeloid cell with some context
DEFAULT_SCHEME = "bmdeep33"

# name -> (widths, blocks per stage)
_MSRESNET: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "msresnet_s": ((32, 64, 128, 256), (1, 2, 2, 1)),
    "msresnet_m": ((48, 96, 192, 384), (2, 2, 2, 2)),
}


def list_archs() -> list[str]:
    """Built-in architecture names (``tv:<name>`` and ``timm:<name>`` are accepted too)."""
    return sorted(_MSRESNET)


NORMS = ("bn", "gn")


def _msresnet(widths: Sequence[int], blocks: Sequence[int], num_classes: int, dropout: float,
              norm: str = "bn") -> nn.Module:
    """``norm``: ``bn`` (BatchNorm, statistics of the training data frozen at inference) or ``gn``
    (GroupNorm with 8 groups: per-image statistics, no dependence on the training set's colour
    distribution)."""
    import torch
    from torch import nn

    if norm not in NORMS:
        raise InputError(norm, f"unknown normalisation; use one of {', '.join(NORMS)}")

    def nl(c: int) -> nn.Module:
        return nn.BatchNorm2d(c) if norm == "bn" else nn.GroupNorm(8, c)

    def cbr(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nl(cout), nn.ReLU(inplace=True)
        )

    class Block(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.c1 = cbr(cin, cout, stride)
            self.c2 = nn.Sequential(nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nl(cout))
            self.short: nn.Module = (
                nn.Identity() if cin == cout and stride == 1
                else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nl(cout))
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(self.c2(self.c1(x)) + self.short(x))

    layers: list[nn.Module] = [cbr(3, 24, 2), cbr(24, widths[0])]
    c = widths[0]
    for k, (w, n) in enumerate(zip(widths, blocks, strict=True)):
        for j in range(n):
            layers.append(Block(c, w, 2 if (j == 0 and k > 0) else 1))
            c = w
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(c, num_classes)]
    return nn.Sequential(*layers)


def build_backbone(arch: str, num_classes: int, params: Mapping[str, Any] | None = None) -> nn.Module:
    """A randomly initialised network ``(N, 3, H, W) float -> (N, num_classes) logits``."""
    p = dict(params or {})
    if arch in _MSRESNET:
        widths, blocks = _MSRESNET[arch]
        return _msresnet(widths, blocks, num_classes, float(p.get("dropout", 0.1)), str(p.get("norm", "bn")))
    if arch.startswith("tv:"):
        import torchvision

        try:
            return torchvision.models.get_model(arch[3:], weights=None, num_classes=num_classes)
        except ValueError as e:
            raise InputError(arch, f"unknown torchvision model ({e})") from e
    if arch.startswith("timm:"):
        try:
            import timm
        except ImportError as e:
            raise MissingDependencyError(f"{arch} needs timm: pip install timm") from e
        try:
            return timm.create_model(arch[5:], pretrained=bool(p.get("pretrained", False)),
                                     num_classes=num_classes)
        except RuntimeError as e:
            raise InputError(arch, f"unknown timm model ({e})") from e
    raise InputError(arch, f"unknown classifier architecture; use one of {', '.join(list_archs())}, "
                           "tv:<torchvision name> or timm:<timm name>")


@dataclass(frozen=True)
class CellClassifier:
    """A network with its contract. ``net`` is in eval mode on ``device``; ``precision`` is the
    resolved inference precision (``fp32``, ``bf16`` or ``int8``, see :mod:`marrowscope.models.inference`):
    with ``bf16`` the network's weights are bf16 and :meth:`to_tensor` gives bf16 batches; with ``int8``
    the network is ``Sequential(int8 body, fp32 Linear)`` taking fp32 batches."""

    net: Any  # torch.nn.Module
    spec: WeightsSpec
    device: str = "cpu"
    sha256: str | None = None
    precision: str = "fp32"
    # the fp32 network where ``net`` is an int8 approximation of it: the OOD statistics stored with the
    # weights were fitted on its features, so the OOD score uses it (engines.ood.crop_features)
    fp32_net: Any = None

    @property
    def classes(self) -> tuple[str, ...]:
        return self.spec.classes

    @property
    def input_size(self) -> int:
        return self.spec.pixel_size

    @property
    def mpp(self) -> float:
        return self.spec.pixel_mpp

    @property
    def temperature(self) -> float:
        return float(self.spec.params.get("temperature", 1.0))

    @property
    def uncertain_threshold(self) -> float:
        return float(self.spec.params.get("uncertain_threshold", 0.0))

    def with_params(self, **params: Any) -> CellClassifier:
        """The same network with updated spec params (e.g. ``temperature=1.3``)."""
        spec = replace(self.spec, params={**dict(self.spec.params), **params})
        return replace(self, spec=spec)

    def to_tensor(self, crops: np.ndarray) -> torch.Tensor:
        """(N, S, S, 3) uint8 RGB crops -> normalised float tensor on the device; checks the contract."""
        import torch

        arr = np.asarray(crops)
        if arr.ndim == 3:
            arr = arr[None]
        s = self.input_size
        if arr.ndim != 4 or arr.shape[3] != 3 or arr.shape[1:3] != (s, s):
            raise InputError(
                "crops",
                f"classifier expects (N, {s}, {s}, 3) RGB crops at {self.mpp} µm/px, got shape "
                f"{tuple(arr.shape)}; make crops with marrowscope.data.crops using the weights' contract",
            )
        t = torch.from_numpy(np.ascontiguousarray(arr)).to(self.device).permute(0, 3, 1, 2).float() / 255.0
        mean = torch.tensor(self.spec.mean, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(self.spec.std, device=self.device).view(1, 3, 1, 1)
        x = (t - mean) / std
        return x.to(torch.bfloat16) if self.precision == "bf16" else x

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Raw logits of a normalised batch (no temperature)."""
        import torch

        with torch.inference_mode():
            return self.net(x.to(self.device)).float()


def make_spec(
    classes: Sequence[str], *, arch: str = DEFAULT_ARCH, scheme: str | None = DEFAULT_SCHEME,
    input_size: int = DEFAULT_INPUT_SIZE, mpp: float = DEFAULT_MPP,
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5), std: tuple[float, float, float] = (0.25, 0.25, 0.25),
    params: Mapping[str, Any] | None = None,
) -> WeightsSpec:
    if len(set(classes)) != len(classes) or len(classes) < 2:
        raise InputError("classes", f"need at least 2 distinct classes, got {list(classes)}")
    return WeightsSpec(task="classifier", arch=arch, classes=tuple(classes), mpp=mpp, input_size=input_size,
                       mean=mean, std=std, scheme=scheme, params=dict(params or {}))


def create_classifier(spec: WeightsSpec, device: str = "cpu", seed: int = 0) -> CellClassifier:
    """A new randomly initialised classifier for ``spec`` (deterministic under ``seed``)."""

    if spec.task != "classifier":
        raise InputError(spec.arch, f"spec is for a {spec.task}, not a classifier")
    from marrowscope.runtime import seeded

    with seeded(seed):  # deterministic initialisation without touching the caller's generator
        net = build_backbone(spec.arch, len(spec.classes), spec.params).to(device).eval()
    return CellClassifier(net=net, spec=spec, device=device)


def save_classifier(path: str | Path, clf: CellClassifier, *, half: bool = True,
                    extra: Mapping[str, Any] | None = None) -> str:
    """Write the classifier (fp16 by default) atomically; returns the file's sha256."""
    sd = {k: v.detach().cpu() for k, v in clf.net.state_dict().items()}
    return save_weights(path, sd, clf.spec, half=half, extra=extra)


def load_classifier(name_or_path: str | Path, device: str | None = None,
                    expect_classes: Sequence[str] | None = None, *, precision: str = "fp32",
                    optimise: bool = False) -> CellClassifier:
    """Load a bundled classifier by name (e.g. ``classifier-pbc``) or a weights file.

    ``expect_classes``: when given, raise :class:`InputError` unless the weights have exactly these
    classes in this order (the contract check for callers that hard-wire a class list).
    ``precision``: ``fp32``, ``bf16``, ``int8`` (weights calibrated by ``marrowscope quantize``, CPU) or
    ``auto`` (:func:`marrowscope.models.inference.resolve_precision`).
    ``optimise``: fold BatchNorm into the convolutions and use channels-last memory format, for a
    classifier that only predicts (same outputs up to rounding; never save or train a folded network).
    Weights that re-estimate their BatchNorm statistics per call (``params['bn_adapt']``) keep it unfolded.
    """
    import torch

    from marrowscope.models.registry import resolve_model

    path, sha = resolve_model(name_or_path, task="classifier")
    sd, spec, _extra = load_weights(path, task="classifier", sha256=sha)
    if expect_classes is not None and tuple(expect_classes) != spec.classes:
        raise InputError(path, f"weights classes {list(spec.classes)} differ from the expected "
                               f"{list(expect_classes)}")
    dev = device or default_device()
    net = build_backbone(spec.arch, len(spec.classes), spec.params)
    try:
        net.load_state_dict(sd)
    except RuntimeError as e:
        raise InputError(path, f"weights do not fit architecture {spec.arch} ({e})") from e
    net = net.to(dev).eval()
    from marrowscope.models.quantize import int8_available, int8_ranges, quantize_int8

    ranges = int8_ranges(spec.params)
    # auto picks int8 only where the engine exists; an explicit int8 elsewhere fails in quantize_int8
    can_int8 = ranges is not None and (precision == "int8" or int8_available())
    prec = resolve_precision(precision, dev, int8=can_int8)
    if precision == "int8" and ranges is None:
        raise InputError(path, "these weights carry no int8 calibration; calibrate them with `marrowscope "
                               "quantize` or use --precision fp32")
    fp32_net = None
    if prec == "int8":
        qnet = quantize_int8(net, ranges or {}, spec.pixel_size)
        fold_batchnorm(net)  # the fp32 network stays for the OOD features only
        fp32_net, net = net.to(memory_format=torch.channels_last), qnet
    elif optimise and not spec.params.get("bn_adapt"):
        fold_batchnorm(net)
    if optimise:
        net = net.to(memory_format=torch.channels_last)
    if prec == "bf16":
        net = net.to(torch.bfloat16)
    from marrowscope.models.weights import sha256_file

    return CellClassifier(net=net, spec=spec, device=dev, sha256=sha or sha256_file(path),
                          precision=prec, fp32_net=fp32_net)


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def export_classifier(
    weights: str | Path, out_dir: str | Path, *, name: str, training_data: str | TrainingData,
    description: str = "", sections: list[dict[str, Any]] | None = None, half: bool = True,
) -> Path:
    """Write a bundled classifier folder: ``<name>.pt`` (fp16 by default, ``training_data`` stored in
    its spec), ``meta.json`` (written by code: sha256, classes, training data, metrics), ``metrics.json``
    (``sections`` from ``evaluate classifier --out`` runs) and the generated block of ``card.md``.
    A :class:`~marrowscope.models.provenance.TrainingData` also records its kind (synthetic, real, mixed)
    and dataset names in ``meta.json``, which ``analyze`` reports (and warns on synthetic-only)."""
    from marrowscope.models.provenance import TrainingData as _TD
    from marrowscope.models.registry import write_bundle

    td = training_data if isinstance(training_data, _TD) else _TD(training_data)
    provenance = ({"training_data_kind": td.kind, "training_datasets": list(td.datasets)}
                  if isinstance(training_data, _TD) else {})
    training_data = td.description
    sd, spec, extra = load_weights(weights, task="classifier")
    spec = replace(spec, training_data=training_data)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    file = out / f"{name}.pt"
    save_weights(file, sd, spec, half=half, extra=extra, sidecar=False)
    write_bundle(out, name=name, task="classifier", file=file, classes=spec.classes,
                 training_data=training_data, description=description, sections=sections,
                 extra={"arch": spec.arch, "mpp": spec.mpp, "input_size": spec.input_size,
                        "scheme": spec.scheme, **provenance})
    return file

