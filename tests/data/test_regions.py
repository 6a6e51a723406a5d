import numpy as np
import pytest

from marrowscope.cells import Box, CellAnnotations, Region
from marrowscope.data.regions import FieldSelectionConfig, rank_fields, select_regions, stain_masks
from marrowscope.errors import InputError
from marrowscope.io.slides.array import ArraySlide

BG = (235, 232, 238)
RBC = (222, 150, 160)
NUC = (110, 60, 150)


def _disks(img, rng, n, radius, color, x0, x1):
    h = img.shape[0]
    yy, xx = np.mgrid[0:h, 0 : img.shape[1]]
    for _ in range(n):
        cx, cy = rng.integers(x0 + radius, x1 - radius), rng.integers(radius, h - radius)
        img[(xx - cx) ** 2 + (yy - cy) ** 2 <= radius**2] = color


def _three_zone_slide() -> ArraySlide:
    """Columns of 512 px: background | monolayer (spread cells) | thick (everything covered)."""
    rng = np.random.default_rng(0)
    img = np.full((512, 1536, 3), BG, np.uint8)
    _disks(img, rng, 60, 18, RBC, 512, 1024)
    _disks(img, rng, 12, 14, NUC, 512, 1024)
    img[:, 1024:] = (150, 90, 150)
    _disks(img, rng, 40, 14, (90, 40, 130), 1024, 1536)
    return ArraySlide(img, mpp=0.5)


def test_stain_masks_separate_background_rbc_and_nuclei():
    img = np.array([[BG, RBC, NUC]], np.uint8)
    stained, nuclear = stain_masks(np.repeat(img, 30, axis=0))
    assert stained[0].tolist() == [False, True, True]
    assert nuclear[0].tolist() == [False, False, True]


def test_monolayer_field_ranks_first_and_others_get_reasons():
    cfg = FieldSelectionConfig(field_size_px=512, analysis_mpp=2.0)
    fields = rank_fields(_three_zone_slide(), cfg)
    assert len(fields) == 3
    by_x = {int(f.region.box.x1): f for f in fields}
    assert by_x[512].verdict == "monolayer" and fields[0] is by_x[512]
    assert by_x[0].verdict == "too sparse"
    assert by_x[1024].verdict == "too dense"
    chosen = select_regions(_three_zone_slide(), None, cfg)
    assert [int(f.region.box.x1) for f in chosen] == [512]


def test_annotated_rois_win_over_automatic_selection():
    ann = CellAnnotations(cells=(), regions=(Region(Box(0, 0, 100, 100), 7),))
    chosen = select_regions(_three_zone_slide(), ann)
    assert [f.region.roi_id for f in chosen] == [7] and chosen[0].verdict == "annotated ROI"


def test_blank_slide_has_no_smear_area():
    blank = ArraySlide(np.full((600, 600, 3), BG, np.uint8), mpp=0.5, slide_id="blank")
    with pytest.raises(InputError, match="no smear area"):
        select_regions(blank, None, FieldSelectionConfig(field_size_px=300))


def test_an_image_smaller_than_a_field_is_counted_whole_unless_blank():
    thick = np.full((400, 600, 3), BG, np.uint8)
    thick[:, 60:] = (150, 90, 150)  # 90 % covered: "too dense"
    _disks(thick, np.random.default_rng(1), 30, 14, (90, 40, 130), 0, 600)
    chosen = select_regions(ArraySlide(thick, mpp=0.5), None, FieldSelectionConfig(field_size_px=2048))
    assert len(chosen) == 1 and chosen[0].verdict == "too dense"
    assert chosen[0].region.box.as_tuple() == (0, 0, 600, 400)
    blank = ArraySlide(np.full((400, 600, 3), BG, np.uint8), mpp=0.5)
    with pytest.raises(InputError, match="no smear area"):
        select_regions(blank, None, FieldSelectionConfig(field_size_px=2048))
