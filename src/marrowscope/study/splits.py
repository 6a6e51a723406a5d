"""Patient-level train/validation/test splits of a cohort, stratified by diagnosis and seeded.

Every patient is on exactly one side. Stratification is proportional: inside each diagnosis the
patients are shuffled (seeded) and given evenly spaced positions in [0, 1) with a random offset, and
the whole cohort is sorted by position; the first ``test_fraction`` of that order is the test split,
the next ``val_fraction`` the validation split. Each diagnosis so gets its share of every split
(within one patient), also when it has only a couple of patients.

The split is a CSV (``patient_id,diagnosis,split``) that ``reproduce --splits FILE`` reuses.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from marrowscope.errors import InputError
from marrowscope.io.atomic import write_text_atomic

log = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "val", "test")


@dataclass(frozen=True)
class SplitConfig:
    test_fraction: float = 0.25
    val_fraction: float = 0.125
    seed: int = 0

    def __post_init__(self) -> None:
        if not (
            0 < self.test_fraction < 1
            and 0 <= self.val_fraction < 1
            and self.test_fraction + self.val_fraction < 1
        ):
            raise InputError(
                "split",
                f"fractions test {self.test_fraction} / val {self.val_fraction} must "
                "be in [0, 1) and leave patients for training",
            )


@dataclass(frozen=True)
class PatientSplit:
    """Which split each patient is in, with its diagnosis."""

    assignment: Mapping[str, str]  # patient -> "train" | "val" | "test"
    diagnoses: Mapping[str, str]  # patient -> diagnosis

    def patients(self, split: str) -> tuple[str, ...]:
        return tuple(sorted(p for p, s in self.assignment.items() if s == split))

    def sizes(self) -> dict[str, int]:
        return {s: len(self.patients(s)) for s in SPLITS}

    def sizes_by_diagnosis(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for p, s in self.assignment.items():
            d = out.setdefault(self.diagnoses.get(p, ""), {k: 0 for k in SPLITS})
            d[s] += 1
        return dict(sorted(out.items()))

    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["patient_id", "diagnosis", "split"])
        for p in sorted(self.assignment):
            w.writerow([p, self.diagnoses.get(p, ""), self.assignment[p]])
        return buf.getvalue()

    def check(self, *, need: Sequence[str] = SPLITS) -> None:
        """Raise :class:`InputError` when a needed split is empty."""
        sizes = self.sizes()
        for s in need:
            if sizes.get(s, 0) == 0:
                raise InputError(
                    "splits",
                    f"the {s} split is empty ({sizes['train']} train / {sizes['val']} "
                    f"val / {sizes['test']} test patients); add patients or change "
                    "the split fractions",
                )


def split_patients(diagnoses: Mapping[str, str], config: SplitConfig = SplitConfig()) -> PatientSplit:
    """Stratified, seeded patient split (see the module docstring)."""
    if not diagnoses:
        raise InputError("cohort", "no patient with a diagnosis to split")
    rng = np.random.default_rng([config.seed, 4099])
    keys: list[tuple[float, str]] = []
    for dx in sorted(set(diagnoses.values())):
        members = sorted(p for p, d in diagnoses.items() if d == dx)
        order = rng.permutation(len(members))
        offset = float(rng.random())
        for rank, i in enumerate(order):
            keys.append(((rank + offset) / len(members), members[int(i)]))
    keys.sort()
    n = len(keys)
    n_test = max(1, round(n * config.test_fraction)) if n >= 3 else 0
    n_val = round(n * config.val_fraction) if n - n_test >= 3 else 0
    if config.val_fraction > 0 and n_val == 0 and n - n_test >= 3:
        n_val = 1
    assignment = {}
    for i, (_, p) in enumerate(keys):
        assignment[p] = "test" if i < n_test else ("val" if i < n_test + n_val else "train")
    for dx in sorted(set(diagnoses.values())):
        members = [p for p, d in diagnoses.items() if d == dx]
        if all(assignment[p] != "train" for p in members):
            log.warning("diagnosis %s: all %d patient(s) are held out; none in training", dx, len(members))
    return PatientSplit(assignment, dict(diagnoses))


def write_splits(split: PatientSplit, path: str | Path) -> Path:
    return write_text_atomic(path, split.to_csv())


def read_splits(path: str | Path, *, known: Mapping[str, str] | None = None) -> PatientSplit:
    """Read a split CSV. With ``known`` (patient -> diagnosis of the cohort), a patient of the file that
    the cohort lacks is an error naming it; cohort patients the file lacks are left out with a warning."""
    p = Path(path)
    if not p.is_file():
        raise InputError(p, "split file not found")
    with open(p, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"patient_id", "split"} <= set(rows[0]):
        raise InputError(p, "a split file needs the columns patient_id and split (and diagnosis)")
    assignment: dict[str, str] = {}
    diagnoses: dict[str, str] = {}
    for k, row in enumerate(rows, start=2):
        pid, s = (row.get("patient_id") or "").strip(), (row.get("split") or "").strip().lower()
        if not pid or s not in SPLITS:
            raise InputError(
                p,
                f"line {k}: split must be one of {', '.join(SPLITS)} for a patient_id "
                f"(got {s!r} for {pid!r})",
            )
        if pid in assignment:
            raise InputError(p, f"line {k}: patient {pid} is listed twice")
        assignment[pid] = s
        diagnoses[pid] = (row.get("diagnosis") or "").strip()
    if known is not None:
        for pid in assignment:
            if pid not in known:
                raise InputError(
                    p,
                    f"patient {pid} is not in the cohort (or has no diagnosis there); fix "
                    "the split file or complete the download",
                )
            if diagnoses[pid] and diagnoses[pid] != known[pid]:
                raise InputError(
                    p,
                    f"patient {pid}: diagnosis {diagnoses[pid]!r} in the split file, "
                    f"{known[pid]!r} in the cohort",
                )
            diagnoses[pid] = known[pid]
        for pid in sorted(set(known) - set(assignment)):
            log.warning("patient %s is in the cohort but not in %s; left out", pid, p)
    return PatientSplit(assignment, diagnoses)
