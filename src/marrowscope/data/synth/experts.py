"""Simulated annotation sessions: experts who sometimes disagree, and the dataset's consensus rule.

dataset.md §3.1: each box was labelled in successive sessions by different experts until (a) at least
two had labelled it and (b) the most frequent label made up at least half of all labels. We read
"the most frequent label" as a unique one: a tie (e.g. two different labels after two sessions) is
no consensus yet, otherwise no cell could ever have received a third label, while the real data have
2-6 labels per cell. When the slide's sessions run out first the cell gets ``no_consensus_found``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

NO_CONSENSUS = "no_consensus_found"

# Look-alikes an expert may pick instead of the true label (maturation neighbours first).
CONFUSIONS: Mapping[str, tuple[str, ...]] = {
    "myelocytic_blast": (
        "myeloblast",
        "unknown_blast",
        "monocytic_blast",
        "promyelocyte",
        "lymphocytic_blast",
    ),
    "myeloblast": ("myelocytic_blast", "promyelocyte", "unknown_blast", "lymphoblast"),
    "unknown_blast": ("myelocytic_blast", "lymphocytic_blast", "monocytic_blast"),
    "lymphocytic_blast": ("lymphoblast", "unknown_blast", "myelocytic_blast", "prolymphocyte"),
    "lymphoblast": ("lymphocytic_blast", "lymphocyte", "prolymphocyte"),
    "monocytic_blast": ("promonocyte", "myelocytic_blast", "unknown_blast"),
    "monoblast": ("monocytic_blast", "promonocyte"),
    "promonocyte": ("monocyte", "monocytic_blast", "promyelocyte"),
    "monocyte": ("promonocyte", "neutrophilic_metamyelocyte", "lymphoidocyte", "macrophage"),
    "macrophage": ("monocyte", "phagocytosis", "pseudo_gaucher_cell"),
    "promyelocyte": ("myeloblast", "neutrophilic_myelocyte", "myelocytic_blast"),
    "neutrophilic_myelocyte": (
        "promyelocyte",
        "neutrophilic_metamyelocyte",
        "degranulated_neutrophilic_myelocyte",
    ),
    "neutrophilic_metamyelocyte": (
        "neutrophilic_myelocyte",
        "neutrophilic_band",
        "degranulated_neutrophilic_metamyelocyte",
    ),
    "neutrophilic_band": ("neutrophilic_metamyelocyte", "segmented_neutrophil"),
    "segmented_neutrophil": ("neutrophilic_band",),
    "degranulated_neutrophilic_myelocyte": (
        "neutrophilic_myelocyte",
        "degranulated_neutrophilic_metamyelocyte",
    ),
    "degranulated_neutrophilic_metamyelocyte": (
        "neutrophilic_metamyelocyte",
        "degranulated_neutrophilic_myelocyte",
    ),
    "eosinophilic_myelocyte": ("eosinophilic_metamyelocyte", "neutrophilic_myelocyte", "promyelocyte"),
    "eosinophilic_metamyelocyte": ("eosinophilic_myelocyte", "eosinophilic_band"),
    "eosinophilic_band": ("eosinophilic_metamyelocyte", "segmented_eosinophil"),
    "segmented_eosinophil": ("eosinophilic_band",),
    "basophilic_myelocyte": ("basophilic_metamyelocyte", "promyelocyte"),
    "basophilic_metamyelocyte": ("basophilic_myelocyte", "basophilic_band"),
    "basophilic_band": ("basophilic_metamyelocyte", "segmented_basophil"),
    "segmented_basophil": ("basophilic_band",),
    "proerythroblast": ("basophilic_erythroblast", "myelocytic_blast", "unknown_blast"),
    "basophilic_erythroblast": ("proerythroblast", "polychromatic_erythroblast"),
    "polychromatic_erythroblast": ("basophilic_erythroblast", "orthochromatic_erythroblast", "lymphocyte"),
    "orthochromatic_erythroblast": ("polychromatic_erythroblast", "lymphocyte"),
    "prolymphocyte": ("lymphocyte", "lymphoblast"),
    "lymphocyte": ("lymphoblast", "prolymphocyte", "lymphoidocyte", "polychromatic_erythroblast"),
    "lymphoidocyte": ("lymphocyte", "plasma_cell", "monocyte"),
    "plasma_cell": ("lymphoidocyte", "basophilic_erythroblast"),
    "megakaryocyte": ("promegakaryocyte", "micromegakaryocyte"),
    "promegakaryocyte": ("megakaryocyte",),
    "micromegakaryocyte": ("megakaryocyte", "lymphoidocyte"),
    "mitosis": ("damaged_cell", "unknown_blast"),
    "pseudo_gaucher_cell": ("macrophage",),
    "phagocytosis": ("macrophage",),
    "erythrocyte": ("artifact",),
    "thrombocyte": ("giant_platelet", "artifact"),
    "giant_platelet": ("thrombocyte",),
    "thrombocyte_aggregate": ("technically_unfit", "thrombocyte"),
    "smudge_cell": ("damaged_cell",),
    "damaged_cell": ("smudge_cell", "technically_unfit"),
    "artifact": ("technically_unfit",),
    "technically_unfit": ("artifact", "damaged_cell"),
    "neutrophil_extracellular_trap": ("smudge_cell",),
}


@dataclass(frozen=True)
class Expert:
    """One annotation session's expert: ``accuracy`` is the chance of naming the true label."""

    accuracy: float


def consensus_of(labels: Sequence[str]) -> str | None:
    """The consensus label once the rule holds, else ``None`` (keep labelling)."""
    if len(labels) < 2:
        return None
    counts = Counter(labels).most_common()
    top, n = counts[0]
    if len(counts) > 1 and counts[1][1] == n:
        return None
    return top if 2 * n >= len(labels) else None


def sample_experts(rng: np.random.Generator, accuracy: tuple[float, float] = (0.78, 0.95)) -> list[Expert]:
    """The sessions of one slide: 5 sessions mostly (0-4), sometimes 6, 4 or 3 (like the real data)."""
    n = int(rng.choice([3, 4, 5, 6], p=[0.02, 0.04, 0.82, 0.12]))
    return [Expert(float(rng.uniform(*accuracy))) for _ in range(n)]


def expert_label(true_label: str, expert: Expert, rng: np.random.Generator) -> str:
    """What one expert calls a cell whose truth is ``true_label``."""
    if rng.random() < expert.accuracy:
        return true_label
    options = CONFUSIONS.get(true_label, ())
    if not options:
        return true_label
    return options[int(rng.integers(len(options)))] if rng.random() < 0.75 else options[0]


def annotate(
    true_label: str, experts: Sequence[Expert], rng: np.random.Generator
) -> tuple[tuple[str, ...], str]:
    """Session labels (in order) and the consensus label (``no_consensus_found`` if sessions run out)."""
    labels: list[str] = []
    for expert in experts:
        labels.append(expert_label(true_label, expert, rng))
        found = consensus_of(labels)
        if found is not None:
            return tuple(labels), found
    return tuple(labels), NO_CONSENSUS
