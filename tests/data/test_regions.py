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


def _smear(size: int, seed: int = 0) -> np.ndarray:
    """Background left, a monolayer band, a thick band right: fields of every verdict."""
    rng = np.random.default_rng(seed)
    img = np.full((size, size, 3), BG, np.uint8)
    third = size // 3
    for n, r, color in ((size * size // 9000, 18, RBC), (size * size // 45000, 14, NUC)):
        yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
        disk = xx**2 + yy**2 <= r * r
        for _ in range(n):  # drawn in a small window each (fast on a large image)
            cx, cy = int(rng.integers(third + r, 2 * third - r)), int(rng.integers(r, size - r))
            img[cy - r : cy + r + 1, cx - r : cx + r + 1][disk] = color
    img[:, 2 * third:] = (150, 90, 150)
    return img


def _flat_tiff(path, img: np.ndarray, mpp: float):  # noqa: ANN001, ANN202
    import tifffile

    res = (1e4 / mpp, 1e4 / mpp)
    tifffile.imwrite(path, img, tile=(256, 256), compression="zlib", resolution=res,
                     resolutionunit="CENTIMETER")
    return path


def test_flat_slide_overview_is_read_piece_by_piece_and_ranks_like_the_pyramid(tmp_path, monkeypatch):
    """A single-level TIFF: the overview is read in bounded chunks (thresholds lowered here so a small
    slide shows it; 4096^2 / 2048^2 px by default), and fields rank as on a pyramidal copy."""
    import marrowscope.io.slides.base as base
    from marrowscope.data.regions import plan_overview
    from marrowscope.io.slides import open_slide

    img = _smear(2048)
    monkeypatch.setattr(base, "WHOLE_READ_PX", 300 * 300, raising=False)
    monkeypatch.setattr(base, "CHUNK_PX", 256, raising=False)
    cfg = FieldSelectionConfig(field_size_px=256, analysis_mpp=2.0)
    with open_slide(_flat_tiff(tmp_path / "flat.tif", img, 0.25)) as flat:
        assert len(flat.info.levels) == 1
        reads: list[int] = []
        original = type(flat).read_region

        def recording(self, x, y, width, height, level=0):  # noqa: ANN001, ANN202
            reads.append(width * height)
            return original(self, x, y, width, height, level)

        monkeypatch.setattr(type(flat), "read_region", recording)
        flat_fields = rank_fields(flat, cfg)
        plan = plan_overview(flat, cfg)
    assert max(reads) <= (256 + 2 * 10) ** 2 < 2048 * 2048 and len(reads) > 16
    assert plan.level == 0 and "only level 0" in (plan.note or "")
    pyramid = ArraySlide(img, mpp=0.25)  # levels 1, 4, 16: the overview comes from level 1 (1 µm/px)
    assert plan_overview(pyramid, cfg).note is None
    pyr_fields = rank_fields(pyramid, cfg)
    assert [f.verdict for f in sorted(flat_fields, key=lambda f: f.region.roi_id)] == [
        f.verdict for f in sorted(pyr_fields, key=lambda f: f.region.roi_id)]
    for a, b in zip(sorted(flat_fields, key=lambda f: f.region.roi_id),
                    sorted(pyr_fields, key=lambda f: f.region.roi_id), strict=True):
        assert a.region == b.region and abs(a.coverage - b.coverage) < 0.03


def test_piecewise_resampling_equals_the_one_piece_read(monkeypatch):
    import marrowscope.io.slides.base as base

    rng = np.random.default_rng(3)
    img = np.repeat(np.repeat(rng.integers(0, 255, (300, 411, 3), dtype=np.uint8), 3, 0), 3, 1)
    slide = ArraySlide(img, mpp=0.25, levels=[1])
    for mpp in (2.0, 0.7, 5.3):
        whole = slide.read_region_mpp(13, 7, 1200, 880, mpp)
        monkeypatch.setattr(base, "WHOLE_READ_PX", 1, raising=False)
        monkeypatch.setattr(base, "CHUNK_PX", 100, raising=False)
        pieces = slide.read_region_mpp(13, 7, 1200, 880, mpp)
        monkeypatch.undo()
        assert pieces.shape == whole.shape
        assert np.abs(pieces.astype(int) - whole).max() <= 1
        assert (pieces != whole).mean() < 0.01
        thumb = slide.thumbnail(100)
        assert max(thumb.shape[:2]) == 100


def test_masks_in_strips_and_field_sums_equal_the_whole_image_computation(monkeypatch):
    """Strip-wise stain masks equal the one-piece computation; each field's coverage and nuclear share
    (from an integral image) equal the means of the masks over that field's overview pixels."""
    import marrowscope.data.regions as regions

    rng = np.random.default_rng(5)
    img = np.full((700, 900, 3), BG, np.uint8)
    _disks(img, rng, 300, 9, RBC, 0, 900)
    _disks(img, rng, 80, 6, NUC, 0, 900)
    img[::7] = (120, 70, 160)  # some rows of dark stain so the strips differ
    whole = stain_masks(img)
    monkeypatch.setattr(regions, "_STRIP_PX", 900 * 3 + 17)  # strips of 3 rows, not dividing 700
    strips = stain_masks(img)
    assert np.array_equal(whole[0], strips[0]) and np.array_equal(whole[1], strips[1])
    slide = ArraySlide(img, mpp=0.5)
    cfg = FieldSelectionConfig(field_size_px=96, analysis_mpp=1.3)
    fields = rank_fields(slide, cfg)
    overview = slide.read_region_mpp(0, 0, 900, 700, 1.3)
    stained, nuclear = stain_masks(overview)
    scale = overview.shape[1] / 900
    assert len(fields) == (900 // 96) * (700 // 96)
    for f in fields:
        b = f.region.box
        a, bb = round(b.x1 * scale), round(b.x2 * scale)
        c, d = round(b.y1 * scale), round(b.y2 * scale)
        assert f.coverage == float(stained[c:d, a:bb].mean())
        assert f.nuclear == float(nuclear[c:d, a:bb].mean())
    assert len({f.verdict for f in fields}) > 1
