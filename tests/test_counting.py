"""Differential counting: Wilson intervals against clinical.md's worked numbers, denominators, flags."""

from __future__ import annotations

import pytest

from marrowscope.counting import (
    BLAST_LABELS,
    cells_needed,
    compute_differential,
    differential_from_counts,
    straddles,
    wilson_interval,
)
from marrowscope.taxonomy import UnknownLabelError


@pytest.mark.parametrize(
    ("k", "n", "low", "high"),
    [
        (40, 200, 15.0, 26.1),
        (100, 500, 16.7, 23.7),
        (200, 1000, 17.6, 22.6),
        (1000, 5000, 18.9, 21.1),
        (125, 500, 21.4, 29.0),
        (1250, 5000, 23.8, 26.2),
        (25, 500, 3.4, 7.3),
    ],
)
def test_wilson_matches_clinical_reference(k: int, n: int, low: float, high: float) -> None:
    lo, hi = wilson_interval(k, n)
    assert round(100 * lo, 1) == low
    assert round(100 * hi, 1) == high


def test_wilson_edges() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and 0.2 < hi < 0.35
    lo, hi = wilson_interval(10, 10)
    assert hi == 1.0 and 0.65 < lo < 0.8
    with pytest.raises(ValueError):
        wilson_interval(5, 3)


def test_cells_needed_resolves_threshold() -> None:
    # 22 % of 500 straddles 20 %; the answer is the smallest extension that resolves it.
    extra = cells_needed(110, 500, 0.20)
    assert extra is not None and extra > 0
    total = 500 + extra
    assert not straddles(wilson_interval(0.22 * total, total), 0.20)
    assert straddles(wilson_interval(0.22 * (total - 1), total - 1), 0.20)
    assert cells_needed(100, 500, 0.20) is None  # exactly at the threshold: never resolves
    assert cells_needed(300, 500, 0.20) == 0  # already clear
    assert cells_needed(0, 0, 0.20) is None


def test_denominator_excludes_non_countable_and_unlabeled() -> None:
    labels = (
        ["myelocytic_blast"] * 30 + ["segmented_neutrophil"] * 50 + ["polychromatic_erythroblast"] * 20
        + ["erythrocyte"] * 40 + ["smudge_cell"] * 5 + [None] * 7
    )
    d = compute_differential(labels, uncertain=3)
    assert d.n_counted == 100
    assert d.counts == {"myelocytic_blast": 30, "polychromatic_erythroblast": 20, "segmented_neutrophil": 50}
    assert d.proportions["myelocytic_blast"] == pytest.approx(0.30)
    assert d.blast_fraction == pytest.approx(0.30)
    assert d.myeloid_blast_fraction == pytest.approx(0.30) and d.lymphoid_blast_fraction == 0.0
    assert d.not_counted == {"erythrocyte": 40, "smudge_cell": 5, "uncertain": 3, "unlabeled": 7}
    assert d.n_not_counted == 55
    assert d.me_ratio == pytest.approx(80 / 20)  # blasts (myelocytic) are granulopoiesis
    assert d.lineage_counts["blast"] == 30
    assert sum(d.lineage_counts.values()) == d.n_counted
    assert d.intervals["myelocytic_blast"] == wilson_interval(30, 100)


def test_blast_equivalents_and_lines() -> None:
    d = differential_from_counts(
        {"promonocyte": 5, "monoblast": 5, "lymphocytic_blast": 10, "unknown_blast": 5,
         "lymphoblast": 25, "lymphocyte": 50}
    )
    assert d.n_counted == 100
    assert {"promonocyte", "monoblast", "myeloblast", "unknown_blast"} <= BLAST_LABELS
    assert "lymphoblast" not in BLAST_LABELS  # normal lymphoid precursor (haematogone-like)
    assert d.blast_fraction == pytest.approx(0.25)
    assert d.lymphoid_blast_fraction == pytest.approx(0.10)
    assert d.myeloid_blast_fraction == pytest.approx(0.10)
    assert d.unknown_blast_fraction == pytest.approx(0.05)
    assert d.leukemic_blast_fraction == pytest.approx(0.15)
    assert d.me_ratio is None


def test_maturation_indices() -> None:
    d = differential_from_counts(
        {"promyelocyte": 10, "neutrophilic_myelocyte": 10, "segmented_neutrophil": 40,
         "proerythroblast": 5, "orthochromatic_erythroblast": 20}
    )
    assert d.maturation["i_mg"] == pytest.approx(20 / 40)
    assert d.maturation["i_me"] == pytest.approx(5 / 20)


def test_flags_where_interval_straddles() -> None:
    d = differential_from_counts({"myelocytic_blast": 21, "segmented_neutrophil": 79}, max_cells=10**6)
    names = {f.name for f in d.flags}
    assert "AML 20%" in names and "5%" not in names
    f = next(f for f in d.flags if f.name == "AML 20%")
    assert f.interval == d.blast_interval and f.cells_needed and f.cells_needed > 0
    big = differential_from_counts({"myelocytic_blast": 2100, "segmented_neutrophil": 7900})
    assert "AML 20%" not in {f.name for f in big.flags}
    assert differential_from_counts({"lymphocyte": 500}).flags == ()
    js = d.to_dict()
    assert js["flags"][0]["interval"] == list(d.flags[0].interval)


def test_empty_and_bad_input() -> None:
    d = compute_differential([None, None])
    assert d.n_counted == 0 and d.blast_fraction == 0.0 and d.not_counted == {"unlabeled": 2}
    assert d.flags == ()
    with pytest.raises(UnknownLabelError):
        compute_differential(["not_a_cell_type"])
    with pytest.raises(ValueError):
        differential_from_counts({"lymphocyte": -1})
    # labels are normalised through the taxonomy (IDC names map back to canonical names)
    assert compute_differential(["myeloid_precursor_cell"]).counts == {"myeloblast": 1}
