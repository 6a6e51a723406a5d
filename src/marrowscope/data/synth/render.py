"""Render single cells in optical density (OD) at a given mpp, in May-Grünwald-Giemsa colours.

A rendered cell is an OD patch (h, w, 3) plus a coverage mask and its true box inside the patch.
Images are composed as ``background * exp(-sum(OD))`` (Beer-Lambert), so overlapping cells darken
naturally. The per-class look lives in :mod:`marrowscope.data.synth.styles`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from marrowscope.data.synth import styles as st
from marrowscope.data.synth.styles import STYLES, CellStyle, styles_for

DEFAULT_MPP = 0.11
_WHITE = 245.0


def od_of(rgb: tuple[int, int, int]) -> np.ndarray:
    """Optical density (3,) of a colour seen on white glass."""
    return -np.log(np.clip(np.asarray(rgb, dtype=np.float32), 1.0, _WHITE) / _WHITE).astype(np.float32)


@dataclass(frozen=True)
class RenderedCell:
    """OD patch of one object; ``box`` (x1, y1, x2, y2) is the true box in patch pixels."""

    label: str
    od: np.ndarray  # (h, w, 3) float32
    mask: np.ndarray  # (h, w) float32 coverage in 0..1
    box: tuple[int, int, int, int]

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.od.shape[0]), int(self.od.shape[1]))


def _u(rng: np.random.Generator, r: tuple[float, float]) -> float:
    return float(rng.uniform(r[0], r[1])) if r[1] > r[0] else float(r[0])


def _ui(rng: np.random.Generator, r: tuple[float, float]) -> int:
    return int(rng.integers(int(round(r[0])), int(round(r[1])) + 1))


def _noise(shape: tuple[int, int], sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Smooth gaussian noise with unit standard deviation (coarse grid + upsampling for large sigma)."""
    f = int(sigma // 2.5) if sigma > 5.0 else 1
    if f > 1:
        small = (shape[0] // f + 3, shape[1] // f + 3)
        n = ndi.gaussian_filter(rng.standard_normal(small).astype(np.float32), sigma / f, mode="wrap")
        n = ndi.zoom(n, f, order=1, prefilter=False)[: shape[0], : shape[1]]
    else:
        n = ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma, mode="wrap")
    s = float(n.std())
    return n / s if s > 0 else n


def _soft(sd: np.ndarray, width: float = 1.0) -> np.ndarray:
    """Coverage from a signed distance (negative inside), anti-aliased over ``width`` px."""
    return np.clip(0.5 - sd / (2.0 * width), 0.0, 1.0).astype(np.float32)


class _Grid:
    def __init__(self, half: int) -> None:
        self.half = half
        ax = np.arange(-half, half + 1, dtype=np.float32)
        self.yy, self.xx = np.meshgrid(ax, ax, indexing="ij")
        self.shape = self.xx.shape

    def rotated(self, cx: float, cy: float, angle: float) -> tuple[np.ndarray, np.ndarray]:
        c, s = np.cos(angle), np.sin(angle)
        x, y = self.xx - cx, self.yy - cy
        return c * x + s * y, -s * x + c * y


def _blob_sd(
    g: _Grid,
    cx: float,
    cy: float,
    rx: float,
    ry: float,
    angle: float,
    wobble: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Approximate signed distance (px) of an irregular ellipse (evaluated in a window around it)."""
    reach = max(rx, ry) * (1.0 + 4.0 * wobble) + 4.0
    n = g.shape[0]
    i0, i1 = max(int(g.half + cy - reach), 0), min(int(g.half + cy + reach) + 2, n)
    j0, j1 = max(int(g.half + cx - reach), 0), min(int(g.half + cx + reach) + 2, n)
    c, s_ = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    x = g.xx[i0:i1, j0:j1] - np.float32(cx)
    y = g.yy[i0:i1, j0:j1] - np.float32(cy)
    u, v = c * x + s_ * y, -s_ * x + c * y
    rr = np.sqrt((u / np.float32(rx)) ** 2 + (v / np.float32(ry)) ** 2)
    amps = rng.normal(0, 1, 4) * wobble / np.sqrt(np.arange(2, 6)) if wobble > 0 else None
    phases = rng.uniform(0, 2 * np.pi, 4) if wobble > 0 else None
    if amps is not None and phases is not None:
        theta = np.arctan2(v, u)
        mod = np.ones(u.shape, dtype=np.float32)
        for k in range(2, 6):
            mod += np.float32(amps[k - 2]) * np.cos(k * theta + np.float32(phases[k - 2]))
        rr = rr / np.maximum(mod, 0.2)
    out = np.full(g.shape, reach, dtype=np.float32)
    out[i0:i1, j0:j1] = (rr - 1.0) * np.float32(min(rx, ry))
    return out


def _arc_sd(g: _Grid, cx: float, cy: float, radius: float, start: float, span: float) -> np.ndarray:
    """Distance to a circular arc (centre cx, cy) from angle ``start`` over ``span`` radians."""
    x, y = g.xx - cx, g.yy - cy
    theta = np.mod(np.arctan2(y, x) - start, 2 * np.pi)
    r = np.sqrt(x * x + y * y)
    on_arc = np.abs(r - radius)
    ex = [cx + radius * np.cos(start + a) for a in (0.0, span)]
    ey = [cy + radius * np.sin(start + a) for a in (0.0, span)]
    d_end = np.minimum(np.hypot(g.xx - ex[0], g.yy - ey[0]), np.hypot(g.xx - ex[1], g.yy - ey[1]))
    return np.where(theta <= span, on_arc, d_end).astype(np.float32)


def _nucleus_sd(
    style: CellStyle, g: _Grid, R: float, aspect: float, rng: np.random.Generator, cell_angle: float
) -> tuple[np.ndarray, float, float]:
    """Signed distance of the nucleus and its centre."""
    shape = str(rng.choice(style.nucleus))
    nc = _u(rng, style.nc_ratio)
    rn = R * np.sqrt(nc)
    room = max(R - rn, 0.0)
    off = _u(rng, style.nucleus_offset) * room * 0.95
    phi = rng.uniform(0, 2 * np.pi)
    cx, cy = off * np.cos(phi), off * np.sin(phi)
    ang = rng.uniform(0, 2 * np.pi)
    if shape in ("round", "oval", "pyknotic"):
        a = rng.uniform(1.0, 1.08) if shape != "oval" else rng.uniform(1.1, 1.3)
        sd = _blob_sd(g, cx, cy, rn * a, rn / a, ang, 0.02 if shape != "pyknotic" else 0.04, rng)
    elif shape in ("indented", "kidney"):
        depth = _u(rng, style.indent) if shape == "kidney" else _u(rng, style.indent) * 0.6
        a = rng.uniform(1.05, 1.25)
        rx, ry = rn * a * (1 + 0.3 * depth), rn / a
        base = _blob_sd(g, cx, cy, rx, ry, ang, 0.02, rng)
        # a disc biting into one long side
        bite_r = ry * (0.7 + 0.6 * depth)
        bx = cx + np.cos(ang + np.pi / 2) * (ry + bite_r * (1 - 1.6 * depth) - 1)
        by = cy + np.sin(ang + np.pi / 2) * (ry + bite_r * (1 - 1.6 * depth) - 1)
        bite = bite_r - np.hypot(g.xx - bx, g.yy - by)
        sd = np.maximum(base, bite)
    elif shape in ("band", "segmented"):
        arc_r = R * rng.uniform(0.32, 0.45)
        span = rng.uniform(3.2, 4.6) if shape == "band" else rng.uniform(3.0, 4.8)
        start = rng.uniform(0, 2 * np.pi)
        width = max(2.5, (rn * rn * np.pi) / (arc_r * span + 1e-6) * 0.5)
        width = float(np.clip(width, 0.13 * R, 0.24 * R))
        dist = _arc_sd(g, cx, cy, arc_r, start, span)
        if shape == "band":
            theta = np.mod(np.arctan2(g.yy - cy, g.xx - cx) - start, 2 * np.pi) / span
            taper = 1.0 - 0.15 * np.sin(np.clip(theta, 0, 1) * np.pi)  # a little thinner in the middle
            sd = dist - width * taper
        else:
            n = _ui(rng, style.lobes)
            span = rng.uniform(1.8, 3.0) if n == 2 else rng.uniform(2.6, 4.4)  # filament takes the short way
            seg_r = R * rng.uniform(0.38, 0.5)
            dist = _arc_sd(g, cx, cy, seg_r, start, span)
            sd = dist - 1.5  # thin chromatin filaments between the lobes
            spacing = seg_r * span / max(n - 1, 1)
            for i in range(n):
                a_i = start + span * (i / max(n - 1, 1)) + rng.normal(0, 0.06)
                lx = cx + seg_r * np.cos(a_i)
                ly = cy + seg_r * np.sin(a_i)
                lr = min(width * rng.uniform(1.2, 1.55), 0.6 * spacing, R - seg_r - 3.0)
                lr = max(lr, 0.14 * R)
                lobe = _blob_sd(g, lx, ly, lr * rng.uniform(1.1, 1.4), lr, a_i + np.pi / 2, 0.08, rng)
                sd = np.minimum(sd, lobe)
    else:  # lobulated
        n = _ui(rng, style.lobes)
        sd = np.full(g.shape, 1e3, dtype=np.float32)
        lr = rn / np.sqrt(max(n, 1)) * 1.15
        for _ in range(n):
            rho = rng.uniform(0.15, 0.75) * rn
            t = rng.uniform(0, 2 * np.pi)
            lobe = _blob_sd(
                g,
                cx + rho * np.cos(t),
                cy + rho * np.sin(t),
                lr * rng.uniform(0.9, 1.3),
                lr * rng.uniform(0.7, 1.0),
                rng.uniform(0, np.pi),
                0.06,
                rng,
            )
            sd = np.minimum(sd, lobe)
    return sd.astype(np.float32), float(cx), float(cy)


def _granule_map(
    shape: tuple[int, int],
    where: np.ndarray,
    density_per_100px: float,
    sigma: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Map of round granules (peak ~1) placed where ``where`` > 0.5."""
    ys, xs = np.nonzero(where > 0.5)
    if len(ys) == 0 or density_per_100px <= 0:
        return np.zeros(shape, dtype=np.float32)
    n = rng.poisson(density_per_100px * len(ys) / 100.0)
    if n == 0:
        return np.zeros(shape, dtype=np.float32)
    idx = rng.integers(0, len(ys), size=n)
    imp = np.zeros(shape, dtype=np.float32)
    np.add.at(imp, (ys[idx], xs[idx]), rng.uniform(0.7, 1.3, size=n).astype(np.float32))
    out = ndi.gaussian_filter(imp, sigma) * (2 * np.pi * sigma * sigma)
    return np.minimum(out, 1.6)


def _finish(label: str, od: np.ndarray, mask: np.ndarray, blur: float, pad: int = 2) -> RenderedCell:
    if blur > 0.05:
        od = ndi.gaussian_filter(od, (blur, blur, 0))
        mask = ndi.gaussian_filter(mask, blur)
    ys, xs = np.nonzero(mask > 0.35)
    h, w = mask.shape
    if len(ys) == 0:
        box = (0, 0, w, h)
    else:
        box = (
            max(int(xs.min()) - pad, 0),
            max(int(ys.min()) - pad, 0),
            min(int(xs.max()) + 1 + pad, w),
            min(int(ys.max()) + 1 + pad, h),
        )
    return RenderedCell(label=label, od=od.astype(np.float32), mask=mask.astype(np.float32), box=box)


def _general(
    label: str, style: CellStyle, rng: np.random.Generator, mpp: float
) -> tuple[np.ndarray, np.ndarray]:
    R = _u(rng, style.diameter_um) / mpp / 2.0
    half = int(np.ceil(R * 1.25)) + 6
    g = _Grid(half)
    aspect = _u(rng, style.aspect)
    cell_angle = rng.uniform(0, 2 * np.pi)
    cell_sd = _blob_sd(
        g, 0.0, 0.0, R * np.sqrt(aspect), R / np.sqrt(aspect), cell_angle, _u(rng, style.irregular), rng
    )
    cell = _soft(cell_sd, 1.2)
    nuc_sd, ncx, ncy = _nucleus_sd(style, g, R, aspect, rng, cell_angle)
    nuc_sd = np.maximum(nuc_sd, cell_sd + 2.0)  # keep the nucleus inside the cell
    nuc = _soft(nuc_sd, 1.0)
    od = np.zeros(g.shape + (3,), dtype=np.float32)

    # cytoplasm
    cyto = cell * (1.0 - nuc)
    r_rel = np.clip(-cell_sd / max(R, 1.0), 0.0, 1.0)  # 0 at the edge, ~1 deep inside
    dens = _u(rng, style.cyto_density) * (1.0 + 0.12 * _noise(g.shape, R * 0.25 + 1, rng))
    dens = dens * (1.0 + _u(rng, style.cyto_edge) * np.exp(-r_rel * 8.0))
    mottle = float(style.extra.get("cyto_mottle", 0.0))
    if mottle > 0:  # granule clusters, ~0.4-0.7 µm: texture that survives downsampling to 0.45 µm/px
        spots = np.maximum(_noise(g.shape, rng.uniform(0.35, 0.6) / mpp, rng), 0.0)
        dens = dens * (1.0 + mottle * rng.uniform(0.6, 1.4) * (spots - 0.4))
    halo = _u(rng, style.halo)
    if halo > 0:  # Golgi zone next to the nucleus, towards the cell centre
        d = np.hypot(ncx, ncy) + 1e-3
        hx, hy = ncx - (ncx / d) * R * 0.45, ncy - (ncy / d) * R * 0.45
        if d < 2:
            t = rng.uniform(0, 2 * np.pi)
            hx, hy = R * 0.5 * np.cos(t), R * 0.5 * np.sin(t)
        zone = np.exp(-((g.xx - hx) ** 2 + (g.yy - hy) ** 2) / (2 * (R * 0.28) ** 2))
        dens = dens * (1.0 - halo * zone)
    n_vac = _ui(rng, style.vacuoles) if style.vacuoles[1] > 0 else 0
    for _ in range(n_vac):
        t, rho = rng.uniform(0, 2 * np.pi), rng.uniform(0.3, 0.85) * R
        vr = rng.uniform(0.04, 0.12) * R
        vac = _soft(np.hypot(g.xx - rho * np.cos(t), g.yy - rho * np.sin(t)) - vr, 1.0)
        dens = dens * (1.0 - 0.8 * vac)
    od += (cyto * dens)[..., None] * od_of(style.cytoplasm)

    # nucleus and chromatin
    c_scale = _u(rng, style.chromatin_scale)
    tex = _noise(g.shape, c_scale, rng)
    contrast = _u(rng, style.chromatin_contrast)
    if style.clumped:  # dark clumps separated by pale parachromatin
        coarse = _noise(g.shape, c_scale * 1.8, rng)
        tex = 0.5 * tex + 0.9 * np.tanh(1.5 * coarse)
    else:  # fine, lacy (reticular) chromatin: pale threads along the zero lines of smooth noise
        ridge = 1.0 - 2.0 * np.minimum(np.abs(_noise(g.shape, c_scale * 1.7, rng)), 1.0)
        tex = 0.55 * tex + 0.8 * ridge
    chrom = _u(rng, style.chromatin_density) * (1.0 + contrast * tex)
    rim = _u(rng, style.rim)
    if rim > 0:
        chrom = chrom * (1.0 + rim * np.exp(np.minimum(nuc_sd, 0.0) / 2.5))
    n_nucleoli = _ui(rng, style.nucleoli) if style.nucleoli[1] > 0 else 0
    inner = np.nonzero(nuc_sd < -0.3 * R * np.sqrt(style.nc_ratio[0]) - 2)
    for _ in range(n_nucleoli):
        if len(inner[0]) == 0:
            break
        k = int(rng.integers(0, len(inner[0])))
        ny_, nx_ = g.yy[inner[0][k], inner[1][k]], g.xx[inner[0][k], inner[1][k]]
        nr = _u(rng, style.nucleolus_um) / mpp / 2.0
        nm = _soft(
            _blob_sd(g, float(nx_), float(ny_), nr * rng.uniform(1.0, 1.3), nr, rng.uniform(0, 3), 0.05, rng),
            1.2,
        )
        chrom = chrom * (1.0 - 0.5 * nm)
        od += (nuc * nm * 0.35)[..., None] * od_of(st.NUCLEOLUS)
    od += (nuc * np.maximum(chrom, 0.05))[..., None] * od_of(style.chromatin)

    # granules
    if style.granules is not None and style.granule_density[1] > 0:
        over = _u(rng, style.granules_over_nucleus)
        where = cyto + over * nuc * cell
        gm = _granule_map(g.shape, where, _u(rng, style.granule_density), _u(rng, style.granule_px), rng)
        od += (gm * cell * _u(rng, style.granule_strength))[..., None] * od_of(style.granules)
        frac_baso = float(style.extra.get("basophilic_granules", 0.0))
        if frac_baso > 0:
            gm2 = _granule_map(g.shape, cyto, _u(rng, style.granule_density) * frac_baso, 1.1, rng)
            od += (gm2 * cell * 0.5)[..., None] * od_of(st.GRAN_BASO)
    speckle = float(style.extra.get("speckle", 0.0))
    if speckle > 0:  # granularity at the resolution limit (~0.3 µm): chromatin and granules at 0.45 µm/px
        grain = _noise(g.shape, rng.uniform(0.25, 0.4) / mpp, rng)
        od *= (1.0 + speckle * rng.uniform(0.7, 1.3) * np.clip(grain, -2.5, 2.5) * cell)[..., None]
        od = np.maximum(od, 0.0)
    buds = float(style.extra.get("platelet_buds", 0.0))
    if buds > 0 and rng.random() < buds:
        edge = (cell > 0.3) & (cell < 0.9)
        gm = _granule_map(g.shape, edge.astype(np.float32), 0.5, 1.6, rng)
        od += (gm * 0.35)[..., None] * od_of(st.PLATELET_GRAN)
    return od, cell


def _rbc(rng: np.random.Generator, mpp: float, style: CellStyle) -> tuple[np.ndarray, np.ndarray]:
    R = _u(rng, style.diameter_um) / mpp / 2.0
    g = _Grid(int(np.ceil(R)) + 4)
    aspect = _u(rng, style.aspect)
    sd = _blob_sd(g, 0, 0, R * np.sqrt(aspect), R / np.sqrt(aspect), rng.uniform(0, np.pi), 0.015, rng)
    cell = _soft(sd, 1.0)
    r_rel = np.clip(1.0 + sd / R, 0.0, 1.2)  # ~0 at centre, 1 at the edge
    pallor = rng.uniform(0.55, 0.8) * np.exp(-((r_rel / rng.uniform(0.42, 0.55)) ** 2))
    dens = _u(rng, style.cyto_density) * (1.0 - pallor) * (1.0 + 0.04 * _noise(g.shape, 3.0, rng))
    od = (cell * dens)[..., None] * od_of(style.cytoplasm)
    return od, cell


def _platelet(
    rng: np.random.Generator,
    mpp: float,
    style: CellStyle,
    half: int | None = None,
    at: tuple[float, float] = (0.0, 0.0),
) -> tuple[np.ndarray, np.ndarray]:
    R = _u(rng, style.diameter_um) / mpp / 2.0
    g = _Grid(half if half is not None else int(np.ceil(R * 1.4)) + 3)
    sd = _blob_sd(g, at[0], at[1], R * rng.uniform(1.0, 1.3), R, rng.uniform(0, np.pi), 0.12, rng)
    cell = _soft(sd, 1.0)
    od = (cell * rng.uniform(0.45, 0.7))[..., None] * od_of(st.PLATELET_BODY)
    core = _soft(sd + R * rng.uniform(0.3, 0.5), 1.5)
    gm = _granule_map(g.shape, core, 2.5, 0.8, rng)
    od += (np.clip(gm, 0, 1) * rng.uniform(0.6, 0.95) + core * 0.3)[..., None] * od_of(st.PLATELET_GRAN)
    return od, cell


def _smudge(rng: np.random.Generator, mpp: float, style: CellStyle) -> tuple[np.ndarray, np.ndarray]:
    """A ruptured nucleus smeared into a pale, lacy, irregular patch without cytoplasm."""
    R = _u(rng, style.diameter_um) / mpp / 2.0
    g = _Grid(int(np.ceil(R * 1.4)) + 6)
    sd = _blob_sd(
        g, 0, 0, R * rng.uniform(1.0, 1.4), R * rng.uniform(0.7, 1.0), rng.uniform(0, np.pi), 0.18, rng
    )
    cell = _soft(sd, 4.0)
    lace = 1.0 - 2.0 * np.minimum(np.abs(_noise(g.shape, rng.uniform(2.0, 3.5), rng)), 1.0)
    core = np.exp(-np.clip(1.0 + sd / R, 0, 2) ** 2 * 1.5)  # denser remnant in the middle
    dens = _u(rng, style.chromatin_density) * np.clip(0.75 + 0.35 * lace + 0.5 * core, 0.2, 1.8)
    od = (cell * dens)[..., None] * od_of(st.CHROMATIN)
    return od, cell


def _mitosis(rng: np.random.Generator, mpp: float, style: CellStyle) -> tuple[np.ndarray, np.ndarray]:
    R = _u(rng, style.diameter_um) / mpp / 2.0
    g = _Grid(int(np.ceil(R * 1.2)) + 6)
    sd = _blob_sd(g, 0, 0, R, R * rng.uniform(0.85, 1.0), rng.uniform(0, np.pi), 0.03, rng)
    cell = _soft(sd, 1.2)
    od = (cell * _u(rng, style.cyto_density))[..., None] * od_of(style.cytoplasm)
    # metaphase plate: a band of short chromosome rods
    ang = rng.uniform(0, np.pi)
    u, v = g.rotated(0, 0, ang)
    plate = np.exp(-((v / (R * rng.uniform(0.12, 0.22))) ** 2)) * (np.abs(u) < R * rng.uniform(0.5, 0.75))
    rods = np.clip(_noise(g.shape, 1.5, rng), 0, None)
    chrom = plate * np.clip(rods * 1.2, 0, 1.5) * _u(rng, style.chromatin_density)
    od += (chrom * cell)[..., None] * od_of(style.chromatin)
    return od, cell


def _random_general_label(rng: np.random.Generator) -> str:
    return str(
        rng.choice(
            [
                "segmented_neutrophil",
                "neutrophilic_myelocyte",
                "lymphocyte",
                "myelocytic_blast",
                "monocyte",
                "polychromatic_erythroblast",
            ]
        )
    )


def _damaged(rng: np.random.Generator, mpp: float) -> tuple[np.ndarray, np.ndarray]:
    base = _random_general_label(rng)
    od, cell = _general(base, STYLES[base], rng, mpp)
    h, w = cell.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = rng.uniform(0, 2 * np.pi)
    cut = (xx - w / 2) * np.cos(t) + (yy - h / 2) * np.sin(t) + _noise((h, w), 4.0, rng) * 4.0
    keep = _soft(cut - rng.uniform(-0.1, 0.3) * w / 2, 3.0)
    fade = rng.uniform(0.5, 0.85)
    return od * (keep * fade)[..., None], cell * keep


def _artifact(rng: np.random.Generator, mpp: float, style: CellStyle) -> tuple[np.ndarray, np.ndarray]:
    R = _u(rng, style.diameter_um) / mpp / 2.0
    g = _Grid(int(np.ceil(R)) + 6)
    if rng.random() < 0.6:  # stain precipitate: clustered dark specks
        where = _soft(_blob_sd(g, 0, 0, R, R * 0.7, rng.uniform(0, 3), 0.2, rng), 2.0)
        gm = _granule_map(g.shape, where, 1.0, rng.uniform(0.8, 1.8), rng)
        od = (np.clip(gm, 0, 1.2) * rng.uniform(0.8, 1.4))[..., None] * od_of((60, 40, 90))
        return od, np.clip(gm * 2, 0, 1)
    # a fibre / scratch
    u, v = g.rotated(0, 0, rng.uniform(0, np.pi))
    line = np.exp(-(((v - 0.15 * R * np.sin(u / R * 2)) / rng.uniform(1.0, 2.5)) ** 2)) * (np.abs(u) < R)
    od = (line * rng.uniform(0.4, 0.9))[..., None] * od_of((120, 110, 140))
    return od.astype(np.float32), line.astype(np.float32)


def _compose(
    parts: list[tuple[np.ndarray, np.ndarray, float, float]], half: int
) -> tuple[np.ndarray, np.ndarray]:
    size = 2 * half + 1
    od = np.zeros((size, size, 3), np.float32)
    mask = np.zeros((size, size), np.float32)
    for p_od, p_mask, dx, dy in parts:
        h, w = p_mask.shape
        y0, x0 = int(half + dy - h // 2), int(half + dx - w // 2)
        ys, xs = max(y0, 0), max(x0, 0)
        ye, xe = min(y0 + h, size), min(x0 + w, size)
        if ye <= ys or xe <= xs:
            continue
        od[ys:ye, xs:xe] += p_od[ys - y0 : ye - y0, xs - x0 : xe - x0]
        mask[ys:ye, xs:xe] = np.maximum(mask[ys:ye, xs:xe], p_mask[ys - y0 : ye - y0, xs - x0 : xe - x0])
    return od, mask


def _aggregate(rng: np.random.Generator, mpp: float, style: CellStyle) -> tuple[np.ndarray, np.ndarray]:
    R = _u(rng, style.diameter_um) / mpp / 2.0
    half = int(np.ceil(R)) + 12
    parts = []
    for _ in range(int(rng.integers(5, 16))):
        rho, t = rng.uniform(0, 0.8) * R, rng.uniform(0, 2 * np.pi)
        o, m = _platelet(rng, mpp, STYLES["thrombocyte"])
        parts.append((o, m, rho * np.cos(t), rho * np.sin(t)))
    return _compose(parts, half)


def _clump(rng: np.random.Generator, mpp: float, style: CellStyle) -> tuple[np.ndarray, np.ndarray]:
    R = _u(rng, style.diameter_um) / mpp / 2.0
    half = int(np.ceil(R * 1.3)) + 8
    parts = []
    for _ in range(int(rng.integers(3, 7))):
        rho, t = rng.uniform(0, 0.6) * R, rng.uniform(0, 2 * np.pi)
        o, m = _general("x", STYLES[_random_general_label(rng)], rng, mpp)
        parts.append((o, m, rho * np.cos(t), rho * np.sin(t)))
    od, mask = _compose(parts, half)
    return od * 1.1, mask


def _net(rng: np.random.Generator, mpp: float, style: CellStyle) -> tuple[np.ndarray, np.ndarray]:
    R = _u(rng, style.diameter_um) / mpp / 2.0
    g = _Grid(int(np.ceil(R * 1.2)) + 6)
    cloud = _soft(_blob_sd(g, 0, 0, R, R * rng.uniform(0.6, 1.0), rng.uniform(0, 3), 0.25, rng), 8.0)
    fib = np.abs(_noise(g.shape, 2.5, rng))
    strands = np.exp(-fib * 3.0)
    od = (cloud * strands * _u(rng, style.chromatin_density) * 1.6)[..., None] * od_of(st.CHROMATIN)
    return od, cloud


def _gaucher(rng: np.random.Generator, mpp: float, style: CellStyle) -> tuple[np.ndarray, np.ndarray]:
    od, cell = _general("pseudo_gaucher_cell", style, rng, mpp)
    h, w = cell.shape
    fib = ndi.gaussian_filter(rng.standard_normal((h, w)).astype(np.float32), (0.8, 6.0))
    fib = ndi.rotate(fib, rng.uniform(0, 180), reshape=False, order=1, mode="wrap")
    fib /= max(float(fib.std()), 1e-6)
    return od * (1.0 + 0.12 * np.clip(fib, -2, 2) * cell)[..., None], cell


def _phago(rng: np.random.Generator, mpp: float, style: CellStyle) -> tuple[np.ndarray, np.ndarray]:
    od, cell = _general("phagocytosis", style, rng, mpp)
    half = cell.shape[0] // 2
    parts = [(od, cell, 0.0, 0.0)]
    for _ in range(int(rng.integers(1, 4))):
        rho, t = rng.uniform(0.1, 0.45) * half, rng.uniform(0, 2 * np.pi)
        if rng.random() < 0.6:
            o, m = _rbc(rng, mpp, STYLES["erythrocyte"])
            o = o * 0.8
        else:
            o, m = _general("x", STYLES["orthochromatic_erythroblast"], rng, mpp)
        parts.append((o, m * 0, rho * np.cos(t), rho * np.sin(t)))
    return _compose(parts, half)


def render_cell(
    label: str, rng: np.random.Generator, *, mpp: float = DEFAULT_MPP, blur: float = 0.6, look: str = "basic"
) -> RenderedCell:
    """Render one object of ``label`` (a key of :data:`~marrowscope.data.synth.styles.STYLES`) in ``look``
    (:data:`~marrowscope.data.synth.styles.LOOKS`)."""
    try:
        style = styles_for(look)[label]
    except KeyError:
        raise ValueError(f"no rendering style for label {label!r}") from None
    kind = style.kind
    if kind == "cell":
        od, mask = _general(label, style, rng, mpp)
    elif kind == "rbc":
        od, mask = _rbc(rng, mpp, style)
    elif kind == "platelet":
        od, mask = _platelet(rng, mpp, style)
    elif kind == "smudge":
        od, mask = _smudge(rng, mpp, style)
    elif kind == "mitosis":
        od, mask = _mitosis(rng, mpp, style)
    elif kind == "damaged":
        od, mask = _damaged(rng, mpp)
    elif kind == "artifact":
        od, mask = _artifact(rng, mpp, style)
    elif kind == "aggregate":
        od, mask = _aggregate(rng, mpp, style)
    elif kind == "clump":
        od, mask = _clump(rng, mpp, style)
    elif kind == "net":
        od, mask = _net(rng, mpp, style)
    elif kind == "gaucher":
        od, mask = _gaucher(rng, mpp, style)
    elif kind == "phagocytosis":
        od, mask = _phago(rng, mpp, style)
    else:  # pragma: no cover - table error
        raise ValueError(f"unknown render kind {kind!r}")
    return _finish(label, od, mask, blur)


@dataclass(frozen=True)
class Stain:
    """Per-slide stain and focus: background colour, per-channel OD gain, blur sigma (px)."""

    background: tuple[float, float, float] = (236.0, 234.0, 240.0)
    od_gain: tuple[float, float, float] = (1.0, 1.0, 1.0)
    blur: float = 1.1


def sample_stain(rng: np.random.Generator, look: str = "basic") -> Stain:
    """Slide-to-slide variation: warmer/cooler background, stronger/weaker staining, focus. The
    ``textured`` look draws the glass from cool grey-blue to warm beige (illuminant and white balance
    differ between scanners and microscope cameras)."""
    bg = np.array([236.0, 234.0, 240.0]) + rng.normal(0, 4.0, 3)
    if look == "textured":
        warm = rng.uniform(-0.3, 1.0)
        bg = bg + warm * np.array([4.0, -10.0, -38.0])
    gain = np.clip(rng.normal(1.0, 0.08, 3) * rng.uniform(0.85, 1.15), 0.7, 1.35)
    return Stain(
        background=(float(bg[0]), float(bg[1]), float(bg[2])),
        od_gain=(float(gain[0]), float(gain[1]), float(gain[2])),
        blur=float(rng.uniform(0.8, 1.9)),
    )


def od_to_rgb(od: np.ndarray, stain: Stain = Stain()) -> np.ndarray:
    """uint8 RGB from accumulated OD (h, w, 3)."""
    gain = np.asarray(stain.od_gain, dtype=np.float32)
    bg = np.asarray(stain.background, dtype=np.float32)
    rgb = bg * np.exp(-od * gain)
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)


def paste_od(canvas: np.ndarray, cell: RenderedCell, x0: int, y0: int) -> None:
    """Add ``cell``'s OD to ``canvas`` with its patch's top-left corner at (x0, y0), clipped."""
    h, w = cell.shape
    H, W = canvas.shape[:2]
    ys, xs = max(y0, 0), max(x0, 0)
    ye, xe = min(y0 + h, H), min(x0 + w, W)
    if ye <= ys or xe <= xs:
        return
    canvas[ys:ye, xs:xe] += cell.od[ys - y0 : ye - y0, xs - x0 : xe - x0]


def render_gallery(
    labels: list[str] | tuple[str, ...],
    n_per_class: int,
    seed: int,
    *,
    tile: int = 200,
    mpp: float = DEFAULT_MPP,
    stain: Stain = Stain(),
    background_rbc: bool = True,
) -> np.ndarray:
    """Rows = labels, columns = examples; each tile is ``tile`` px, cells at native scale (cropped)."""
    rng = np.random.default_rng(seed)
    out = np.zeros((len(labels) * tile, n_per_class * tile, 3), np.uint8)
    for r, label in enumerate(labels):
        for c in range(n_per_class):
            canvas = np.zeros((tile, tile, 3), np.float32)
            if background_rbc:
                for k in range(4):
                    rb = render_cell("erythrocyte", rng, mpp=mpp, blur=stain.blur)
                    t = k * np.pi / 2 + rng.uniform(0, 1.2)
                    cx, cy = tile / 2 + 0.62 * tile * np.cos(t), tile / 2 + 0.62 * tile * np.sin(t)
                    paste_od(canvas, rb, int(cx - rb.shape[1] / 2), int(cy - rb.shape[0] / 2))
            cell = render_cell(label, rng, mpp=mpp, blur=stain.blur)
            h, w = cell.shape
            paste_od(canvas, cell, tile // 2 - w // 2, tile // 2 - h // 2)
            out[r * tile : (r + 1) * tile, c * tile : (c + 1) * tile] = od_to_rgb(canvas, stain)
    return out


def label_sizes_um() -> Mapping[str, tuple[float, float]]:
    """Diameter range (µm) per label, e.g. for placement."""
    return {k: v.diameter_um for k, v in STYLES.items()}
