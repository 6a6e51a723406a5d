"""Export ``analyze`` outputs in another frame: predictions in the dataset CSVs' (MRXS) coordinate frame.

The cell table of a DICOM slide is in the DICOM frame; the dataset's cells CSV is on the original MRXS
canvas (``DICOM = CSV - openslide.bounds``, dataset.md §3.3). :func:`export_dataset_csv` shifts every
slide's predictions by the offset recorded with them (``summary.json`` ``slide.dataset_csv_offset``,
also in the Parquet metadata) and writes one cell table (:mod:`marrowscope.io.annotations.table`
columns, ``frame`` = ``csv``) that joins the dataset's labels by ``cell_id`` (when a detection was
matched to an annotated cell) or by box.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path

from marrowscope.cells import CellAnnotations
from marrowscope.errors import InputError
from marrowscope.report.outputs import CELLS_STEM, SUMMARY

log = logging.getLogger(__name__)

FORMATS: tuple[str, ...] = ("dataset-csv",)
DEFAULT_NAME = "predictions_dataset_frame.csv"


@dataclass(frozen=True)
class ExportResult:
    path: Path
    slides: tuple[str, ...]  # exported
    skipped: tuple[tuple[str, str], ...]  # (slide folder, why)
    n_cells: int


def _slide_folders(out_dir: Path) -> list[Path]:
    if (out_dir / SUMMARY).is_file():
        return [out_dir]
    return sorted(p.parent for p in out_dir.glob(f"*/{SUMMARY}"))


def to_dataset_frame(ann: CellAnnotations, frame: str, offset: tuple[float, float] | None,
                     where: object) -> CellAnnotations:
    """``ann`` shifted from its ``frame`` into the dataset CSV frame (``offset`` = dx, dy to add)."""
    from marrowscope.io.annotations.bmdeep_csv import CSV_FRAME

    if frame == CSV_FRAME:
        return replace(ann, extra={**dict(ann.extra), "frame": CSV_FRAME})
    if offset is None:
        why = ("its DICOM header has no OpenSlide bounds, so the offset to the dataset frame is unknown"
               if frame == "dicom" else f"it is not a dataset slide (frame {frame!r})")
        raise InputError(where, f"cannot place the predictions in the dataset CSV frame: {why}")
    out = ann.shifted(offset[0], offset[1])
    return replace(out, extra={**dict(out.extra), "frame": CSV_FRAME, "dataset_csv_offset": "0,0"})


def export_dataset_csv(out_dir: str | Path, dest: str | Path | None = None) -> ExportResult:
    """Write the predictions of every slide under ``out_dir`` (an ``analyze --out`` folder or one slide's
    folder) in the dataset CSV frame to ``dest`` (default ``out_dir/predictions_dataset_frame.csv``).

    Slides that cannot be placed (no offset known) are skipped with the reason; with none left it raises.
    """
    import pandas as pd

    from marrowscope.io.annotations.table import cells_to_frame, read_cell_table
    from marrowscope.io.atomic import write_text_atomic

    root = Path(out_dir)
    if not root.is_dir():
        raise InputError(root, "not a folder of analyze outputs")
    folders = _slide_folders(root)
    if not folders:
        raise InputError(root, f"no analysed slide here (no */{SUMMARY}); run marrowscope analyze --out "
                               "first")
    frames, done, skipped = [], [], []
    for folder in folders:
        try:
            summary = json.loads((folder / SUMMARY).read_text(encoding="utf-8"))
            slide = summary.get("slide") or {}
            table = folder / f"{CELLS_STEM}.parquet"
            ann = read_cell_table(table)
            frame = str(slide.get("frame") or ann.extra.get("frame") or "level0")
            raw = slide.get("dataset_csv_offset")
            offset = None if raw is None else (float(raw[0]), float(raw[1]))
            moved = to_dataset_frame(ann, frame, offset, folder)
        except (InputError, OSError, ValueError, KeyError) as e:
            skipped.append((str(folder), str(e)))
            log.warning("%s: not exported: %s", folder, e)
            continue
        frames.append(cells_to_frame(moved))
        done.append(str(slide.get("slide_id") or folder.name))
    if not frames:
        reasons = "; ".join(why for _, why in skipped)
        raise InputError(root, f"no slide could be exported to the dataset CSV frame ({reasons})")
    df = pd.concat(frames, ignore_index=True)
    path = Path(dest) if dest is not None else root / DEFAULT_NAME
    write_text_atomic(path, df.to_csv(index=False))
    return ExportResult(path, tuple(done), tuple(skipped), len(df))
