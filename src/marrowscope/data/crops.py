"""Fixed-scale cell crops: from slides (around boxes) and from single-cell crop datasets.

A classifier's contract is ``(input_size, mpp)``: every crop is ``input_size`` x ``input_size`` RGB
pixels at ``mpp`` µm/px, centred on the cell, so it covers ``input_size * mpp`` µm whatever the size of
the box (the box sets the centre, the context is fixed). Parts of the field outside the slide are white
(the slide background), so crops at slide borders keep their geometry: the cell stays where it is
relative to the crop centre.

Crop datasets (e.g. PBC) are whole images of one centred cell at the dataset's own scale. They are
brought to the contract by :func:`image_to_contract`: a centred field of ``input_size * mpp`` µm is cut
(padded white where the image is smaller) and resized. PBC (CellaVision DM96, 100x oil) is taken to be
**0.1 µm/px** (:data:`PBC_MPP`): an erythrocyte (7.5-8 µm) spans about 75-80 px of a 360 px image.
This is an estimate from cell sizes, not a calibrated value.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from marrowscope.cells import Box, Cell
from marrowscope.io.slides.base import SlideReader

log = logging.getLogger(__name__)

PBC_MPP = 0.1  # µm/px assumed for PBC / CellaVision DM96 images (estimated from erythrocyte size)
MATEK_MPP = 0.14  # µm/px assumed for the Matek bone-marrow crops (250 px, 40x oil); an estimate
WHITE = 255


def crop_at(slide: SlideReader, cx: float, cy: float, *, mpp: float, size: int) -> np.ndarray:
    """``size`` x ``size`` RGB crop at ``mpp`` centred on level-0 point (cx, cy); outside is white.

    The crop's pixel (i, j) centre maps to level-0 ``cx + (j + 0.5 - size / 2) * mpp / slide_mpp``
    (same for y with i), i.e. the crop centre is exactly (cx, cy).
    """
    from PIL import Image

    info = slide.info
    if info.mpp is None:
        raise ValueError(f"{info.path}: slide has no pixel size; pass --mpp")
    scale = mpp / info.mpp  # level-0 px per crop px
    half0 = size * scale / 2.0
    x0, y0 = cx - half0, cy - half0  # level-0 field origin
    x1, y1 = cx + half0, cy + half0
    out = np.full((size, size, 3), WHITE, dtype=np.uint8)
    # inside part in level-0 px, snapped outward to whole crop pixels
    ix0 = max(0.0, x0)
    iy0 = max(0.0, y0)
    ix1 = min(float(info.width), x1)
    iy1 = min(float(info.height), y1)
    if ix1 <= ix0 or iy1 <= iy0:
        return out
    # crop-pixel range covered by the inside part
    j0 = int(np.floor((ix0 - x0) / scale + 1e-6))
    i0 = int(np.floor((iy0 - y0) / scale + 1e-6))
    j1 = int(np.ceil((ix1 - x0) / scale - 1e-6))
    i1 = int(np.ceil((iy1 - y0) / scale - 1e-6))
    j1, i1 = min(j1, size), min(i1, size)
    if j1 <= j0 or i1 <= i0:
        return out
    # level-0 window of those crop pixels, clipped to the slide
    wx0, wy0 = x0 + j0 * scale, y0 + i0 * scale
    ww, wh = (j1 - j0) * scale, (i1 - i0) * scale
    level = info.level_for_mpp(mpp)
    lw = max(1, round(ww / level.downsample))
    lh = max(1, round(wh / level.downsample))
    arr = slide.read_region(round(wx0), round(wy0), lw, lh, level=level.index)
    arr = np.asarray(arr)[..., :3]
    if arr.shape[:2] != (i1 - i0, j1 - j0):
        arr = np.asarray(Image.fromarray(np.ascontiguousarray(arr)).resize(
            (j1 - j0, i1 - i0), Image.Resampling.BILINEAR))
    out[i0:i1, j0:j1] = arr
    # pixels whose centre lies outside the slide are white (read_region may return edge data there)
    cols = x0 + (np.arange(size) + 0.5) * scale
    rows = y0 + (np.arange(size) + 0.5) * scale
    out[:, (cols < 0) | (cols >= info.width)] = WHITE
    out[(rows < 0) | (rows >= info.height), :] = WHITE
    return out


def crop_box(slide: SlideReader, box: Box, *, mpp: float, size: int) -> np.ndarray:
    """Crop centred on ``box`` (level-0 px) at the contract ``(size, mpp)``."""
    cx, cy = box.center
    return crop_at(slide, cx, cy, mpp=mpp, size=size)


def crops_from_slide(
    slide: SlideReader, cells: Iterable[Cell | Box], *, mpp: float, size: int
) -> np.ndarray:
    """(N, size, size, 3) uint8 crops, one per cell or box, in input order."""
    boxes = [c.box if isinstance(c, Cell) else c for c in cells]
    out = np.empty((len(boxes), size, size, 3), dtype=np.uint8)
    for k, b in enumerate(boxes):
        out[k] = crop_box(slide, b, mpp=mpp, size=size)
    return out


def image_to_contract(
    image: np.ndarray, *, src_mpp: float, mpp: float, size: int, center: tuple[float, float] | None = None
) -> np.ndarray:
    """Bring a single-cell image at ``src_mpp`` to ``size`` px at ``mpp``, centred (white padding)."""
    from marrowscope.io.slides.array import ArraySlide

    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    arr = np.ascontiguousarray(arr[..., :3])
    h, w = arr.shape[:2]
    cx, cy = center if center is not None else (w / 2.0, h / 2.0)
    slide = ArraySlide(arr, mpp=src_mpp)
    return crop_at(slide, cx, cy, mpp=mpp, size=size)


def load_image_rgb(path: str | Path) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8 RGB."""
    from PIL import Image

    from marrowscope.errors import InputError

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, ValueError) as e:
        raise InputError(path, f"cannot read image ({e})") from e


def images_to_contract(
    paths: Sequence[str | Path], *, src_mpp: float | None, mpp: float, size: int, fit_size: int | None = None,
    progress: bool = False,
) -> np.ndarray:
    """(N, size, size, 3) uint8 contract crops of single-cell image files.

    ``src_mpp`` None: the scale is unknown and each whole image is taken to span ``fit_size`` (default
    ``size``) crop pixels along its longer side (a plain resize when ``fit_size == size``).
    """
    from tqdm import tqdm

    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    it = tqdm(paths, desc="images", unit="img", disable=not progress, leave=False)
    for k, p in enumerate(it):
        img = load_image_rgb(p)
        s_mpp = src_mpp if src_mpp is not None else mpp * (fit_size or size) / max(img.shape[:2])
        out[k] = image_to_contract(img, src_mpp=s_mpp, mpp=mpp, size=size)
    return out
