"""Reviewed cells as a training / evaluation dataset: ``--dataset reviewed:OUT``.

A cell is taken when a person vouched for its label: on a validated slide every counted cell (the
reviewer signed the whole differential), on a slide still in review only the cells accepted,
reclassified or added. Deleted cells and cells marked not identifiable / not counted are never taken;
slides not reviewed at all give nothing. Group ids are patients (the DICOM PatientID, else the slide),
so grouped splits keep a patient on one side.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from marrowscope.cells import CellAnnotations
from marrowscope.errors import InputError

log = logging.getLogger(__name__)

VOUCHED_STATES = frozenset({"accepted", "reclassified", "added"})


@dataclass(frozen=True)
class ReviewedSlide:
    key: str
    slide_path: str
    mpp: float | None
    patient: str
    status: str
    cells: CellAnnotations  # the vouched-for cells, with the reviewer's labels


def reviewed_slides(out_dir: str | Path) -> list[ReviewedSlide]:
    """Every slide of ``out_dir`` with at least one vouched-for cell (see the module docstring)."""
    from marrowscope.review.catalog import Catalog
    from marrowscope.review.store import STORE_DIR, ReviewStore
    from marrowscope.review.tally import apply_corrections

    if not (Path(out_dir) / STORE_DIR).is_dir():
        raise InputError(
            out_dir,
            "no review here (no marrowscope-review folder); review the slides first "
            "with `marrowscope review OUT`",
        )
    catalog = Catalog(out_dir)
    store = ReviewStore(out_dir)
    out = []
    for key in catalog.keys:
        review = store.review(key)
        if review.status == "not reviewed":
            continue
        result = catalog.result(key)
        cells = apply_corrections(result.cells, store.corrections(key))
        validated = review.status == "validated"
        keep = [
            r.cell
            for r in cells
            if r.cell.label is not None
            and (r.state in VOUCHED_STATES or (validated and r.state == "pending"))
        ]
        if keep:
            s = result.slide
            out.append(
                ReviewedSlide(
                    key,
                    s.path,
                    s.mpp,
                    s.patient_id or s.slide_id,
                    review.status,
                    result.cells.with_cells(keep),
                )
            )
    return out


def load_reviewed_dataset(
    root: str | Path,
    classes: Sequence[str],
    *,
    mpp: float,
    size: int,
    scheme: Any = None,
    progress: bool = False,
    keep_all: bool = False,
) -> tuple[Any, dict[str, int]]:
    """A :class:`~marrowscope.data.classification_datasets.CropSet` of the reviewed cells of ``root``
    (HARD targets from the reviewer's labels), and the counts of labels outside ``classes``."""
    from tqdm import tqdm

    from marrowscope.data.classification_datasets import HARD, CropSet, target_for_label
    from marrowscope.data.crops import crops_from_slide
    from marrowscope.io.slides import open_slide

    slides = reviewed_slides(root)
    if not slides:
        raise InputError(root, "no reviewed cell yet (accept, reclassify or add cells, or validate a slide)")
    patients = {p: i for i, p in enumerate(dict.fromkeys(s.patient for s in slides))}
    images, rows, labels, groups, ids = [], [], [], [], []
    skipped: dict[str, int] = {}
    for s in tqdm(slides, desc="slides", disable=not progress, leave=False):
        keep = []
        for cell in s.cells.cells:
            lab = str(cell.label)
            t = target_for_label(lab, classes, scheme)
            if t is None:
                skipped[lab] = skipped.get(lab, 0) + 1
                if not keep_all:
                    continue
                t = (np.zeros(len(classes), dtype=np.float32), HARD)
            keep.append(cell)
            rows.append(t[0])
            labels.append(lab)
            groups.append(patients[s.patient])
            ids.append(f"{s.key}/{cell.row_id}")
        if keep:
            with open_slide(s.slide_path, mpp=s.mpp) as slide:
                images.append(crops_from_slide(slide, keep, mpp=mpp, size=size))
    if not rows:
        raise InputError(root, f"no reviewed cell maps to the classes {list(classes)} (skipped: {skipped})")
    cs = CropSet(
        images=np.concatenate(images),
        targets=np.stack(rows).astype(np.float32),
        target_kind=np.full(len(rows), HARD, dtype=np.int8),
        classes=tuple(classes),
        labels=tuple(labels),
        source_labels=tuple(labels),
        groups=np.array(groups, dtype=np.int64),
        ids=tuple(ids),
    )
    return cs, skipped
