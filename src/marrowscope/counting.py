"""Differential counts with their statistical precision (Wilson 95 % intervals) and threshold flags.

Conventions (``/work/shared/reference/clinical.md``; see ``docs/diagnosis.md``):

* Only *countable* cells (``taxonomy.is_countable``: nucleated marrow cells) form the denominator.
  Objects that are never counted (erythrocytes, platelets, smudge cells, artefacts, ...), unlabeled
  boxes (label ``None``) and cells the classifier left *uncertain* are reported in ``not_counted`` but
  stay out of every percentage.
* Blast percentage = blasts and blast equivalents as the taxonomy defines them
  (``taxonomy.is_blast_equivalent``; WHO, clinical.md): the leukemic blast categories (myelocytic,
  monocytic, lymphocytic, unknown blasts, the coarse group ``blast``), myeloblasts, monoblasts and
  promonocytes. Normal lymphoid precursors (``lymphoblast``, haematogone-like) are not blasts.
  ``leukemic_blast_fraction`` reports the four leukemic categories alone. Abnormal promyelocytes (APL)
  cannot be told apart from ``promyelocyte`` in the vocabulary and are not counted as blasts.
* M:E ratio = granulocytic series (``taxonomy.cell_line_of == 'myeloid'``: myeloblasts to segmented
  forms of all three granulocyte lines) / nucleated erythroid cells (proerythroblast to
  orthochromatic erythroblast). Monocytes are not in the numerator.
* Maturation indices: ``i_mg`` = immature / mature granulopoiesis = (myeloid blasts and precursors,
  promyelocytes, myelocytes) / (metamyelocytes, bands, segmented); ``i_me`` = immature / mature
  erythropoiesis = (proerythroblasts, basophilic erythroblasts) / (polychromatic, orthochromatic).
* Units: every ``*_fraction`` is a fraction in [0, 1] (``blast_fraction`` 0.2 = 20 %); tables meant for
  people (``cohort.csv``) carry ``*_percent`` columns instead, never the same name for both.
* ``flags``: every clinical blast threshold that lies inside the 95 % interval of the quantity it is
  defined on (5 %, 10 %, AML 20 %: all blasts; ALL 25 %: lymphoid blasts, with the unassigned blasts
  given to the lymphoid side exactly as the rule baseline does, :func:`assign_unknown_blasts`), with the
  number of further cells a count would need (at the same proportion) to resolve it, or ``None`` when
  no count within ``max_cells`` would (:func:`cells_needed`).
* Listing order: counts, proportions and intervals are keyed in lineage and maturation order
  (``taxonomy.DIFFERENTIAL_ORDER``), as a hematology report lists them.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from marrowscope import taxonomy

Interval = tuple[float, float]

def _labels_where(pred: Callable[[str], bool]) -> frozenset[str]:
    return frozenset(n for n in taxonomy.LABELS if pred(n))


#: Blasts and blast equivalents (``taxonomy.is_blast_equivalent``, WHO: myeloblasts, monoblasts,
#: promonocytes and the leukemic blast categories; normal lymphoid precursors / haematogones excluded).
BLAST_LABELS: frozenset[str] = _labels_where(taxonomy.is_blast_equivalent)
LYMPHOID_BLASTS: frozenset[str] = frozenset(
    n for n in BLAST_LABELS if taxonomy.cell_line_of(n) == "lymphoid"
)
MYELOID_BLASTS: frozenset[str] = frozenset(
    n for n in BLAST_LABELS if taxonomy.cell_line_of(n) in ("myeloid", "monocytic")
)
UNKNOWN_BLASTS: frozenset[str] = BLAST_LABELS - LYMPHOID_BLASTS - MYELOID_BLASTS
LEUKEMIC_BLASTS: frozenset[str] = _labels_where(taxonomy.is_leukemic_blast)

#: Granulopoiesis (myeloid line: myeloblasts to segmented forms of all three granulocyte lines).
GRANULOPOIESIS: frozenset[str] = _labels_where(lambda n: taxonomy.cell_line_of(n) == "myeloid")
IMMATURE_GRANULOPOIESIS: frozenset[str] = frozenset(
    {
        "myeloblast", "myelocytic_blast", "promyelocyte", "immature_granulocyte",
        "neutrophilic_myelocyte", "eosinophilic_myelocyte", "basophilic_myelocyte",
        "degranulated_neutrophilic_myelocyte",
    }
)
MATURE_GRANULOPOIESIS: frozenset[str] = frozenset(
    {
        "neutrophilic_metamyelocyte", "eosinophilic_metamyelocyte", "basophilic_metamyelocyte",
        "degranulated_neutrophilic_metamyelocyte", "neutrophilic_band", "eosinophilic_band",
        "basophilic_band", "segmented_neutrophil", "segmented_eosinophil", "segmented_basophil",
        "neutrophil", "eosinophil", "basophil",
    }
)
ERYTHROPOIESIS: frozenset[str] = _labels_where(lambda n: taxonomy.cell_line_of(n) == "erythroid")
IMMATURE_ERYTHROPOIESIS: frozenset[str] = frozenset({"proerythroblast", "basophilic_erythroblast"})
MATURE_ERYTHROPOIESIS: frozenset[str] = frozenset(
    {"polychromatic_erythroblast", "orthochromatic_erythroblast"}
)
EOSINOPHILS: frozenset[str] = _labels_where(lambda n: taxonomy.lineage_of(n) == "eosinophilic")
BASOPHILS: frozenset[str] = _labels_where(lambda n: taxonomy.lineage_of(n) == "basophilic")

#: Clinical blast thresholds (name, fraction, quantity tested): ``"blasts"`` = all blasts and
#: equivalents, ``"lymphoid_blasts"`` = lymphoid blasts (+ unassigned ones, :func:`assign_unknown_blasts`).
THRESHOLDS: tuple[tuple[str, float, str], ...] = (
    ("5%", 0.05, "blasts"),
    ("10%", 0.10, "blasts"),
    ("AML 20%", 0.20, "blasts"),
    ("ALL 25%", 0.25, "lymphoid_blasts"),
)
#: Default cap on countable cells (the pipeline's ``max_cells``): beyond it no more cells are counted.
DEFAULT_MAX_CELLS = 5000

UNLABELED = "unlabeled"
UNCERTAIN = "uncertain"


def wilson_interval(k: int | float, n: int | float, z: float = 1.96) -> Interval:
    """Wilson score interval for ``k`` successes out of ``n``; ``(0, 1)`` when ``n == 0``.

    >>> [round(v, 3) for v in wilson_interval(100, 500)]
    [0.167, 0.237]
    """
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def straddles(interval: Interval, threshold: float) -> bool:
    """True when ``threshold`` lies inside the interval, i.e. the count cannot decide ``>= threshold``."""
    low, high = interval
    return low < threshold <= high


def cells_needed(
    k: int, n: int, threshold: float, z: float = 1.96, max_total: int = 1_000_000
) -> int | None:
    """How many MORE countable cells resolve ``threshold`` if the proportion stays at ``k / n``.

    Returns 0 when the interval already excludes the threshold, ``None`` when no count up to
    ``max_total`` cells would (the observed proportion equals the threshold, or ``n == 0``).
    """
    if n <= 0:
        return None
    p = k / n
    if not straddles(wilson_interval(k, n, z), threshold):
        return 0
    if p == threshold:
        return None

    def resolved(total: int) -> bool:
        return not straddles(wilson_interval(p * total, total, z), threshold)

    if not resolved(max_total):
        return None
    lo, hi = n, n
    while not resolved(hi):
        lo, hi = hi, min(max_total, hi * 2)
    while hi - lo > 1:  # invariant: not resolved(lo) (or lo == n), resolved(hi)
        mid = (lo + hi) // 2
        if resolved(mid):
            hi = mid
        else:
            lo = mid
    return hi - n


def assign_unknown_blasts(lymphoid: Any, myeloid: Any, unknown: Any) -> tuple[Any, Any]:
    """(lymphoid, myeloid) blasts with the unassigned ones added to the larger side (ties: lymphoid, the
    common pediatric case). Works on numbers and numpy arrays alike; the rule baseline and the ALL flag
    both use it, so they cannot disagree on where an unknown blast goes."""
    import numpy as np

    lym_side = np.asarray(lymphoid) >= np.asarray(myeloid)
    lym = np.where(lym_side, np.asarray(lymphoid) + np.asarray(unknown), lymphoid)
    mye = np.where(lym_side, myeloid, np.asarray(myeloid) + np.asarray(unknown))
    if np.ndim(lym) == 0:
        return lym.item(), mye.item()
    return lym, mye


@dataclass(frozen=True)
class Flag:
    """A threshold the interval of ``quantity`` straddles: the count cannot decide it yet.

    ``cells_needed``: further countable cells that would decide it if the proportion holds; ``None``
    when no count up to ``max_cells`` countable cells in all would."""

    name: str
    threshold: float
    estimate: float
    interval: Interval
    cells_needed: int | None
    quantity: str = "blasts"  # "blasts" | "lymphoid_blasts"
    max_cells: int = DEFAULT_MAX_CELLS

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "threshold": self.threshold,
            "quantity": self.quantity,
            "estimate": self.estimate,
            "interval": list(self.interval),
            "cells_needed": self.cells_needed,
            "max_cells": self.max_cells,
        }


def _ratio(num: int, den: int) -> float | None:
    return None if den == 0 else num / den


@dataclass(frozen=True)
class Differential:
    """A differential count over countable cells, with Wilson intervals (see module docstring).

    Every ``*_fraction`` is a fraction of the countable cells (0.2 = 20 %)."""

    n_counted: int
    counts: Mapping[str, int]
    proportions: Mapping[str, float]
    intervals: Mapping[str, Interval]
    lineage_counts: Mapping[str, int]
    lineage_proportions: Mapping[str, float]
    lineage_intervals: Mapping[str, Interval]
    blast_count: int
    blast_fraction: float
    blast_interval: Interval
    lymphoid_blast_fraction: float
    myeloid_blast_fraction: float
    unknown_blast_fraction: float
    leukemic_blast_fraction: float
    me_ratio: float | None
    maturation: Mapping[str, float | None]
    not_counted: Mapping[str, int]
    flags: tuple[Flag, ...] = ()
    z: float = 1.96
    extra: Mapping[str, float] = field(default_factory=dict)

    @property
    def n_not_counted(self) -> int:
        return sum(self.not_counted.values())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (intervals as two-element lists; fractions, never percents)."""
        return {
            "n_counted": self.n_counted,
            "counts": dict(self.counts),
            "proportions": dict(self.proportions),
            "intervals": {k: list(v) for k, v in self.intervals.items()},
            "lineage_counts": dict(self.lineage_counts),
            "lineage_proportions": dict(self.lineage_proportions),
            "lineage_intervals": {k: list(v) for k, v in self.lineage_intervals.items()},
            "blast_count": self.blast_count,
            "blast_fraction": self.blast_fraction,
            "blast_interval": list(self.blast_interval),
            "lymphoid_blast_fraction": self.lymphoid_blast_fraction,
            "myeloid_blast_fraction": self.myeloid_blast_fraction,
            "unknown_blast_fraction": self.unknown_blast_fraction,
            "leukemic_blast_fraction": self.leukemic_blast_fraction,
            "me_ratio": self.me_ratio,
            "maturation": dict(self.maturation),
            "not_counted": dict(self.not_counted),
            "flags": [f.to_dict() for f in self.flags],
            "extra": dict(self.extra),
            "z": self.z,
        }


def _canonical(label: str) -> str:
    return label if label in taxonomy.LABELS else taxonomy.normalise_label(label)


def differential_from_counts(
    counts: Mapping[str, int], unlabeled: int = 0, uncertain: int = 0, z: float = 1.96,
    max_cells: int = DEFAULT_MAX_CELLS,
) -> Differential:
    """Build a :class:`Differential` from label counts (any labels; non-countable ones are set aside).

    Labels are normalised through the taxonomy (unknown labels raise ``UnknownLabelError``).
    """
    if unlabeled < 0 or uncertain < 0:
        raise ValueError("unlabeled and uncertain counts must be >= 0")
    countable: Counter[str] = Counter()
    not_counted: Counter[str] = Counter()
    for raw, c in counts.items():
        c = int(c)
        if c < 0:
            raise ValueError(f"negative count {c} for label {raw!r}")
        if c == 0:
            continue
        name = _canonical(raw)
        if taxonomy.is_countable(name):
            countable[name] += c
        else:
            not_counted[name] += c
    if unlabeled:
        not_counted[UNLABELED] += unlabeled
    if uncertain:
        not_counted[UNCERTAIN] += uncertain

    n = sum(countable.values())

    def prop(k: int) -> float:
        return k / n if n else 0.0

    labels = taxonomy.in_differential_order(countable)
    lineage_counts: Counter[str] = Counter()
    for name in labels:
        lineage_counts[taxonomy.lineage_of(name)] += countable[name]
    lin_order = sorted(lineage_counts,
                       key=lambda x: taxonomy.LINEAGES.index(x) if x in taxonomy.LINEAGES else 99)

    def total(names: frozenset[str]) -> int:
        return sum(countable.get(x, 0) for x in names)

    blast_k = total(BLAST_LABELS)
    blast_iv = wilson_interval(blast_k, n, z)
    lym_k, _ = assign_unknown_blasts(total(LYMPHOID_BLASTS), total(MYELOID_BLASTS), total(UNKNOWN_BLASTS))
    tested = {"blasts": blast_k, "lymphoid_blasts": int(lym_k)}
    flags = []
    for name, t, quantity in THRESHOLDS:
        k = tested[quantity]
        iv = wilson_interval(k, n, z)
        if n > 0 and straddles(iv, t):
            need = cells_needed(k, n, t, z, max_total=max(max_cells, n))
            flags.append(Flag(name, t, prop(k), iv, need, quantity, max_cells))
    return Differential(
        n_counted=n,
        counts={k: countable[k] for k in labels},
        proportions={k: prop(countable[k]) for k in labels},
        intervals={k: wilson_interval(countable[k], n, z) for k in labels},
        lineage_counts={k: lineage_counts[k] for k in lin_order},
        lineage_proportions={k: prop(lineage_counts[k]) for k in lin_order},
        lineage_intervals={k: wilson_interval(lineage_counts[k], n, z) for k in lin_order},
        blast_count=blast_k,
        blast_fraction=prop(blast_k),
        blast_interval=blast_iv,
        lymphoid_blast_fraction=prop(total(LYMPHOID_BLASTS)),
        myeloid_blast_fraction=prop(total(MYELOID_BLASTS)),
        unknown_blast_fraction=prop(total(UNKNOWN_BLASTS)),
        leukemic_blast_fraction=prop(total(LEUKEMIC_BLASTS)),
        me_ratio=_ratio(total(GRANULOPOIESIS), total(ERYTHROPOIESIS)),
        maturation={
            "i_mg": _ratio(total(IMMATURE_GRANULOPOIESIS), total(MATURE_GRANULOPOIESIS)),
            "i_me": _ratio(total(IMMATURE_ERYTHROPOIESIS), total(MATURE_ERYTHROPOIESIS)),
        },
        not_counted={k: not_counted[k] for k in taxonomy.in_differential_order(not_counted)},
        flags=tuple(flags),
        z=z,
        extra={
            "eosinophil_fraction": prop(total(EOSINOPHILS)),
            "basophil_fraction": prop(total(BASOPHILS)),
        },
    )


def compute_differential(
    labels: Iterable[str | None], uncertain: int = 0, z: float = 1.96, max_cells: int = DEFAULT_MAX_CELLS
) -> Differential:
    """Count ``labels`` (``None`` = unlabeled box) into a :class:`Differential`.

    ``uncertain``: number of further objects the classifier abstained on (reported, not counted).
    """
    c: Counter[str] = Counter()
    unlabeled = 0
    for lab in labels:
        if lab is None:
            unlabeled += 1
        else:
            c[lab] += 1
    return differential_from_counts(c, unlabeled=unlabeled, uncertain=uncertain, z=z, max_cells=max_cells)
