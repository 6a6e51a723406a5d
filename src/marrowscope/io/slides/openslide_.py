"""Vendor whole-slide formats (MRXS, SVS, NDPI, TIFF, ...) through OpenSlide, with tiffslide as a
fallback for TIFF-based files.

Level-0 coordinates are OpenSlide's: for MRXS that is the full canvas from the slide corner, the
frame of the dataset's CSV boxes (dataset.md §3.1). Transparent (empty) areas are returned white.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from marrowscope.errors import InputError, MissingDependencyError
from marrowscope.io.formats import TIFF_SUFFIXES
from marrowscope.io.slides.base import SlideInfo, SlideLevel, SlideReader

log = logging.getLogger(__name__)



def _mpp_from_properties(props: dict[str, str]) -> float | None:
    for key in ("openslide.mpp-x", "tiffslide.mpp-x"):
        v = props.get(key)
        if v not in (None, "", "None"):
            try:
                mpp = float(v)  # type: ignore[arg-type]
            except ValueError:
                continue
            if mpp > 0 and math.isfinite(mpp):
                return mpp
    return None


def _rgba_on_white(arr: np.ndarray) -> np.ndarray:
    """Composite an RGBA region on white (OpenSlide marks empty areas transparent)."""
    if arr.ndim == 3 and arr.shape[2] == 4:
        rgb = arr[:, :, :3].astype(np.uint16)
        alpha = arr[:, :, 3:4].astype(np.uint16)
        # OpenSlide returns premultiplied-then-unpremultiplied pixels; blend on white
        out = (rgb * alpha + 255 * (255 - alpha) + 127) // 255
        return out.astype(np.uint8)
    return np.ascontiguousarray(arr[:, :, :3]).astype(np.uint8)


class _VendorSlide(SlideReader):
    """Shared code for OpenSlide-like handles (``level_dimensions``, ``level_downsamples``)."""

    _handle: Any

    def _build_info(self, path: Path, fmt: str, mpp: float | None, props: dict[str, str]) -> None:
        if mpp is not None and not (mpp > 0 and math.isfinite(mpp)):
            raise InputError(path, f"pixel size must be a positive number of µm/px, got {mpp}")
        the_mpp = float(mpp) if mpp is not None else _mpp_from_properties(props)
        levels = tuple(
            SlideLevel(i, int(w), int(h), float(d), None if the_mpp is None else the_mpp * float(d))
            for i, ((w, h), d) in enumerate(
                zip(self._handle.level_dimensions, self._handle.level_downsamples, strict=True)
            )
        )
        if the_mpp is not None:
            props["marrowscope.mpp"] = repr(the_mpp)
        self.info = SlideInfo(
            path=str(path),
            slide_id=path.stem,
            format=fmt,
            width=levels[0].width,
            height=levels[0].height,
            mpp=the_mpp,
            levels=levels,
            properties=props,
        )

    def _read(self, x: int, y: int, width: int, height: int, level: int) -> np.ndarray:
        raise NotImplementedError

    def read_region(self, x: int, y: int, width: int, height: int, level: int = 0) -> np.ndarray:
        self._check_region_args(width, height, level)
        try:
            return self._read(int(x), int(y), int(width), int(height), level)
        except (OSError, ValueError) as e:
            raise InputError(self.info.path, f"cannot read pixels at level {level} ({e})") from e

    def close(self) -> None:
        self._handle.close()


class OpenSlideSlide(_VendorSlide):
    """A slide opened with OpenSlide (openslide-python + openslide-bin)."""

    def __init__(self, path: Path, mpp: float | None = None) -> None:
        try:
            import openslide
        except ImportError as e:  # pragma: no cover - installed with the package
            hint = "OpenSlide is not installed: pip install openslide-python openslide-bin"
            raise MissingDependencyError(hint) from e
        try:
            self._handle = openslide.OpenSlide(str(path))
        except (openslide.OpenSlideError, OSError) as e:
            raise InputError(path, f"OpenSlide cannot open this file ({e})") from e
        props = {str(k): str(v) for k, v in self._handle.properties.items()}
        vendor = props.get("openslide.vendor", "openslide")
        self._build_info(path, f"openslide:{vendor}", mpp, props)

    def _read(self, x: int, y: int, width: int, height: int, level: int) -> np.ndarray:
        img = self._handle.read_region((x, y), level, (width, height))
        return _rgba_on_white(np.asarray(img))


class TiffSlideSlide(_VendorSlide):
    """A TIFF-based slide opened with tiffslide (pure Python; the fallback when OpenSlide refuses)."""

    def __init__(self, path: Path, mpp: float | None = None) -> None:
        try:
            import tiffslide
        except ImportError as e:  # pragma: no cover - installed with the package
            raise MissingDependencyError("tiffslide is not installed: pip install tiffslide") from e
        try:
            self._handle = tiffslide.TiffSlide(str(path))
            props = {str(k): str(v) for k, v in self._handle.properties.items() if v is not None}
        except Exception as e:  # tifffile raises many types for damaged files
            raise InputError(path, f"cannot open this TIFF ({type(e).__name__}: {e})") from e
        self._build_info(path, "tiff", mpp, props)

    def _read(self, x: int, y: int, width: int, height: int, level: int) -> np.ndarray:
        lv = self.info.levels[level]
        lx, ly = math.floor(x / lv.downsample), math.floor(y / lv.downsample)
        out = np.full((height, width, 3), 255, dtype=np.uint8)
        x0, y0 = max(lx, 0), max(ly, 0)
        x1, y1 = min(lx + width, lv.width), min(ly + height, lv.height)
        if x1 <= x0 or y1 <= y0:
            return out
        loc = (round(x0 * lv.downsample), round(y0 * lv.downsample))
        arr = np.asarray(self._handle.read_region(loc, level, (x1 - x0, y1 - y0), as_array=True))
        if arr.ndim == 2:
            arr = np.repeat(arr[:, :, None], 3, axis=2)
        out[y0 - ly : y1 - ly, x0 - lx : x1 - lx] = _rgba_on_white(arr)
        return out


def open_vendor_slide(path: Path, mpp: float | None = None) -> SlideReader:
    """OpenSlide first; tiffslide for TIFF-based files OpenSlide cannot open."""
    try:
        return OpenSlideSlide(path, mpp)
    except (InputError, MissingDependencyError) as first:
        if path.suffix.lower() not in TIFF_SUFFIXES:
            raise
        log.info("OpenSlide could not open %s (%s); trying tiffslide", path, first)
        try:
            return TiffSlideSlide(path, mpp)
        except InputError as second:
            problem = f"neither OpenSlide nor tiffslide can open this file ({second.problem})"
            raise InputError(path, problem) from second
