"""benchmarks/matek_scale.py: a red cell's circle is fitted from its edge, even where the border cuts it."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from matek_scale import fit_circle, measure_crop  # noqa: E402


def test_circle_fit_reads_a_partial_arc() -> None:
    t = np.linspace(0.2, 2.4, 60)  # 126 degrees of a circle of radius 40 around (100, 120)
    cy, cx, r, rms, arc = fit_circle(100 + 40 * np.sin(t), 120 + 40 * np.cos(t))
    assert (cy, cx, r) == pytest.approx((100, 120, 40), abs=1e-6)
    assert rms < 1e-9 and arc == pytest.approx(126, abs=1)


def test_red_cells_cut_by_the_border_are_measured_and_a_purple_cell_is_not() -> None:
    img = np.full((250, 250, 3), (236, 238, 246), np.uint8)  # Matek's bluish background
    yy, xx = np.mgrid[0:250, 0:250]
    img[(yy - 20) ** 2 + (xx - 60) ** 2 <= 48**2] = (205, 180, 175)  # a red cell cut by the top border
    img[(yy - 170) ** 2 + (xx - 170) ** 2 <= 50**2] = (120, 80, 190)  # a nucleated cell: bluer than red
    objs = measure_crop(img)
    assert [round(o["diameter_px"]) for o in objs if o["kept"]] == [pytest.approx(96, abs=3)]
