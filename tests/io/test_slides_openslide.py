"""Vendor formats: a generic tiled pyramidal TIFF through OpenSlide and through the tiffslide fallback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from marrowscope.errors import InputError
from marrowscope.io.slides import open_slide
from marrowscope.io.slides.openslide_ import OpenSlideSlide, TiffSlideSlide


def _image() -> np.ndarray:
    yy, xx = np.mgrid[0:600, 0:1000]
    return np.stack([xx % 256, yy % 256, np.full_like(xx, 100)], axis=2).astype(np.uint8)


@pytest.fixture(scope="module")
def tiff(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tif") / "slide.tif"
    img = _image()
    with tifffile.TiffWriter(path) as tw:
        res = (1e4 / 0.25, 1e4 / 0.25)
        tw.write(img, tile=(256, 256), compression="zlib", resolution=res, resolutionunit="CENTIMETER")
        low = np.ascontiguousarray(img[::4, ::4])
        tw.write(low, tile=(256, 256), compression="zlib", subfiletype=1, resolution=(1e4, 1e4),
                 resolutionunit="CENTIMETER")
    return path


@pytest.mark.parametrize("reader", ["openslide", "tiffslide"])
def test_tiff_levels_pixels_and_white_outside(tiff: Path, reader: str) -> None:
    s = open_slide(tiff) if reader == "openslide" else TiffSlideSlide(tiff)
    assert isinstance(s, OpenSlideSlide if reader == "openslide" else TiffSlideSlide)
    with s:
        assert s.info.slide_id == "slide"
        assert s.info.mpp == pytest.approx(0.25)
        sizes = [(lv.width, lv.height, lv.downsample) for lv in s.info.levels]
        assert sizes == [(1000, 600, 1.0), (250, 150, 4.0)]
        img = _image()
        np.testing.assert_array_equal(s.read_region(0, 0, 1000, 600), img)
        np.testing.assert_array_equal(s.read_region(40, 20, 10, 5, level=1), img[::4, ::4][5:10, 10:20])
        out = s.read_region(-10, -10, 50, 50)
        assert (out[:10] == 255).all() and (out[:, :10] == 255).all()
        np.testing.assert_array_equal(out[10:, 10:], img[:40, :40])
        assert s.read_region_mpp(0, 0, 400, 200, mpp=0.5).shape == (100, 200, 3)


def test_mpp_override(tiff: Path) -> None:
    with open_slide(tiff, mpp=0.11) as s:
        assert s.info.mpp == 0.11 and s.info.levels[1].mpp == pytest.approx(0.44)


def test_broken_tiff(tmp_path: Path) -> None:
    p = tmp_path / "broken.tif"
    p.write_bytes(b"II*\x00" + b"\x00" * 20)
    with pytest.raises(InputError, match="broken.tif"):
        open_slide(p)
    e = tmp_path / "empty.svs"
    e.write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        open_slide(e)
