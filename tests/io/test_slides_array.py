"""ArraySlide: levels, read_region (white outside), read_region_mpp sizes, thumbnails."""

from __future__ import annotations

import numpy as np
import pytest

from marrowscope.errors import InputError
from marrowscope.io.slides import open_slide
from marrowscope.io.slides.array import ArraySlide


def _gradient(h: int = 600, w: int = 1000) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx % 256, yy % 256, (xx + yy) // 8 % 256], axis=2).astype(np.uint8)


def test_levels_and_sizes() -> None:
    s = ArraySlide(_gradient(), mpp=0.11, slide_id="s1")
    assert s.info.width == 1000 and s.info.height == 600
    assert [lv.downsample for lv in s.info.levels] == [1.0, 4.0]
    assert (s.info.levels[1].width, s.info.levels[1].height) == (250, 150)
    assert s.info.levels[1].mpp == pytest.approx(0.44)
    s3 = ArraySlide(_gradient(), levels=3)
    assert [lv.downsample for lv in s3.info.levels] == [1.0, 4.0, 16.0]
    assert (s3.info.levels[2].width, s3.info.levels[2].height) == (63, 38)


def test_read_region_level0_exact_and_white_outside() -> None:
    img = _gradient()
    s = ArraySlide(img)
    np.testing.assert_array_equal(s.read_region(10, 20, 30, 40), img[20:60, 10:40])
    out = s.read_region(-5, -5, 10, 10)
    assert (out[:5, :] == 255).all() and (out[:, :5] == 255).all()
    np.testing.assert_array_equal(out[5:, 5:], img[:5, :5])
    far = s.read_region(5000, 5000, 8, 8)
    assert far.shape == (8, 8, 3) and (far == 255).all()


def test_read_region_lower_level_is_box_mean() -> None:
    img = np.zeros((64, 64, 3), np.uint8)
    img[:32] = 200
    s = ArraySlide(img, levels=(1, 4))
    lvl = s.read_region(0, 0, 16, 16, level=1)
    assert lvl.shape == (16, 16, 3)
    assert (lvl[:8] == 200).all() and (lvl[8:] == 0).all()
    # x, y are level-0 pixels
    np.testing.assert_array_equal(s.read_region(32, 32, 4, 4, level=1), lvl[8:12, 8:12])


def test_read_region_mpp_sizes() -> None:
    s = ArraySlide(_gradient(), mpp=0.25)
    assert s.read_region_mpp(0, 0, 400, 200, mpp=0.5).shape == (100, 200, 3)
    assert s.read_region_mpp(0, 0, 400, 200, mpp=1.0).shape == (50, 100, 3)
    assert s.read_region_mpp(0, 0, 400, 200, mpp=0.25).shape == (200, 400, 3)
    with pytest.raises(ValueError, match="pixel size"):
        ArraySlide(_gradient()).read_region_mpp(0, 0, 10, 10, mpp=0.5)


def test_grey_rgba_float_inputs() -> None:
    assert ArraySlide(np.zeros((10, 12), np.uint8)).read_region(0, 0, 12, 10).shape == (10, 12, 3)
    assert ArraySlide(np.zeros((10, 12, 4), np.uint8)).info.width == 12
    f = ArraySlide(np.ones((4, 4, 3), np.float32))
    assert (f.read_region(0, 0, 4, 4) == 255).all()
    with pytest.raises(InputError):
        ArraySlide(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(InputError):
        ArraySlide(np.zeros((4, 4, 3)), mpp=-1)


def test_open_slide_array_and_png(tmp_path) -> None:
    from PIL import Image

    img = _gradient(100, 120)
    s = open_slide(img, mpp=0.5)
    assert s.info.mpp == 0.5 and s.info.format == "array"
    p = tmp_path / "x.png"
    Image.fromarray(img).save(p)
    with open_slide(p, mpp=0.3) as s2:
        assert s2.info.mpp == 0.3 and s2.info.slide_id == "x"
        np.testing.assert_array_equal(s2.read_region(0, 0, 120, 100), img)
    with open_slide(p) as s3:
        assert s3.info.mpp is None


def test_thumbnail() -> None:
    t = ArraySlide(_gradient(), levels=3).thumbnail(50)
    assert max(t.shape[:2]) <= 50


def _png_claiming(path, width: int, height: int) -> None:  # noqa: ANN001
    """A tiny PNG whose header claims ``width`` x ``height`` pixels (a decompression bomb's header)."""
    import struct
    import zlib

    from PIL import Image

    Image.new("RGB", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))


def test_image_above_pillows_bomb_limit_opens(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    """A slide-sized PNG is legitimate input: Pillow's decompression-bomb guard (here lowered so the test
    stays small; ~179 Mpx by default, e.g. 16384 x 16384) does not stop a file the user named."""
    from PIL import Image

    img = np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8)
    p = tmp_path / "big.png"
    Image.fromarray(img).save(p)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with open_slide(p, mpp=0.25) as s:
        np.testing.assert_array_equal(s.read_region(0, 0, 400, 300), img)
    assert Image.MAX_IMAGE_PIXELS == 1000  # Pillow's own limit is left as it was


def test_image_beyond_the_bound_is_a_clear_error_before_decoding(tmp_path) -> None:  # noqa: ANN001
    from marrowscope.io.slides import MAX_IMAGE_PIXELS

    p = tmp_path / "bomb.png"
    _png_claiming(p, 100_000, 100_000)
    assert MAX_IMAGE_PIXELS < 100_000**2
    with pytest.raises(InputError, match=r"100000 x 100000 px .*tiled pyramidal TIFF"):
        open_slide(p, mpp=0.25)
    _png_claiming(p, 2_000, 2_000)  # within the bound, but its pixel data is missing
    with pytest.raises(InputError, match="cannot read this image"):
        open_slide(p, mpp=0.25)
