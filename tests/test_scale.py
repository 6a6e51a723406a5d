"""Pixel size from red cells (data.scale) on generated fields of known red-cell size, and ``--mpp auto``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from marrowscope.data import scale
from marrowscope.data.scale import (
    ScaleConfig,
    estimate_red_cell_scale,
    estimate_slide_scale,
    package_calibration,
    pooled_red_cell_scale,
)
from marrowscope.io.slides.array import ArraySlide

RAW = ScaleConfig(calibration=1.0)
PINK, PALE, PURPLE, WHITE = (205, 140, 150), (235, 200, 205), (90, 40, 140), (240, 238, 236)


def field(diameter: float, *, size: tuple[int, int] = (480, 640), n: int = 40, seed: int = 0,
          touching: bool = False, open_rims: bool = False, white_cells: int = 3) -> np.ndarray:
    """Red cells of ``diameter`` px (pale centres), a few bigger purple white cells, on a white field."""
    rng = np.random.default_rng(seed)
    h, w = size
    img = np.full((h, w, 3), WHITE, np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    r = diameter / 2
    placed: list[tuple[float, float]] = []
    for _ in range(n * 20):
        if len(placed) >= n:
            break
        cy, cx = rng.uniform(r, h - r), rng.uniform(r, w - r)
        gap = 0.95 if touching else 1.15  # touching: a little overlap, so cells form clumps
        if any((cy - py) ** 2 + (cx - px) ** 2 < (gap * diameter) ** 2 for py, px in placed):
            continue
        placed.append((cy, cx))
        d2 = (yy - cy) ** 2 + (xx - cx) ** 2
        img[d2 <= r * r] = PINK
        pallor = d2 <= (0.4 * r) ** 2
        if open_rims:  # the pale centre breaks through the rim on one side
            pallor |= (d2 <= (0.55 * r) ** 2) | ((np.abs(yy - cy) < 0.15 * r) & (xx > cx) & (d2 <= r * r))
        img[pallor] = PALE
    for _ in range(white_cells):
        cy, cx = rng.uniform(2 * r, h - 2 * r), rng.uniform(2 * r, w - 2 * r)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 <= (1.6 * r) ** 2] = PURPLE
    return img


@pytest.mark.parametrize("diameter", [14.0, 40.0, 96.0])
def test_red_cell_diameter_is_read_at_any_scale(diameter: float) -> None:
    size = (480, 640) if diameter < 90 else (960, 1280)
    est = estimate_red_cell_scale(field(diameter, size=size), RAW)
    assert est is not None
    assert est.diameter_px == pytest.approx(diameter, rel=0.12)
    assert est.mpp == pytest.approx(7.5 / est.diameter_px)
    assert 0 < est.peak_share <= 1


def test_touching_cells_and_broken_rims_still_give_the_red_cell_size() -> None:
    for img in (field(40, touching=True, n=60), field(40, open_rims=True)):
        est = estimate_red_cell_scale(img, RAW)
        assert est is not None and est.diameter_px == pytest.approx(40, rel=0.15)


def test_white_cells_do_not_move_the_estimate() -> None:
    few = estimate_red_cell_scale(field(30, white_cells=0), RAW)
    more = estimate_red_cell_scale(field(30, white_cells=6), RAW)
    assert few is not None and more is not None
    assert more.diameter_px == pytest.approx(few.diameter_px, rel=0.05)


def test_a_field_around_one_white_cell_reads_the_red_cells_not_the_white_cell() -> None:
    # a PBC-like crop: one large white cell (lilac cytoplasm, purple nucleus) fills the centre and
    # outweighs the few red cells around it; left in, it is the spectrum's peak
    img = field(30, n=10, white_cells=0, size=(360, 360), seed=3)
    yy, xx = np.mgrid[0:360, 0:360]
    d2 = (yy - 180.0) ** 2 + (xx - 180.0) ** 2
    img[d2 <= 75**2] = (200, 170, 215)
    img[d2 <= 50**2] = PURPLE
    kept = estimate_red_cell_scale(img, ScaleConfig(calibration=1.0, nucleus_blue=None))
    est = estimate_red_cell_scale(img, RAW)
    assert kept is not None and kept.diameter_px > 60  # the white cell's size
    assert est is not None and est.diameter_px == pytest.approx(30, rel=0.12)


def test_a_crop_filled_by_one_large_cell_has_no_estimate() -> None:
    # nothing in it is small enough to be a red cell: no estimate rather than a size read off its rim
    img = np.full((250, 250, 3), WHITE, np.uint8)
    yy, xx = np.mgrid[0:250, 0:250]
    img[(yy - 125) ** 2 + (xx - 125) ** 2 <= 75**2] = PURPLE
    img[(yy - 125) ** 2 + (xx - 125) ** 2 <= 45**2] = (60, 20, 110)  # its nucleus
    unguarded = ScaleConfig(calibration=1.0, max_left=1.0, edge_peak=10.0)
    assert estimate_red_cell_scale(img, unguarded) is not None  # read off its nucleus and rim
    assert estimate_red_cell_scale(img, RAW) is None


def test_blank_field_has_no_estimate_and_bad_shapes_are_refused() -> None:
    assert estimate_red_cell_scale(np.full((300, 300, 3), WHITE, np.uint8)) is None
    with pytest.raises(ValueError, match="RGB"):
        estimate_red_cell_scale(np.zeros((10, 10)))


def test_pooled_fields_agree_and_calibration_is_applied() -> None:
    imgs = [field(36, seed=s) for s in range(3)]
    pooled = pooled_red_cell_scale(imgs, RAW)
    assert pooled is not None and pooled.n_fields == 3 and pooled.diameter_px == pytest.approx(36, rel=0.12)
    factor = package_calibration()
    assert 0.5 < factor < 2.0  # the measured factor is shipped with the package
    calibrated = estimate_red_cell_scale(imgs[0])
    raw = estimate_red_cell_scale(imgs[0], RAW)
    assert calibrated is not None and raw is not None
    assert calibrated.mpp == pytest.approx(raw.mpp * factor)


def test_large_slides_are_sampled_in_tiles(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scale, "WHOLE_IMAGE_PX", 512 * 512)  # force the tiled path on a small image
    img = field(24, size=(1600, 1600), n=900)
    est = estimate_slide_scale(ArraySlide(img, mpp=None), RAW, tile=400)
    assert est is not None and est.n_fields == 9 and est.diameter_px == pytest.approx(24, rel=0.12)


def test_analyze_with_mpp_auto_reads_the_pixel_size_and_says_so(tmp_path: Path) -> None:
    from marrowscope.engines.batch import analyze_batch
    from marrowscope.engines.pipeline import AnalysisConfig
    from pipeline_stubs import smear_image, stub_models

    img = tmp_path / "field.png"
    Image.fromarray(smear_image()).save(img)  # red cells 17 px across, no pixel size in a PNG
    cfg = AnalysisConfig(target_cells=50)
    s = analyze_batch([img], tmp_path / "out", cfg, mpp="auto", models=stub_models(), progress=False)
    assert s.slides[0].status == "done", s.slides[0].reason
    summary = json.loads((tmp_path / "out" / "field" / "summary.json").read_text())
    expected = 7.5 / 17 * package_calibration()
    assert summary["slide"]["mpp"] == pytest.approx(expected, rel=0.15)
    codes = [w["code"] for w in summary["warnings"]]
    assert "mpp_estimated" in codes
    # a given pixel size is used as given, and nothing is flagged
    s2 = analyze_batch([img], tmp_path / "out2", cfg, mpp=0.5, models=stub_models(), progress=False)
    assert s2.slides[0].status == "done"
    summary2 = json.loads((tmp_path / "out2" / "field" / "summary.json").read_text())
    assert summary2["slide"]["mpp"] == 0.5
    assert "mpp_estimated" not in [w["code"] for w in summary2["warnings"]]
    # a blank image cannot be measured: one line that says what to pass
    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((300, 300, 3), WHITE, np.uint8)).save(blank)
    s3 = analyze_batch([blank], tmp_path / "out3", cfg, mpp="auto", models=stub_models(), progress=False)
    assert s3.slides[0].status == "failed" and "--mpp" in (s3.slides[0].reason or "")
