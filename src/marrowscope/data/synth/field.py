"""A synthetic bone-marrow aspirate smear: thick, monolayer and thin (feathered) areas, ROIs, cells.

The smear runs along x: a thick area (piled, overlapping cells) at the left, the monolayer in the
middle (where the ROIs lie, like the annotated 2048 x 2048 px monolayer ROIs of the real dataset),
and a thin feathered edge at the right, with glass around it. Every object that is placed from the
patient's composition gets a true box and label (:class:`PlacedCell`); background red cells and
platelets are scenery (never boxed, as in the real annotations where most red cells are unboxed).
``FieldConfig.box_red_cells`` boxes the background red cells inside ROIs too (label ``erythrocyte``), for a
detector that learns red cells as a class of their own; the pixels are the same either way.

Coordinates are pixels of the returned image (the slide's level-0 frame, before any MRXS offset).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from marrowscope.cells import Box, Region
from marrowscope.data.synth.render import DEFAULT_MPP, RenderedCell, Stain, od_of, paste_od, render_cell

log = logging.getLogger(__name__)

_OCC = 8  # occupancy grid cell (px)
_WOBBLE = 0.025  # amplitude of the wavy zone borders, fraction of the width
_GLASS = 0.015  # glass margin above and below the smear, fraction of the height
_ROI_MARGIN = 48  # px between an ROI and a zone border
_ROI_GAP = 32  # px between ROIs
ZONES: tuple[str, ...] = ("thick", "monolayer", "thin")


@dataclass(frozen=True)
class FieldConfig:
    """Slide geometry and densities. ``cells_per_roi`` boxed objects are placed in each ROI."""

    width: int = 6144
    height: int = 6144
    roi_size: int = 2048
    n_rois: int = 2
    cells_per_roi: int = 120
    mpp: float = DEFAULT_MPP
    rbc_coverage: float = 0.33  # fraction of the monolayer covered by (unboxed) red cells
    platelets_per_cell: float = 1.0  # unboxed background platelets per boxed object
    thick_fraction: float = 0.2
    thin_fraction: float = 0.17
    zone_density: tuple[float, float, float] = (
        2.4,
        1.0,
        0.3,
    )  # boxed objects per area vs ROI: thick, mono, thin
    variants_per_label: int = 3  # distinct renders reused (flipped/rotated) for cells outside ROIs
    look: str = "basic"  # how cells are drawn: marrowscope.data.synth.styles.LOOKS
    box_red_cells: bool = False  # box the background red cells whose centre lies in an ROI (erythrocyte)

    def __post_init__(self) -> None:
        if self.width < 64 or self.height < 64:
            raise ValueError(f"slide size {self.width}x{self.height} is too small (need >= 64 px)")
        if self.roi_size < 32:
            raise ValueError(f"ROI size {self.roi_size} is too small (need >= 32 px)")
        if self.n_rois < 0 or self.cells_per_roi < 0:
            raise ValueError("n_rois and cells_per_roi must be >= 0")
        fit = self.rois_that_fit()
        if fit < self.n_rois:
            raise ValueError(
                f"only {fit} of {self.n_rois} non-overlapping {self.roi_size} px ROIs fit in the monolayer "
                f"of a {self.width}x{self.height} px slide: use a larger slide size, fewer or smaller ROIs"
            )

    def monolayer_bounds(self) -> tuple[int, int, int, int]:
        """Worst-case (x_lo, x_hi, y_lo, y_hi) of ROI top-left corners inside the monolayer."""
        wob = _WOBBLE * self.width
        x_lo = int(np.ceil(self.width * self.thick_fraction + wob)) + _ROI_MARGIN
        x_hi = int(np.floor(self.width * (1.0 - self.thin_fraction) - wob)) - _ROI_MARGIN - self.roi_size
        y_lo = int(_GLASS * self.height) + _ROI_MARGIN
        y_hi = int((1.0 - _GLASS) * self.height) - _ROI_MARGIN - self.roi_size
        return x_lo, x_hi, y_lo, y_hi

    def rois_that_fit(self) -> int:
        x_lo, x_hi, y_lo, y_hi = self.monolayer_bounds()
        if x_hi < x_lo or y_hi < y_lo:
            return 0
        cols = (x_hi - x_lo + self.roi_size + _ROI_GAP) // (self.roi_size + _ROI_GAP)
        rows = (y_hi - y_lo + self.roi_size + _ROI_GAP) // (self.roi_size + _ROI_GAP)
        return int(cols * rows)


@dataclass(frozen=True)
class PlacedCell:
    """One boxed object on the slide: label, true box, ROI (-1 = outside) and smear zone. ``scenery``: a
    background red cell boxed by ``FieldConfig.box_red_cells`` (a class-level box, as in data that boxes
    every red cell, not a cell the simulated experts label one by one)."""

    label: str
    box: Box
    roi_id: int
    zone: str
    scenery: bool = False


@dataclass(frozen=True)
class SmearField:
    """A rendered slide (RGB uint8, level 0), its boxed objects and ROIs."""

    image: np.ndarray
    cells: tuple[PlacedCell, ...]
    rois: tuple[Region, ...]
    stain: Stain
    mpp: float


def _borders(cfg: FieldConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Per-row x of the thick|monolayer and monolayer|thin borders, and the glass margins (y)."""
    y = np.arange(cfg.height, dtype=np.float32) / cfg.height
    p1, p2 = rng.uniform(0, 2 * np.pi, 2)
    wob = _WOBBLE * cfg.width
    b1 = cfg.width * cfg.thick_fraction + wob * np.sin(2 * np.pi * 1.3 * y + p1)
    b2 = cfg.width * (1.0 - cfg.thin_fraction) + wob * np.sin(2 * np.pi * 0.9 * y + p2)
    top, bottom = _GLASS * cfg.height, (1.0 - _GLASS) * cfg.height
    return b1.astype(np.float32), b2.astype(np.float32), top, bottom


def _zone_at(x: float, y: float, b1: np.ndarray, b2: np.ndarray) -> str:
    row = int(np.clip(y, 0, len(b1) - 1))
    if x < b1[row]:
        return "thick"
    if x >= b2[row]:
        return "thin"
    return "monolayer"


def _place_rois(cfg: FieldConfig, rng: np.random.Generator) -> list[Region]:
    """ROIs on a jittered grid inside the (worst-case) monolayer, so they never reach thick or thin areas."""
    if cfg.n_rois == 0:
        return []
    x_lo, x_hi, y_lo, y_hi = cfg.monolayer_bounds()
    gap, size = _ROI_GAP, cfg.roi_size
    span_x, span_y = x_hi - x_lo + size, y_hi - y_lo + size  # usable extent
    cols, rows = (span_x + gap) // (size + gap), (span_y + gap) // (size + gap)
    cell_w, cell_h = span_x / cols, span_y / rows  # grid cells, each holds one ROI with some slack
    picks = sorted(rng.choice(cols * rows, size=cfg.n_rois, replace=False).tolist())
    rois: list[Region] = []
    for k, idx in enumerate(picks):
        r, c = divmod(int(idx), int(cols))
        slack_x, slack_y = max(cell_w - size - gap, 0.0), max(cell_h - size - gap, 0.0)
        x = int(x_lo + c * cell_w + rng.uniform(0, slack_x))
        y = int(y_lo + r * cell_h + rng.uniform(0, slack_y))
        rois.append(Region(box=Box(x, y, x + size, y + size), roi_id=k + 1))
    return rois


def _transform(cell: RenderedCell, k: int) -> RenderedCell:
    """One of the 8 flips/rotations of a rendered cell (k in 0..7), box transformed with it (contiguous)."""
    od, mask = cell.od, cell.mask
    x1, y1, x2, y2 = cell.box
    h, w = mask.shape
    if k & 4:  # transpose
        od, mask = od.transpose(1, 0, 2), mask.T
        x1, y1, x2, y2 = y1, x1, y2, x2
        h, w = w, h
    if k & 1:  # flip left-right
        od, mask = od[:, ::-1], mask[:, ::-1]
        x1, x2 = w - x2, w - x1
    if k & 2:  # flip up-down
        od, mask = od[::-1], mask[::-1]
        y1, y2 = h - y2, h - y1
    return RenderedCell(
        label=cell.label, od=np.ascontiguousarray(od), mask=np.ascontiguousarray(mask), box=(x1, y1, x2, y2)
    )


class _Occupancy:
    """Coarse occupancy grid to let cells touch but not pile up (except in thick areas)."""

    def __init__(self, width: int, height: int) -> None:
        self.grid = np.zeros((height // _OCC + 2, width // _OCC + 2), dtype=np.uint8)

    def _window(self, cell: RenderedCell, x0: int, y0: int) -> tuple[slice, slice, np.ndarray]:
        m = cell.mask[::_OCC, ::_OCC] > 0.5
        gy, gx = y0 // _OCC, x0 // _OCC
        H, W = self.grid.shape
        ys, xs = max(gy, 0), max(gx, 0)
        ye, xe = min(gy + m.shape[0], H), min(gx + m.shape[1], W)
        return slice(ys, ye), slice(xs, xe), m[ys - gy : ye - gy, xs - gx : xe - gx]

    def overlap(self, cell: RenderedCell, x0: int, y0: int) -> float:
        sy, sx, m = self._window(cell, x0, y0)
        n = int(m.sum())
        if n == 0:
            return 0.0
        return float((self.grid[sy, sx][m] > 0).sum()) / n

    def add(self, cell: RenderedCell, x0: int, y0: int) -> None:
        sy, sx, m = self._window(cell, x0, y0)
        g = self.grid[sy, sx]
        g[m] = np.minimum(g[m].astype(np.int32) + 1, 255).astype(np.uint8)


_MAX_OVERLAP = {"thick": 0.6, "monolayer": 0.06, "thin": 0.0}
_RBC_OVERLAP = {"thick": 1.0, "monolayer": 0.12, "thin": 0.02}
_RBC_COVERAGE = {"thick": 1.6, "monolayer": 1.0, "thin": 0.25}


def _labels_from(composition: Mapping[str, float], n: int, rng: np.random.Generator) -> list[str]:
    keys = list(composition)
    p = np.array([composition[k] for k in keys], dtype=float)
    return [keys[i] for i in rng.choice(len(keys), size=n, p=p / p.sum())]


def render_field(
    composition: Mapping[str, float],
    config: FieldConfig,
    rng: np.random.Generator,
    stain: Stain | None = None,
) -> SmearField:
    """Render a smear slide for a patient composition (label -> probability over boxed objects)."""
    from marrowscope.data.synth.render import sample_stain

    cfg = config
    stain = stain if stain is not None else sample_stain(rng, cfg.look)
    W, H = cfg.width, cfg.height
    b1, b2, top, bottom = _borders(cfg, rng)
    rois = _place_rois(cfg, rng)
    stamps: list[tuple[RenderedCell, int, int]] = []  # composed band by band at the end (bounded memory)
    occ = _Occupancy(W, H)
    placed: list[PlacedCell] = []
    mpp, blur = cfg.mpp, stain.blur

    def in_roi(cx: float, cy: float) -> int:
        for r in rois:
            if r.box.contains_point(cx, cy):
                return r.roi_id
        return -1

    def try_place(cell: RenderedCell, cx: float, cy: float, zone: str, roi_id: int) -> bool:
        bx1, by1, bx2, by2 = cell.box
        x0 = int(round(cx - (bx1 + bx2) / 2))
        y0 = int(round(cy - (by1 + by2) / 2))
        box = Box(x0 + bx1, y0 + by1, x0 + bx2, y0 + by2)
        if not box.within(W, H) or box.y1 < top or box.y2 > bottom:
            return False
        if in_roi(*box.center) != roi_id:
            return False
        if occ.overlap(cell, x0, y0) > _MAX_OVERLAP[zone]:
            return False
        stamps.append((cell, x0, y0))
        occ.add(cell, x0, y0)
        placed.append(PlacedCell(label=cell.label, box=box, roi_id=roi_id, zone=zone))
        return True

    # 1. boxed objects inside ROIs: each rendered individually, large ones first
    for roi in rois:
        labels = _labels_from(composition, cfg.cells_per_roi, rng)
        cells = [render_cell(lb, rng, mpp=mpp, blur=blur, look=cfg.look) for lb in labels]
        cells.sort(key=lambda c: -c.mask.size)
        for cell in cells:
            for _ in range(60):
                cx = rng.uniform(roi.box.x1, roi.box.x2)
                cy = rng.uniform(roi.box.y1, roi.box.y2)
                if try_place(cell, cx, cy, "monolayer", roi.roi_id):
                    break
        n_in = sum(1 for c in placed if c.roi_id == roi.roi_id)
        if n_in < cfg.cells_per_roi:
            log.warning(
                "ROI %d: placed %d of %d cells (too crowded for a monolayer; lower --cells-per-roi or raise "
                "--roi-size)",
                roi.roi_id,
                n_in,
                cfg.cells_per_roi,
            )

    # 2. boxed objects outside ROIs: a few renders per label reused with flips and rotations
    roi_area = float(cfg.roi_size * cfg.roi_size)
    density = cfg.cells_per_roi / roi_area if roi_area > 0 else 0.0
    rows = np.arange(H)
    glass = (rows < top) | (rows > bottom)
    zone_area = {
        "thick": float(np.where(glass, 0, b1).sum()),
        "monolayer": float(np.where(glass, 0, b2 - b1).sum()) - sum(r.box.width * r.box.height for r in rois),
        "thin": float(np.where(glass, 0, W - b2).sum()),
    }
    pool: dict[str, list[RenderedCell]] = {}

    transformed: dict[tuple[str, int, int], RenderedCell] = {}  # shared, so memory stays bounded

    def variant(label: str) -> RenderedCell:
        lst = pool.setdefault(label, [])
        if len(lst) < cfg.variants_per_label:
            lst.append(render_cell(label, rng, mpp=mpp, blur=blur, look=cfg.look))
            return lst[-1]
        key = (label, int(rng.integers(len(lst))), int(rng.integers(8)))
        if key not in transformed:
            transformed[key] = _transform(lst[key[1]], key[2])
        return transformed[key]

    for zone, factor in zip(ZONES, cfg.zone_density, strict=True):
        n = int(rng.poisson(max(zone_area[zone], 0.0) * density * factor))
        for label in _labels_from(composition, n, rng) if n > 0 else []:
            cell = variant(label)
            for _ in range(8):
                cy = rng.uniform(top, bottom)
                row = int(cy)
                lo, hi = {"thick": (0.0, b1[row]), "monolayer": (b1[row], b2[row]), "thin": (b2[row], W)}[
                    zone
                ]
                cx = rng.uniform(lo, hi)
                if in_roi(cx, cy) == -1 and try_place(cell, cx, cy, zone, -1):
                    break

    # 3. scenery: unboxed red cells (boxed in ROIs with ``box_red_cells``) and platelets
    n_boxed = len(placed)
    rbc_pool = [
        _transform(render_cell("erythrocyte", rng, mpp=mpp, blur=blur, look=cfg.look), k)
        for _ in range(8)
        for k in range(8)
    ]
    rbc_occ = _Occupancy(W, H)
    rbc_area = float(np.mean([float((c.mask > 0.5).sum()) for c in rbc_pool]))
    for zone in ZONES:
        n = int(
            max(zone_area[zone] + (0 if zone != "monolayer" else len(rois) * roi_area), 0.0)
            * cfg.rbc_coverage
            * _RBC_COVERAGE[zone]
            / rbc_area
        )
        for _ in range(n):
            rbc = rbc_pool[int(rng.integers(len(rbc_pool)))]
            for _ in range(3):
                cy = rng.uniform(top, bottom)
                row = int(cy)
                lo, hi = {"thick": (0.0, b1[row]), "monolayer": (b1[row], b2[row]), "thin": (b2[row], W)}[
                    zone
                ]
                cx = rng.uniform(lo, hi)
                h, w = rbc.shape
                x0, y0 = int(cx - w / 2), int(cy - h / 2)
                if zone != "thick" and occ.overlap(rbc, x0, y0) > 0.1:
                    continue
                if rbc_occ.overlap(rbc, x0, y0) > _RBC_OVERLAP[zone]:
                    continue
                stamps.append((rbc, x0, y0))
                rbc_occ.add(rbc, x0, y0)
                if cfg.box_red_cells:
                    _box_red_cell(rbc, x0, y0, W, H, in_roi, placed)
                break
    plt_pool = [render_cell("thrombocyte", rng, mpp=mpp, blur=blur, look=cfg.look) for _ in range(8)]
    for _ in range(int(n_boxed * cfg.platelets_per_cell)):
        p = plt_pool[int(rng.integers(len(plt_pool)))]
        x0, y0 = int(rng.uniform(0, W - 40)), int(rng.uniform(top, bottom - 40))
        if occ.overlap(p, x0, y0) == 0.0:
            stamps.append((p, x0, y0))

    image = _compose_image(stamps, W, H, b1, b2, top, bottom, stain, rng)
    log.debug("smear %dx%d: %d boxed objects, %d ROIs", W, H, len(placed), len(rois))
    return SmearField(image=image, cells=tuple(placed), rois=tuple(rois), stain=stain, mpp=mpp)


def _box_red_cell(rbc: RenderedCell, x0: int, y0: int, width: int, height: int,
                  in_roi: Callable[[float, float], int], placed: list[PlacedCell]) -> None:
    """Box a background red cell stamped at (x0, y0) when its centre lies in an ROI."""
    bx1, by1, bx2, by2 = rbc.box
    box = Box(max(x0 + bx1, 0), max(y0 + by1, 0), min(x0 + bx2, width), min(y0 + by2, height))
    roi_id = in_roi(*box.center) if box.x2 > box.x1 and box.y2 > box.y1 else -1
    if roi_id >= 0:
        placed.append(PlacedCell(label="erythrocyte", box=box, roi_id=roi_id, zone="monolayer", scenery=True))


def _interp_matrix(n_full: int, n_low: int, f: int, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Rows ``start:stop`` of the (n_full, n_low) linear interpolation weights, low grid spacing ``f``."""
    stop = n_full if stop is None else stop
    pos = np.arange(start, stop, dtype=np.float32) / f
    i0 = np.clip(np.floor(pos).astype(int), 0, n_low - 2)
    t = pos - i0
    m = np.zeros((stop - start, n_low), dtype=np.float32)
    m[np.arange(stop - start), i0] = 1.0 - t
    m[np.arange(stop - start), i0 + 1] = t
    return m


def _compose_image(
    stamps: list[tuple[RenderedCell, int, int]],
    W: int,
    H: int,
    b1: np.ndarray,
    b2: np.ndarray,
    top: float,
    bottom: float,
    stain: Stain,
    rng: np.random.Generator,
) -> np.ndarray:
    """Sum the objects' OD with the plasma haze and glass noise, convert to RGB band by band."""
    f = 32
    gy, gx = np.mgrid[0 : H // f + 2, 0 : W // f + 2].astype(np.float32) * f
    rows = np.clip(gy.astype(int), 0, H - 1)
    thick = gx < b1[rows]
    thin = gx >= b2[rows]
    haze = np.where(thick, 0.22, np.where(thin, 0.03, 0.07)).astype(np.float32)
    haze *= (gy > top) & (gy < bottom)
    haze = ndi.gaussian_filter(haze, 3.0)
    low = ndi.gaussian_filter(rng.standard_normal(haze.shape).astype(np.float32), 4.0)
    haze *= np.clip(1.0 + 2.5 * low, 0.3, 2.0)
    haze_od = od_of((222, 210, 232))
    gain = np.asarray(stain.od_gain, dtype=np.float32)
    bg = np.asarray(stain.background, dtype=np.float32)
    rx = _interp_matrix(W, haze.shape[1], f)
    haze_x = haze @ rx.T  # (h_low, W)
    band = 512
    grain = rng.integers(-2, 3, size=(band, 256)).astype(np.float32)
    grain = np.tile(grain, (1, W // 256 + 1))[:, :W]
    per_band: list[list[tuple[RenderedCell, int, int]]] = [[] for _ in range((H + band - 1) // band)]
    for st in stamps:
        cell, _, y0 = st
        first, last = max(y0, 0) // band, min(y0 + cell.shape[0] - 1, H - 1) // band
        for b in range(first, last + 1):
            per_band[b].append(st)
    out = np.empty((H, W, 3), dtype=np.uint8)
    for b, items in enumerate(per_band):
        r0, r1 = b * band, min((b + 1) * band, H)
        od = np.zeros((r1 - r0, W, 3), dtype=np.float32)
        for cell, x0, y0 in items:
            paste_od(od, cell, x0, y0 - r0)
        rows_w = _interp_matrix(H, haze.shape[0], f, r0, r1)
        od += (rows_w @ haze_x)[..., None] * haze_od
        od *= -gain
        np.exp(od, out=od)
        od *= bg
        od += grain[: r1 - r0, :, None] + 0.5
        np.clip(od, 0, 255, out=od)
        out[r0:r1] = od.astype(np.uint8)
    return out
