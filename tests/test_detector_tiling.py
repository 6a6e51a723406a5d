"""Tiling and cross-tile merging: a cell cut by a tile border is reported once."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pytest

from marrowscope.data.tiling import tile_grid
from marrowscope.engines.detect import Detections, detect_image, detect_region, merge_tile_boxes
from marrowscope.io.slides.array import ArraySlide


@dataclass
class _Pred:
    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray


class BlobDetector:
    """A perfect 'detector': every dark connected blob in the tile is one box (cut blobs come out cut)."""

    def __init__(self, mpp: float = 0.5, tile_size: int = 64) -> None:
        self._mpp, self._tile = mpp, tile_size
        self.calls = 0

    @property
    def mpp(self) -> float:
        return self._mpp

    @property
    def tile_size(self) -> int:
        return self._tile

    @property
    def classes(self) -> tuple[str, ...]:
        return ("cell",)

    def __call__(self, tiles: Sequence[np.ndarray]) -> list[_Pred]:
        from scipy import ndimage

        self.calls += 1
        out = []
        for t in tiles:
            lab, n = ndimage.label(t[..., 0] < 128)
            boxes = [[s[1].start, s[0].start, s[1].stop, s[0].stop] for s in ndimage.find_objects(lab)]
            out.append(_Pred(np.array(boxes, float).reshape(-1, 4), np.full(n, 0.9), np.zeros(n, np.int64)))
        return out


CELLS = [(10, 10, 30, 28), (52, 20, 70, 40), (40, 50, 60, 75), (100, 100, 118, 121), (5, 90, 20, 110)]


def _image() -> np.ndarray:
    img = np.full((130, 140, 3), 255, np.uint8)
    for x1, y1, x2, y2 in CELLS:
        img[y1:y2, x1:x2] = 40
    return img


def test_tile_grid_covers_with_overlap() -> None:
    tiles = tile_grid(140, 130, 64, 24)
    assert tiles[0].box == (0, 0, 64, 64)
    assert max(t.x + t.width for t in tiles) == 140 and max(t.y + t.height for t in tiles) == 130
    covered = np.zeros((130, 140), bool)
    for t in tiles:
        covered[t.y : t.y + t.height, t.x : t.x + t.width] = True
    assert covered.all()
    assert not tiles[0].has_left and tiles[0].has_right and tiles[-1].has_left and not tiles[-1].has_right
    assert tile_grid(30, 20, 64, 24)[0].box == (0, 0, 30, 20)
    with pytest.raises(ValueError):
        tile_grid(100, 100, 64, 64)


def test_border_straddling_cells_are_reported_once() -> None:
    # tile 64, overlap 24: tile starts 0, 40, 76 -> cells (52..70) and (40..60, 50..75) straddle borders
    det = BlobDetector(mpp=0.5, tile_size=64)
    out = detect_image(_image(), det, batch_size=3, overlap=24)
    got = sorted(map(tuple, out.boxes.astype(int).tolist()))
    assert got == sorted(CELLS)
    assert det.calls == 3  # 9 tiles in batches of 3


def test_region_boxes_are_level0_and_rescaled() -> None:
    # the slide is at 0.25 um/px, the detector at 0.5: read at half size, boxes mapped back x2 + offset
    img = np.full((260, 280, 3), 255, np.uint8)
    for x1, y1, x2, y2 in CELLS:
        img[2 * y1 + 20 : 2 * y2 + 20, 2 * x1 + 20 : 2 * x2 + 20] = 40
    slide = ArraySlide(img, mpp=0.25)
    out = detect_region(slide, (20, 20, 260, 260), BlobDetector(mpp=0.5, tile_size=64), overlap=24)
    want = sorted((2 * a + 20, 2 * b + 20, 2 * c + 20, 2 * d + 20) for a, b, c, d in CELLS)
    got = sorted(map(tuple, np.round(out.boxes).astype(int).tolist()))
    assert len(got) == len(want)
    assert np.abs(np.array(got) - np.array(want)).max() <= 2


def test_merge_uses_nms_per_class() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [0, 0, 10, 10]], float)
    keep = merge_tile_boxes(boxes, np.array([0.9, 0.8, 0.7]), np.array([0, 0, 1]))
    assert sorted(keep.tolist()) == [0, 2]


def test_empty_detections() -> None:
    d = Detections.empty(("cell",))
    assert len(d) == 0 and len(d.to_annotations()) == 0


class StretchBlobDetector(BlobDetector):
    """The same blob detector, allowed to stretch its tiles like the real one (``max_tile_size``)."""

    def __init__(self, max_tile_size: int, **kw: float) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.max_tile_size = max_tile_size
        self.tile_shapes: list[tuple[int, int]] = []

    def __call__(self, tiles: Sequence[np.ndarray]) -> list[_Pred]:
        self.tile_shapes += [t.shape[:2] for t in tiles]
        return super().__call__(tiles)


def test_fitted_tile_size_saves_tiles_and_keeps_overlap() -> None:
    from marrowscope.data.tiling import fitted_tile_size

    # a 2048² ROI at 0.11 µm/px seen at 0.25 µm/px: 901 px; 3x3 tiles of 512, or 2x2 of 544 (the smallest)
    assert len(tile_grid(901, 901, 512, 128)) == 9
    for most in (576, 640):
        size = fitted_tile_size(901, 901, 512, 128, most)
        grid = tile_grid(901, 901, size, 128)
        assert size == 544 and len(grid) == 4
        assert grid[1].x - (grid[0].x + grid[0].width) <= -128  # the overlap is kept
    # analyze's field with 25 µm of context: 1,101 px; three per side up to 576 px, two of 640 px
    assert fitted_tile_size(1101, 1101, 512, 128, 576) == 512
    assert fitted_tile_size(1101, 1101, 512, 128, 640) == 640
    assert len(tile_grid(1101, 1101, 640, 128)) == 4
    assert fitted_tile_size(901, 901, 512, 128, 512) == 512  # no stretch allowed
    assert fitted_tile_size(400, 300, 512, 128, 576) == 512  # one tile anyway
    for side in range(513, 3000, 37):  # fewest tiles, the smallest such tile, never a wider one
        s = fitted_tile_size(side, side, 512, 128, 640)
        assert 512 <= s <= 640 and s % 32 == 0
        n = len(tile_grid(side, side, s, 128))
        assert n <= len(tile_grid(side, side, 512, 128))
        assert n == min(len(tile_grid(side, side, t, 128)) for t in range(512, 641, 32))
        assert s == 512 or len(tile_grid(side, side, s - 32, 128)) > n


def test_stretched_tiles_find_the_same_cells() -> None:
    det = StretchBlobDetector(max_tile_size=84, mpp=0.5, tile_size=64)
    out = detect_image(_image(), det, batch_size=8, overlap=24)
    assert sorted(map(tuple, out.boxes.astype(int).tolist())) == sorted(CELLS)
    assert len(det.tile_shapes) == 4 and max(max(s) for s in det.tile_shapes) <= 84  # 2x2, not 3x3
