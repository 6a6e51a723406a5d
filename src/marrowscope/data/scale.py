"""Pixel size of an uncalibrated field image, read from its red cells.

A microscope camera's JPEG or a screenshot carries no pixel size, yet every model here works at a fixed
µm/px. Red cells are the ruler every blood or marrow smear carries: ~7.5 µm across and the most numerous
object in a field. :func:`estimate_red_cell_scale` reads their size without any model, by **granulometry**
(the morphological size distribution, Matheron/Serra):

1. the stained mask: the green channel (haemoglobin and both Romanowsky dyes absorb green) below its Otsu
   threshold, closed by one pixel and with holes filled (a red cell's pale centre);
2. the pattern spectrum: the stained area removed by an opening with a disk of radius r, for r = 1, 2, ...
   (an opening removes every object, or part of a clump, whose inscribed disk is smaller than r; computed
   with two distance transforms per radius). Touching red cells are removed at their own radius, since
   the necks between them are thinner than the cells; white cells, platelets and noise are fewer and
   sit at other radii;
3. the peak of that spectrum, as a kernel density over ln(diameter) in the image's own pixels.

``mpp = red_cell_um / diameter_px``. A field is analysed at a working resolution whose short side is
~``work_side`` px; where the red cells come out small there (< ``min_work_radius`` px), the estimate is
redone on a full-resolution window. Spectra of several fields of one microscope add up
(:func:`pooled_red_cell_scale`), which steadies the peak. An image with too little stained area gets no
estimate (``None``) and the caller needs a pixel size from the user.

The parameters follow from the description above (a red cell is round and ~7.5 µm); they were checked, not
fitted, on 30 TXL-PBC training fields of each of its four sources against their red-cell boxes.
``benchmarks/red_cell_scale.py`` measures the estimate on every TXL-PBC field.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

#: a red cell's diameter in a dried smear (µm)
RED_CELL_UM = 7.5


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


def _stained(green: np.ndarray, closing: int) -> np.ndarray:
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    if float(green.max()) - float(green.min()) < 1e-6:
        return np.zeros(green.shape, dtype=bool)
    fg = green < threshold_otsu(green)
    if closing:
        fg = ndimage.binary_closing(fg, iterations=closing, border_value=0)
    return np.asarray(ndimage.binary_fill_holes(fg), dtype=bool)


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


def _spectrum_at(green: np.ndarray, factor: float, cfg: ScaleConfig) -> SizeSpectrum:
    from skimage.transform import rescale

    g = rescale(green, 1.0 / factor, anti_aliasing=True) if factor > 1 else green
    fg = _stained(g, cfg.closing)
    total = float(fg.size)
    if fg.mean() < cfg.min_stained:
        return SizeSpectrum(np.zeros(0), np.zeros(0))
    radii = np.arange(1, max(4, min(g.shape) // 6) + 1)  # a red cell is at most a third of the field
    left = np.concatenate([[float(fg.sum())], _opening_areas(fg, radii)])
    removed = -np.diff(left) / total  # removed by the opening of radius r: inscribed radius in (r-1, r]
    keep = radii > 2  # radius-1 and -2 openings remove pixel noise and rims
    return SizeSpectrum(diameters_px=2.0 * (radii[keep] - 0.5) * factor, area=removed[keep])


def size_spectrum(rgb: np.ndarray, cfg: ScaleConfig | None = None) -> SizeSpectrum:
    """The pattern spectrum of one field (windows of a large image added up), at a working resolution
    fine enough for its red cells."""
    cfg = cfg or ScaleConfig()
    arr = np.asarray(rgb)
    if arr.ndim != 3 or arr.shape[2] < 3:
        raise ValueError(f"expected an RGB image (H, W, 3), got shape {arr.shape}")
    parts = []
    for win in _windows(arr, cfg.window, cfg.max_windows):
        green = win[..., 1].astype(np.float32)
        factor = max(1.0, min(green.shape) / cfg.work_side)
        s = _spectrum_at(green, factor, cfg)
        peak = _peak(s, cfg.bandwidth)
        if factor > 1 and peak is not None and peak[0] / (2 * factor) < cfg.min_work_radius:
            s = _spectrum_at(green, 1.0, cfg)  # small red cells: full resolution
        parts.append(s)
    return _sum(parts)


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


def scale_from_spectrum(s: SizeSpectrum, n_fields: int, cfg: ScaleConfig | None = None) -> RedCellScale | None:
    cfg = cfg or ScaleConfig()
    peak = _peak(s, cfg.bandwidth)
    if peak is None:
        return None
    return RedCellScale(mpp=cfg.red_cell_um / peak[0], diameter_px=peak[0], peak_share=peak[1],
                        n_fields=n_fields)


def estimate_red_cell_scale(rgb: np.ndarray, cfg: ScaleConfig | None = None) -> RedCellScale | None:
    """µm/px of an RGB field from its red cells' size; ``None`` for a (nearly) blank field."""
    return scale_from_spectrum(size_spectrum(rgb, cfg), 1, cfg)


def pooled_red_cell_scale(images: Iterable[np.ndarray], cfg: ScaleConfig | None = None) -> RedCellScale | None:
    """One µm/px for fields of one microscope and magnification, from their spectra added up."""
    spectra = [size_spectrum(im, cfg) for im in images]
    return scale_from_spectrum(_sum(spectra), len(spectra), cfg)
