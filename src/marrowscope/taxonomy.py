"""Cell labels of the BoneMarrowWSI-PediatricLeukemia (BMDeep) dataset: codes, lineages, class schemes.

Canonical label names are the 49 original BMDeep labels (the CSV vocabulary), three structural labels
(``no_consensus_found``, ``haematological_structure``, ``region_of_interest``) and a few non-leaf *group*
labels (``leukocyte``, ``blast``, ``neutrophil`` ...) that give coarse labels of other datasets a home.

Codes, categories and display colours are exactly those of the IDC DICOM annotation objects
(dataset.md §2.3). Group labels are not in that table and use the local coding scheme ``99MRWS``.
See docs/taxonomy.md for the lineage and counting decisions and the class schemes.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType

from marrowscope.errors import InputError

log = logging.getLogger(__name__)

__all__ = [
    "Code",
    "LabelInfo",
    "LABELS",
    "ORIGINAL_LABELS",
    "STRUCTURAL_LABELS",
    "GROUP_LABELS",
    "LINEAGES",
    "COUNTED_LINEAGES",
    "DEFAULT_SCHEME",
    "UnknownLabelError",
    "ClassScheme",
    "normalise_label",
    "parse_session_labels",
    "to_idc_label",
    "from_idc_label",
    "lineage_of",
    "cell_line_of",
    "is_countable",
    "is_blast_equivalent",
    "is_leukemic_blast",
    "ancestors",
    "descendants",
    "labels_with_code",
    "load_scheme",
    "list_schemes",
    "map_external",
    "EXTERNAL_DATASETS",
]


@dataclass(frozen=True)
class Code:
    """A coded concept: coding scheme designator (SCT, NCIt, LN, DCM, 99MRWS), code value, meaning."""

    scheme: str
    value: str
    meaning: str

    def __str__(self) -> str:
        """``SCT:41898006`` style, as idc-index writes codes."""
        return f"{self.scheme}:{self.value}"


@dataclass(frozen=True)
class LabelInfo:
    """Everything known about one canonical label.

    ``idc_name``: the AnnotationGroupLabel used in IDC DICOM ANN (differs for three labels, §2.2).
    ``category`` / ``type_code``: AnnotatedPropertyCategory / Type codes. ``color``: '#rrggbb'.
    ``lineage``: one of :data:`LINEAGES` (differential group). ``countable``: enters the denominator of
    a nucleated-cell differential. ``parent``: group label or None. ``is_group``: non-leaf label.
    """

    name: str
    idc_name: str
    category: Code
    type_code: Code
    color: str
    lineage: str
    countable: bool
    parent: str | None
    description: str
    is_group: bool = False


class UnknownLabelError(InputError):
    """A label that is not in the taxonomy (and no known alias of one)."""

    def __init__(self, label: str, source: object = "label", hint: str = "") -> None:
        self.label = label
        super().__init__(
            source,
            f"unknown cell label {label!r}{hint}; known labels are listed in docs/taxonomy.md "
            "(marrowscope.taxonomy.LABELS)",
        )


# --- categories (dataset.md §2.3) ---------------------------------------------------------------------
_ANAT = Code("SCT", "91723000", "Anatomical structure")
_ABN = Code("SCT", "49755003", "Morphologically abnormal structure")
_PHYS = Code("SCT", "260787004", "Physical object")
_SPAT = Code("SCT", "309825002", "Spatial and relational concepts")
_CATS = {"A": _ANAT, "M": _ABN, "P": _PHYS, "S": _SPAT}

#: Local (private) coding scheme for the group labels, which have no code in the IDC table.
LOCAL_SCHEME = "99MRWS"

# Differential groups. Counted lineages first; see docs/taxonomy.md.
LINEAGES: tuple[str, ...] = (
    "blast",
    "neutrophilic",
    "eosinophilic",
    "basophilic",
    "erythroid",
    "lymphoid",
    "monocytic",
    "plasma_cell",
    "megakaryocytic",
    "other_cell",
    "not_counted",
    "structural",
)
#: Lineages whose labels enter the denominator of the nucleated-cell differential.
COUNTED_LINEAGES: tuple[str, ...] = LINEAGES[:8]

# name, idc_name, category key, type scheme, type value, type meaning, colour, lineage, parent, description
_T = tuple[str, str, str, str, str, str, str, str, str | None, str]
_TABLE: tuple[_T, ...] = (
    ("artifact", "artifact", "P", "SCT", "47973001", "Artifact", "#dadada", "not_counted", None,
     "Staining or preparation artefact, not a cell."),
    ("basophilic_band", "basophilic_band", "A", "LN", "LP65588-3", "Basophils.band form", "#f9ae37",
     "basophilic", "basophil", "Basophilic granulocyte, band form."),
    ("basophilic_erythroblast", "basophilic_erythroblast", "A", "SCT", "464005", "Basophilic erythroblast",
     "#fc8ea2", "erythroid", "erythroblast", "Early erythroblast with deeply basophilic cytoplasm."),
    ("basophilic_metamyelocyte", "basophilic_metamyelocyte", "A", "SCT", "63369000",
     "Basophilic metamyelocyte", "#f9b84d", "basophilic", "basophil", "Basophilic metamyelocyte."),
    ("basophilic_myelocyte", "basophilic_myelocyte", "A", "SCT", "17295002", "Basophilic myelocyte",
     "#fac063", "basophilic", "basophil", "Basophilic myelocyte."),
    ("damaged_cell", "damaged_cell", "M", "SCT", "37782003", "Damage", "#d7d2d1", "not_counted", None,
     "Damaged cell (incl. nuclear remnants, megakaryocyte cytoplasm fragments)."),
    ("degranulated_neutrophilic_metamyelocyte", "degranulated_neutrophilic_metamyelocyte", "A", "NCIt",
     "C37174", "Neutrophil with Cytoplasmic Hypogranularity", "#d5ccc9", "neutrophilic",
     "immature_granulocyte", "Hypogranular (degranulated) neutrophilic metamyelocyte."),
    ("degranulated_neutrophilic_myelocyte", "degranulated_neutrophilic_myelocyte", "A", "SCT", "250292003",
     "Hypogranular white blood cell", "#d6cecc", "neutrophilic", "immature_granulocyte",
     "Hypogranular (degranulated) neutrophilic myelocyte (also 'degranulated promyelocyte' tokens)."),
    ("eosinophilic_band", "eosinophilic_band", "A", "LN", "LP65365-6", "Eosinophils.band form", "#f9ae37",
     "eosinophilic", "eosinophil", "Eosinophilic granulocyte, band form."),
    ("eosinophilic_metamyelocyte", "eosinophilic_metamyelocyte", "A", "SCT", "80036001",
     "Eosinophilic metamyelocyte", "#f9b84d", "eosinophilic", "eosinophil", "Eosinophilic metamyelocyte."),
    ("eosinophilic_myelocyte", "eosinophilic_myelocyte", "A", "SCT", "90961003", "Eosinophilic myelocyte",
     "#fac063", "eosinophilic", "eosinophil", "Eosinophilic myelocyte."),
    ("erythrocyte", "erythrocyte", "A", "SCT", "41898006", "Erythrocyte", "#fa5674", "not_counted", None,
     "Red blood cell (non-nucleated)."),
    ("giant_platelet", "giant_platelet", "M", "SCT", "44687006", "Giant platelet", "#d7d4d2", "not_counted",
     "platelet", "Giant platelet / macrothrombocyte."),
    ("lymphoblast", "lymphoid_precursor_cell", "A", "SCT", "127910003", "Lymphoid precursor cell", "#94b8cf",
     "lymphoid", "lymphoid_cell",
     "NORMAL lymphoid precursor (haematogone-like); not the leukemic lymphoblast (see lymphocytic_blast)."),
    ("lymphocyte", "lymphocyte", "A", "SCT", "56972008", "Lymphocyte", "#699cbb", "lymphoid", "lymphoid_cell",
     "Mature lymphocyte."),
    ("lymphocytic_blast", "lymphocytic_blast", "A", "SCT", "15433008", "Lymphoblast", "#c8b8b7", "blast",
     "blast", "Leukemic lymphoblast (ALL blast)."),
    ("lymphoidocyte", "lymphoidocyte", "A", "NCIt", "C12847", "Reactive Lymphocyte", "#d8d6d5", "lymphoid",
     "lymphoid_cell", "Reactive lymphocyte."),
    ("macrophage", "macrophage", "A", "SCT", "58986001", "Macrophage", "#f58355", "other_cell", None,
     "Macrophage / histiocyte."),
    ("megakaryocyte", "megakaryocyte", "A", "SCT", "23592000", "Megakaryocyte", "#fbc783", "megakaryocytic",
     None, "Megakaryocyte."),
    ("micromegakaryocyte", "micromegakaryocyte", "A", "SCT", "33196003", "Micromegakaryocyte", "#d7d2d0",
     "megakaryocytic", None, "Micromegakaryocyte (dysplastic small megakaryocyte)."),
    ("mitosis", "mitosis", "A", "SCT", "75167008", "Mitotic cell", "#d6cecd", "other_cell", None,
     "Cell in mitosis (line not identifiable)."),
    ("monoblast", "immature_monoblast", "A", "NCIt", "C13120", "Immature Monocyte", "#f9b195", "blast",
     "monocytic_cell",
     "NORMAL monocytic precursor. IDC renames it immature_monoblast, whose code-table key is "
     "immature_monocyte (NCIt C13120): the upstream converter drops these cells from the IDC ANN objects."),
    ("monocyte", "monocyte", "A", "SCT", "55918008", "Monocyte", "#f6926b", "monocytic", "monocytic_cell",
     "Mature monocyte."),
    ("monocytic_blast", "monocytic_blast", "A", "SCT", "53945006", "Monoblast", "#c9bdbb", "blast", "blast",
     "Leukemic monoblast."),
    ("myeloblast", "myeloid_precursor_cell", "A", "SCT", "127914007", "Myeloid precursor cell", "#fcc090",
     "blast", "blast",
     "NORMAL myeloid precursor (myeloblast morphology); not the leukemic myelocytic_blast."),
    ("myelocytic_blast", "myelocytic_blast", "A", "SCT", "15622002", "Myeloblast", "#cbc1c0", "blast",
     "blast",     "Leukemic myeloblast (AML blast)."),
    ("neutrophil_extracellular_trap", "neutrophil_extracellular_trap", "A", "NCIt", "C180931",
     "Neutrophil Extracellular Trap", "#d4cbc9", "not_counted", None,
     "Neutrophil extracellular trap (disrupted neutrophil)."),
    ("neutrophilic_band", "neutrophilic_band", "A", "SCT", "702697008", "Band neutrophil", "#f9ae37",
     "neutrophilic", "neutrophil", "Band neutrophil."),
    ("neutrophilic_metamyelocyte", "neutrophilic_metamyelocyte", "A", "SCT", "50134008",
     "Neutrophilic metamyelocyte", "#f9b84d", "neutrophilic", "immature_granulocyte",
     "Neutrophilic metamyelocyte."),
    ("neutrophilic_myelocyte", "neutrophilic_myelocyte", "A", "SCT", "4717004", "Neutrophilic myelocyte",
     "#fac063", "neutrophilic", "immature_granulocyte", "Neutrophilic myelocyte."),
    ("orthochromatic_erythroblast", "orthochromatic_erythroblast", "A", "SCT", "113334004",
     "Orthochromic erythroblast", "#fa6983", "erythroid", "erythroblast", "Orthochromatic erythroblast."),
    ("phagocytosis", "phagocytosis", "A", "SCT", "56639005", "Phagocytosis", "#d3c8c5", "other_cell", None,
     "Phagocytosing cell (incl. haemophagocytosis)."),
    ("plasma_cell", "plasma_cell", "A", "SCT", "113335003", "Plasma cell", "#538eb2", "plasma_cell",
     "leukocyte", "Plasma cell."),
    ("polychromatic_erythroblast", "polychromatic_erythroblast", "A", "SCT", "16779009",
     "Polychromatophilic erythroblast", "#fb7b93", "erythroid", "erythroblast",
     "Polychromatic erythroblast."),
    ("proerythroblast", "proerythroblast", "A", "SCT", "16671004", "Proerythroblast", "#fca1a3", "erythroid",
     "erythroblast", "Proerythroblast."),
    ("prolymphocyte", "prolymphocyte", "A", "SCT", "19394005", "Prolymphocyte", "#7eaac5", "lymphoid",
     "lymphoid_cell", "Prolymphocyte."),
    ("promegakaryocyte", "promegakaryocyte", "A", "SCT", "50284009", "Promegakaryocyte", "#fbcf95",
     "megakaryocytic", None, "Promegakaryocyte."),
    ("promonocyte", "promonocyte", "A", "SCT", "1075005", "Promonocyte", "#f8a280", "blast", "monocytic_cell",
     "Promonocyte (a blast equivalent, WHO)."),
    ("promyelocyte", "promyelocyte", "A", "SCT", "43446009", "Promyelocyte", "#fbca79", "neutrophilic",
     "immature_granulocyte", "Promyelocyte."),
    ("pseudo_gaucher_cell", "pseudo_gaucher_cell", "A", "SCT", "59870003", "Gaucher-like cell", "#d6d0ce",
     "other_cell", None, "Pseudo-Gaucher cell (Gaucher-like macrophage)."),
    ("segmented_basophil", "segmented_basophil", "A", "SCT", "30061004", "Basophil, segmented", "#f8a31e",
     "basophilic", "basophil", "Segmented basophil."),
    ("segmented_eosinophil", "segmented_eosinophil", "A", "SCT", "14793004", "Eosinophil, segmented",
     "#f8a31e", "eosinophilic", "eosinophil", "Segmented eosinophil."),
    ("segmented_neutrophil", "segmented_neutrophil", "A", "SCT", "80153006", "Segmented neutrophil",
     "#f8a31e", "neutrophilic", "neutrophil", "Segmented neutrophil."),
    ("smudge_cell", "smudge_cell", "M", "SCT", "34717007", "Smudge cell", "#d9d8d7", "not_counted", None,
     "Smudge (basket) cell."),
    ("spicule", "spicule", "A", "NCIt", "C82998", "Spicule", "#d2c4c1", "not_counted", None,
     "Marrow spicule / particle."),
    ("technically_unfit", "technically_unfit", "S", "DCM", "111235",
     "Unusable - Quality renders image unusable",
     "#d6cfce", "not_counted", None, "Box not classifiable for technical reasons (incl. cell clumps)."),
    ("thrombocyte", "thrombocyte", "A", "SCT", "16378004", "Thrombocyte", "#fabf71", "not_counted",
     "platelet",     "Platelet."),
    ("thrombocyte_aggregate", "thrombocyte_aggregate", "A", "SCT", "60649002", "Platelet aggregation",
     "#d2c4c1", "not_counted", "platelet", "Platelet aggregate (incl. micro-clots)."),
    ("unknown_blast", "unknown_blast", "A", "SCT", "312256009", "Blast cell", "#c6b4b2", "blast", "blast",
     "Leukemic blast of undetermined line."),
    # structural labels
    ("no_consensus_found", "no_consensus_found", "A", "SCT", "414387006",
     "Structure of haematological system",
     "#d4cac7", "not_counted", None, "Labelled cell whose session labels reached no consensus."),
    ("haematological_structure", "haematological_structure", "A", "SCT", "414387006",
     "Structure of haematological system", "#ffffff", "not_counted", None,
     "Box without a cell-type label (detection-only set)."),
    ("region_of_interest", "region_of_interest", "S", "DCM", "111099", "Selected region", "#ffffff",
     "structural", None, "Monolayer region of interest (ROI series)."),
)

# group label, parent, lineage, colour, description
_GROUPS: tuple[tuple[str, str | None, str, str, str], ...] = (
    ("leukocyte", None, "not_counted", "#699cbb", "Any white blood cell (nucleated leukocyte)."),
    ("blast", "leukocyte", "blast", "#c6b4b2", "Blast of any line, normal or leukemic."),
    ("granulocyte", "leukocyte", "neutrophilic", "#f8a31e", "Granulocyte of any line and stage."),
    ("immature_granulocyte", "granulocyte", "neutrophilic", "#fac063",
     "Promyelocyte, neutrophilic myelocyte or metamyelocyte (PBC 'ig')."),
    ("neutrophil", "granulocyte", "neutrophilic", "#f8a31e", "Band or segmented neutrophil."),
    ("eosinophil", "granulocyte", "eosinophilic", "#f8a31e", "Eosinophil of any stage."),
    ("basophil", "granulocyte", "basophilic", "#f8a31e", "Basophil of any stage."),
    ("lymphoid_cell", "leukocyte", "lymphoid", "#699cbb", "Lymphoid cell (not a leukemic blast)."),
    ("monocytic_cell", "leukocyte", "monocytic", "#f6926b", "Monocytic cell of any stage."),
    ("erythroblast", None, "erythroid", "#fb7b93", "Nucleated erythroid precursor of any stage."),
    ("platelet", None, "not_counted", "#fabf71", "Platelet, giant platelet or platelet aggregate."),
)

_BLAST_EQUIVALENTS = frozenset(
    {"lymphocytic_blast", "myelocytic_blast", "monocytic_blast", "unknown_blast", "myeloblast", "monoblast",
     "promonocyte", "blast"}
)
_LEUKEMIC_BLASTS = frozenset({"lymphocytic_blast", "myelocytic_blast", "monocytic_blast", "unknown_blast"})


def _build_labels() -> dict[str, LabelInfo]:
    out: dict[str, LabelInfo] = {}
    for name, idc, cat, sch, val, meaning, color, lineage, parent, desc in _TABLE:
        out[name] = LabelInfo(
            name=name, idc_name=idc, category=_CATS[cat], type_code=Code(sch, val, meaning), color=color,
            lineage=lineage, countable=lineage in COUNTED_LINEAGES, parent=parent, description=desc,
        )
    for name, parent, lineage, color, desc in _GROUPS:
        # A group label is countable when its lineage is (e.g. an external 'blast' or 'eosinophil');
        # 'leukocyte' (line unknown) and 'platelet' are not.
        out[name] = LabelInfo(
            name=name, idc_name=name, category=_ANAT, type_code=Code(LOCAL_SCHEME, name, desc.rstrip(".")),
            color=color, lineage=lineage, countable=lineage in COUNTED_LINEAGES,
            parent=parent, description=desc, is_group=True,
        )
    return out


LABELS: Mapping[str, LabelInfo] = MappingProxyType(_build_labels())
ORIGINAL_LABELS: tuple[str, ...] = tuple(t[0] for t in _TABLE[:49])
STRUCTURAL_LABELS: tuple[str, ...] = ("no_consensus_found", "haematological_structure", "region_of_interest")
GROUP_LABELS: tuple[str, ...] = tuple(g[0] for g in _GROUPS)
DEFAULT_SCHEME = "bmdeep33"

# --- names and aliases -------------------------------------------------------------------------------------
_IDC_TO_NAME: Mapping[str, str] = MappingProxyType(
    {
        **{info.idc_name: name for name, info in LABELS.items() if not info.is_group},
        # the converter's code-table key for the monoblast rename (never written, but accept it)
        "immature_monocyte": "monoblast",
    }
)

# Raw session tokens normalised by the IDC converter (`_rename_cell_labels`, dataset.md §2.1).
# Keys are case-folded text after 'other:'.
_OTHER_TOKENS: Mapping[str, str] = MappingProxyType(
    {
        "basophiler erythroblast": "basophilic_erythroblast",
        "dichter zellhaufen": "technically_unfit",
        "zellhaufen": "technically_unfit",
        "degranulierter promyelozyt": "degranulated_neutrophilic_myelocyte",
        "hämophagozytose": "phagocytosis",
        "riesenthrombozyt": "giant_platelet",
        "makrothrombozyt": "giant_platelet",
        "osteoblast": "unknown_blast",  # as the converter does; information loss accepted upstream (rare)
        "mikrogerinsel": "thrombocyte_aggregate",
        "plasma eines megakaryozyten": "damaged_cell",
        "kernreste": "damaged_cell",
        "granula der kaputten zelle": "damaged_cell",
    }
)
_ALIASES: Mapping[str, str] = MappingProxyType(
    {
        "annotation_error": "technically_unfit",
        "lymphoyte": "lymphocyte",  # typo in the annotation tool's colour map (dataset.md §2.4)
    }
)


def _key(raw: str) -> str:
    return "_".join(raw.strip().casefold().replace("-", " ").split())


def normalise_label(raw: str, *, source: object = "label") -> str:
    """Return the canonical label for ``raw``.

    Accepts canonical names, IDC group labels (``lymphoid_precursor_cell`` ...), raw session tokens
    (``other:<German text>``, ``annotation_error``), with any case and surrounding whitespace.
    Raises :class:`UnknownLabelError` (naming ``source``) for anything else.
    """
    if not isinstance(raw, str):
        raise UnknownLabelError(repr(raw), source, hint=" (not a string)")
    text = raw.strip()
    if text.casefold().startswith("other:"):
        token = " ".join(text[6:].strip().casefold().split())
        if token in _OTHER_TOKENS:
            return _OTHER_TOKENS[token]
        raise UnknownLabelError(raw, source, hint=" (free-text 'other:' token with no known mapping)")
    key = _key(text)
    if key in LABELS:
        return key
    if key in _IDC_TO_NAME:
        return _IDC_TO_NAME[key]
    if key in _ALIASES:
        return _ALIASES[key]
    raise UnknownLabelError(raw, source)


def parse_session_labels(raw: str | None, *, source: object = "all_original_annotations") -> tuple[str, ...]:
    """Split a comma-joined ``all_original_annotations`` value and normalise each token (session order)."""
    if raw is None:
        return ()
    return tuple(normalise_label(tok, source=source) for tok in str(raw).split(",") if tok.strip())


def to_idc_label(name: str) -> str:
    """The AnnotationGroupLabel IDC uses for ``name`` (lymphoblast -> lymphoid_precursor_cell, ...)."""
    info = LABELS.get(name)
    if info is None or info.is_group:
        raise UnknownLabelError(name, hint=" (not a leaf or structural label; groups have no IDC label)")
    return info.idc_name


def from_idc_label(group_label: str) -> str:
    """Canonical name for an IDC AnnotationGroupLabel (tell structural labels apart by label, not code)."""
    key = _key(group_label)
    if key in _IDC_TO_NAME:
        return _IDC_TO_NAME[key]
    return normalise_label(group_label)


#: Every label in the order a hematology report lists a differential: lineage by lineage (as
#: :data:`LINEAGES`), each from the most immature stage to the most mature; group labels after their
#: lineage's stages, non-counted objects last.
DIFFERENTIAL_ORDER: tuple[str, ...] = (
    # blasts and blast equivalents: myeloid, monocytic, lymphoid, unassigned
    "myeloblast", "myelocytic_blast", "monoblast", "monocytic_blast", "promonocyte", "lymphocytic_blast",
    "unknown_blast", "blast",
    # neutrophilic granulopoiesis
    "promyelocyte", "neutrophilic_myelocyte", "degranulated_neutrophilic_myelocyte",
    "neutrophilic_metamyelocyte", "degranulated_neutrophilic_metamyelocyte", "neutrophilic_band",
    "segmented_neutrophil", "immature_granulocyte", "neutrophil", "granulocyte",
    # eosinophilic, basophilic
    "eosinophilic_myelocyte", "eosinophilic_metamyelocyte", "eosinophilic_band", "segmented_eosinophil",
    "eosinophil",
    "basophilic_myelocyte", "basophilic_metamyelocyte", "basophilic_band", "segmented_basophil", "basophil",
    # erythropoiesis
    "proerythroblast", "basophilic_erythroblast", "polychromatic_erythroblast", "orthochromatic_erythroblast",
    "erythroblast",
    # lymphoid, monocytic, plasma cells
    "lymphoblast", "prolymphocyte", "lymphocyte", "lymphoidocyte", "lymphoid_cell",
    "monocyte", "monocytic_cell",
    "plasma_cell",
    # megakaryocytic, other nucleated cells
    "promegakaryocyte", "megakaryocyte", "micromegakaryocyte",
    "macrophage", "pseudo_gaucher_cell", "phagocytosis", "mitosis",
    # not counted
    "leukocyte", "erythrocyte", "thrombocyte", "giant_platelet", "thrombocyte_aggregate", "platelet",
    "smudge_cell", "damaged_cell", "neutrophil_extracellular_trap", "artifact", "technically_unfit",
    "spicule", "no_consensus_found", "haematological_structure", "region_of_interest",
)
_DIFF_RANK: Mapping[str, int] = MappingProxyType({n: i for i, n in enumerate(DIFFERENTIAL_ORDER)})


def differential_rank(name: str) -> tuple[int, int, str]:
    """Sort key for :data:`DIFFERENTIAL_ORDER` (lineage, then maturation); unknown names last, by name."""
    if name in _DIFF_RANK:
        return (0, _DIFF_RANK[name], "")
    return (1, 0, name)


def in_differential_order(names: Iterable[str]) -> list[str]:
    """``names`` sorted by lineage and maturation (:data:`DIFFERENTIAL_ORDER`)."""
    return sorted(names, key=differential_rank)


def _info(name: str) -> LabelInfo:
    info = LABELS.get(name)
    if info is None:
        info = LABELS[normalise_label(name)]
    return info


def lineage_of(name: str) -> str:
    """The differential group of ``name``: one of :data:`LINEAGES`."""
    return _info(name).lineage


_CELL_LINE = {
    "blast": "myeloid", "neutrophilic": "myeloid", "eosinophilic": "myeloid", "basophilic": "myeloid",
    "erythroid": "erythroid", "lymphoid": "lymphoid", "monocytic": "monocytic", "plasma_cell": "lymphoid",
    "megakaryocytic": "megakaryocytic",
}
_CELL_LINE_OVERRIDE = {
    "lymphocytic_blast": "lymphoid", "monocytic_blast": "monocytic", "monoblast": "monocytic",
    "promonocyte": "monocytic", "unknown_blast": "unknown", "blast": "unknown", "leukocyte": "unknown",
}


def cell_line_of(name: str) -> str:
    """Biological line: myeloid (granulocytic), monocytic, lymphoid, erythroid, megakaryocytic, unknown, none.

    Unlike :func:`lineage_of`, blasts are assigned to their line (for an M:E ratio, myeloid = the
    ``myeloid`` line: myeloblasts, myelocytic blasts and all granulocytic stages).
    """
    info = _info(name)
    if info.name in _CELL_LINE_OVERRIDE:
        return _CELL_LINE_OVERRIDE[info.name]
    return _CELL_LINE.get(info.lineage, "none")


def is_countable(name: str) -> bool:
    """True for nucleated marrow cells that enter the differential's denominator (docs/taxonomy.md)."""
    return _info(name).countable


def is_blast_equivalent(name: str) -> bool:
    """Blasts and blast equivalents for the blast percentage (WHO: incl. monoblasts and promonocytes)."""
    return _info(name).name in _BLAST_EQUIVALENTS


def is_leukemic_blast(name: str) -> bool:
    """The four leukemic blast categories of BMDeep (lymphocytic, myelocytic, monocytic, unknown)."""
    return _info(name).name in _LEUKEMIC_BLASTS


def ancestors(name: str) -> tuple[str, ...]:
    """Parents of ``name`` from the nearest up to the root (``name`` itself excluded)."""
    out: list[str] = []
    parent = _info(name).parent
    while parent is not None:
        out.append(parent)
        parent = LABELS[parent].parent
    return tuple(out)


def descendants(name: str) -> tuple[str, ...]:
    """Every label below ``name`` in the hierarchy (empty for leaves)."""
    root = _info(name).name
    return tuple(n for n in LABELS if root in ancestors(n))


def labels_with_code(code: Code | str) -> tuple[str, ...]:
    """Labels whose type code is ``code`` (``Code`` or ``'SCT:41898006'``). Note: may be several."""
    text = str(code)
    return tuple(n for n, i in LABELS.items() if str(i.type_code) == text)


# --- class schemes ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClassScheme:
    """A set of classes and the mapping of taxonomy labels onto them (None = dropped).

    ``reasons`` documents each merge or drop. Group labels not in ``mapping`` map to the one class their
    mapped descendants share (None if they disagree); leaves not in ``mapping`` map through ancestors.
    """

    name: str
    classes: tuple[str, ...]
    mapping: Mapping[str, str | None]
    description: str = ""
    reasons: Mapping[str, str] = field(default_factory=dict)

    def map_label(self, label: str) -> str | None:
        """The class of ``label`` (any known label or alias) or None when the scheme drops it."""
        name = _info(label).name
        if name in self.mapping:
            return self.mapping[name]
        if LABELS[name].is_group:
            targets = {self.mapping.get(d) for d in descendants(name) if d in self.mapping} - {None}
            if len(targets) == 1:
                return next(iter(targets))
            return None
        for parent in ancestors(name):
            if parent in self.mapping:
                return self.mapping[parent]
        return None

    def index(self, cls: str) -> int:
        """Position of class ``cls`` in :attr:`classes` (the model's output index)."""
        try:
            return self.classes.index(cls)
        except ValueError:
            raise KeyError(f"{cls!r} is not a class of scheme {self.name!r}") from None

    def to_json(self) -> str:
        return json.dumps(
            {"name": self.name, "description": self.description, "classes": list(self.classes),
             "mapping": dict(self.mapping), "reasons": dict(self.reasons)},
            indent=1, ensure_ascii=False,
        )


def _scheme_from_dict(data: object, source: object) -> ClassScheme:
    if not isinstance(data, dict):
        raise InputError(source, "a class scheme must be a JSON object with 'name', 'classes', 'mapping'")
    missing = [k for k in ("name", "classes", "mapping") if k not in data]
    if missing:
        raise InputError(source, f"class scheme lacks {missing}; see docs/taxonomy.md for the format")
    classes = tuple(str(c) for c in data["classes"])
    if len(set(classes)) != len(classes) or not classes:
        raise InputError(source, "class scheme 'classes' must be a non-empty list without duplicates")
    mapping: dict[str, str | None] = {}
    raw_mapping = data["mapping"]
    if not isinstance(raw_mapping, dict):
        raise InputError(source, "class scheme 'mapping' must be an object {label: class or null}")
    for raw, target in raw_mapping.items():
        name = normalise_label(raw, source=source)
        if target is not None and target not in classes:
            raise InputError(source, f"label {raw!r} maps to {target!r}, which is not in 'classes'")
        mapping[name] = target
    reasons = {str(k): str(v) for k, v in dict(data.get("reasons", {})).items()}
    return ClassScheme(
        name=str(data["name"]), classes=classes, mapping=MappingProxyType(mapping),
        description=str(data.get("description", "")), reasons=MappingProxyType(reasons),
    )


def list_schemes() -> list[str]:
    """Names of the packaged class schemes."""
    folder = resources.files("marrowscope") / "schemes"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".json"))


def load_scheme(name_or_path: str | os.PathLike[str] = DEFAULT_SCHEME) -> ClassScheme:
    """A packaged scheme (``bmdeep33``, ``bmdeep49``, ``pbc8``, ``lineage``, ``blood3``) or a JSON file."""
    text = os.fspath(name_or_path)
    path = Path(text)
    if text.endswith(".json") or path.exists():
        if not path.is_file():
            raise InputError(path, "class scheme file not found")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise InputError(path, f"cannot read class scheme JSON: {e}") from e
        return _scheme_from_dict(data, path)
    if text not in list_schemes():
        raise InputError(text, f"unknown class scheme; packaged schemes: {', '.join(list_schemes())}, "
                               "or give a path to a .json file")
    resource = resources.files("marrowscope") / "schemes" / f"{text}.json"
    return _scheme_from_dict(json.loads(resource.read_text(encoding="utf-8")), f"schemes/{text}.json")


# --- other datasets' labels ------------------------------------------------------------------------------
_EXTERNAL: Mapping[str, Mapping[str, str]] = MappingProxyType(
    {
        "pbc": MappingProxyType(
            {
                # the 8 folder groups (PBC's classes)
                "basophil": "basophil", "eosinophil": "eosinophil", "erythroblast": "erythroblast",
                "ig": "immature_granulocyte", "lymphocyte": "lymphocyte", "monocyte": "monocyte",
                "neutrophil": "neutrophil", "platelet": "thrombocyte",
                # file-name prefixes (finer labels)
                "ba": "basophil", "eo": "eosinophil", "erb": "erythroblast", "ly": "lymphocyte",
                "mo": "monocyte", "pmy": "promyelocyte", "my": "neutrophilic_myelocyte",
                "mmy": "neutrophilic_metamyelocyte", "bne": "neutrophilic_band",
                "sne": "segmented_neutrophil",
            }
        ),
        "bccd": MappingProxyType(
            {
                "wbc": "leukocyte", "rbc": "erythrocyte", "platelets": "platelet",
                "neutrophil": "neutrophil", "eosinophil": "eosinophil", "lymphocyte": "lymphocyte",
                "monocyte": "monocyte", "basophil": "basophil",
            }
        ),
        "txl": MappingProxyType(
            {
                "wbc": "leukocyte", "rbc": "erythrocyte", "platelet": "platelet",
                # pbc_cell_type of TXL's PBC-derived images
                "band_neutrophil": "neutrophilic_band", "basophil": "basophil", "eosinophil": "eosinophil",
                "lymphocyte": "lymphocyte", "monocyte": "monocyte",
            }
        ),
        "matek": MappingProxyType(
            {
                "abe": "eosinophil",  # abnormal eosinophil
                "art": "artifact",
                "bas": "basophil",
                "bla": "blast",
                "ebo": "erythroblast",
                "eos": "eosinophil",
                "fgc": "promyelocyte",  # faggot cell: abnormal promyelocyte with Auer-rod bundles (APL)
                "hac": "lymphoid_cell",  # hairy cell: a B-lymphocyte
                "ksc": "smudge_cell",
                "lyi": "lymphoblast",  # immature lymphocyte = BMDeep's normal lymphoid precursor
                "lyt": "lymphocyte",
                "mmz": "neutrophilic_metamyelocyte",
                "mon": "monocyte",
                "myb": "neutrophilic_myelocyte",
                "ngb": "neutrophilic_band",
                "ngs": "segmented_neutrophil",
                "nif": "no_consensus_found",  # not identifiable
                "oth": "haematological_structure",  # other cell: a cell without a usable type label
                "peb": "proerythroblast",
                "plm": "plasma_cell",
                "pmo": "promyelocyte",
            }
        ),
    }
)
EXTERNAL_DATASETS: tuple[str, ...] = tuple(_EXTERNAL)


def map_external(dataset: str, raw: str) -> str:
    """Taxonomy label for a label of another dataset: ``pbc``, ``bccd``, ``txl`` or ``matek``.

    Case and whitespace are ignored (``'NEUTROPHIL'``, ``'band neutrophil'``, ``'BNE'``, ``'BLA'``).
    Raises :class:`UnknownLabelError` for a label the dataset does not use.
    """
    table = _EXTERNAL.get(dataset.strip().lower())
    if table is None:
        raise InputError(dataset, f"unknown dataset; known: {', '.join(EXTERNAL_DATASETS)}")
    key = _key(raw)
    if key not in table:
        raise UnknownLabelError(raw, f"{dataset} label", hint=f" (not a {dataset} label)")
    return table[key]


def validate_labels(labels: Iterable[str], *, source: object = "labels") -> list[str]:
    """Normalise every label, raising on the first unknown one (naming ``source``)."""
    return [normalise_label(x, source=source) for x in labels]
