"""Cell detection on regions of any size: tiles at the model's mpp, batched, merged at level 0.

The region is cut into tiles of ``detector.tile_size`` pixels (at the model's mpp; stretched up to
the detector's ``max_tile_size`` when that saves tiles: :func:`marrowscope.data.tiling.fitted_tile_size`)
that overlap by ``overlap`` pixels. Each tile's boxes are mapped back to level-0 pixels. Near an inner
tile edge a box may be cut by the tile; such a box is dropped when the neighbouring tile sees that part
of the image with at least ``margin`` pixels to spare (``overlap`` must exceed the largest cell for this
to be exact). The surviving boxes are merged with ``torchvision.ops.batched_nms`` per class, so a cell
that lies in two tiles' overlap is reported once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from marrowscope.cells import Box, Detections
from marrowscope.data.tiling import Tile, fitted_tile_size, tile_grid
from marrowscope.io.slides.base import SlideReader

logger = logging.getLogger(__name__)


class TileDetector(Protocol):
    """What :func:`detect_region` needs: a scale, a tile size, classes and a batch call.

    :class:`marrowscope.models.detector.Detector` is one; tests use a stub."""

    @property
    def mpp(self) -> float: ...

    @property
    def tile_size(self) -> int: ...

    @property
    def classes(self) -> tuple[str, ...]: ...

    def __call__(self, tiles: Sequence[np.ndarray]) -> Sequence[object]: ...


def _as_arrays(pred: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    boxes = np.asarray(pred.boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(pred.scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(pred.labels, dtype=np.int64).reshape(-1)
    return boxes, scores, labels


def merge_tile_boxes(
    boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, iou_threshold: float = 0.5,
    class_agnostic: bool = False,
) -> np.ndarray:
    """Indices of the boxes kept after NMS across tiles (``torchvision.ops.batched_nms``)."""
    import torch
    from torchvision.ops import batched_nms, nms

    if boxes.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    b = torch.as_tensor(boxes, dtype=torch.float32)
    s = torch.as_tensor(scores, dtype=torch.float32)
    if class_agnostic:
        keep = nms(b, s, iou_threshold)
    else:
        keep = batched_nms(b, s, torch.as_tensor(labels, dtype=torch.int64), iou_threshold)
    return keep.numpy().astype(np.int64)


def _cut_at_inner_edge(box: np.ndarray, tile: Tile, margin: float) -> bool:
    """True if ``box`` (tile pixels) touches a tile edge that has a neighbour on that side."""
    x1, y1, x2, y2 = box
    return bool(
        (tile.has_left and x1 < margin) or (tile.has_top and y1 < margin)
        or (tile.has_right and x2 > tile.width - margin) or (tile.has_bottom and y2 > tile.height - margin)
    )


def detect_tiles(
    read_tile: Callable[[Tile], np.ndarray],
    tiles: Sequence[Tile],
    detector: TileDetector,
    *,
    scale: float,
    offset: tuple[float, float],
    batch_size: int = 4,
    edge_margin: float = 8.0,
    iou_threshold: float = 0.5,
    progress: bool = False,
) -> Detections:
    """Run ``detector`` on ``tiles`` (read with ``read_tile``), map boxes to level 0 and merge.

    ``scale``: level-0 pixels per model pixel; ``offset``: level-0 position of the grid origin."""
    all_b: list[np.ndarray] = []
    all_s: list[np.ndarray] = []
    all_l: list[np.ndarray] = []
    batches = [tiles[i : i + batch_size] for i in range(0, len(tiles), max(1, batch_size))]
    it: Sequence[Sequence[Tile]] = batches
    if progress:
        from tqdm import tqdm

        it = tqdm(batches, desc="detect", unit="batch", leave=False)  # type: ignore[assignment]
    for batch in it:
        preds = detector([read_tile(t) for t in batch])
        for tile, pred in zip(batch, preds, strict=True):
            b, s, lab = _as_arrays(pred)
            if b.shape[0] == 0:
                continue
            keep = np.array([not _cut_at_inner_edge(bx, tile, edge_margin) for bx in b], dtype=bool)
            b, s, lab = b[keep], s[keep], lab[keep]
            b = b + np.array([tile.x, tile.y, tile.x, tile.y], dtype=np.float64)
            all_b.append(b * scale + np.array([offset[0], offset[1]] * 2))
            all_s.append(s)
            all_l.append(lab)
    if not all_b:
        return Detections.empty(detector.classes)
    boxes, scores, labels = np.concatenate(all_b), np.concatenate(all_s), np.concatenate(all_l)
    keep = merge_tile_boxes(boxes, scores, labels, iou_threshold)
    order = keep[np.argsort(-scores[keep], kind="stable")]
    return Detections(boxes[order], scores[order], labels[order], detector.classes)


def detect_region(
    slide: SlideReader,
    box: Box | tuple[float, float, float, float],
    detector: TileDetector,
    batch_size: int = 4,
    overlap: int = 128,
    *,
    progress: bool = False,
) -> Detections:
    """Detect cells in the level-0 ``box`` (x1, y1, x2, y2) of ``slide``; boxes in level-0 pixels.

    The region is read once at the model's mpp and tiled with ``overlap`` pixels (model scale; at most
    half a tile)."""
    x1, y1, x2, y2 = box.as_tuple() if isinstance(box, Box) else box
    if slide.info.mpp is None:
        logger.warning("%s has no pixel size; taking it at the detector's scale (%.3f um/px)",
                       slide.info.path, detector.mpp)
        region = slide.read_region(round(x1), round(y1), round(x2 - x1), round(y2 - y1), level=0)
    else:
        region = slide.read_region_mpp(x1, y1, x2 - x1, y2 - y1, detector.mpp)
    h, w = region.shape[:2]
    scale = (x2 - x1) / w  # level-0 pixels per model pixel
    overlap = min(overlap, detector.tile_size // 2)
    size = fitted_tile_size(w, h, detector.tile_size, overlap, getattr(detector, "max_tile_size", 0))
    tiles = tile_grid(w, h, size, overlap)

    def read_tile(t: Tile) -> np.ndarray:
        return np.ascontiguousarray(region[t.y : t.y + t.height, t.x : t.x + t.width])

    # a box within this many pixels of an inner tile edge counts as cut there (the neighbour sees it)
    margin = max(2.0, min(8.0, overlap / 16))
    return detect_tiles(read_tile, tiles, detector, scale=scale, offset=(x1, y1), batch_size=batch_size,
                        edge_margin=margin, progress=progress)


def detect_image(
    image: np.ndarray, detector: TileDetector, *, mpp: float | None = None, batch_size: int = 4,
    overlap: int = 128,
) -> Detections:
    """Detect cells in an RGB array (at ``mpp``, or at the model's mpp when ``None``)."""
    from marrowscope.io.slides.array import ArraySlide

    slide = ArraySlide(image, mpp=mpp if mpp is not None else detector.mpp)
    h, w = image.shape[:2]
    return detect_region(slide, (0.0, 0.0, float(w), float(h)), detector, batch_size, overlap)
