"""Time DICOM ANN writing/reading and cohort discovery on generated annotations (no real data needed).

Run: nice -n 10 .venv/bin/python benchmarks/bench_dicom_ann.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "io"))
from annfixtures import make_source_image, save_source_image  # noqa: E402

from marrowscope.cells import Box, Cell, CellAnnotations, Region  # noqa: E402
from marrowscope.io.annotations.dicom_ann import read_dicom_ann  # noqa: E402
from marrowscope.io.annotations.dicom_ann_writer import write_dataset_series, write_dicom_ann  # noqa: E402
from marrowscope.io.cohort import discover_cohort, load_patient_annotations  # noqa: E402
from marrowscope.taxonomy import LABELS  # noqa: E402

LEAVES = sorted(n for n, i in LABELS.items() if not i.is_group and n not in ("haematological_structure",
                                                                               "region_of_interest"))


def make(n: int, seed: int = 0) -> CellAnnotations:
    rng = np.random.default_rng(seed)
    cells = []
    for i in range(n):
        x, y = rng.uniform(0, 40000, 2)
        k = int(rng.integers(2, 6))
        cells.append(Cell(Box(float(x), float(y), float(x) + 120, float(y) + 130),
                          LEAVES[int(rng.integers(len(LEAVES)))], cell_id=i, roi_id=int(rng.integers(-1, 5)),
                          session_labels=tuple(LEAVES[int(j)] for j in rng.integers(len(LEAVES), size=k))))
    return CellAnnotations(cells=tuple(cells), regions=(Region(Box(0, 0, 2048, 2048), 1),))


def best(fn, reps: int = 3) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    src = make_source_image(width=50000, height=50000)
    d = Path(tempfile.mkdtemp())
    write_dicom_ann(make(10), d / "warm.dcm", source_image=src, kind="consensus")  # imports
    read_dicom_ann(d / "warm.dcm")
    for n in (1000, 10000, 50000):
        ann = make(n)
        p = d / f"c{n}.dcm"
        tw = best(lambda ann=ann, p=p: write_dicom_ann(ann, p, source_image=src, kind="consensus"))
        tr = best(lambda p=p: read_dicom_ann(p))
        tv = best(lambda p=p: read_dicom_ann(p, validate=True), reps=1)
        groups = len(read_dicom_ann(p).annotations.label_counts())
        kb = p.stat().st_size / 1e3
        print(f"| consensus ANN, {n} cells ({groups} labels, split in/out ROI), {kb:.0f} kB "
              f"| write {tw:.2f} s | read {tr:.2f} s (highdicom-validated: {tv:.2f} s) |")
    # a 10-slide cohort with 500 labelled cells each (ROI + 5 sessions + consensus per slide)
    root = d / "cohort"
    for s in range(10):
        sm = make_source_image(width=50000, height=50000, patient_id=f"P{s}", slide_id=f"P{s}_1_bm")
        save_source_image(sm, root / "dicom" / f"P{s}" / "st" / "SM_x" / "0.dcm")
        write_dataset_series(make(500, seed=s), root / "dicom" / f"P{s}" / "st", source_image=sm)
    td = best(lambda: discover_cohort(root))
    cohort = discover_cohort(root)
    tl = best(lambda: [load_patient_annotations(e, "consensus") for e in cohort], reps=1)
    print(f"| discover_cohort, 10 slides x 7 ANN series | {td:.2f} s | |")
    print(f"| load_patient_annotations consensus + 5 sessions + ROI, 10 slides x 500 cells | {tl:.2f} s | |")


if __name__ == "__main__":
    main()
