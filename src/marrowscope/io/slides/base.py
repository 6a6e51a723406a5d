"""The slide reader interface shared by every format.

All locations are level-0 pixels; the scale is always given as mpp (micrometres per pixel).
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class SlideLevel:
    index: int
    width: int
    height: int
    downsample: float
    mpp: float | None


@dataclass(frozen=True)
class SlideInfo:
    path: str
    slide_id: str
    format: str
    width: int
    height: int
    mpp: float | None
    levels: tuple[SlideLevel, ...]
    properties: Mapping[str, str] = field(default_factory=dict)

    def level_for_mpp(self, mpp: float) -> SlideLevel:
        """The coarsest level whose resolution is at least as fine as ``mpp`` (level 0 at worst)."""
        if self.mpp is None:
            raise ValueError(f"{self.path}: slide has no pixel size; pass --mpp")
        best = self.levels[0]
        for level in self.levels:
            if level.downsample * self.mpp <= mpp * 1.001:
                best = level
        return best


class SlideReader(abc.ABC):
    """A slide opened for reading. Use as a context manager or call :meth:`close`."""

    info: SlideInfo

    @abc.abstractmethod
    def read_region(self, x: int, y: int, width: int, height: int, level: int = 0) -> np.ndarray:
        """RGB uint8 array (height, width, 3) at ``level``; ``x``, ``y`` are level-0 pixels,
        ``width``, ``height`` are pixels of ``level``. Areas outside the slide are white."""

    def _check_region_args(self, width: int, height: int, level: int) -> None:
        """ValueError unless ``width`` x ``height`` is a positive size and ``level`` exists."""
        if width <= 0 or height <= 0:
            raise ValueError(f"region size must be positive, got {width} x {height}")
        if not 0 <= level < len(self.info.levels):
            n = len(self.info.levels)
            raise ValueError(f"{self.info.path}: level {level} does not exist (0..{n - 1})")

    def read_region_mpp(self, x: float, y: float, width: float, height: float, mpp: float) -> np.ndarray:
        """The level-0 box (x, y, width, height) resampled to ``mpp``.

        Reads from the best pyramid level and resizes; the result has
        ``round(width * mpp0 / mpp)`` x ``round(height * mpp0 / mpp)`` pixels.
        """
        from PIL import Image

        if self.info.mpp is None:
            raise ValueError(f"{self.info.path}: slide has no pixel size; pass --mpp")
        level = self.info.level_for_mpp(mpp)
        out_w = max(1, round(width * self.info.mpp / mpp))
        out_h = max(1, round(height * self.info.mpp / mpp))
        lw = max(1, round(width / level.downsample))
        lh = max(1, round(height / level.downsample))
        arr = self.read_region(round(x), round(y), lw, lh, level=level.index)
        if (lw, lh) == (out_w, out_h):
            return arr
        return np.asarray(Image.fromarray(arr).resize((out_w, out_h), Image.Resampling.BILINEAR))

    def thumbnail(self, max_size: int = 1024) -> np.ndarray:
        """RGB thumbnail whose longer side is at most ``max_size`` pixels."""
        from PIL import Image

        level = self.info.levels[-1]
        arr = self.read_region(0, 0, level.width, level.height, level=level.index)
        img = Image.fromarray(arr)
        img.thumbnail((max_size, max_size))
        return np.asarray(img)

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release file handles."""

    def __enter__(self) -> SlideReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
