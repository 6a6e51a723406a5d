"""Per-class morphology parameters of rendered cells (one table), in May-Grünwald-Giemsa colours.

Every numeric field is a ``(lo, hi)`` range sampled uniformly per cell; neighbouring maturation stages
have overlapping ranges on purpose so that they are genuinely hard to tell apart. Sizes are cell
diameters in µm (rendered at the slide's mpp, 0.11 µm/px by default).

Colours are the RGB a layer of unit density shows on white glass; rendering works in optical density
(Beer-Lambert), so overlapping cells darken the way stained cells do.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

Range = tuple[float, float]
RGB = tuple[int, int, int]

# Stain colours (RGB at unit density on white).
CHROMATIN: RGB = (72, 38, 132)  # purple-violet nuclear stain
CHROMATIN_DARK: RGB = (58, 28, 118)  # mature, condensed
NUCLEOLUS: RGB = (150, 150, 205)
CYTO_DEEP_BLUE: RGB = (78, 98, 180)  # basophilic: blasts, proerythroblasts, plasma cells
CYTO_BLUE: RGB = (130, 150, 210)  # moderately basophilic (blasts, lymphocytes)
CYTO_SKY: RGB = (155, 175, 222)  # lymphocyte sky blue
CYTO_GREY_BLUE: RGB = (165, 165, 205)  # monocytes
CYTO_LILAC: RGB = (198, 172, 206)  # myelocytes (residual basophilia)
CYTO_PINK: RGB = (212, 178, 200)  # neutrophils
CYTO_POLY: RGB = (150, 145, 200)  # polychromatic erythroblast
CYTO_ORTHO: RGB = (210, 160, 175)  # orthochromatic erythroblast, close to red cells
CYTO_PALE: RGB = (200, 195, 222)  # macrophage, pale
CYTO_MEGA: RGB = (205, 172, 210)  # megakaryocyte granular pink-lilac
CYTO_EOS: RGB = (222, 180, 170)
CYTO_BASO: RGB = (180, 145, 200)  # lilac-purple ground of basophils
GRAN_NEUTRO: RGB = (165, 110, 170)  # fine lilac granules
GRAN_AZURO: RGB = (125, 40, 115)  # azurophilic purple-red
GRAN_EOS: RGB = (215, 105, 70)  # orange-red
GRAN_BASO: RGB = (55, 20, 95)  # dark purple-black
GRAN_MEGA: RGB = (160, 90, 165)
RBC: RGB = (214, 158, 172)
PLATELET_BODY: RGB = (195, 185, 225)
PLATELET_GRAN: RGB = (105, 50, 140)


@dataclass(frozen=True)
class CellStyle:
    """How one label looks. ``kind`` selects a special renderer ("cell" is the general one)."""

    diameter_um: Range
    nc_ratio: Range  # nucleus area / cell area
    nucleus: tuple[str, ...] = (
        "round",
    )  # round, oval, indented, kidney, band, segmented, lobulated, pyknotic
    kind: str = "cell"
    aspect: Range = (1.0, 1.15)
    irregular: Range = (0.0, 0.03)
    nucleus_offset: Range = (0.0, 0.3)  # 0 = central, 1 = touching the cell edge
    indent: Range = (0.0, 0.0)  # depth of the nuclear indentation (0..0.6)
    lobes: Range = (2.0, 2.0)
    chromatin: RGB = CHROMATIN
    chromatin_density: Range = (0.8, 1.0)
    chromatin_scale: Range = (1.0, 2.0)  # texture grain in px
    chromatin_contrast: Range = (0.1, 0.2)
    clumped: bool = False
    rim: Range = (0.0, 0.1)  # chromatin condensed at the nuclear membrane
    nucleoli: Range = (0.0, 0.0)
    nucleolus_um: Range = (0.8, 1.5)
    cytoplasm: RGB = CYTO_BLUE
    cyto_density: Range = (0.4, 0.6)
    cyto_edge: Range = (0.0, 0.2)  # darker peripheral basophilia
    halo: Range = (0.0, 0.0)  # perinuclear (Golgi) clearing strength
    vacuoles: Range = (0.0, 0.0)
    granules: RGB | None = None
    granule_density: Range = (0.0, 0.0)  # granules per 100 px^2 of cell
    granule_px: Range = (0.7, 1.0)  # gaussian sigma of one granule
    granule_strength: Range = (0.5, 0.8)
    granules_over_nucleus: Range = (0.0, 0.0)  # fraction of granules allowed over the nucleus
    extra: Mapping[str, float] = field(default_factory=dict)


_BLAST = CellStyle(
    diameter_um=(12.0, 18.0),
    nc_ratio=(0.62, 0.82),
    nucleus=("round", "round", "oval", "indented"),
    indent=(0.0, 0.18),
    nucleus_offset=(0.0, 0.35),
    chromatin_density=(0.62, 0.85),
    chromatin_scale=(0.8, 1.4),
    chromatin_contrast=(0.08, 0.16),
    nucleoli=(1, 3),
    nucleolus_um=(1.0, 2.0),
    cytoplasm=CYTO_BLUE,
    cyto_density=(0.55, 0.85),
    cyto_edge=(0.0, 0.15),
)

STYLES: Mapping[str, CellStyle] = {
    # --- blasts and precursors ------------------------------------------------------------------------
    "myelocytic_blast": replace(
        _BLAST, granules=GRAN_AZURO, granule_density=(0.0, 0.08), granule_strength=(0.4, 0.7)
    ),
    "myeloblast": replace(
        _BLAST,
        diameter_um=(12.0, 17.0),
        nc_ratio=(0.6, 0.78),
        nucleoli=(1, 3),
        chromatin_density=(0.65, 0.88),
        granules=GRAN_AZURO,
        granule_density=(0.0, 0.05),
    ),
    "unknown_blast": replace(_BLAST, diameter_um=(11.0, 18.0), nc_ratio=(0.65, 0.85), nucleoli=(0, 2)),
    "lymphocytic_blast": replace(
        _BLAST,
        diameter_um=(9.5, 15.0),
        nc_ratio=(0.78, 0.92),
        nucleus=("round", "round", "oval", "indented"),
        indent=(0.0, 0.15),
        chromatin_density=(0.7, 0.92),
        chromatin_scale=(0.9, 1.6),
        nucleoli=(0, 2),
        nucleolus_um=(0.8, 1.4),
        cyto_density=(0.5, 0.85),
        nucleus_offset=(0.0, 0.5),
    ),
    "lymphoblast": replace(  # hematogone: very close to lymphocytic_blast
        _BLAST,
        diameter_um=(8.5, 13.5),
        nc_ratio=(0.8, 0.93),
        nucleus=("round", "round", "oval"),
        chromatin_density=(0.75, 0.98),
        chromatin_scale=(1.0, 1.8),
        chromatin_contrast=(0.1, 0.2),
        nucleoli=(0, 1),
        nucleolus_um=(0.7, 1.1),
        cytoplasm=CYTO_SKY,
        cyto_density=(0.45, 0.8),
        nucleus_offset=(0.0, 0.5),
    ),
    "monocytic_blast": replace(
        _BLAST,
        diameter_um=(15.0, 24.0),
        nc_ratio=(0.55, 0.75),
        nucleus=("round", "oval", "indented"),
        indent=(0.0, 0.25),
        chromatin_density=(0.5, 0.68),
        chromatin_contrast=(0.08, 0.14),
        nucleoli=(1, 3),
        nucleolus_um=(1.4, 2.4),
        cytoplasm=CYTO_GREY_BLUE,
        cyto_density=(0.5, 0.8),
        vacuoles=(0, 3),
        irregular=(0.01, 0.05),
    ),
    "monoblast": replace(
        _BLAST,
        diameter_um=(15.0, 24.0),
        nc_ratio=(0.55, 0.75),
        nucleus=("round", "oval"),
        chromatin_density=(0.5, 0.68),
        nucleoli=(1, 2),
        nucleolus_um=(1.4, 2.4),
        cytoplasm=CYTO_GREY_BLUE,
        cyto_density=(0.55, 0.85),
    ),
    "promonocyte": CellStyle(
        diameter_um=(15.0, 22.0),
        nc_ratio=(0.5, 0.68),
        nucleus=("indented", "kidney", "lobulated"),
        indent=(0.15, 0.45),
        lobes=(2, 3),
        chromatin_density=(0.55, 0.75),
        chromatin_scale=(1.0, 1.8),
        chromatin_contrast=(0.1, 0.18),
        nucleoli=(0, 2),
        nucleolus_um=(1.0, 1.8),
        cytoplasm=CYTO_GREY_BLUE,
        cyto_density=(0.45, 0.7),
        vacuoles=(0, 4),
        granules=GRAN_AZURO,
        granule_density=(0.02, 0.12),
        granule_px=(0.5, 0.8),
        granule_strength=(0.25, 0.45),
        irregular=(0.02, 0.06),
    ),
    "monocyte": CellStyle(
        diameter_um=(13.0, 20.0),
        nc_ratio=(0.4, 0.58),
        nucleus=("kidney", "lobulated", "band", "indented"),
        indent=(0.3, 0.6),
        lobes=(2, 3),
        chromatin_density=(0.65, 0.85),
        chromatin_scale=(1.2, 2.2),
        chromatin_contrast=(0.15, 0.25),
        rim=(0.05, 0.15),
        cytoplasm=CYTO_GREY_BLUE,
        cyto_density=(0.3, 0.5),
        vacuoles=(1, 7),
        granules=GRAN_AZURO,
        granule_density=(0.03, 0.12),
        granule_px=(0.5, 0.7),
        granule_strength=(0.2, 0.35),
        irregular=(0.03, 0.08),
        aspect=(1.0, 1.3),
    ),
    "macrophage": CellStyle(
        diameter_um=(22.0, 38.0),
        nc_ratio=(0.08, 0.18),
        nucleus=("oval", "kidney"),
        indent=(0.1, 0.3),
        nucleus_offset=(0.4, 0.8),
        chromatin_density=(0.65, 0.85),
        chromatin_scale=(1.5, 2.5),
        chromatin_contrast=(0.15, 0.25),
        nucleoli=(0, 1),
        cytoplasm=CYTO_PALE,
        cyto_density=(0.3, 0.5),
        vacuoles=(6, 18),
        granules=GRAN_AZURO,
        granule_density=(0.01, 0.05),
        granule_px=(1.0, 2.5),
        granule_strength=(0.3, 0.6),
        irregular=(0.05, 0.1),
        aspect=(1.0, 1.4),
    ),
    # --- neutrophil line ---------------------------------------------------------------------------------
    "promyelocyte": CellStyle(
        diameter_um=(15.0, 23.0),
        nc_ratio=(0.42, 0.62),
        nucleus=("round", "oval", "indented"),
        indent=(0.0, 0.2),
        nucleus_offset=(0.25, 0.6),
        chromatin_density=(0.6, 0.8),
        chromatin_scale=(1.0, 1.8),
        chromatin_contrast=(0.1, 0.2),
        nucleoli=(0, 2),
        nucleolus_um=(1.0, 1.8),
        cytoplasm=CYTO_BLUE,
        cyto_density=(0.4, 0.65),
        halo=(0.3, 0.6),
        granules=GRAN_AZURO,
        granule_density=(1.2, 2.2),
        granule_px=(0.8, 1.3),
        granule_strength=(0.5, 0.85),
        granules_over_nucleus=(0.1, 0.3),
    ),
    "neutrophilic_myelocyte": CellStyle(
        diameter_um=(12.0, 18.0),
        nc_ratio=(0.38, 0.55),
        nucleus=("round", "oval", "indented"),
        indent=(0.0, 0.25),
        nucleus_offset=(0.2, 0.55),
        chromatin_density=(0.75, 0.95),
        chromatin_scale=(1.3, 2.2),
        chromatin_contrast=(0.15, 0.28),
        clumped=True,
        rim=(0.05, 0.15),
        cytoplasm=CYTO_LILAC,
        cyto_density=(0.45, 0.7),
        halo=(0.1, 0.4),
        granules=GRAN_NEUTRO,
        granule_density=(0.5, 1.1),
        granule_px=(0.5, 0.8),
        granule_strength=(0.3, 0.5),
        granules_over_nucleus=(0.0, 0.1),
    ),
    "neutrophilic_metamyelocyte": CellStyle(
        diameter_um=(11.5, 16.5),
        nc_ratio=(0.3, 0.45),
        nucleus=("indented", "kidney", "kidney"),
        indent=(0.2, 0.55),
        nucleus_offset=(0.1, 0.4),
        chromatin_density=(0.85, 1.05),
        chromatin_scale=(1.4, 2.4),
        chromatin_contrast=(0.18, 0.3),
        clumped=True,
        rim=(0.1, 0.2),
        cytoplasm=CYTO_PINK,
        cyto_density=(0.55, 0.8),
        granules=GRAN_NEUTRO,
        granule_density=(0.6, 1.2),
        granule_px=(0.5, 0.8),
        granule_strength=(0.35, 0.55),
    ),
    "neutrophilic_band": CellStyle(
        diameter_um=(11.0, 15.5),
        nc_ratio=(0.25, 0.38),
        nucleus=("band", "band", "kidney"),
        indent=(0.5, 0.65),
        nucleus_offset=(0.0, 0.25),
        chromatin_density=(0.95, 1.15),
        chromatin_scale=(1.5, 2.5),
        chromatin_contrast=(0.2, 0.32),
        clumped=True,
        rim=(0.1, 0.2),
        cytoplasm=CYTO_PINK,
        cyto_density=(0.55, 0.8),
        granules=GRAN_NEUTRO,
        granule_density=(0.6, 1.2),
        granule_px=(0.5, 0.8),
        granule_strength=(0.35, 0.55),
        extra={"arc_span": 1.0},
    ),
    "segmented_neutrophil": CellStyle(
        diameter_um=(11.0, 15.0),
        nc_ratio=(0.22, 0.35),
        nucleus=("segmented", "segmented", "segmented", "band"),
        lobes=(2, 4),
        nucleus_offset=(0.0, 0.25),
        chromatin_density=(1.0, 1.2),
        chromatin_scale=(1.5, 2.5),
        chromatin_contrast=(0.2, 0.32),
        clumped=True,
        rim=(0.1, 0.2),
        cytoplasm=CYTO_PINK,
        cyto_density=(0.55, 0.8),
        granules=GRAN_NEUTRO,
        granule_density=(0.6, 1.2),
        granule_px=(0.5, 0.8),
        granule_strength=(0.35, 0.55),
    ),
    # --- eosinophil / basophil lines ---------------------------------------------------------------------
    "eosinophilic_myelocyte": CellStyle(
        diameter_um=(12.0, 18.0),
        nc_ratio=(0.35, 0.52),
        nucleus=("round", "oval", "indented"),
        indent=(0.0, 0.25),
        nucleus_offset=(0.2, 0.55),
        chromatin_density=(0.75, 0.95),
        chromatin_scale=(1.3, 2.2),
        chromatin_contrast=(0.15, 0.28),
        clumped=True,
        cytoplasm=CYTO_LILAC,
        cyto_density=(0.3, 0.5),
        granules=GRAN_EOS,
        granule_density=(1.3, 2.0),
        granule_px=(1.2, 1.6),
        granule_strength=(0.5, 0.8),
        extra={"basophilic_granules": 0.12},
    ),
    "eosinophilic_metamyelocyte": CellStyle(
        diameter_um=(11.0, 16.0),
        nc_ratio=(0.28, 0.42),
        nucleus=("indented", "kidney"),
        indent=(0.2, 0.55),
        chromatin_density=(0.85, 1.05),
        chromatin_scale=(1.4, 2.4),
        chromatin_contrast=(0.18, 0.3),
        clumped=True,
        cytoplasm=CYTO_EOS,
        cyto_density=(0.3, 0.5),
        granules=GRAN_EOS,
        granule_density=(1.5, 2.2),
        granule_px=(1.3, 1.7),
        granule_strength=(0.55, 0.85),
    ),
    "eosinophilic_band": CellStyle(
        diameter_um=(11.0, 15.0),
        nc_ratio=(0.24, 0.36),
        nucleus=("band", "band", "kidney"),
        indent=(0.5, 0.65),
        chromatin_density=(0.95, 1.15),
        chromatin_scale=(1.5, 2.5),
        chromatin_contrast=(0.2, 0.3),
        clumped=True,
        cytoplasm=CYTO_EOS,
        cyto_density=(0.3, 0.5),
        granules=GRAN_EOS,
        granule_density=(1.5, 2.2),
        granule_px=(1.3, 1.7),
        granule_strength=(0.55, 0.85),
    ),
    "segmented_eosinophil": CellStyle(
        diameter_um=(11.0, 15.0),
        nc_ratio=(0.22, 0.34),
        nucleus=("segmented", "segmented", "band"),
        lobes=(2, 3),
        chromatin_density=(1.0, 1.2),
        chromatin_scale=(1.5, 2.5),
        chromatin_contrast=(0.2, 0.3),
        clumped=True,
        cytoplasm=CYTO_EOS,
        cyto_density=(0.3, 0.5),
        granules=GRAN_EOS,
        granule_density=(1.6, 2.3),
        granule_px=(1.3, 1.7),
        granule_strength=(0.55, 0.9),
    ),
    "basophilic_myelocyte": CellStyle(
        diameter_um=(11.0, 16.0),
        nc_ratio=(0.38, 0.55),
        nucleus=("round", "oval", "indented"),
        indent=(0.0, 0.25),
        chromatin_density=(0.7, 0.9),
        chromatin_scale=(1.3, 2.2),
        chromatin_contrast=(0.12, 0.22),
        cytoplasm=CYTO_BASO,
        cyto_density=(0.4, 0.6),
        granules=GRAN_BASO,
        granule_density=(1.0, 1.8),
        granule_px=(1.3, 2.0),
        granule_strength=(0.6, 1.0),
        granules_over_nucleus=(0.3, 0.6),
    ),
    "basophilic_metamyelocyte": CellStyle(
        diameter_um=(10.0, 15.0),
        nc_ratio=(0.3, 0.45),
        nucleus=("indented", "kidney"),
        indent=(0.2, 0.55),
        chromatin_density=(0.75, 0.95),
        chromatin_scale=(1.4, 2.4),
        chromatin_contrast=(0.15, 0.25),
        cytoplasm=CYTO_BASO,
        cyto_density=(0.4, 0.6),
        granules=GRAN_BASO,
        granule_density=(1.0, 1.8),
        granule_px=(1.3, 2.0),
        granule_strength=(0.6, 1.0),
        granules_over_nucleus=(0.4, 0.7),
    ),
    "basophilic_band": CellStyle(
        diameter_um=(10.0, 14.0),
        nc_ratio=(0.25, 0.38),
        nucleus=("band", "kidney"),
        indent=(0.5, 0.65),
        chromatin_density=(0.8, 1.0),
        chromatin_scale=(1.5, 2.5),
        chromatin_contrast=(0.15, 0.25),
        cytoplasm=CYTO_BASO,
        cyto_density=(0.4, 0.6),
        granules=GRAN_BASO,
        granule_density=(1.0, 1.8),
        granule_px=(1.3, 2.0),
        granule_strength=(0.6, 1.0),
        granules_over_nucleus=(0.5, 0.8),
    ),
    "segmented_basophil": CellStyle(
        diameter_um=(10.0, 14.0),
        nc_ratio=(0.25, 0.38),
        nucleus=("segmented", "band"),
        lobes=(2, 3),
        chromatin_density=(0.8, 1.0),
        chromatin_scale=(1.5, 2.5),
        chromatin_contrast=(0.15, 0.25),
        cytoplasm=CYTO_BASO,
        cyto_density=(0.4, 0.6),
        granules=GRAN_BASO,
        granule_density=(1.4, 2.2),
        granule_px=(1.4, 2.1),
        granule_strength=(0.7, 1.1),
        granules_over_nucleus=(0.6, 0.9),
    ),
    "degranulated_neutrophilic_myelocyte": CellStyle(
        diameter_um=(12.0, 18.0),
        nc_ratio=(0.38, 0.55),
        nucleus=("round", "oval", "indented"),
        indent=(0.0, 0.25),
        nucleus_offset=(0.2, 0.55),
        chromatin_density=(0.75, 0.95),
        chromatin_scale=(1.3, 2.2),
        chromatin_contrast=(0.15, 0.28),
        clumped=True,
        cytoplasm=CYTO_GREY_BLUE,
        cyto_density=(0.25, 0.4),
        granules=GRAN_NEUTRO,
        granule_density=(0.0, 0.1),
        granule_px=(0.5, 0.7),
        granule_strength=(0.2, 0.3),
    ),
    "degranulated_neutrophilic_metamyelocyte": CellStyle(
        diameter_um=(11.0, 16.0),
        nc_ratio=(0.3, 0.45),
        nucleus=("indented", "kidney"),
        indent=(0.2, 0.55),
        chromatin_density=(0.85, 1.05),
        chromatin_scale=(1.4, 2.4),
        chromatin_contrast=(0.18, 0.3),
        clumped=True,
        cytoplasm=CYTO_GREY_BLUE,
        cyto_density=(0.22, 0.38),
        granules=GRAN_NEUTRO,
        granule_density=(0.0, 0.1),
        granule_px=(0.5, 0.7),
        granule_strength=(0.2, 0.3),
    ),
    # --- erythroid line ----------------------------------------------------------------------------------
    "proerythroblast": CellStyle(
        diameter_um=(14.0, 20.0),
        nc_ratio=(0.6, 0.8),
        nucleus=("round", "round", "oval"),
        nucleus_offset=(0.0, 0.3),
        chromatin_density=(0.62, 0.82),
        chromatin_scale=(1.0, 1.8),
        chromatin_contrast=(0.1, 0.2),
        nucleoli=(1, 2),
        nucleolus_um=(1.2, 2.2),
        cytoplasm=CYTO_DEEP_BLUE,
        cyto_density=(0.65, 0.95),
        cyto_edge=(0.0, 0.15),
        halo=(0.2, 0.45),
        irregular=(0.02, 0.07),
    ),
    "basophilic_erythroblast": CellStyle(
        diameter_um=(11.0, 16.0),
        nc_ratio=(0.55, 0.75),
        nucleus=("round",),
        nucleus_offset=(0.0, 0.25),
        chromatin_density=(0.8, 1.0),
        chromatin_scale=(1.3, 2.2),
        chromatin_contrast=(0.18, 0.3),
        clumped=True,
        nucleoli=(0, 1),
        nucleolus_um=(0.8, 1.2),
        cytoplasm=CYTO_DEEP_BLUE,
        cyto_density=(0.6, 0.9),
        cyto_edge=(0.0, 0.12),
        halo=(0.1, 0.3),
    ),
    "polychromatic_erythroblast": CellStyle(
        diameter_um=(9.0, 13.0),
        nc_ratio=(0.42, 0.62),
        nucleus=("round",),
        nucleus_offset=(0.0, 0.3),
        chromatin_density=(0.95, 1.15),
        chromatin_scale=(1.6, 2.6),
        chromatin_contrast=(0.25, 0.4),
        clumped=True,
        cytoplasm=CYTO_POLY,
        cyto_density=(0.45, 0.75),
        rim=(0.0, 0.1),
    ),
    "orthochromatic_erythroblast": CellStyle(
        diameter_um=(8.0, 10.5),
        nc_ratio=(0.15, 0.32),
        nucleus=("pyknotic",),
        nucleus_offset=(0.0, 0.7),
        chromatin=CHROMATIN_DARK,
        chromatin_density=(1.3, 1.6),
        chromatin_scale=(1.0, 1.5),
        chromatin_contrast=(0.05, 0.1),
        cytoplasm=CYTO_ORTHO,
        cyto_density=(0.5, 0.8),
    ),
    # --- lymphoid line -----------------------------------------------------------------------------------
    "prolymphocyte": CellStyle(
        diameter_um=(9.0, 13.0),
        nc_ratio=(0.72, 0.88),
        nucleus=("round", "oval"),
        nucleus_offset=(0.0, 0.5),
        chromatin_density=(0.85, 1.05),
        chromatin_scale=(1.3, 2.2),
        chromatin_contrast=(0.15, 0.28),
        clumped=True,
        nucleoli=(1, 1),
        nucleolus_um=(1.0, 1.6),
        cytoplasm=CYTO_SKY,
        cyto_density=(0.45, 0.7),
    ),
    "lymphocyte": CellStyle(
        diameter_um=(7.0, 10.5),
        nc_ratio=(0.75, 0.92),
        nucleus=("round", "round", "oval", "indented"),
        indent=(0.0, 0.15),
        nucleus_offset=(0.0, 0.5),
        chromatin=CHROMATIN_DARK,
        chromatin_density=(1.0, 1.25),
        chromatin_scale=(1.5, 2.6),
        chromatin_contrast=(0.25, 0.4),
        clumped=True,
        rim=(0.05, 0.15),
        cytoplasm=CYTO_SKY,
        cyto_density=(0.4, 0.7),
    ),
    "lymphoidocyte": CellStyle(
        diameter_um=(10.0, 16.0),
        nc_ratio=(0.45, 0.7),
        nucleus=("round", "oval", "indented"),
        indent=(0.0, 0.3),
        nucleus_offset=(0.1, 0.5),
        chromatin_density=(0.85, 1.05),
        chromatin_scale=(1.4, 2.4),
        chromatin_contrast=(0.18, 0.3),
        clumped=True,
        cytoplasm=CYTO_DEEP_BLUE,
        cyto_density=(0.4, 0.65),
        cyto_edge=(0.2, 0.5),
        irregular=(0.04, 0.1),
        aspect=(1.0, 1.35),
    ),
    "plasma_cell": CellStyle(
        diameter_um=(10.0, 16.0),
        nc_ratio=(0.3, 0.45),
        nucleus=("round",),
        nucleus_offset=(0.55, 0.85),
        aspect=(1.15, 1.5),
        chromatin=CHROMATIN_DARK,
        chromatin_density=(0.95, 1.15),
        chromatin_scale=(1.8, 2.8),
        chromatin_contrast=(0.3, 0.45),
        clumped=True,
        rim=(0.1, 0.2),
        cytoplasm=CYTO_DEEP_BLUE,
        cyto_density=(0.75, 1.05),
        cyto_edge=(0.1, 0.3),
        halo=(0.45, 0.75),
        vacuoles=(0, 2),
    ),
    # --- megakaryocytic line -----------------------------------------------------------------------------
    "megakaryocyte": CellStyle(
        diameter_um=(35.0, 60.0),
        nc_ratio=(0.25, 0.4),
        nucleus=("lobulated",),
        lobes=(5, 10),
        nucleus_offset=(0.0, 0.2),
        chromatin_density=(0.85, 1.05),
        chromatin_scale=(2.0, 3.5),
        chromatin_contrast=(0.2, 0.3),
        clumped=True,
        cytoplasm=CYTO_MEGA,
        cyto_density=(0.4, 0.6),
        granules=GRAN_MEGA,
        granule_density=(0.3, 0.6),
        granule_px=(0.6, 0.9),
        granule_strength=(0.25, 0.4),
        irregular=(0.04, 0.1),
        aspect=(1.0, 1.25),
        extra={"platelet_buds": 1.0},
    ),
    "promegakaryocyte": CellStyle(
        diameter_um=(22.0, 38.0),
        nc_ratio=(0.4, 0.6),
        nucleus=("lobulated", "kidney"),
        lobes=(2, 4),
        indent=(0.2, 0.4),
        chromatin_density=(0.75, 0.95),
        chromatin_scale=(1.6, 2.8),
        chromatin_contrast=(0.15, 0.25),
        cytoplasm=CYTO_BLUE,
        cyto_density=(0.5, 0.75),
        cyto_edge=(0.1, 0.3),
        granules=GRAN_MEGA,
        granule_density=(0.05, 0.2),
        granule_px=(0.6, 0.9),
        granule_strength=(0.2, 0.35),
        irregular=(0.04, 0.1),
        extra={"platelet_buds": 0.3},
    ),
    "micromegakaryocyte": CellStyle(
        diameter_um=(11.0, 20.0),
        nc_ratio=(0.3, 0.5),
        nucleus=("round", "lobulated", "kidney"),
        lobes=(2, 2),
        indent=(0.1, 0.3),
        chromatin_density=(0.95, 1.15),
        chromatin_scale=(1.5, 2.5),
        chromatin_contrast=(0.2, 0.3),
        clumped=True,
        cytoplasm=CYTO_MEGA,
        cyto_density=(0.4, 0.6),
        granules=GRAN_MEGA,
        granule_density=(0.3, 0.6),
        granule_px=(0.6, 0.9),
        granule_strength=(0.25, 0.4),
        irregular=(0.06, 0.14),
        extra={"platelet_buds": 1.0},
    ),
    # --- special ------------------------------------------------------------------------------------------
    "mitosis": CellStyle(
        diameter_um=(13.0, 20.0),
        nc_ratio=(0.3, 0.45),
        kind="mitosis",
        cytoplasm=CYTO_BLUE,
        cyto_density=(0.4, 0.65),
        chromatin=CHROMATIN_DARK,
        chromatin_density=(1.2, 1.5),
    ),
    "pseudo_gaucher_cell": CellStyle(
        diameter_um=(30.0, 50.0),
        nc_ratio=(0.06, 0.14),
        nucleus=("oval", "round"),
        nucleus_offset=(0.5, 0.85),
        kind="gaucher",
        chromatin_density=(0.8, 1.0),
        chromatin_scale=(1.5, 2.5),
        chromatin_contrast=(0.15, 0.25),
        cytoplasm=CYTO_GREY_BLUE,
        cyto_density=(0.5, 0.75),
        aspect=(1.1, 1.5),
        irregular=(0.03, 0.08),
    ),
    "phagocytosis": CellStyle(
        diameter_um=(22.0, 36.0),
        nc_ratio=(0.08, 0.16),
        nucleus=("oval", "kidney"),
        indent=(0.1, 0.3),
        nucleus_offset=(0.45, 0.8),
        kind="phagocytosis",
        chromatin_density=(0.7, 0.9),
        chromatin_scale=(1.5, 2.5),
        chromatin_contrast=(0.15, 0.25),
        cytoplasm=CYTO_PALE,
        cyto_density=(0.3, 0.5),
        vacuoles=(3, 8),
        irregular=(0.05, 0.1),
        aspect=(1.0, 1.3),
    ),
    "erythrocyte": CellStyle(
        diameter_um=(6.8, 8.0),
        nc_ratio=(0.0, 0.0),
        kind="rbc",
        cytoplasm=RBC,
        cyto_density=(0.75, 1.0),
        aspect=(1.0, 1.12),
    ),
    "thrombocyte": CellStyle(diameter_um=(2.0, 3.5), nc_ratio=(0.0, 0.0), kind="platelet"),
    "giant_platelet": CellStyle(diameter_um=(4.5, 7.5), nc_ratio=(0.0, 0.0), kind="platelet"),
    "thrombocyte_aggregate": CellStyle(diameter_um=(10.0, 22.0), nc_ratio=(0.0, 0.0), kind="aggregate"),
    "smudge_cell": CellStyle(
        diameter_um=(10.0, 20.0), nc_ratio=(0.0, 0.0), kind="smudge", chromatin_density=(0.3, 0.55)
    ),
    "damaged_cell": CellStyle(diameter_um=(10.0, 18.0), nc_ratio=(0.3, 0.6), kind="damaged"),
    "artifact": CellStyle(diameter_um=(5.0, 15.0), nc_ratio=(0.0, 0.0), kind="artifact"),
    "technically_unfit": CellStyle(diameter_um=(22.0, 34.0), nc_ratio=(0.0, 0.0), kind="clump"),
    "neutrophil_extracellular_trap": CellStyle(
        diameter_um=(14.0, 26.0), nc_ratio=(0.0, 0.0), kind="net", chromatin_density=(0.15, 0.3)
    ),
}

STYLED_LABELS: tuple[str, ...] = tuple(STYLES)

#: How the cells are drawn (``marrowscope synth --look``). ``basic``: the table above, as every bundled
#: synthetic model was trained on. ``textured``: the same cells with the texture real May-Grünwald-Giemsa
#: cells show at the classifier's 0.45 µm/px (coarser, higher-contrast chromatin, mottled granular
#: cytoplasm in every granulocyte and monocyte, paler red cells), so that texture alone no longer singles
#: out the one class with dark granules (``benchmarks/sim_to_real.py``: real neutrophils and immature
#: granulocytes were called basophils).
LOOKS: tuple[str, ...] = ("basic", "textured")


#: the ``textured`` look's changes, fitted by eye and by ``benchmarks/texture_realism.py`` (texture of
#: rendered vs real PBC training-part cells at 0.45 µm/px; never on a held-out or test set)
TEXTURE: Mapping[str, float] = {
    "chromatin_scale": 1.5, "chromatin_contrast": 1.7, "mottle_granular": 0.7, "mottle_plain": 0.35,
    "granule_px": 2.0, "granule_strength": 0.9, "dark_granule_strength": 0.6, "rbc_density": 0.7,
    "speckle": 0.3,
}


def _textured(style: CellStyle) -> CellStyle:
    t = TEXTURE
    if style.kind == "rbc":
        lo, hi = style.cyto_density
        return replace(style, cyto_density=(lo * t["rbc_density"] * 0.8, hi * t["rbc_density"]))
    if style.kind != "cell":
        return style
    lo, hi = style.chromatin_scale
    clo, chi = style.chromatin_contrast
    out = replace(style, chromatin_scale=(lo * t["chromatin_scale"], hi * t["chromatin_scale"]),
                  chromatin_contrast=(clo * t["chromatin_contrast"], chi * t["chromatin_contrast"]),
                  extra={**style.extra, "speckle": t["speckle"],
                         "cyto_mottle": t["mottle_granular" if style.granules else "mottle_plain"]})
    gl, gh = style.granule_px
    sl, sh = style.granule_strength
    if style.granules in (GRAN_NEUTRO, GRAN_AZURO) and gh < 1.4:
        # granules in clusters that survive the classifier's resolution: wider spots
        out = replace(out, granule_px=(gl * t["granule_px"], gh * t["granule_px"]),
                      granule_strength=(sl * t["granule_strength"], sh * t["granule_strength"]))
    elif style.granules == GRAN_BASO:
        k = t["dark_granule_strength"]
        out = replace(out, granule_strength=(sl * k, sh * k))
    return out


STYLES_TEXTURED: Mapping[str, CellStyle] = {k: _textured(v) for k, v in STYLES.items()}


def styles_for(look: str) -> Mapping[str, CellStyle]:
    """The style table of a look (:data:`LOOKS`)."""
    if look == "basic":
        return STYLES
    if look == "textured":
        return STYLES_TEXTURED
    raise ValueError(f"unknown look {look!r}; use one of {', '.join(LOOKS)}")
