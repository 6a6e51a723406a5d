"""Class colours for boxes, swatches and bars: one hue per lineage, one lightness step per maturation stage.

The lineage hues are the Okabe–Ito palette (Okabe & Ito 2008, "Color Universal Design"), chosen to stay
apart under the common colour-vision deficiencies; within a lineage the stages run from dark (immature)
to light (mature) in CIELAB lightness at the lineage's hue, so neighbouring stages differ by lightness
as well as by name. Blasts get vermillion at full chroma: the cells a reader must find first are never
drawn near-grey on purple-stained cytoplasm. Objects outside the differential stay grey.

Tests check what this promises (``tests/test_report_colors.py``): every counted class a distinct colour
(CIELAB ΔE), every blast colour saturated, and the lineage hues apart under simulated deuteranopia,
protanopia and tritanopia (Machado, Oliveira & Fernandes 2009).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from types import MappingProxyType

from marrowscope import taxonomy

UNCERTAIN_COLOR = "#6e6e6e"  # classifier abstained: a dark neutral grey, unlike any class colour

#: Lineage -> base colour (Okabe–Ito).
LINEAGE_COLORS: Mapping[str, str] = MappingProxyType({
    "blast": "#D55E00",  # vermillion
    "neutrophilic": "#E69F00",  # orange
    "eosinophilic": "#CC79A7",  # reddish purple
    "basophilic": "#0072B2",  # blue
    "erythroid": "#009E73",  # bluish green
    "lymphoid": "#56B4E9",  # sky blue
    "monocytic": "#F0E442",  # yellow
    "plasma_cell": "#000000",  # black
})
_NEUTRAL = {"megakaryocytic": (45.0, 55.0), "other_cell": (55.0, 70.0), "not_counted": (72.0, 86.0),
            "structural": (90.0, 95.0)}


def _srgb_to_linear(c: float) -> float:
    return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4


def _linear_to_srgb(c: float) -> float:
    c = min(1.0, max(0.0, c))
    return 12.92 * c if c <= 0.0031308 else 1.055 * c ** (1 / 2.4) - 0.055


def hex_to_rgb(color: str) -> tuple[int, int, int]:
    c = color.lstrip("#")
    return (int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16))


def _rgb_to_hex(rgb: Sequence[float]) -> str:
    return "#" + "".join(f"{round(255 * min(1.0, max(0.0, v))):02x}" for v in rgb)


_M = ((0.4124564, 0.3575761, 0.1804375), (0.2126729, 0.7151522, 0.0721750), (0.0193339, 0.1191920, 0.9503041))
_MI = ((3.2404542, -1.5371385, -0.4985314), (-0.9692660, 1.8760108, 0.0415560),
       (0.0556434, -0.2040259, 1.0572252))
_WHITE = (0.95047, 1.0, 1.08883)


def _f(t: float) -> float:
    return t ** (1 / 3) if t > (6 / 29) ** 3 else t / (3 * (6 / 29) ** 2) + 4 / 29


def _fi(t: float) -> float:
    return t ** 3 if t > 6 / 29 else 3 * (6 / 29) ** 2 * (t - 4 / 29)


def linear_rgb_to_lab(rgb: Sequence[float]) -> tuple[float, float, float]:
    xyz = [sum(_M[i][j] * rgb[j] for j in range(3)) / _WHITE[i] for i in range(3)]
    fx, fy, fz = (_f(v) for v in xyz)
    return (116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz))


def hex_to_lab(color: str) -> tuple[float, float, float]:
    return linear_rgb_to_lab([_srgb_to_linear(v / 255) for v in hex_to_rgb(color)])


def lab_to_hex(lab: Sequence[float]) -> str:
    L, a, b = lab
    fy = (L + 16) / 116
    xyz = (_fi(fy + a / 500) * _WHITE[0], _fi(fy) * _WHITE[1], _fi(fy - b / 200) * _WHITE[2])
    lin = [sum(_MI[i][j] * xyz[j] for j in range(3)) for i in range(3)]
    return _rgb_to_hex([_linear_to_srgb(v) for v in lin])


def delta_e(c1: str, c2: str) -> float:
    """CIE76 colour difference of two '#rrggbb' colours."""
    return math.dist(hex_to_lab(c1), hex_to_lab(c2))


def _stage_color(base: str, i: int, n: int) -> str:
    """Stage ``i`` of ``n``: around the base hue (±12°) and chroma, lightness dark (immature) to light."""
    L0, a0, b0 = hex_to_lab(base)
    if n == 1:
        return base
    lo, hi = max(28.0, L0 - 30.0), min(82.0, L0 + 22.0)
    t = i / (n - 1)
    L = lo + (hi - lo) * t
    chroma = max(45.0, math.hypot(a0, b0))
    hue = math.atan2(b0, a0) + math.radians(24.0 * (t - 0.5))
    for k in range(40):  # shrink chroma until the colour is inside sRGB (no clipping artefacts)
        c = chroma * (1 - k / 40)
        lab = (L, c * math.cos(hue), c * math.sin(hue))
        hx = lab_to_hex(lab)
        if math.dist(hex_to_lab(hx), lab) < 2.0:
            return hx
    return lab_to_hex((L, 0.0, 0.0))


def _build() -> dict[str, str]:
    by_lineage: dict[str, list[str]] = {}
    for name in taxonomy.DIFFERENTIAL_ORDER:
        if not taxonomy.LABELS[name].is_group:  # group labels take their lineage's base colour
            by_lineage.setdefault(taxonomy.lineage_of(name), []).append(name)
    out: dict[str, str] = {}
    for lin, names in by_lineage.items():
        if lin in LINEAGE_COLORS:
            base = LINEAGE_COLORS[lin]
            if lin == "plasma_cell":
                out.update({n: "#1a1a1a" for n in names})
                continue
            for i, n in enumerate(names):
                out[n] = _stage_color(base, i, len(names))
        else:
            lo, hi = _NEUTRAL.get(lin, (60.0, 80.0))
            for i, n in enumerate(names):
                out[n] = lab_to_hex((lo + (hi - lo) * i / max(1, len(names) - 1), 0.0, 0.0))
    for name in taxonomy.GROUP_LABELS:
        lin = taxonomy.lineage_of(name)
        out[name] = LINEAGE_COLORS.get(lin, lab_to_hex((_NEUTRAL.get(lin, (70.0, 0.0))[0], 0.0, 0.0)))
    return out


CLASS_COLORS: Mapping[str, str] = MappingProxyType(_build())


def label_color(name: str | None) -> str:
    """The colour of a class (``None`` or an unknown name: :data:`UNCERTAIN_COLOR`)."""
    if name is None:
        return UNCERTAIN_COLOR
    return CLASS_COLORS.get(name, UNCERTAIN_COLOR)


# Machado, Oliveira & Fernandes (2009), severity 1.0, on linear RGB.
CVD_MATRICES: Mapping[str, tuple[tuple[float, float, float], ...]] = MappingProxyType({
    "protanopia": ((0.152286, 1.052583, -0.204868), (0.114503, 0.786281, 0.099216),
                   (-0.003882, -0.048116, 1.051998)),
    "deuteranopia": ((0.367322, 0.860646, -0.227968), (0.280085, 0.672501, 0.047413),
                     (-0.011820, 0.042940, 0.968881)),
    "tritanopia": ((1.255528, -0.076749, -0.178779), (-0.078411, 0.930809, 0.147602),
                   (0.004733, 0.691367, 0.303900)),
})


def simulate(color: str, deficiency: str) -> str:
    """How ``color`` looks with a colour-vision deficiency (one of :data:`CVD_MATRICES`)."""
    m = CVD_MATRICES[deficiency]
    lin = [_srgb_to_linear(v / 255) for v in hex_to_rgb(color)]
    return _rgb_to_hex([_linear_to_srgb(sum(m[i][j] * lin[j] for j in range(3))) for i in range(3)])
