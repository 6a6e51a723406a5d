"""Regions to count in: a slide's annotated ROIs, or automatically selected monolayer fields.

A good counting field in an aspirate smear is a *monolayer*: cells spread out, not piled up, not too
sparse. Fields are ranked on a low-resolution overview by two stain fractions: the share of the field
covered by stained material (cells and red cells) and the share of nuclear (dark purple) stain.

The overview is at most ``max_overview_px`` on its longer side whatever the slide's size or pyramid: it
is read from the coarsest level fine enough, and a slide without low-resolution levels (a flat TIFF/SVS,
only level 0) is read from that level piece by piece and shrunk as it goes
(:meth:`SlideReader.read_region_mpp`), so memory does not grow with the slide; :func:`plan_overview`
says when that happens (it is slower: every level-0 tile is decoded once, at 1/8 scale by the JPEG decoder
for JPEG DICOM tiles, ~6x faster than a full decode).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from marrowscope.cells import Box, CellAnnotations, Region
from marrowscope.errors import InputError
from marrowscope.io.slides.base import SlideReader

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FieldSelectionConfig:
    field_size_px: int = 2048  # level-0 pixels (2048 px at 0.11 µm/px = 225 µm, as the dataset's ROIs)
    analysis_mpp: float = 2.0  # overview scale; coarsened for very large slides
    max_overview_px: int = 4096  # longer side of the overview at most
    min_coverage: float = 0.12  # below: too sparse (or background)
    max_coverage: float = 0.80  # above: piled up (thick area)
    ideal_coverage: float = 0.40
    min_nuclear: float = 0.004  # fields without nuclei are not worth counting
    max_fields: int = 64


@dataclass(frozen=True)
class OverviewPlan:
    """How the field-ranking overview is read: at ``mpp`` from pyramid ``level`` (``level_mpp``)."""

    mpp: float
    width: int
    height: int
    level: int
    level_mpp: float
    n_levels: int

    @property
    def from_fine_level(self) -> bool:
        """The slide has no level near the overview scale: the level read is over 4x finer per side."""
        return self.level_mpp * 4 < self.mpp

    @property
    def note(self) -> str | None:
        """One line for the log and the summary when the slide lacks low-resolution levels."""
        if not self.from_fine_level:
            return None
        what = "only level 0" if self.n_levels == 1 else f"no low-resolution level near {self.mpp:.3g} µm/px"
        return (f"the slide has {what}: field selection read a {self.width} x {self.height} px overview at "
                f"{self.mpp:.3g} µm/px tile by tile from level {self.level} ({self.level_mpp:.3g} µm/px; "
                "slower, memory stays bounded)")


def plan_overview(slide: SlideReader, cfg: FieldSelectionConfig | None = None) -> OverviewPlan:
    """The scale and pyramid level of the field-ranking overview of ``slide``."""
    cfg = cfg or FieldSelectionConfig()
    info = slide.info
    if info.mpp is None:
        raise InputError(info.path, "slide has no pixel size; pass --mpp")
    extent_um = max(info.width, info.height) * info.mpp
    mpp = max(cfg.analysis_mpp, extent_um / cfg.max_overview_px, info.mpp)
    level = info.level_for_mpp(mpp)
    w = max(1, round(info.width * info.mpp / mpp))
    h = max(1, round(info.height * info.mpp / mpp))
    return OverviewPlan(mpp, w, h, level.index, info.mpp * level.downsample, len(info.levels))


@dataclass(frozen=True)
class FieldQuality:
    region: Region
    coverage: float
    nuclear: float
    score: float
    verdict: str  # "monolayer", "too sparse", "too dense", "no nuclei"


_STRIP_PX = 1 << 20  # stain masks are computed this many overview pixels at a time (float32 temporaries)


def _background(rgb: np.ndarray) -> float:
    """The bright end of the image (95th percentile of the grey level), at least 1."""
    if not rgb.size:
        return 255.0
    rows = max(1, _STRIP_PX // max(1, rgb.shape[1]))
    gray = np.empty(rgb.shape[:2], dtype=np.float32)
    for y in range(0, rgb.shape[0], rows):
        gray[y : y + rows] = rgb[y : y + rows].astype(np.float32).mean(axis=2)
    return max(float(np.percentile(gray, 95)), 1.0)


def _masks(img: np.ndarray, bg: float) -> tuple[np.ndarray, np.ndarray]:
    img = img.astype(np.float32)
    gray = img.mean(axis=2)
    sat = img.max(axis=2) - img.min(axis=2)
    stained = (gray < 0.88 * bg) | (sat > 40)
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    nuclear = (gray < 0.62 * bg) & (b > r - 5) & (b > g + 10)
    return stained, nuclear


def stain_masks(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(stained, nuclear) boolean masks of an RGB uint8 image in May-Grünwald-Giemsa colours.

    Background is estimated as the bright end of the image, so stain and scanner brightness may vary.
    Computed in strips of rows, so the float temporaries stay small whatever the image's size.
    """
    bg = _background(rgb)
    stained = np.empty(rgb.shape[:2], dtype=bool)
    nuclear = np.empty(rgb.shape[:2], dtype=bool)
    rows = max(1, _STRIP_PX // max(1, rgb.shape[1]))
    for y in range(0, rgb.shape[0], rows):
        stained[y : y + rows], nuclear[y : y + rows] = _masks(rgb[y : y + rows], bg)
    return stained, nuclear


def _box_sums(mask: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Sums of ``mask`` over the boxes [rows[:, 0]:rows[:, 1], cols[:, 0]:cols[:, 1]] (integral image)."""
    s = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), dtype=np.int64 if mask.size >= 2**31 else np.int32)
    np.cumsum(mask, axis=0, dtype=s.dtype, out=s[1:, 1:])
    np.cumsum(s[1:, 1:], axis=1, out=s[1:, 1:])
    c, d, a, b = rows[:, 0], rows[:, 1], cols[:, 0], cols[:, 1]
    return s[d, b].astype(np.int64) - s[c, b] - s[d, a] + s[c, a]


def _verdict(coverage: float, nuclear: float, cfg: FieldSelectionConfig) -> tuple[float, str]:
    if coverage < cfg.min_coverage:
        return 0.0, "too sparse"
    if coverage > cfg.max_coverage:
        return 0.0, "too dense"
    if nuclear < cfg.min_nuclear:
        return 0.0, "no nuclei"
    closeness = 1.0 - abs(coverage - cfg.ideal_coverage) / max(cfg.ideal_coverage, 1 - cfg.ideal_coverage)
    return float(closeness * min(1.0, nuclear / (3 * cfg.min_nuclear))), "monolayer"


def rank_fields(slide: SlideReader, cfg: FieldSelectionConfig | None = None) -> list[FieldQuality]:
    """Every field of the slide's grid with its quality, best first (monolayer fields before others)."""
    cfg = cfg or FieldSelectionConfig()
    info = slide.info
    plan = plan_overview(slide, cfg)
    if plan.note is not None:
        log.info("%s: %s", info.slide_id, plan.note)
    overview = slide.read_region_mpp(0, 0, info.width, info.height, plan.mpp)
    stained, nuclear = stain_masks(overview)
    scale = overview.shape[1] / info.width  # overview px per level-0 px
    fs = cfg.field_size_px
    nx, ny = info.width // fs, info.height // fs
    if nx == 0 or ny == 0:  # slide smaller than a field: one field covering it
        nx, ny, fs_x, fs_y = 1, 1, info.width, info.height
    else:
        fs_x = fs_y = fs
    ox, oy = (info.width - nx * fs_x) // 2, (info.height - ny * fs_y) // 2
    # each field's overview pixels [c:d, a:b]; fields are row-major, ids in that order
    jj, ii = np.divmod(np.arange(nx * ny), nx)
    x1s, y1s = ox + ii * fs_x, oy + jj * fs_y
    h_ov, w_ov = stained.shape

    def span(start: np.ndarray, size: int, limit: int) -> np.ndarray:  # (n, 2) overview pixel ranges
        ends = np.stack([np.round(start * scale), np.round((start + size) * scale)], axis=1)
        return np.clip(ends.astype(np.int64), 0, limit)

    cols, rows = span(x1s, fs_x, w_ov), span(y1s, fs_y, h_ov)
    area = (rows[:, 1] - rows[:, 0]) * (cols[:, 1] - cols[:, 0])
    cov_all = _box_sums(stained, rows, cols) / np.maximum(area, 1)
    nuc_all = _box_sums(nuclear, rows, cols) / np.maximum(area, 1)
    fields: list[FieldQuality] = []
    for k in np.flatnonzero(area > 0):
        x1, y1 = int(x1s[k]), int(y1s[k])
        cov, nuc = float(cov_all[k]), float(nuc_all[k])
        score, verdict = _verdict(cov, nuc, cfg)
        region = Region(Box(x1, y1, x1 + fs_x, y1 + fs_y), roi_id=len(fields), label="auto_field")
        fields.append(FieldQuality(region, cov, nuc, score, verdict))
    fields.sort(key=lambda f: (-f.score, f.region.roi_id))
    return fields


def select_regions(
    slide: SlideReader, annotations: CellAnnotations | None = None, cfg: FieldSelectionConfig | None = None
) -> list[FieldQuality]:
    """The regions to count in, in the order to count them.

    The slide's annotated ROIs when it has them; otherwise monolayer fields ranked by quality. Raises
    :class:`InputError` when the slide has no usable smear area.
    """
    cfg = cfg or FieldSelectionConfig()
    if annotations is not None and annotations.regions:
        nan = float("nan")
        return [FieldQuality(r, nan, nan, 1.0, "annotated ROI") for r in annotations.regions]
    ranked = rank_fields(slide, cfg)
    good = [f for f in ranked if f.score > 0][: cfg.max_fields]
    info = slide.info
    whole = ranked[0] if len(ranked) == 1 else None
    # an image smaller than one field (a photographed field of view): the user chose it, so it is
    # counted as it is unless it holds nothing (blank, or no nuclei)
    if (not good and whole is not None and whole.region.box.as_tuple() == (0, 0, info.width, info.height)
            and whole.coverage >= 0.02 and whole.nuclear > 0):
        log.info("%s: the whole image is one field (%s); counted as given", info.slide_id, whole.verdict)
        return [whole]
    if not good:
        verdicts = sorted({f.verdict for f in ranked})
        raise InputError(
            slide.info.path,
            f"no smear area fit for counting found ({len(ranked)} fields: {', '.join(verdicts)}); "
            "check the slide, or give regions of interest (--rois)",
        )
    log.info("%s: %d of %d fields are monolayer", slide.info.slide_id, len(good), len(ranked))
    return good
