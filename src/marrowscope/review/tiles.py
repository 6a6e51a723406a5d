"""DeepZoom tiles and gallery crops read from the slide itself, tile by tile, with an LRU cache.

The DeepZoom pyramid is computed by OpenSlide's own :class:`openslide.deepzoom.DeepZoomGenerator`
(the field's reference implementation) over :class:`SlideAdapter`, which gives any
:class:`~marrowscope.io.slides.base.SlideReader` (DICOM via wsidicom, OpenSlide formats, images) the
few methods the generator reads. Each tile reads only its own area from the best pyramid level; a
slide whose coarsest level is still large gets one extra in-memory overview level (built once) so the
first zoomed-out views do not read the whole slide.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from marrowscope.cells import Box
from marrowscope.io.slides.base import SlideReader

TILE_SIZE = 254
OVERLAP = 1
JPEG_QUALITY = 80
OVERVIEW_MAX = 2048  # longest side of the in-memory overview level
GALLERY_MPP = 0.25  # µm/px of the gallery crops (every crop at the same scale)
GALLERY_SIZE = 160  # px: 40 µm of context around the cell centre


class SlideAdapter:
    """The OpenSlide-like face of a :class:`SlideReader` that ``DeepZoomGenerator`` needs."""

    def __init__(self, slide: SlideReader) -> None:
        self.slide = slide
        info = slide.info
        self.properties: dict[str, str] = {}
        dims = [(lv.width, lv.height) for lv in info.levels]
        downs = [float(lv.downsample) for lv in info.levels]
        self._overview: Image.Image | None = None
        if max(dims[-1]) > OVERVIEW_MAX:
            thumb = Image.fromarray(slide.thumbnail(OVERVIEW_MAX))
            self._overview = thumb
            dims.append(thumb.size)
            downs.append(info.width / thumb.size[0])
        self.level_dimensions = tuple(dims)
        self.level_downsamples = tuple(downs)
        self.level_count = len(dims)
        self.dimensions = dims[0]

    def get_best_level_for_downsample(self, downsample: float) -> int:
        best = 0
        for i, d in enumerate(self.level_downsamples):
            if d <= downsample * 1.0001:
                best = i
        return best

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> Image.Image:
        x, y = location
        w, h = size
        if self._overview is not None and level == self.level_count - 1:
            d = self.level_downsamples[level]
            lx, ly = round(x / d), round(y / d)
            img = self._overview.crop((lx, ly, lx + w, ly + h))
        else:
            img = Image.fromarray(
                np.ascontiguousarray(self.slide.read_region(x, y, w, h, level=level)[..., :3])
            )
        return img.convert("RGBA")


def _jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


class TileSource:
    """One open slide: its DZI description, tiles and cell crops (JPEG bytes, LRU-cached)."""

    def __init__(self, slide: SlideReader, cache_size: int = 4096) -> None:
        from openslide.deepzoom import DeepZoomGenerator

        self.slide = slide
        self.lock = threading.RLock()  # readers (wsidicom, OpenSlide handles) are not shared across threads
        self.dz = DeepZoomGenerator(SlideAdapter(slide), tile_size=TILE_SIZE, overlap=OVERLAP)  # type: ignore[arg-type]
        self._cache: OrderedDict[tuple[Any, ...], bytes] = OrderedDict()
        self._cache_size = cache_size

    def dzi(self) -> str:
        return str(self.dz.get_dzi("jpeg"))

    def _cached(self, key: tuple[Any, ...], make: Callable[[], bytes]) -> bytes:
        with self.lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
            data = make()
            self._cache[key] = data
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
            return data

    def tile(self, level: int, col: int, row: int) -> bytes:
        """JPEG of DeepZoom tile (``level``, ``col``, ``row``); ValueError outside the pyramid."""
        if not (0 <= level < self.dz.level_count):
            raise ValueError(f"DeepZoom level {level} does not exist (0..{self.dz.level_count - 1})")
        cols, rows = self.dz.level_tiles[level]
        if not (0 <= col < cols and 0 <= row < rows):
            raise ValueError(f"tile {col}_{row} is outside level {level} ({cols} x {rows} tiles)")
        return self._cached(("tile", level, col, row), lambda: _jpeg(self.dz.get_tile(level, (col, row))))

    def crop(self, box: Box, color: str, key: Any) -> bytes:
        """A gallery crop: :data:`GALLERY_SIZE` px at :data:`GALLERY_MPP` µm/px centred on ``box``."""
        from marrowscope.data.crops import crop_at

        def make() -> bytes:
            info = self.slide.info
            mpp = GALLERY_MPP
            if info.mpp is None:
                raise ValueError("slide has no pixel size")
            cx, cy = box.center
            img = Image.fromarray(crop_at(self.slide, cx, cy, mpp=mpp, size=GALLERY_SIZE))
            k = info.mpp / mpp
            half = GALLERY_SIZE / 2
            draw = ImageDraw.Draw(img)
            draw.rectangle(
                (
                    half + (box.x1 - cx) * k,
                    half + (box.y1 - cy) * k,
                    half + (box.x2 - cx) * k,
                    half + (box.y2 - cy) * k,
                ),
                outline=color,
                width=2,
            )
            return _jpeg(img)

        return self._cached(("crop", key, box.as_tuple(), color), make)

    def close(self) -> None:
        self.slide.close()


def open_tile_source(path: str | Path, mpp: float | None = None) -> TileSource:
    """Open the slide at ``path`` (as ``analyze`` recorded it) for tiles and crops."""
    from marrowscope.io.slides import open_slide

    return TileSource(open_slide(path, mpp=mpp))
