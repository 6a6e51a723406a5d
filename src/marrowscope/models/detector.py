"""Faster R-CNN cell detectors (torchvision) with a backbone chosen by registry name.

Architectures (``WeightsSpec.arch``):

- ``fasterrcnn_mobilenet_v3_fpn`` (default, CPU-fast): MobileNetV3-Large features, a slim FPN on the
  stride 8/16/32 maps (128 channels), a 256-wide box head; about 5.4 M parameters, ~11 MB in fp16.
- ``fasterrcnn_resnet50_fpn``: the paper-like torchvision ResNet-50-FPN (GPU users).

Both are built with ``weights=None`` / ``weights_backbone=None``: nothing is downloaded. A user with
ImageNet weights may pass ``backbone_weights`` (a local state-dict file) to :func:`build_detector`.

The model never resizes its input: :class:`FixedScaleTransform` only normalises and batches. The
engine resamples every image to the weights' ``mpp`` first (see :mod:`marrowscope.engines.detect`),
so anchors, sized in micrometres and converted with the model's mpp, match the cells.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from marrowscope.errors import InputError
from marrowscope.models.inference import fold_batchnorm, resolve_precision
from marrowscope.models.weights import WeightsSpec, load_weights, save_weights

if TYPE_CHECKING:
    import torch
    from torch import nn

logger = logging.getLogger(__name__)

DEFAULT_ARCH = "fasterrcnn_mobilenet_v3_fpn"
ARCHS: tuple[str, ...] = ("fasterrcnn_mobilenet_v3_fpn", "fasterrcnn_resnet50_fpn")

#: anchor sizes in micrometres per feature level (platelets/small; red cells; leukocytes/large cells)
MOBILENET_ANCHORS_UM: tuple[tuple[float, ...], ...] = ((2.4, 3.6), (6.0, 8.4), (12.0, 19.2))
RESNET_ANCHORS_UM: tuple[tuple[float, ...], ...] = ((2.4,), (4.8,), (8.4,), (14.4,), (24.0,))
ASPECT_RATIOS: tuple[float, ...] = (0.7, 1.0, 1.4)


def anchor_sizes_px(arch: str, mpp: float) -> tuple[tuple[int, ...], ...]:
    """Anchor sizes in pixels at ``mpp`` for ``arch`` (one tuple per feature level)."""
    table = MOBILENET_ANCHORS_UM if arch == "fasterrcnn_mobilenet_v3_fpn" else RESNET_ANCHORS_UM
    return tuple(tuple(max(4, round(s / mpp)) for s in level) for level in table)


def detector_spec(
    classes: Sequence[str],
    *,
    arch: str = DEFAULT_ARCH,
    mpp: float = 0.15,
    tile_size: int = 512,
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5),
    std: tuple[float, float, float] = (0.25, 0.25, 0.25),
    scheme: str | None = None,
    **params: Any,
) -> WeightsSpec:
    """A detector contract: classes (no background), mpp, tile size, normalisation, arch params.

    ``params`` may override: ``anchor_sizes`` (pixels per level), ``aspect_ratios``, ``fpn_channels``,
    ``representation_size``, ``score_thresh`` (kept boxes, low for AP), ``nms_thresh``,
    ``detections_per_img``, ``operating_threshold`` (score used for counts and precision/recall),
    ``rpn_pre_nms_test`` / ``rpn_post_nms_test`` (proposals per training-size tile at inference, before and
    after the RPN's NMS; 1000 / 600 unless set: the box head's RoIAlign over them is ~1/3 of CPU time),
    ``rpn_score_thresh`` (proposals below this objectness are dropped; 0 unless set).
    """
    if arch not in ARCHS:
        raise InputError(arch, f"unknown detector architecture (choose from {', '.join(ARCHS)})")
    if not classes:
        raise InputError("classes", "a detector needs at least one class")
    p: dict[str, Any] = {
        "anchor_sizes": [list(a) for a in anchor_sizes_px(arch, mpp)],
        "aspect_ratios": list(ASPECT_RATIOS),
        "fpn_channels": 128 if arch == "fasterrcnn_mobilenet_v3_fpn" else 256,
        "representation_size": 256 if arch == "fasterrcnn_mobilenet_v3_fpn" else 1024,
        "score_thresh": 0.01,
        "nms_thresh": 0.5,
        "detections_per_img": 300,
        "operating_threshold": 0.5,
    }
    p.update(params)
    return WeightsSpec(
        task="detector", arch=arch, classes=tuple(classes), mpp=mpp, input_size=tile_size,
        mean=mean, std=std, scheme=scheme, params=p,
    )


def _fixed_scale_transform(spec: WeightsSpec) -> nn.Module:
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    class FixedScaleTransform(GeneralizedRCNNTransform):
        """Normalise and batch; never resize (inputs already come at the model's mpp)."""

        def resize(self, image: torch.Tensor, target: dict[str, torch.Tensor] | None = None
                   ) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
            return image, target

    size = spec.pixel_size
    return FixedScaleTransform(
        min_size=size, max_size=size, image_mean=list(spec.mean), image_std=list(spec.std),
        size_divisible=32,
    )


def _mobilenet_backbone(fpn_channels: int) -> nn.Module:
    from torchvision.models import mobilenet_v3_large
    from torchvision.models.detection.backbone_utils import BackboneWithFPN

    features = mobilenet_v3_large(weights=None).features
    # the last block before each stride change ends a stage: strides 8 and 16, and the final 960-ch conv
    down = [i for i, b in enumerate(features) if getattr(b, "_is_cn", False)]
    ends = [down[2] - 1, down[3] - 1, len(features) - 1]  # stride 8, 16, 32
    return_layers = {str(idx): str(k) for k, idx in enumerate(ends)}
    in_channels = [int(features[i].out_channels) for i in ends]
    backbone = BackboneWithFPN(features, return_layers, in_channels, fpn_channels)
    backbone.fpn.extra_blocks = None  # three levels only: no stride-64 'pool' map
    return backbone


def build_detector(spec: WeightsSpec, backbone_weights: str | Path | None = None) -> nn.Module:
    """A torchvision ``FasterRCNN`` for ``spec`` (random weights unless ``backbone_weights``)."""
    import torch
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.ops import MultiScaleRoIAlign

    if spec.task != "detector":
        raise InputError(spec.arch, f"weights are for a {spec.task}, not a detector")
    p = spec.params
    sizes = tuple(tuple(int(s) for s in lvl) for lvl in p["anchor_sizes"])
    ratios = tuple(float(r) for r in p["aspect_ratios"])
    anchors = AnchorGenerator(sizes=sizes, aspect_ratios=(ratios,) * len(sizes))
    n_classes = len(spec.classes) + 1
    common: dict[str, Any] = {
        "rpn_anchor_generator": anchors,
        "rpn_pre_nms_top_n_train": 1000, "rpn_post_nms_top_n_train": 500,
        "rpn_pre_nms_top_n_test": int(p.get("rpn_pre_nms_test", 1000)),
        "rpn_post_nms_top_n_test": int(p.get("rpn_post_nms_test", 600)),
        "rpn_score_thresh": float(p.get("rpn_score_thresh", 0.0)),
        "box_batch_size_per_image": 128 if spec.arch == "fasterrcnn_mobilenet_v3_fpn" else 512,
        "box_score_thresh": float(p.get("score_thresh", 0.01)),
        "box_nms_thresh": float(p.get("nms_thresh", 0.5)),
        "box_detections_per_img": int(p.get("detections_per_img", 300)),
    }
    model: nn.Module
    body: Any
    if spec.arch == "fasterrcnn_mobilenet_v3_fpn":
        ch = int(p.get("fpn_channels", 128))
        rep = int(p.get("representation_size", 256))
        backbone = _mobilenet_backbone(ch)
        if len(sizes) != 3:
            raise InputError(spec.arch, "fasterrcnn_mobilenet_v3_fpn needs 3 anchor levels")
        model = FasterRCNN(
            backbone, num_classes=None,
            box_roi_pool=MultiScaleRoIAlign(["0", "1", "2"], output_size=7, sampling_ratio=2),
            box_head=TwoMLPHead(ch * 49, rep), box_predictor=FastRCNNPredictor(rep, n_classes),
            **common,
        )
        body = backbone.body
    elif spec.arch == "fasterrcnn_resnet50_fpn":
        from torchvision.models.detection import fasterrcnn_resnet50_fpn

        if len(sizes) != 5:
            raise InputError(spec.arch, "fasterrcnn_resnet50_fpn needs 5 anchor levels")
        model = fasterrcnn_resnet50_fpn(
            weights=None, weights_backbone=None, num_classes=n_classes,
            **common,
        )
        body = model.backbone.body  # type: ignore[union-attr]
    else:
        raise InputError(spec.arch, f"unknown detector architecture (choose from {', '.join(ARCHS)})")
    model.transform = _fixed_scale_transform(spec)
    if backbone_weights is not None:
        sd = torch.load(Path(backbone_weights), map_location="cpu", weights_only=True)
        if spec.arch == "fasterrcnn_mobilenet_v3_fpn":  # a mobilenet_v3_large classifier state dict
            sd = {k.removeprefix("features."): v for k, v in sd.items() if k.startswith("features.")}
        missing, unexpected = body.load_state_dict(sd, strict=False)
        logger.info("backbone weights %s: %d missing, %d unexpected keys", backbone_weights,
                    len(missing), len(unexpected))
    return model


def image_tensor(image: np.ndarray, device: str = "cpu") -> torch.Tensor:
    """An RGB uint8 (H, W, 3) array as the float (3, H, W) tensor in [0, 1] the detectors take.

    Read-only or strided arrays (views from flips and rotations, PIL buffers) are copied first."""
    import torch

    arr = np.require(image, dtype=np.uint8, requirements=("C", "W"))
    return torch.from_numpy(arr).to(device).permute(2, 0, 1).float().div(255.0)


@dataclass(frozen=True)
class TilePrediction:
    """Boxes (N, 4) x1,y1,x2,y2 in tile pixels at the model's mpp, scores (N,), labels (N,) as class
    indices into ``spec.classes`` (0-based, background removed)."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray


#: how far an inference tile may grow past the training tile to save tiles (see
#: :func:`marrowscope.data.tiling.fitted_tile_size`): a 2048² ROI at 0.11 µm/px is 901² px at
#: 0.25 µm/px, four tiles of 544 px instead of nine of 512; ``analyze``'s field with its 25 µm of
#: context (1,101 px) four of 640 px instead of nine (``benchmarks/bench_field_tiles.py``: the same
#: AP@0.5 on a validation cohort within 0.0012, 1.40x faster per field). One 1,024 px tile is faster
#: still but was measured to lose AP (benchmarks/bench_speed.py): the backbone's squeeze-excitation
#: blocks pool over the whole tile, so the context per tile should stay near the training tile's.
TILE_STRETCH = 1.25
def _bf16_backbone(model: nn.Module) -> None:
    """Run the backbone and FPN of ``model`` in bf16 (weights and activations) and hand fp32 maps to
    the heads.

    Box regression and decoding stay in fp32: decoded in bf16 (8 mantissa bits), a coordinate near
    900 px is off by up to ~4 px, which costs AP at strict IoU (measured: AP@[.5:.95] 0.84 -> 0.78 on
    the synthetic test cohort with the whole model under bf16 autocast). Weights held in bf16 skip
    autocast's per-call casts of every weight (~13 % on the 2-core CPU)."""
    from collections import OrderedDict

    import torch

    backbone = getattr(model, "backbone")  # noqa: B009 (a torchvision GeneralizedRCNN attribute)
    backbone.to(torch.bfloat16)
    inner = backbone.forward

    def forward(x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        feats = inner(x.to(torch.bfloat16))
        return OrderedDict((k, v.float()) for k, v in feats.items())

    backbone.forward = forward


class Detector:
    """A model with its contract: call it on RGB uint8 tiles that are already at ``spec.mpp``.

    ``tile_size``: the inference tile in model pixels (``None``: the training tile; never smaller),
    which may grow by ``tile_stretch`` (:data:`TILE_STRETCH`; 1: never) where that saves tiles;
    ``precision``: ``fp32``, ``bf16`` (the backbone in bf16, the heads in fp32) or ``auto`` (bf16 where
    the hardware has it; see :func:`resolve_precision`); ``optimise`` folds BatchNorm into the convolutions
    and puts the weights in channels-last memory format (faster on CPU, same outputs up to rounding;
    off for a model that is still being trained: it changes the model in place)."""

    def __init__(self, model: nn.Module, spec: WeightsSpec, device: str = "cpu", *,
                 tile_size: int | None = None, tile_stretch: float = TILE_STRETCH, precision: str = "fp32",
                 optimise: bool = True) -> None:
        import torch

        self.model = model.to(device).eval()
        self.spec = spec
        self.device = device
        self.precision = resolve_precision(precision, device)
        self._tile = max(spec.pixel_size, int(tile_size or spec.pixel_size))
        self._max_tile = max(self._tile, int(self._tile * tile_stretch) // 32 * 32)
        if optimise:
            fold_batchnorm(self.model)
            self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        if self.precision == "bf16":
            _bf16_backbone(self.model)
        self._scale_caps()

    def _scale_caps(self) -> None:
        """Per-image proposal and detection caps grow with the tile's area over the training tile's."""
        area = (self._max_tile / self.spec.pixel_size) ** 2
        rpn = getattr(self.model, "rpn", None)
        heads = getattr(self.model, "roi_heads", None)
        if rpn is None or heads is None:
            return
        for attr in ("_pre_nms_top_n", "_post_nms_top_n"):
            caps = dict(getattr(rpn, attr))
            caps.setdefault("trained_testing", caps["testing"])
            caps["testing"] = round(caps["trained_testing"] * area)
            setattr(rpn, attr, caps)
        base = int(self.spec.params.get("detections_per_img", 300))
        heads.detections_per_img = round(base * area)

    @property
    def classes(self) -> tuple[str, ...]:
        return self.spec.classes

    @property
    def mpp(self) -> float:
        return self.spec.pixel_mpp

    @property
    def tile_size(self) -> int:
        return self._tile

    @property
    def max_tile_size(self) -> int:
        """The largest tile :func:`~marrowscope.engines.detect.detect_region` may use (stretched)."""
        return self._max_tile

    def __call__(self, tiles: Sequence[np.ndarray]) -> list[TilePrediction]:
        import torch

        if not tiles:
            return []
        batch = [image_tensor(t, self.device) for t in tiles]
        with torch.inference_mode():
            out = self.model(batch)
        return [
            TilePrediction(
                boxes=o["boxes"].float().cpu().numpy().reshape(-1, 4),
                scores=o["scores"].float().cpu().numpy(),
                labels=o["labels"].cpu().numpy().astype(np.int64) - 1,
            )
            for o in out
        ]


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def save_detector(path: str | Path, model: nn.Module, spec: WeightsSpec, *, half: bool = True,
                  extra: Mapping[str, Any] | None = None) -> str:
    """Write the weights with their contract (fp16 storage by default); returns the sha256."""
    return save_weights(path, model.state_dict(), spec, half=half, extra=extra)


def load_detector(name_or_path: str | Path, device: str | None = None, *, tile_size: int | None = None,
                  tile_stretch: float = TILE_STRETCH, precision: str = "fp32", optimise: bool = True
                  ) -> Detector:
    """A bundled model name or a weights file -> a ready :class:`Detector` (eval mode); ``tile_size``,
    ``tile_stretch``, ``precision`` and ``optimise`` as in :class:`Detector`."""
    from marrowscope.models.registry import resolve_model

    path, sha = resolve_model(name_or_path, task="detector")
    sd, spec, _extra = load_weights(path, task="detector", sha256=sha)
    if spec.arch not in ARCHS:
        raise InputError(path, f"unknown detector architecture {spec.arch!r} in the weights")
    model = build_detector(spec)
    try:
        model.load_state_dict(sd)
    except RuntimeError as e:
        raise InputError(path, f"weights do not fit architecture {spec.arch}: {e}") from e
    return Detector(model, spec, device or default_device(), tile_size=tile_size,
                    tile_stretch=tile_stretch, precision=precision, optimise=optimise)


def with_params(spec: WeightsSpec, **params: Any) -> WeightsSpec:
    """A copy of ``spec`` with some ``params`` replaced (e.g. a different operating threshold)."""
    return replace(spec, params={**dict(spec.params), **params})


def export_detector(
    weights: str | Path, out_dir: str | Path, *, name: str, training_data: str, description: str = "",
    sections: list[dict[str, Any]] | None = None, params: Mapping[str, Any] | None = None, half: bool = True,
) -> Path:
    """Write a bundled-model folder: ``<name>.pt`` (fp16 storage by default), ``meta.json``,
    ``metrics.json`` (``sections``: the numbers of the ``evaluate detector --out`` runs, see
    :func:`marrowscope.models.cards.section_from_eval`) and the generated block of ``card.md``.

    ``params`` are merged into the weights' spec params (e.g. ``operating_threshold``);
    ``training_data`` is also stored in the weights' spec."""
    from marrowscope.models.registry import write_bundle

    sd, spec, extra = load_weights(weights, task="detector")
    if params:
        spec = with_params(spec, **params)
    spec = replace(spec, training_data=training_data)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    file = out / f"{name}.pt"
    save_weights(file, sd, spec, half=half, extra=extra, sidecar=False)
    write_bundle(out, name=name, task="detector", file=file, classes=spec.classes,
                 training_data=training_data, description=description, sections=sections,
                 extra={"arch": spec.arch, "mpp": spec.mpp, "tile_size": spec.input_size})
    return file
