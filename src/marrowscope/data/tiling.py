"""A grid of overlapping tiles over a W x H image or region (pixels at the model's mpp).

Tiles are ``tile_size`` squares (smaller only where the image is smaller), stepping by
``tile_size - overlap`` and shifted inwards at the right and bottom so that the last tile ends exactly
at the image edge. Each tile knows which sides have a neighbour (an *inner* edge).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tile:
    """One tile: top-left (x, y), size, grid position and which sides border another tile."""

    x: int
    y: int
    width: int
    height: int
    row: int
    col: int
    has_left: bool
    has_top: bool
    has_right: bool
    has_bottom: bool

    @property
    def box(self) -> tuple[int, int, int, int]:
        return (self.x, self.y, self.x + self.width, self.y + self.height)


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    if length <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, length - tile, step))
    starts.append(length - tile)
    return starts


def tile_grid(width: int, height: int, tile_size: int, overlap: int) -> list[Tile]:
    """Tiles covering ``width`` x ``height`` pixels, row by row."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width} x {height}")
    if tile_size <= 0:
        raise ValueError(f"tile_size must be positive, got {tile_size}")
    if not 0 <= overlap < tile_size:
        raise ValueError(f"overlap must be in [0, tile_size), got {overlap} for tile_size {tile_size}")
    xs = _starts(width, tile_size, overlap)
    ys = _starts(height, tile_size, overlap)
    tiles = []
    for r, y in enumerate(ys):
        for c, x in enumerate(xs):
            tiles.append(
                Tile(
                    x=x, y=y, width=min(tile_size, width - x), height=min(tile_size, height - y),
                    row=r, col=c,
                    has_left=c > 0, has_top=r > 0, has_right=c < len(xs) - 1, has_bottom=r < len(ys) - 1,
                )
            )
    return tiles


def fitted_tile_size(width: int, height: int, tile_size: int, overlap: int, max_tile_size: int) -> int:
    """The smallest tile side from ``tile_size`` up to ``max_tile_size`` (in steps of 32) that covers
    ``width`` x ``height`` (at ``overlap`` pixels) with the fewest tiles per side, when that is fewer
    than ``tile_size`` needs; else ``tile_size``.

    A 2048 px ROI at 0.11 µm/px is 901 px at 0.25 µm/px: 512 px tiles with 128 px overlap need three per
    side (the last two overlapping by 507 px), 544 px tiles two. ``analyze``'s field with 25 µm of
    context on each side is 1,101 px: three per side up to 576 px, two of 640 px (4 tiles instead of 9,
    each with about a training tile's context). Both sides should be multiples of 32 (the detectors pad
    to that)."""
    side = max(width, height)

    def per_side(t: int) -> int:
        return 1 if side <= t else len(range(0, side - t, t - overlap)) + 1

    if max_tile_size <= tile_size or per_side(max_tile_size) >= per_side(tile_size):
        return tile_size
    fewest = per_side(max_tile_size)
    sides = [*range(tile_size + 32, max_tile_size, 32), max_tile_size]
    return next(t for t in sides if per_side(t) == fewest)
