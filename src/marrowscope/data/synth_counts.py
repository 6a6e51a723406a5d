"""Synthetic per-patient count tables without slides: the synthetic composition + multinomial counts.

For fast tests and model training when no slides are needed. Patients come from
``marrowscope.data.synth.composition.sample_patient`` (same diagnoses, labs and age/sex as
``marrowscope synth``); each patient's boxed objects are a multinomial draw of ``n_objects`` from its
composition (countable cells and never-counted objects alike, as an expert labelling session would).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from marrowscope.io.annotations.clinical import ClinicalRecord
from marrowscope.io.counts import CountsTable, clinical_row, make_counts_table


def synthetic_counts_table(
    n_patients: int,
    seed: int = 0,
    *,
    n_objects: int = 500,
    diagnoses: Sequence[str] | None = None,
    weights: Mapping[str, float] | None = None,
) -> CountsTable:
    """A :class:`CountsTable` of ``n_patients`` synthetic patients (balanced over diagnoses unless
    ``diagnoses`` or ``weights`` say otherwise), reproducible from ``seed``."""
    from marrowscope.data.synth.composition import assign_diagnoses, sample_counts, sample_patient

    rng = np.random.default_rng(seed)
    dx = list(diagnoses) if diagnoses is not None else assign_diagnoses(n_patients, rng, weights)
    if len(dx) != n_patients:
        raise ValueError(f"{len(dx)} diagnoses for {n_patients} patients")
    rows: dict[str, dict[str, float]] = {}
    diag: dict[str, str | None] = {}
    clinical: dict[str, dict[str, float]] = {}
    for d in dx:
        p = sample_patient(d, rng)
        rows[p.patient_id] = {k: float(v) for k, v in sample_counts(p.composition, n_objects, rng).items()}
        diag[p.patient_id] = p.diagnosis
        rec = ClinicalRecord(p.patient_id, p.sex, p.age, p.diagnosis, p.ncit_code, dict(p.labs))
        clinical[p.patient_id] = clinical_row(rec)
    source = f"synthetic counts (seed {seed}, {n_objects} objects)"
    return make_counts_table(rows, diag, clinical, source=source)
