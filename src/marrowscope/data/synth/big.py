"""A synthetic smear of the real slides' size (e.g. 180,000 x 60,000 px), composed tile by tile.

The real slides are a band of smear across a mostly empty glass slide: thick (piled cells) at the start
of the band, the monolayer where a hematologist counts, and a thin feathered end. A slide of that size
(32 GB of RGB) is never held: its pixels are composed on request (:meth:`StreamedSmear.read`) from a
small library of rendered fields of the patient (:func:`marrowscope.data.synth.field.render_field`:
thick, monolayer and thin areas with one stain), laid on a grid of field-sized cells over the band, each
cell showing one field of its zone in one of 8 flips/rotations, with glass outside the band's wavy
edges. A tile then costs a slice and a mask, and ``write_dicom_wsi_tiles`` writes the slide in bounded
memory. The first ``n_rois`` monolayer cells near the middle of the band are the slide's ROIs (a field's
side is the ROI size, 2048 px as in the real data); the boxes of their cells are known.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from marrowscope.cells import Box, Region
from marrowscope.data.synth.field import FieldConfig, PlacedCell, render_field
from marrowscope.data.synth.render import Stain, sample_stain

ZONE_SPLIT = (0.22, 0.80)  # band fraction where the thick area ends and the thin area starts
BAND = (0.32, 0.68)  # mean top and bottom of the band, fraction of the slide height
_EDGE_WAVE = 0.025  # amplitude of the band's wavy edges, fraction of the height
_X_RANGE = (0.04, 0.96)  # where the band starts and ends, fraction of the width
_LIBRARY_STRIPS = 2  # rendered strips (each: one thick, one monolayer, one thin field)
_MARGIN = 96  # rows rendered above and below a field and cut off (render_field's glass margins)


def _dihedral(img: np.ndarray, k: int) -> np.ndarray:
    """One of the 8 flips/rotations of a square image (a view), as field._transform does for cells."""
    if k & 4:
        img = img.transpose(1, 0, 2)
    if k & 1:
        img = img[:, ::-1]
    if k & 2:
        img = img[::-1]
    return img


def _dihedral_box(b: Box, k: int, size: int) -> Box:
    x1, y1, x2, y2 = b.as_tuple()
    if k & 4:
        x1, y1, x2, y2 = y1, x1, y2, x2
    if k & 1:
        x1, x2 = size - x2, size - x1
    if k & 2:
        y1, y2 = size - y2, size - y1
    return Box(x1, y1, x2, y2)


@dataclass(frozen=True)
class _Field:
    image: np.ndarray  # (P, P, 3) uint8
    cells: tuple[PlacedCell, ...]  # boxes in the field's own frame, clipped to it


class StreamedSmear:
    """The pixels of a ``width`` x ``height`` smear on request; ROIs and their cells' boxes."""

    def __init__(self, composition: Mapping[str, float], width: int, height: int, rng: np.random.Generator,
                 *, field_size: int = 2048, cells_per_field: int = 120, mpp: float = 0.11, n_rois: int = 2,
                 stain: Stain | None = None, look: str = "basic") -> None:
        if width < 4 * field_size or height < 4 * field_size:
            raise ValueError(f"a streamed smear needs at least 4 x 4 fields of {field_size} px "
                             f"(got {width} x {height} px)")
        self.width, self.height, self.field = width, height, field_size
        self.mpp = mpp
        self.stain = stain if stain is not None else sample_stain(rng, look)
        P = field_size
        self._library: dict[str, list[_Field]] = {"thick": [], "monolayer": [], "thin": []}
        for _ in range(_LIBRARY_STRIPS):
            cfg = FieldConfig(width=3 * P, height=P + 2 * _MARGIN, roi_size=P, n_rois=0,
                              cells_per_roi=cells_per_field, mpp=mpp, thick_fraction=1 / 3,
                              thin_fraction=1 / 3, look=look)
            strip = render_field(composition, cfg, rng, stain=self.stain)
            for z, zone in enumerate(("thick", "monolayer", "thin")):
                x0, y0 = z * P, _MARGIN
                img = np.ascontiguousarray(strip.image[y0 : y0 + P, x0 : x0 + P])
                cells = []
                for c in strip.cells:
                    cx, cy = c.box.center
                    if x0 <= cx < x0 + P and y0 <= cy < y0 + P:
                        b = Box(max(c.box.x1 - x0, 0.0), max(c.box.y1 - y0, 0.0),
                                min(c.box.x2 - x0, float(P)), min(c.box.y2 - y0, float(P)))
                        cells.append(PlacedCell(c.label, b, -1, c.zone))
                self._library[zone].append(_Field(img, tuple(cells)))
        self._cols, self._rows = math.ceil(width / P), math.ceil(height / P)
        self._variant = rng.integers(0, _LIBRARY_STRIPS, size=(self._rows, self._cols))
        self._turn = rng.integers(0, 8, size=(self._rows, self._cols))
        self._phase = rng.uniform(0, 2 * np.pi, 2)
        bg = np.asarray(self.stain.background, dtype=np.float32)
        grain = rng.integers(-2, 3, size=(4, P // 8, P // 8, 1)).astype(np.float32)
        self._glass = [np.clip(bg + g + 0.5, 0, 255).astype(np.uint8) for g in grain]  # 4 tileable patches
        self.rois, self.roi_cells = self._choose_rois(n_rois)

    # ------------------------------------------------------------------------------------------ geometry

    def band_top(self, x: np.ndarray) -> np.ndarray:
        wave = np.sin(2 * np.pi * 1.7 * x / self.width + self._phase[0])
        return self.height * (BAND[0] + _EDGE_WAVE * wave)

    def band_bottom(self, x: np.ndarray) -> np.ndarray:
        wave = np.sin(2 * np.pi * 1.1 * x / self.width + self._phase[1])
        return self.height * (BAND[1] + _EDGE_WAVE * wave)

    def zone_of(self, x: float) -> str | None:
        """The band's zone at level-0 x (None off the band's ends)."""
        x0, x1 = _X_RANGE[0] * self.width, _X_RANGE[1] * self.width
        if not x0 <= x < x1:
            return None
        u = (x - x0) / (x1 - x0)
        return "thick" if u < ZONE_SPLIT[0] else ("thin" if u >= ZONE_SPLIT[1] else "monolayer")

    def _cell_field(self, row: int, col: int) -> tuple[_Field, int] | None:
        zone = self.zone_of((col + 0.5) * self.field)
        if zone is None:
            return None
        return self._library[zone][int(self._variant[row, col])], int(self._turn[row, col])

    def _inside(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Band mask for level-0 columns ``x`` (w,) and rows ``y`` (h,): (h, w) bool."""
        xs = x.astype(np.float64)
        ok_x = (xs >= _X_RANGE[0] * self.width) & (xs < _X_RANGE[1] * self.width)
        yy = y[:, None]
        return (yy >= self.band_top(xs)[None]) & (yy < self.band_bottom(xs)[None]) & ok_x[None]

    def _choose_rois(self, n: int) -> tuple[tuple[Region, ...], tuple[PlacedCell, ...]]:
        """Monolayer cells wholly on the band, nearest the band's middle first."""
        P = self.field
        mid_x = (_X_RANGE[0] + (ZONE_SPLIT[0] + ZONE_SPLIT[1]) / 2 * (_X_RANGE[1] - _X_RANGE[0])) * self.width
        mid_y = self.height * (BAND[0] + BAND[1]) / 2
        options = []
        for r in range(self._rows):
            for c in range(self._cols):
                x0, y0 = c * P, r * P
                if x0 + P > self.width or y0 + P > self.height:
                    continue
                if any(self.zone_of(x) != "monolayer" for x in (x0, x0 + P - 1)):
                    continue
                if not self._inside(np.array([x0, x0 + P - 1]), np.array([y0, y0 + P - 1])).all():
                    continue
                options.append((abs(x0 + P / 2 - mid_x) + abs(y0 + P / 2 - mid_y), r, c))
        options.sort()
        rois, cells = [], []
        for k, (_, r, c) in enumerate(options[:n], start=1):
            fld, turn = self._cell_field(r, c) or (None, 0)
            assert fld is not None
            rois.append(Region(Box(c * P, r * P, (c + 1) * P, (r + 1) * P), roi_id=k))
            for pc in fld.cells:
                b = _dihedral_box(pc.box, turn, P)
                cells.append(PlacedCell(pc.label, Box(b.x1 + c * P, b.y1 + r * P, b.x2 + c * P, b.y2 + r * P),
                                        k, "monolayer"))
        return tuple(rois), tuple(cells)

    # ------------------------------------------------------------------------------------------ pixels

    def read(self, x: int, y: int, w: int, h: int) -> np.ndarray:
        """(h, w, 3) uint8 RGB of the level-0 region at (x, y): fields on the band, glass elsewhere."""
        P = self.field
        out = np.empty((h, w, 3), dtype=np.uint8)
        g = P // 8
        for gy in range(y // g, (y + h - 1) // g + 1):  # glass everywhere first (tileable patches)
            for gx in range(x // g, (x + w - 1) // g + 1):
                patch = self._glass[(gx * 7 + gy * 3) % len(self._glass)]
                ys, xs = max(gy * g, y), max(gx * g, x)
                ye, xe = min((gy + 1) * g, y + h), min((gx + 1) * g, x + w)
                py, px = gy * g, gx * g
                out[ys - y : ye - y, xs - x : xe - x] = patch[ys - py : ye - py, xs - px : xe - px]
        for r in range(y // P, (y + h - 1) // P + 1):
            for c in range(x // P, (x + w - 1) // P + 1):
                cf = self._cell_field(r, c) if r < self._rows and c < self._cols else None
                if cf is None:
                    continue
                ys, xs = max(r * P, y), max(c * P, x)
                ye, xe = min((r + 1) * P, y + h), min((c + 1) * P, x + w)
                cols = np.arange(xs, xe, dtype=np.float64)
                top, bottom = self.band_top(cols), self.band_bottom(cols)
                ends = cols.min() >= _X_RANGE[0] * self.width and cols.max() < _X_RANGE[1] * self.width
                if ye <= top.min() or ys >= bottom.max():
                    continue  # all glass
                img = _dihedral(cf[0].image, cf[1])[ys - r * P : ye - r * P, xs - c * P : xe - c * P]
                view = out[ys - y : ye - y, xs - x : xe - x]
                if ends and ys >= top.max() and ye <= bottom.min():
                    view[:] = img  # all band
                else:
                    mask = self._inside(cols, np.arange(ys, ye))
                    view[mask] = img[mask]
        return out
