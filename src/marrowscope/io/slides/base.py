"""The slide reader interface shared by every format.

All locations are level-0 pixels; the scale is always given as mpp (micrometres per pixel).
"""

from __future__ import annotations

import abc
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

# Resampled reads (overviews, thumbnails) hold at most about this much of a level at once: a level region
# up to WHOLE_READ_PX pixels (4096^2: 50 MB RGB) is read in one piece, a larger one in chunks of CHUNK_PX^2.
WHOLE_READ_PX = 4096 * 4096
CHUNK_PX = 2048


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
        ``round(width * mpp0 / mpp)`` x ``round(height * mpp0 / mpp)`` pixels. Memory stays bounded
        whatever the pyramid: a level region larger than :data:`WHOLE_READ_PX` (a whole-slide overview
        from a slide without low-resolution levels) is read and resized piece by piece, decoded at a
        reduced scale where the reader can (:meth:`read_level_reduced`).
        """
        if self.info.mpp is None:
            raise ValueError(f"{self.info.path}: slide has no pixel size; pass --mpp")
        level = self.info.level_for_mpp(mpp)
        out_w = max(1, round(width * self.info.mpp / mpp))
        out_h = max(1, round(height * self.info.mpp / mpp))
        return self.read_resampled(x, y, width, height, (out_w, out_h), level.index)

    def read_resampled(self, x: float, y: float, width: float, height: float, size: tuple[int, int],
                       level: int) -> np.ndarray:
        """The level-0 box (x, y, width, height) read from ``level`` and resized to ``size`` (w, h).

        A level region up to :data:`WHOLE_READ_PX` pixels is read in one piece and resized (bilinear);
        a larger one in chunks of about :data:`CHUNK_PX` level pixels, each with a margin wide enough
        for the filter, so the result equals the one-piece resize while at most one chunk is held.
        """
        from PIL import Image

        out_w, out_h = size
        lv = self.info.levels[level]
        lw = max(1, round(width / lv.downsample))
        lh = max(1, round(height / lv.downsample))
        if lw * lh <= WHOLE_READ_PX or (lw, lh) == (out_w, out_h):
            arr = self.read_region(round(x), round(y), lw, lh, level=lv.index)
            if (lw, lh) == (out_w, out_h):
                return arr
            return np.asarray(Image.fromarray(arr).resize((out_w, out_h), Image.Resampling.BILINEAR))
        # level pixel (ox + i, oy + j) is the region's pixel (i, j), exactly as in the one-piece read
        ox, oy = math.floor(round(x) / lv.downsample), math.floor(round(y) / lv.downsample)
        fx, fy = lw / out_w, lh / out_h  # level pixels per output pixel
        mx, my = math.ceil(fx) + 2, math.ceil(fy) + 2  # filter support when shrinking, with a spare pixel
        # shrinking 2x or more: the reader may decode at 1/2..1/8 scale (JPEG DCT scaling: about a box
        # filter) at a fraction of the cost; the rest of the shrink is the same bilinear resize
        r = next((k for k in (8, 4, 2) if min(fx, fy) >= k and self.reduced_read_factors(level, k)), 1)
        step_x, step_y = max(1, int(CHUNK_PX * r // fx)), max(1, int(CHUNK_PX * r // fy))  # output px/chunk
        out = np.empty((out_h, out_w, 3), dtype=np.uint8)

        def level0(level_px: int, origin: int) -> int:  # level-0 coordinate that read_region floors back
            return math.ceil((origin + level_px) * lv.downsample - 1e-6)

        for j0 in range(0, out_h, step_y):
            j1 = min(out_h, j0 + step_y)
            cy0 = max(0, math.floor(j0 * fy) - my)
            cy1 = min(lh, math.ceil(j1 * fy) + my)
            for i0 in range(0, out_w, step_x):
                i1 = min(out_w, i0 + step_x)
                cx0 = max(0, math.floor(i0 * fx) - mx)
                cx1 = min(lw, math.ceil(i1 * fx) + mx)
                if r > 1:  # reduced pixel k covers level pixels [k r, (k + 1) r)
                    chunk = self.read_level_reduced(ox + cx0, oy + cy0, ox + cx1, oy + cy1, lv.index, r)
                    ax, ay = (ox + cx0) // r, (oy + cy0) // r
                    box = ((ox + i0 * fx) / r - ax, (oy + j0 * fy) / r - ay,
                           (ox + i1 * fx) / r - ax, (oy + j1 * fy) / r - ay)
                else:
                    chunk = self.read_region(level0(cx0, ox), level0(cy0, oy), cx1 - cx0, cy1 - cy0, lv.index)
                    box = (i0 * fx - cx0, j0 * fy - cy0, i1 * fx - cx0, j1 * fy - cy0)
                part = Image.fromarray(chunk).resize((i1 - i0, j1 - j0), Image.Resampling.BILINEAR, box=box)
                out[j0:j1, i0:i1] = np.asarray(part)
        return out

    def reduced_read_factors(self, level: int, factor: int) -> bool:
        """Whether :meth:`read_level_reduced` can shrink ``level`` by ``factor`` in the decoder (no by
        default; the DICOM reader can for JPEG tiles)."""
        return False

    def read_level_reduced(self, x0: int, y0: int, x1: int, y1: int, level: int, factor: int) -> np.ndarray:
        """Pixels [x0, x1) x [y0, y1) of ``level`` (level coordinates) shrunk by ``factor``: reduced pixel
        (i, j) of the result covers level pixels from ``(x0 // factor + i) * factor`` (same for y),
        ``ceil(x1 / factor) - x0 // factor`` pixels wide. Outside the level is white. This default reads
        the level and box-filters it; readers that decode at reduced scale override it."""
        ax, ay = x0 // factor, y0 // factor
        bx, by = -(-x1 // factor), -(-y1 // factor)
        full = self.read_region(round(ax * factor * self.info.levels[level].downsample),
                                round(ay * factor * self.info.levels[level].downsample),
                                (bx - ax) * factor, (by - ay) * factor, level)
        h, w = by - ay, bx - ax
        return full.reshape(h, factor, w, factor, 3).mean(axis=(1, 3)).round().astype(np.uint8)

    def thumbnail(self, max_size: int = 1024) -> np.ndarray:
        """RGB image of the whole slide whose longer side is at most ``max_size`` pixels (the slide's own
        size if smaller), resampled from the coarsest level that is still at least that large."""
        info = self.info
        want = max(1, min(int(max_size), max(info.width, info.height)))
        level = info.levels[0]
        for lv in info.levels:
            if max(lv.width, lv.height) >= want:
                level = lv
        scale = want / max(info.width, info.height)
        size = (max(1, round(info.width * scale)), max(1, round(info.height * scale)))
        return self.read_resampled(0, 0, info.width, info.height, size, level.index)

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release file handles."""

    def __enter__(self) -> SlideReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
