"""Pixel size of an uncalibrated field image, read from its red cells.

A microscope camera's JPEG or a screenshot carries no pixel size, yet every model here works at a fixed
µm/px. Red cells are the ruler every blood or marrow smear carries: ~7.5 µm across and the most numerous
object in a field. :func:`estimate_red_cell_scale` reads their size without any model, by **granulometry**
(the morphological size distribution, Matheron/Serra):

1. the stained mask: the green channel (haemoglobin and both Romanowsky dyes absorb green) below its Otsu
   threshold, closed by one pixel and with holes filled (a red cell's pale centre); then without the
   nucleated cells: where the darkest of three grey classes (multi-Otsu on green) is bluer than the rest
   of the stain (a nucleus, not a dark red cell), an object with more than a tenth of its area in it is
   a nucleated cell; the threshold is redone on the rest of the field (a nucleus can set it below pale
   red cells) and what the new mask joins to a nucleated cell (its cytoplasm) is left out as well;
2. the pattern spectrum: the stained area removed by an opening with a disk of radius r, for r = 1, 2, ...
   (an opening removes every object, or part of a clump, whose inscribed disk is smaller than r; computed
   with two distance transforms per radius). Touching red cells are removed at their own radius, since
   the necks between them are thinner than the cells; white cells, platelets and noise are fewer and
   sit at other radii (and step 1 has left the nucleated ones out);
3. the peak of that spectrum, as a kernel density over ln(diameter) in the image's own pixels. A window
   whose objects are too large to be red cells (most of the mask outlasts the largest opening, or the
   peak sits at the largest diameters tried: a crop around one cell) adds nothing.

``mpp = red_cell_um / diameter_px``. A field is analysed at a working resolution whose short side is
~``work_side`` px; where the red cells come out small there (< ``min_work_radius`` px), the estimate is
redone on a full-resolution window. Spectra of several fields of one microscope add up
(:func:`pooled_red_cell_scale`), which steadies the peak. An image with too little stained area gets no
estimate (``None``) and the caller needs a pixel size from the user.

The parameters follow from the description above (a red cell is round and ~7.5 µm); they were checked, not
fitted, on 30 TXL-PBC training fields of each of its four sources against their red-cell boxes (the
nucleated-cell step on 80; its second threshold on PBC training fields that it had left with no red cell).
``benchmarks/red_cell_scale.py`` measures the estimate on every TXL-PBC field.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from marrowscope.io.slides.base import SlideReader

#: a red cell's diameter in a dried smear (µm); the blood fields' scales are read from it, as BCCD's
RED_CELL_UM = 7.5
CALIBRATION_FILE = "red_cell_scale.json"
#: ``--mpp auto``: a slide without a pixel size gets the one its red cells give
MPP_AUTO = "auto"
#: a pixel size as the user gives it: µm/px, ``auto``, or None (the slide's own)
PixelSize = float | str | None
#: slide property (JSON of :meth:`RedCellScale.to_dict`) that marks a pixel size read from red cells
MPP_ESTIMATED_PROPERTY = "marrowscope.mpp_estimated"
#: the smallest opening radius (working px; smaller ones remove pixel noise and rims) and the step
MIN_RADIUS, RADIUS_STEP = 2.0, 1.05
#: a slide larger than this (level-0 pixels) is sampled in tiles rather than read whole
WHOLE_IMAGE_PX = 4096 * 4096


@dataclass(frozen=True)
class ScaleConfig:
    red_cell_um: float = RED_CELL_UM
    work_side: int = 240  # short side of the working image (px)
    window: int = 640  # larger images are read in windows of this side (the most stained ones)
    max_windows: int = 4
    min_work_radius: float = 6.0  # below this (working px) redo at full resolution
    closing: int = 1  # px at working resolution: bridges a red cell's broken rim before holes are filled
    min_stained: float = 0.02  # fraction of the image; less is a blank field
    bandwidth: float = 0.06  # kernel width on ln(diameter)
    #: a window is left out where its objects are too large for it to hold red cells (a crop around one
    #: cell): more than ``max_left`` of the mask outlasts the largest opening, or the spectrum peaks
    #: above ``edge_peak`` of the largest diameter tried
    max_left: float = 0.5
    edge_peak: float = 0.85
    #: nucleated cells are left out of the mask: a stained object more than ``nucleus_share`` of whose
    #: area is in the darkest of three grey classes (multi-Otsu on green), when that class is bluer
    #: (blue minus red, 0-255) than the rest of the stain by at least ``nucleus_blue``; None keeps them
    nucleus_blue: float | None = 15.0
    nucleus_share: float = 0.1
    #: estimated µm/px x calibration = µm/px by red-cell boxes; None: the package's measured factor
    #: (``red_cell_scale.json``, written by ``benchmarks/red_cell_scale.py``); 1.0: the raw estimate
    calibration: float | None = None


@dataclass(frozen=True)
class RedCellScale:
    """A pixel size read from red cells: ``mpp`` (µm/px) from the modal ``diameter_px``; ``peak_share``:
    the share of the removed area within 20 % of that diameter (low = no clear red-cell size);
    ``n_fields``: fields pooled."""

    mpp: float
    diameter_px: float
    peak_share: float
    n_fields: int

    def to_dict(self) -> dict[str, float | int]:
        return {"mpp": round(self.mpp, 5), "diameter_px": round(self.diameter_px, 2),
                "peak_share": round(self.peak_share, 3), "n_fields": self.n_fields}


@dataclass(frozen=True)
class SizeSpectrum:
    """Stained area (fraction of the image) removed at each equivalent diameter (in the image's own px)."""

    diameters_px: np.ndarray
    area: np.ndarray


def _stained(green: np.ndarray, closing: int, within: np.ndarray | None = None) -> np.ndarray:
    """The stained mask with holes filled (the module's step 1); the threshold from ``within`` if given."""
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    ref = green if within is None else green[within]
    if ref.size == 0 or float(ref.max()) - float(ref.min()) < 1e-6:
        return np.zeros(green.shape, dtype=bool)
    fg = green <= threshold_otsu(ref)
    if closing:
        fg = ndimage.binary_closing(fg, iterations=closing, border_value=0)
    return np.asarray(ndimage.binary_fill_holes(fg), dtype=bool)


def _without_nucleated(rgb: np.ndarray, fg: np.ndarray, cfg: ScaleConfig) -> np.ndarray:
    """The stained mask without nucleated cells (the module's step 1); ``fg`` where none reads as nuclei."""
    from scipy import ndimage
    from skimage.filters import threshold_multiotsu

    if cfg.nucleus_blue is None:
        return fg
    green = rgb[..., 1]
    try:
        dark = green <= threshold_multiotsu(green, classes=3)[0]
    except ValueError:  # too few grey levels for three classes
        return fg
    rest = fg & ~dark
    if not dark.any() or not rest.any():
        return fg
    blue = rgb[..., 2] - rgb[..., 0]
    if float(blue[dark].mean() - blue[rest].mean()) < cfg.nucleus_blue:
        return fg  # the darkest class is not bluer than the rest: darker red cells, not nuclei
    lab, n = ndimage.label(fg)
    index = np.arange(1, n + 1)
    share = ndimage.sum(dark, lab, index) / np.maximum(ndimage.sum(fg, lab, index), 1)
    nucleated = np.concatenate([[False], share > cfg.nucleus_share])[lab]
    if not nucleated.any():
        return fg
    # the threshold is redone without them: a dark nucleus can have set it below pale red cells; what the
    # new mask joins to a nucleated cell (its cytoplasm, a red cell touching it) is left out as well
    zone = ndimage.binary_dilation(nucleated, iterations=max(1, cfg.closing))
    fg2 = _stained(green, cfg.closing, within=~zone)
    lab2, n2 = ndimage.label(fg2)
    touching = np.zeros(n2 + 1, dtype=bool)
    touching[np.unique(lab2[zone & fg2])] = True
    touching[0] = True
    return fg2 & ~touching[lab2]


def _opening_areas(fg: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Area left by an opening with a Euclidean disk of each radius (erosion and dilation as distance
    transforms: O(pixels) per radius whatever the radius)."""
    from scipy import ndimage

    dt = ndimage.distance_transform_edt(fg)
    out = np.zeros(len(radii))
    for i, r in enumerate(radii):
        core = dt > r
        if core.any():
            out[i] = float((ndimage.distance_transform_edt(~core) <= r).sum())
    return out


def _windows(rgb: np.ndarray, side: int, n: int) -> list[np.ndarray]:
    h, w = rgb.shape[:2]
    if h <= side and w <= side:
        return [rgb]
    ys = np.linspace(0, max(0, h - side), max(1, int(np.ceil(h / side)))).astype(int)
    xs = np.linspace(0, max(0, w - side), max(1, int(np.ceil(w / side)))).astype(int)
    tiles = [rgb[y : y + side, x : x + side] for y in ys for x in xs]
    dark = [float((t[..., 1] < 200).mean()) for t in tiles]  # most stained first (cheap proxy)
    return [tiles[i] for i in np.argsort(dark)[::-1][:n]]


def _spectrum_at(rgb: np.ndarray, factor: float, cfg: ScaleConfig) -> SizeSpectrum:
    from skimage.transform import rescale

    g = rescale(rgb, 1.0 / factor, anti_aliasing=True, channel_axis=-1) if factor > 1 else rgb
    fg = _stained(g[..., 1], cfg.closing)
    total = float(fg.size)
    if fg.mean() < cfg.min_stained:  # a blank field; judged before nucleated cells are left out
        return SizeSpectrum(np.zeros(0), np.zeros(0))
    fg = _without_nucleated(g, fg, cfg)
    # radii in steps of RADIUS_STEP (the distance transforms take any radius), up to a sixth of the short
    # side: a red cell is at most a third of the field
    top = _largest_diameter(rgb.shape[:2], factor) / (2 * factor)
    radii = MIN_RADIUS * RADIUS_STEP ** np.arange(int(np.log(top / MIN_RADIUS) / np.log(RADIUS_STEP)) + 2)
    left = _opening_areas(fg, radii)
    if left[-1] > cfg.max_left * max(float(fg.sum()), 1.0):
        return SizeSpectrum(np.zeros(0), np.zeros(0))  # mostly objects larger than any red cell here
    removed = -np.diff(left) / total  # removed between two radii: objects of inscribed radius in between
    return SizeSpectrum(diameters_px=2.0 * np.sqrt(radii[:-1] * radii[1:]) * factor, area=removed)


def size_spectrum(rgb: np.ndarray, cfg: ScaleConfig | None = None) -> SizeSpectrum:
    """The pattern spectrum of one field (windows of a large image added up), at a working resolution
    fine enough for its red cells."""
    cfg = cfg or ScaleConfig()
    arr = np.asarray(rgb)
    if arr.ndim != 3 or arr.shape[2] < 3:
        raise ValueError(f"expected an RGB image (H, W, 3), got shape {arr.shape}")
    parts = []
    for win in _windows(arr, cfg.window, cfg.max_windows):
        win = win[..., :3].astype(np.float32)
        factor = max(1.0, min(win.shape[:2]) / cfg.work_side)
        s = _spectrum_at(win, factor, cfg)
        peak = _peak(s, cfg.bandwidth)
        if factor > 1 and peak is not None and peak[0] / (2 * factor) < cfg.min_work_radius:
            factor = 1.0
            s = _spectrum_at(win, factor, cfg)  # small red cells: full resolution
            peak = _peak(s, cfg.bandwidth)
        if peak is not None and peak[0] > cfg.edge_peak * _largest_diameter(win.shape[:2], factor):
            continue  # the objects are as large as the window allows: cut off, not a red cell's size
        parts.append(s)
    return _sum(parts)


def _largest_diameter(shape: tuple[int, ...], factor: float) -> float:
    """The largest opening diameter :func:`_spectrum_at` tries on a window of ``shape``, in its own px."""
    return 2 * factor * max(4.0, min(shape) / factor / 6)


def _sum(parts: Sequence[SizeSpectrum]) -> SizeSpectrum:
    parts = [p for p in parts if len(p.area)]
    if not parts:
        return SizeSpectrum(np.zeros(0), np.zeros(0))
    return SizeSpectrum(np.concatenate([p.diameters_px for p in parts]),
                        np.concatenate([p.area / len(parts) for p in parts]))


def _peak(s: SizeSpectrum, bandwidth: float) -> tuple[float, float] | None:
    """(modal diameter, share of the area within 20 % of it) of a spectrum; None if it is empty."""
    keep = s.area > 0
    if not keep.any():
        return None
    ln, w = np.log(s.diameters_px[keep]), s.area[keep]
    grid = np.linspace(ln.min() - 2 * bandwidth, ln.max() + 2 * bandwidth, 400)
    dens = (w[None, :] * np.exp(-0.5 * ((grid[:, None] - ln[None, :]) / bandwidth) ** 2)).sum(axis=1)
    d = float(np.exp(grid[int(np.argmax(dens))]))
    near = np.abs(ln - np.log(d)) <= np.log(1.2)
    return d, float(w[near].sum() / w.sum())


def package_calibration() -> float:
    """The factor ``benchmarks/red_cell_scale.py`` measured (1.0 when the file is missing)."""
    import json
    from importlib import resources

    try:
        text = resources.files("marrowscope.data").joinpath(CALIBRATION_FILE).read_text(encoding="utf-8")
        return float(json.loads(text)["factor"])
    except (OSError, KeyError, ValueError):
        return 1.0


def scale_from_spectrum(s: SizeSpectrum, n_fields: int, cfg: ScaleConfig | None = None
                        ) -> RedCellScale | None:
    cfg = cfg or ScaleConfig()
    peak = _peak(s, cfg.bandwidth)
    if peak is None:
        return None
    factor = package_calibration() if cfg.calibration is None else cfg.calibration
    return RedCellScale(mpp=factor * cfg.red_cell_um / peak[0], diameter_px=peak[0], peak_share=peak[1],
                        n_fields=n_fields)


def estimate_red_cell_scale(rgb: np.ndarray, cfg: ScaleConfig | None = None) -> RedCellScale | None:
    """µm/px of an RGB field from its red cells' size; ``None`` for a (nearly) blank field."""
    return scale_from_spectrum(size_spectrum(rgb, cfg), 1, cfg)


def pooled_red_cell_scale(images: Iterable[np.ndarray], cfg: ScaleConfig | None = None
                          ) -> RedCellScale | None:
    """One µm/px for fields of one microscope and magnification, from their spectra added up."""
    spectra = [size_spectrum(im, cfg) for im in images]
    return scale_from_spectrum(_sum(spectra), len(spectra), cfg)


def estimate_slide_scale(slide: SlideReader, cfg: ScaleConfig | None = None, *, tile: int = 1024,
                         grid: int = 3) -> RedCellScale | None:
    """µm/px of a slide or field image that lacks one: read from its red cells at level 0 (the whole image
    when small; else a ``grid`` x ``grid`` of ``tile`` px tiles over its central 60 %, pooled)."""
    w, h = slide.info.width, slide.info.height
    if w * h <= WHOLE_IMAGE_PX:
        return estimate_red_cell_scale(slide.read_region(0, 0, w, h), cfg)
    xs = np.linspace(0.2 * w, 0.8 * w - tile, grid).astype(int)
    ys = np.linspace(0.2 * h, 0.8 * h - tile, grid).astype(int)
    return pooled_red_cell_scale((slide.read_region(int(x), int(y), tile, tile) for y in ys for x in xs), cfg)
