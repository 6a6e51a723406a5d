"""Synthetic cell rendering and smear fields: every class renders, sizes and colours differ as designed."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from marrowscope.data.synth.composition import ALL_LABELS
from marrowscope.data.synth.field import FieldConfig, render_field
from marrowscope.data.synth.render import Stain, od_to_rgb, render_cell
from marrowscope.data.synth.styles import STYLES


def test_every_generated_and_countable_label_has_a_style() -> None:
    from marrowscope import taxonomy

    assert set(ALL_LABELS) <= set(STYLES)
    leaf_countable = {
        k
        for k, v in taxonomy.LABELS.items()
        if v.countable and not any(o.parent == k for o in taxonomy.LABELS.values())
    }
    assert leaf_countable <= set(STYLES)
    assert set(STYLES) <= set(taxonomy.LABELS)


def test_every_style_renders_with_a_box_inside_its_patch() -> None:
    rng = np.random.default_rng(0)
    for label in STYLES:
        cell = render_cell(label, rng)
        h, w = cell.shape
        x1, y1, x2, y2 = cell.box
        assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h, label
        assert np.isfinite(cell.od).all() and cell.od.min() >= -1e-6, label
        assert cell.mask.max() > 0.5, label


def _mean_width(label: str, n: int = 12) -> float:
    rng = np.random.default_rng(1)
    return float(np.mean([(lambda b: b[2] - b[0])(render_cell(label, rng).box) for _ in range(n)]))


def test_sizes_follow_the_morphology() -> None:
    # at 0.11 µm/px: lymphocytes ~7-10 µm, myeloblasts 12-18 µm, red cells ~7.5 µm, platelets 2-3.5 µm
    assert _mean_width("lymphocyte") < _mean_width("myelocytic_blast")
    assert _mean_width("thrombocyte") < 0.5 * _mean_width("erythrocyte")
    assert 55 < _mean_width("erythrocyte") < 80
    assert _mean_width("megakaryocyte") > 2.5 * _mean_width("segmented_neutrophil")


def test_colours_tell_granulocytes_apart() -> None:
    rng = np.random.default_rng(2)

    def mean_rgb(label: str) -> np.ndarray:
        vals = []
        for _ in range(6):
            c = render_cell(label, rng)
            rgb = od_to_rgb(c.od, Stain()).astype(float)
            vals.append(rgb[c.mask > 0.9].mean(axis=0))
        return np.mean(vals, axis=0)

    eos, neu, baso = (
        mean_rgb("segmented_eosinophil"),
        mean_rgb("segmented_neutrophil"),
        mean_rgb("segmented_basophil"),
    )
    assert eos[0] - eos[2] > neu[0] - neu[2]  # orange-red granules: more red than blue
    assert baso.sum() < neu.sum()  # dark purple granules


def test_field_places_cells_in_rois_and_is_deterministic() -> None:
    cfg = FieldConfig(width=1024, height=1024, roi_size=320, n_rois=2, cells_per_roi=10)
    comp = {"lymphocyte": 0.5, "segmented_neutrophil": 0.3, "erythrocyte": 0.2}
    a = render_field(comp, cfg, np.random.default_rng(5))
    b = render_field(comp, cfg, np.random.default_rng(5))
    assert np.array_equal(a.image, b.image) and a.cells == b.cells
    assert a.image.shape == (1024, 1024, 3) and a.image.dtype == np.uint8
    per_roi = Counter(c.roi_id for c in a.cells)
    assert per_roi[1] == per_roi[2] == 10 and per_roi[-1] > 0
    zones = Counter(c.zone for c in a.cells)
    assert zones["thick"] > 0 and zones["monolayer"] > 0
    rois = {r.roi_id: r for r in a.rois}
    for c in a.cells:
        assert c.box.within(1024, 1024) and c.label in comp
        inside = [r.roi_id for r in a.rois if r.box.contains_point(*c.box.center)]
        assert inside == ([c.roi_id] if c.roi_id > 0 else [])
    assert not (
        rois[1].box.x2 > rois[2].box.x1
        and rois[2].box.x2 > rois[1].box.x1
        and rois[1].box.y2 > rois[2].box.y1
        and rois[2].box.y2 > rois[1].box.y1
    )
    # thick area (left) darker than the thin feathered edge (right)
    assert a.image[:, :150].mean() < a.image[:, -120:].mean()


def test_field_can_box_its_background_red_cells_with_the_same_pixels() -> None:
    from dataclasses import replace

    cfg = FieldConfig(width=1536, height=1536, roi_size=512, n_rois=2, cells_per_roi=6)
    comp = {"lymphocyte": 0.7, "segmented_neutrophil": 0.3}
    a = render_field(comp, cfg, np.random.default_rng(5))
    b = render_field(comp, replace(cfg, box_red_cells=True), np.random.default_rng(5))
    assert np.array_equal(a.image, b.image)  # the same slide: only the truth gains boxes
    assert b.cells[: len(a.cells)] == a.cells
    red = b.cells[len(a.cells):]
    assert len(red) > 10 and {c.label for c in red} == {"erythrocyte"}
    assert {c.zone for c in red} == {"monolayer"}
    for c in red:  # only red cells whose centre lies in an ROI, each in its own ROI
        assert c.box.within(1536, 1536)
        assert [r.roi_id for r in b.rois if r.box.contains_point(*c.box.center)] == [c.roi_id]
    # a red cell is about 7.5 µm across at 0.11 µm/px: boxes of that size, not of the whole stamp
    sides = np.array([(c.box.x2 - c.box.x1, c.box.y2 - c.box.y1) for c in red])
    assert 40 < np.median(sides) < 100


def test_field_geometry_is_checked() -> None:
    with pytest.raises(ValueError, match="ROIs fit"):
        FieldConfig(width=600, height=600, roi_size=512, n_rois=1)


def _texture_at_classifier_scale(label: str, look: str, n: int = 6) -> float:
    """Mean absolute Laplacian of a cell's optical density at 0.45 µm/px (4 x 4 area-averaged from
    0.11 µm/px), inside the cell: how much texture the classifier can see."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(3)
    vals = []
    for _ in range(n):
        c = render_cell(label, rng, look=look)
        h, w = (s // 4 * 4 for s in c.shape)
        od = c.od[:h, :w].sum(axis=2).reshape(h // 4, 4, w // 4, 4).mean(axis=(1, 3))
        inside = c.mask[:h, :w].reshape(h // 4, 4, w // 4, 4).min(axis=(1, 3)) > 0.9
        vals.append(float(np.abs(ndi.laplace(od))[ndi.binary_erosion(inside)].mean()))
    return float(np.mean(vals))


def test_textured_look_shows_more_texture_and_keeps_basic_as_it_was() -> None:
    from marrowscope.data.synth.styles import LOOKS, STYLES_TEXTURED, styles_for

    assert LOOKS == ("basic", "textured") and styles_for("basic") is STYLES
    assert set(STYLES_TEXTURED) == set(STYLES)
    for label in ("segmented_neutrophil", "neutrophilic_myelocyte", "monocyte"):
        assert _texture_at_classifier_scale(label, "textured") > 1.15 * _texture_at_classifier_scale(
            label, "basic"), label
    # the one dark-granuled class no longer owns texture: its granules are paler
    assert _texture_at_classifier_scale("segmented_basophil", "textured") < _texture_at_classifier_scale(
        "segmented_basophil", "basic")
    a = render_cell("promyelocyte", np.random.default_rng(5), look="textured")
    b = render_cell("promyelocyte", np.random.default_rng(5), look="textured")
    assert np.array_equal(a.od, b.od)  # seeded
    c = render_cell("promyelocyte", np.random.default_rng(5))
    d = render_cell("promyelocyte", np.random.default_rng(5), look="basic")
    assert np.array_equal(c.od, d.od) and not np.array_equal(a.od, c.od)
    with pytest.raises(ValueError, match="unknown look"):
        render_cell("promyelocyte", np.random.default_rng(5), look="glossy")


def test_textured_look_travels_in_the_cohort_config() -> None:
    from marrowscope.data.synth.cohort import SynthConfig

    assert "look" not in SynthConfig().to_json()  # earlier cohorts' records read as before
    cfg = SynthConfig(look="textured")
    assert cfg.to_json()["look"] == "textured" and cfg.field_config().look == "textured"
    with pytest.raises(ValueError, match="look: use one of basic, textured"):
        SynthConfig(look="glossy")
