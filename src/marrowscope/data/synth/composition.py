"""Synthetic patients: diagnosis, clinical record and a per-patient cell composition.

Pure numpy and seeded. The composition is over canonical taxonomy labels (the original BMDeep
vocabulary, dataset.md §2.1) and covers every boxed object an annotator would label: nucleated cells
(the counted differential) plus a few non-counted objects (erythrocytes, thrombocytes, smudge cells,
artefacts...).

Design (the "truth" a diagnosis model should be able to learn, with overlap):

- ``ALL``: a large fraction of ``lymphocytic_blast`` (leukemic lymphoblasts), suppressed normal
  haematopoiesis.
- ``AML``: ``myelocytic_blast`` (and some ``monocytic_blast``; a monocytic subtype with promonocytes).
- ``CML``: left-shifted granulopoiesis (myelocytes, metamyelocytes), more basophils and eosinophils,
  reduced erythropoiesis, few blasts (chronic phase).
- ``control``: normal paediatric maturation, hematogone-rich lymphoid compartment (``lymphoblast`` =
  normal lymphoid precursor), normal precursors (``myeloblast``) at low %.

Every patient draws its composition from a Dirichlet around the diagnosis mean. A share of each
diagnosis are the hard cases of real practice (:data:`HARD_CASES`, prevalences documented in
docs/synth.md): hematogone-rich controls and controls with a reactive left shift, AML near or under
20 % blasts, CML with raised blasts or in myeloid blast phase, partial ALL infiltration (10–25 %
lymphoblasts) and mixed-lineage leukemias (a third of the blasts of the other lineage).

``monoblast`` is never generated: cells with that label do not survive the IDC DICOM conversion
(dataset.md §2.2, pitfall 3), so a cohort containing them could not agree between CSV and DICOM.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

DIAGNOSES: tuple[str, ...] = ("ALL", "AML", "CML", "control")

# NCIt codes (Neoplasm Core); the control group has no neoplasm code, it is marked with NCIt C14165 "Normal".
NCIT_CODES: Mapping[str, tuple[str, str]] = {
    "ALL": ("C3167", "Acute Lymphoblastic Leukemia"),
    "AML": ("C3171", "Acute Myeloid Leukemia"),
    "CML": ("C3174", "Chronic Myelogenous Leukemia, BCR-ABL1 Positive"),
    "control": ("C14165", "Normal"),
}

# DICOM PatientAge values of the real dataset (dataset.md §1).
AGE_GROUPS: tuple[str, ...] = ("018M", "042M", "060M", "084M", "114M", "150M", "180M", "204M")
_AGE_WEIGHTS: Mapping[str, tuple[float, ...]] = {
    "ALL": (0.12, 0.22, 0.20, 0.14, 0.11, 0.08, 0.07, 0.06),  # peak at 2-5 years
    "AML": (0.22, 0.08, 0.07, 0.08, 0.11, 0.14, 0.15, 0.15),  # infants and teenagers
    "CML": (0.02, 0.04, 0.05, 0.08, 0.14, 0.20, 0.23, 0.24),  # mostly teenagers
    "control": (0.13, 0.13, 0.12, 0.12, 0.12, 0.13, 0.12, 0.13),
}
SEXES: tuple[str, ...] = ("M", "F", "O")
_SEX_WEIGHTS = (0.53, 0.45, 0.02)

LAB_NAMES: tuple[str, ...] = ("blasts", "wbc", "thrombocytes", "ldh", "uric_acid", "hemoglobin")
LAB_UNITS: Mapping[str, str] = {
    "blasts": "% (peripheral blood)",
    "wbc": "10^3/uL",
    "thrombocytes": "10^3/uL",
    "ldh": "U/L",
    "uric_acid": "mg/dL",
    "hemoglobin": "g/dL",
}

# Nucleated cells (the differential plus a few never-counted nucleated cells) ------------------------
# Normal paediatric marrow, % of nucleated cells (hematogone-rich; roughly after published paediatric
# reference differentials; not tuned to any dataset).
_NORMAL: Mapping[str, float] = {
    "myeloblast": 1.5,
    "promyelocyte": 3.0,
    "neutrophilic_myelocyte": 9.0,
    "neutrophilic_metamyelocyte": 9.0,
    "neutrophilic_band": 11.0,
    "segmented_neutrophil": 11.0,
    "degranulated_neutrophilic_myelocyte": 0.3,
    "degranulated_neutrophilic_metamyelocyte": 0.3,
    "eosinophilic_myelocyte": 0.6,
    "eosinophilic_metamyelocyte": 0.5,
    "eosinophilic_band": 0.5,
    "segmented_eosinophil": 1.5,
    "basophilic_myelocyte": 0.05,
    "basophilic_metamyelocyte": 0.05,
    "basophilic_band": 0.05,
    "segmented_basophil": 0.2,
    "promonocyte": 0.3,
    "monocyte": 2.0,
    "macrophage": 0.3,
    "proerythroblast": 0.8,
    "basophilic_erythroblast": 2.5,
    "polychromatic_erythroblast": 10.0,
    "orthochromatic_erythroblast": 6.0,
    "lymphoblast": 5.0,  # hematogones (normal lymphoid precursors)
    "prolymphocyte": 1.0,
    "lymphocyte": 16.0,
    "lymphoidocyte": 0.5,
    "plasma_cell": 0.8,
    "promegakaryocyte": 0.05,
    "megakaryocyte": 0.2,
    "micromegakaryocyte": 0.05,
    "lymphocytic_blast": 0.0,
    "myelocytic_blast": 0.0,
    "monocytic_blast": 0.0,
    "unknown_blast": 0.0,
    "mitosis": 0.2,
    "pseudo_gaucher_cell": 0.0,
    "phagocytosis": 0.1,
}
NUCLEATED_LABELS: tuple[str, ...] = tuple(_NORMAL)
BLAST_LABELS: tuple[str, ...] = ("lymphocytic_blast", "myelocytic_blast", "monocytic_blast", "unknown_blast")

# Other boxed objects (never counted), per 100 nucleated cells.
_NOT_COUNTED: Mapping[str, float] = {
    "erythrocyte": 3.0,
    "thrombocyte": 2.0,
    "giant_platelet": 0.2,
    "thrombocyte_aggregate": 0.3,
    "smudge_cell": 2.0,
    "damaged_cell": 1.0,
    "artifact": 0.5,
    "technically_unfit": 0.3,
    "neutrophil_extracellular_trap": 0.1,
}
OTHER_LABELS: tuple[str, ...] = tuple(_NOT_COUNTED)
ALL_LABELS: tuple[str, ...] = NUCLEATED_LABELS + OTHER_LABELS

# Multiplicative changes of the non-blast background per diagnosis (suppression, left shift...).
_BACKGROUND_FACTORS: Mapping[str, Mapping[str, float]] = {
    "ALL": {"lymphoblast": 0.4, "megakaryocyte": 0.3, "promegakaryocyte": 0.3},
    "AML": {
        "lymphoblast": 0.3,
        "megakaryocyte": 0.4,
        "promyelocyte": 1.5,
        "degranulated_neutrophilic_myelocyte": 4.0,
        "degranulated_neutrophilic_metamyelocyte": 4.0,
    },
    "CML": {
        "myeloblast": 1.5,
        "promyelocyte": 2.0,
        "neutrophilic_myelocyte": 3.0,
        "neutrophilic_metamyelocyte": 2.2,
        "neutrophilic_band": 1.6,
        "segmented_neutrophil": 1.2,
        "eosinophilic_myelocyte": 4.0,
        "eosinophilic_metamyelocyte": 4.0,
        "eosinophilic_band": 4.0,
        "segmented_eosinophil": 3.0,
        "basophilic_myelocyte": 20.0,
        "basophilic_metamyelocyte": 20.0,
        "basophilic_band": 15.0,
        "segmented_basophil": 12.0,
        "proerythroblast": 0.3,
        "basophilic_erythroblast": 0.3,
        "polychromatic_erythroblast": 0.3,
        "orthochromatic_erythroblast": 0.3,
        "lymphoblast": 0.15,
        "lymphocyte": 0.3,
        "prolymphocyte": 0.3,
        "megakaryocyte": 2.5,
        "micromegakaryocyte": 6.0,
        "promegakaryocyte": 2.0,
        "pseudo_gaucher_cell": 1.0,
    },
    "control": {},
}
# Extra absolute background (% before renormalising) that a diagnosis adds.
_BACKGROUND_EXTRA: Mapping[str, Mapping[str, float]] = {
    "CML": {"pseudo_gaucher_cell": 0.2},
    "AML": {"promonocyte": 0.5},
}
# Blast fraction (of nucleated cells) of a typical case per diagnosis: Beta(a, b).
_BLAST_BETA: Mapping[str, tuple[float, float]] = {
    "ALL": (8.0, 3.0),  # mean ~0.73
    "AML": (6.0, 4.0),  # mean ~0.60
    "CML": (1.5, 50.0),  # mean ~0.03
    "control": (1.0, 120.0),  # mean ~0.008
}


@dataclass(frozen=True)
class HardCase:
    """A hard case of real practice: its prevalence within the diagnosis and how it is drawn.

    ``blasts``: (low, high) of a uniform blast fraction, or None for the diagnosis' typical Beta draw;
    ``mix``: the blast-label mix (None: the diagnosis' own); ``background``: multiplicative changes of
    the non-blast background; ``extra``: absolute additions to it (fractions, before renormalising)."""

    kind: str
    prevalence: float
    description: str
    blasts: tuple[float, float] | None = None
    mix: Mapping[str, float] | None = None
    background: Mapping[str, float] = field(default_factory=dict)
    extra: Mapping[str, tuple[float, float]] = field(default_factory=dict)


#: The hard cases per diagnosis (prevalence = share of that diagnosis' patients; the rest are typical).
HARD_CASES: Mapping[str, tuple[HardCase, ...]] = {
    "ALL": (
        HardCase("partial_infiltration", 0.20,
                 "partial infiltration: lymphoblasts 10–25 % of nucleated cells",
                 blasts=(0.10, 0.25)),
        HardCase("mixed_lineage", 0.10, "mixed lineage: about a third of the blasts myeloid",
                 mix={"lymphocytic_blast": 0.60, "myelocytic_blast": 0.30, "unknown_blast": 0.10}),
    ),
    "AML": (
        HardCase("low_blast", 0.20, "AML near or under the 20 % threshold: blasts 10–22 % (AML with a "
                 "defining genetic abnormality, WHO-HAEM5 / ICC ≥ 10 %)", blasts=(0.10, 0.22)),
        HardCase("mixed_lineage", 0.10, "mixed lineage: about a third of the blasts lymphoid",
                 mix={"myelocytic_blast": 0.55, "lymphocytic_blast": 0.35, "unknown_blast": 0.10}),
    ),
    "CML": (
        HardCase("raised_blasts", 0.15, "chronic phase with raised blasts 8–19 % (ICC accelerated-phase "
                 "range)", blasts=(0.08, 0.19)),
        HardCase("blast_phase", 0.05, "myeloid blast phase: blasts 20–35 % on the CML background",
                 blasts=(0.20, 0.35)),
    ),
    "control": (
        HardCase("hematogone_rich", 0.20, "hematogone-rich: normal lymphoid precursors 10–22 % more "
                 "(look like lymphoblasts)", extra={"lymphoblast": (0.10, 0.22)}),
        HardCase("reactive_left_shift", 0.10, "reactive left shift: promyelocytes and myelocytes ×2, "
                 "myeloblasts 3–6 %", background={"promyelocyte": 2.0, "neutrophilic_myelocyte": 2.0},
                 extra={"myeloblast": (0.015, 0.045)}),
    ),
}
TYPICAL = "typical"
# Mix of blast labels per diagnosis (Dirichlet mean).
_BLAST_MIX: Mapping[str, Mapping[str, float]] = {
    "ALL": {"lymphocytic_blast": 0.93, "unknown_blast": 0.07},
    "AML": {"myelocytic_blast": 0.72, "monocytic_blast": 0.16, "unknown_blast": 0.12},
    "CML": {"myelocytic_blast": 0.85, "unknown_blast": 0.10, "lymphocytic_blast": 0.05},
    "control": {"unknown_blast": 0.5, "myelocytic_blast": 0.5},
}
_NOT_COUNTED_FACTORS: Mapping[str, Mapping[str, float]] = {
    "ALL": {"smudge_cell": 3.0, "thrombocyte": 0.4},
    "AML": {"smudge_cell": 1.5, "thrombocyte": 0.4, "neutrophil_extracellular_trap": 2.0},
    "CML": {"thrombocyte": 2.5, "thrombocyte_aggregate": 2.5, "giant_platelet": 2.0},
    "control": {},
}
_CONCENTRATION = 300.0  # Dirichlet concentration of the background composition


@dataclass(frozen=True)
class SynthPatient:
    """One synthetic patient: identity, clinical record values and the true cell composition.

    ``composition``: label -> probability over every boxed object label (sums to 1);
    ``nucleated_composition``: the same restricted to nucleated cells (:data:`NUCLEATED_LABELS`: the
    differential plus megakaryocytes, macrophages, mitoses...), renormalised;
    ``blast_fraction``: fraction of leukemic-blast labels among nucleated cells (the truth).
    ``labs``: values keyed by :data:`LAB_NAMES` (``None`` = not measured).
    """

    patient_id: str
    diagnosis: str
    ncit_code: str
    ncit_meaning: str
    age: str
    sex: str
    labs: Mapping[str, float | None]
    composition: Mapping[str, float]
    nucleated_composition: Mapping[str, float]
    blast_fraction: float
    hard_case: bool = False
    case_kind: str = TYPICAL  # "typical" or a HARD_CASES kind of this diagnosis
    extra: Mapping[str, str] = field(default_factory=dict)

    @property
    def slide_id(self) -> str:
        """Slide id in the dataset's format ``<PatientID>_1_bm``."""
        return f"{self.patient_id}_1_bm"


def new_patient_id(rng: np.random.Generator) -> str:
    """A 32-character upper-case hex id like the dataset's PatientIDs."""
    return "".join(f"{int(v):02X}" for v in rng.integers(0, 256, size=16))


def _normalise(d: Mapping[str, float]) -> dict[str, float]:
    total = float(sum(d.values()))
    return {k: float(v) / total for k, v in d.items()}


def _background_mean(diagnosis: str) -> dict[str, float]:
    factors = _BACKGROUND_FACTORS[diagnosis]
    extra = _BACKGROUND_EXTRA.get(diagnosis, {})
    bg = {k: v * factors.get(k, 1.0) + extra.get(k, 0.0) for k, v in _NORMAL.items()}
    return _normalise({k: v for k, v in bg.items() if v > 0})


def _dirichlet(mean: Mapping[str, float], concentration: float, rng: np.random.Generator) -> dict[str, float]:
    keys = list(mean)
    alpha = np.array([mean[k] for k in keys]) * concentration
    alpha = np.maximum(alpha, 1e-3)
    draw = rng.dirichlet(alpha)
    return {k: float(v) for k, v in zip(keys, draw, strict=True)}


def _lognormal(rng: np.random.Generator, median: float, sigma: float, lo: float, hi: float) -> float:
    return float(np.clip(median * np.exp(rng.normal(0.0, sigma)), lo, hi))


def sample_labs(diagnosis: str, blast_fraction: float, rng: np.random.Generator) -> dict[str, float | None]:
    """Lab values in plausible paediatric ranges, correlated with the diagnosis and marrow blast load."""
    b = blast_fraction
    labs: dict[str, float | None]
    if diagnosis == "ALL":
        labs = {
            "blasts": float(np.clip(100 * b * rng.uniform(0.2, 1.1), 0, 98)),
            "wbc": _lognormal(rng, 8.0 + 30.0 * b, 0.9, 0.8, 400.0),
            "thrombocytes": _lognormal(rng, 60.0, 0.7, 5.0, 350.0),
            "ldh": _lognormal(rng, 500.0 + 900.0 * b, 0.5, 180.0, 8000.0),
            "uric_acid": _lognormal(rng, 5.0 + 2.0 * b, 0.3, 2.0, 20.0),
            "hemoglobin": float(np.clip(rng.normal(8.0, 1.8), 3.5, 14.0)),
        }
    elif diagnosis == "AML":
        labs = {
            "blasts": float(np.clip(100 * b * rng.uniform(0.2, 1.1), 0, 98)),
            "wbc": _lognormal(rng, 10.0 + 30.0 * b, 1.0, 0.8, 400.0),
            "thrombocytes": _lognormal(rng, 45.0, 0.7, 5.0, 300.0),
            "ldh": _lognormal(rng, 400.0 + 600.0 * b, 0.5, 180.0, 6000.0),
            "uric_acid": _lognormal(rng, 4.5 + 1.5 * b, 0.3, 2.0, 15.0),
            "hemoglobin": float(np.clip(rng.normal(8.3, 1.7), 3.5, 14.0)),
        }
    elif diagnosis == "CML":
        labs = {
            "blasts": float(np.clip(100 * b * rng.uniform(0.3, 1.0), 0, 30)),
            "wbc": _lognormal(rng, 180.0, 0.6, 20.0, 800.0),
            "thrombocytes": _lognormal(rng, 450.0, 0.5, 100.0, 2500.0),
            "ldh": _lognormal(rng, 1100.0, 0.5, 250.0, 8000.0),
            "uric_acid": _lognormal(rng, 6.5, 0.3, 2.5, 15.0),
            "hemoglobin": float(np.clip(rng.normal(10.0, 1.6), 5.0, 15.0)),
        }
    else:
        labs = {
            "blasts": 0.0,
            "wbc": _lognormal(rng, 7.5, 0.3, 3.5, 16.0),
            "thrombocytes": _lognormal(rng, 280.0, 0.25, 140.0, 500.0),
            "ldh": _lognormal(rng, 240.0, 0.2, 140.0, 420.0),
            "uric_acid": _lognormal(rng, 3.8, 0.2, 2.0, 6.5),
            "hemoglobin": float(np.clip(rng.normal(12.5, 1.0), 10.0, 15.5)),
        }
    rounded: dict[str, float | None] = {}
    for name, value in labs.items():
        assert value is not None
        if name != "blasts" and rng.random() < 0.05:  # a few values were not measured
            rounded[name] = None
        else:
            rounded[name] = round(value, 1)
    return rounded


def _case_kind(diagnosis: str, rng: np.random.Generator, hard_case_rate: float | None,
               hard_case: bool | None) -> HardCase | None:
    cases = HARD_CASES[diagnosis]
    prev = np.array([c.prevalence for c in cases])
    total = float(prev.sum())
    rate = total if hard_case_rate is None else float(hard_case_rate)
    u = float(rng.random())
    hard = u < rate if hard_case is None else hard_case
    if not hard:
        return None
    # which hard case: in proportion to the documented prevalences
    return cases[int(rng.choice(len(cases), p=prev / total))]


def sample_patient(
    diagnosis: str,
    rng: np.random.Generator,
    *,
    patient_id: str | None = None,
    hard_case_rate: float | None = None,
    hard_case: bool | None = None,
) -> SynthPatient:
    """Draw one patient with the given diagnosis (one of :data:`DIAGNOSES`).

    ``hard_case_rate``: share of hard cases (None: the documented prevalences of :data:`HARD_CASES`,
    e.g. 30 % of AML); ``hard_case`` forces one (True) or a typical case (False)."""
    if diagnosis not in DIAGNOSES:
        raise ValueError(f"unknown diagnosis {diagnosis!r}; expected one of {DIAGNOSES}")
    pid = patient_id if patient_id is not None else new_patient_id(rng)
    case = _case_kind(diagnosis, rng, hard_case_rate, hard_case)

    background = _dirichlet(_background_mean(diagnosis), _CONCENTRATION, rng)
    if case is not None and (case.background or case.extra):
        background = {k: v * case.background.get(k, 1.0) for k, v in background.items()}
        for k, (lo, hi) in case.extra.items():
            background[k] = background.get(k, 0.0) + float(rng.uniform(lo, hi))
        background = _normalise(background)
    if case is not None and case.blasts is not None:
        blast_fraction = float(rng.uniform(*case.blasts))
    else:
        a, b = _BLAST_BETA[diagnosis]
        blast_fraction = float(rng.beta(a, b))
    mix_mean = dict(case.mix) if case is not None and case.mix is not None else dict(_BLAST_MIX[diagnosis])
    if diagnosis == "AML" and case is None and rng.random() < 0.25:  # monocytic differentiation
        mix_mean = {"myelocytic_blast": 0.3, "monocytic_blast": 0.6, "unknown_blast": 0.1}
        background["promonocyte"] = background.get("promonocyte", 0.0) + 0.04
        background["monocyte"] = background.get("monocyte", 0.0) + 0.06
        background = _normalise(background)
    blast_mix = _dirichlet(mix_mean, 40.0, rng)

    counted = {k: (1.0 - blast_fraction) * v for k, v in background.items()}
    for k, v in blast_mix.items():
        counted[k] = counted.get(k, 0.0) + blast_fraction * v
    counted = {k: counted.get(k, 0.0) for k in NUCLEATED_LABELS}
    counted = _normalise(counted)

    nc_factors = _NOT_COUNTED_FACTORS[diagnosis]
    not_counted = {k: v * nc_factors.get(k, 1.0) / 100.0 for k, v in _NOT_COUNTED.items()}
    not_counted = _dirichlet(_normalise(not_counted), 50.0, rng)
    nc_total = sum(v * nc_factors.get(k, 1.0) for k, v in _NOT_COUNTED.items()) / 100.0
    nc_total *= float(rng.uniform(0.6, 1.4))
    composition = {k: v / (1.0 + nc_total) for k, v in counted.items()}
    composition.update({k: nc_total * v / (1.0 + nc_total) for k, v in not_counted.items()})
    composition = _normalise(composition)

    true_blasts = sum(counted[k] for k in BLAST_LABELS)
    age = str(rng.choice(AGE_GROUPS, p=np.array(_AGE_WEIGHTS[diagnosis]) / sum(_AGE_WEIGHTS[diagnosis])))
    sex = str(rng.choice(SEXES, p=_SEX_WEIGHTS))
    code, meaning = NCIT_CODES[diagnosis]
    return SynthPatient(
        patient_id=pid,
        diagnosis=diagnosis,
        ncit_code=code,
        ncit_meaning=meaning,
        age=age,
        sex=sex,
        labs=sample_labs(diagnosis, true_blasts, rng),
        composition=composition,
        nucleated_composition=counted,
        blast_fraction=float(true_blasts),
        hard_case=case is not None,
        case_kind=TYPICAL if case is None else case.kind,
    )


def assign_diagnoses(
    n_patients: int, rng: np.random.Generator, weights: Mapping[str, float] | None = None
) -> list[str]:
    """Diagnoses for ``n_patients``: round-robin over :data:`DIAGNOSES` (balanced), shuffled.

    With ``weights`` the diagnoses are drawn with those probabilities instead.
    """
    if weights is not None:
        names = [d for d in DIAGNOSES if weights.get(d, 0.0) > 0]
        p = np.array([weights[d] for d in names], dtype=float)
        return [str(v) for v in rng.choice(names, size=n_patients, p=p / p.sum())]
    out = [DIAGNOSES[i % len(DIAGNOSES)] for i in range(n_patients)]
    rng.shuffle(out)
    return out


def sample_counts(composition: Mapping[str, float], n: int, rng: np.random.Generator) -> dict[str, int]:
    """Multinomial counts of ``n`` boxed objects from a composition (labels with 0 omitted)."""
    keys = list(composition)
    p = np.array([composition[k] for k in keys], dtype=float)
    draw = rng.multinomial(n, p / p.sum())
    return {k: int(c) for k, c in zip(keys, draw, strict=True) if c > 0}
