"""An in-memory RGB image as a slide: the same reader interface as a whole-slide image.

Used for plain images (PNG/JPEG), generated test images, classifier crops and detector tiles. Lower
pyramid levels are built lazily (box-filtered) the first time they are read.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence

import numpy as np

from marrowscope.errors import InputError
from marrowscope.io.slides.base import SlideInfo, SlideLevel, SlideReader

log = logging.getLogger(__name__)

# Default pyramid: downsample by 4 per level (like the dataset's DICOM pyramid) while the level is
# still at least this many pixels along its longer side.
_MIN_LEVEL_SIDE = 128


def as_rgb_uint8(array: np.ndarray, source: object = "array") -> np.ndarray:
    """``array`` as a C-contiguous (H, W, 3) uint8 RGB array (grey and RGBA are converted)."""
    arr = np.asarray(array)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise InputError(source, f"expected an image array (H, W), (H, W, 3) or (H, W, 4), got {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputError(source, f"image array is empty (shape {arr.shape})")
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.shape[2] == 4:
        arr = arr[:, :, :3]
    if arr.dtype != np.uint8:
        if arr.dtype == np.bool_:
            arr = arr.astype(np.uint8) * 255
        elif np.issubdtype(arr.dtype, np.floating):
            scale = 255.0 if float(np.nanmax(arr)) <= 1.0 else 1.0
            arr = np.clip(np.nan_to_num(arr) * scale + 0.5, 0, 255).astype(np.uint8)
        elif np.issubdtype(arr.dtype, np.integer):
            top = 65535 if int(arr.max()) > 255 else 255
            arr = (arr.astype(np.float64) * (255.0 / top) + 0.5).clip(0, 255).astype(np.uint8)
        else:
            raise InputError(source, f"unsupported image dtype {arr.dtype}; use uint8 RGB")
    return np.ascontiguousarray(arr)


def default_downsamples(
    width: int, height: int, factor: int = 4, min_side: int = _MIN_LEVEL_SIDE
) -> tuple[int, ...]:
    """1, 4, 16, ... while the level's longer side stays at least ``min_side`` pixels."""
    out = [1]
    d = factor
    while max(width, height) / d >= min_side:
        out.append(d)
        d *= factor
    return tuple(out)


def level_size(width: int, height: int, downsample: float) -> tuple[int, int]:
    return max(1, math.ceil(width / downsample)), max(1, math.ceil(height / downsample))


def read_window(image: np.ndarray, x: int, y: int, width: int, height: int, fill: int = 255) -> np.ndarray:
    """The (height, width) window of ``image`` at (x, y), padded with ``fill`` outside the image."""
    out = np.full((height, width, 3), fill, dtype=np.uint8)
    h, w = image.shape[:2]
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + width, w), min(y + height, h)
    if x1 > x0 and y1 > y0:
        out[y0 - y : y1 - y, x0 - x : x1 - x] = image[y0:y1, x0:x1]
    return out


def downsample_image(image: np.ndarray, factor: float) -> np.ndarray:
    """Shrink ``image`` by ``factor`` (box filter for integer factors)."""
    from PIL import Image

    w, h = level_size(image.shape[1], image.shape[0], factor)
    return np.asarray(Image.fromarray(image).resize((w, h), Image.Resampling.BOX))


class ArraySlide(SlideReader):
    """An RGB array in memory as a slide.

    ``levels``: ``None`` for the default pyramid (downsample 4 per level down to ~256 px), an int for
    that many levels with downsample 4 per level, or an explicit sequence of downsamples starting at 1.
    """

    def __init__(
        self,
        array: np.ndarray,
        mpp: float | None = None,
        slide_id: str = "array",
        levels: int | Sequence[float] | None = None,
        path: str | None = None,
        properties: Mapping[str, str] | None = None,
        format: str = "array",
    ) -> None:
        source = path or slide_id
        self._image = as_rgb_uint8(array, source)
        h, w = self._image.shape[:2]
        if mpp is not None and not (mpp > 0 and math.isfinite(mpp)):
            raise InputError(source, f"pixel size must be a positive number of µm/px, got {mpp}")
        if levels is None:
            downsamples: tuple[float, ...] = default_downsamples(w, h)
        elif isinstance(levels, int):
            if levels < 1:
                raise ValueError(f"levels must be >= 1, got {levels}")
            downsamples = tuple(4**i for i in range(levels))
        else:
            downsamples = tuple(float(d) for d in levels)
            increasing = all(b > a for a, b in zip(downsamples, downsamples[1:], strict=False))
            if not downsamples or downsamples[0] != 1 or not increasing:
                raise ValueError(f"levels must be increasing downsamples starting at 1, got {downsamples}")
        level_list = []
        for i, d in enumerate(downsamples):
            lw, lh = level_size(w, h, d)
            level_list.append(SlideLevel(i, lw, lh, float(d), None if mpp is None else mpp * d))
        props = dict(properties or {})
        if mpp is not None:
            props.setdefault("marrowscope.mpp", repr(float(mpp)))
        self.info = SlideInfo(
            path=path or f"<{slide_id}>",
            slide_id=slide_id,
            format=format,
            width=w,
            height=h,
            mpp=mpp,
            levels=tuple(level_list),
            properties=props,
        )
        self._cache: dict[int, np.ndarray] = {0: self._image}

    @property
    def array(self) -> np.ndarray:
        """The level-0 image (read-only view)."""
        view = self._image.view()
        view.flags.writeable = False
        return view

    def level_image(self, level: int) -> np.ndarray:
        """The whole image of ``level`` (built from the nearest finer cached level on first use)."""
        if not 0 <= level < len(self.info.levels):
            n = len(self.info.levels)
            raise ValueError(f"{self.info.path}: level {level} does not exist (0..{n - 1})")
        if level not in self._cache:
            finer = max(k for k in self._cache if k < level)
            factor = self.info.levels[level].downsample / self.info.levels[finer].downsample
            img = downsample_image(self._cache[finer], factor)
            want = self.info.levels[level]
            if img.shape[:2] != (want.height, want.width):
                img = read_window(img, 0, 0, want.width, want.height)
            self._cache[level] = img
        return self._cache[level]

    def read_region(self, x: int, y: int, width: int, height: int, level: int = 0) -> np.ndarray:
        self._check_region_args(width, height, level)
        img = self.level_image(level)
        d = self.info.levels[level].downsample
        return read_window(img, math.floor(x / d), math.floor(y / d), int(width), int(height))

    def close(self) -> None:
        self._cache = {0: self._image}
