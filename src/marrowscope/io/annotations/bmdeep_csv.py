"""The BoneMarrowWSI-PediatricLeukemia (BMDeep) annotation CSVs (Zenodo), dataset.md §3.1.

Cells CSV (comma-separated): ``cell_id`` (dataset-global), ``slide_id``, ``roi_id`` (-1 outside any
ROI), ``x1, y1, x2, y2`` (xmin, ymin, xmax, ymax in level-0 pixels of the ORIGINAL MRXS canvas) and,
in the labelled file, ``all_original_annotations`` (comma-joined session labels, session 0 first) and
``original_consensus_label``. The detection-only file has no label columns: its boxes read with
``label=None``. ROI CSV: ``roi_id, slide_id, x1, y1, x2, y2``.

CSV boxes are in the MRXS frame; DICOM boxes are shifted by the OpenSlide bounds (dataset.md §3.3):
``DICOM = CSV - openslide.bounds``. Use :func:`csv_to_dicom_offset` / :func:`csv_to_dicom`.

An older internal format (``x_in_slide, y_in_slide, cell_width, cell_height, rocellboxing_id`` and ROIs
``id, slide_id, x_in_slide, y_in_slide, width, height`` stored enlarged by 10 % per side) is read as a
fallback.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from marrowscope.cells import Box, Cell, CellAnnotations, Region
from marrowscope.errors import InputError
from marrowscope.io.atomic import atomic_path
from marrowscope.io.csvsafe import escape_frame, unescape_frame

if TYPE_CHECKING:
    from marrowscope.io.slides.base import SlideInfo

log = logging.getLogger(__name__)

CELL_COLUMNS: tuple[str, ...] = ("cell_id", "slide_id", "roi_id", "x1", "y1", "x2", "y2")
LABEL_COLUMNS: tuple[str, ...] = ("all_original_annotations", "original_consensus_label")
ROI_COLUMNS: tuple[str, ...] = ("roi_id", "slide_id", "x1", "y1", "x2", "y2")
OLD_CELL_COLUMNS: tuple[str, ...] = ("cell_id", "x_in_slide", "y_in_slide", "cell_width", "cell_height")
OLD_ROI_COLUMNS: tuple[str, ...] = ("id", "slide_id", "x_in_slide", "y_in_slide", "width", "height")
OLD_ROI_ENLARGEMENT = 1.2  # old ROI boxes were stored enlarged by 10 % on each side (2458 px for 2048 px)
CSV_FRAME = "csv"
DICOM_FRAME = "dicom"


def _read_frame(path: str | Path, sep: str = ",") -> pd.DataFrame:
    p = Path(path)
    if not p.is_file():
        raise InputError(p, "file not found")
    try:
        df = unescape_frame(pd.read_csv(p, sep=sep, dtype={"slide_id": str}, keep_default_na=True))
    except Exception as exc:
        raise InputError(p, f"cannot parse as CSV ({type(exc).__name__}: {exc})") from exc
    df.columns = [str(c).strip() for c in df.columns]
    return df


def _require(df: pd.DataFrame, cols: Sequence[str], path: str | Path, what: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise InputError(
            path, f"{what} CSV lacks column(s) {', '.join(missing)} (has: {', '.join(map(str, df.columns))})"
        )


def _int_or(v: Any, default: int | None, path: str | Path = "CSV", where: str = "") -> int | None:
    """An integer cell (``7``, ``7.0``); empty -> ``default``; anything else -> InputError."""
    if v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and not v.strip()):
        return default
    try:
        f = float(v)
        if f != int(f):
            raise ValueError
        return int(f)
    except (TypeError, ValueError, OverflowError):
        raise InputError(path, f"{where or 'a cell'}: {v!r} is not an integer id") from None


def _number(v: Any, path: str | Path, where: str) -> float:
    """A finite number from a cell, else InputError naming the row and column."""
    try:
        f = float(v)
    except (TypeError, ValueError, OverflowError):
        f = math.nan
    if not math.isfinite(f):
        raise InputError(path, f"{where}: {v!r} is not a finite number")
    return f


def _text(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return str(v).strip()


def parse_session_labels(
    raw: Any, *, path: str | Path = "cells CSV", row: int | None = None
) -> tuple[str, ...]:
    """``all_original_annotations`` ('a,b,other:Zellhaufen') -> normalised taxonomy labels, session order."""
    from marrowscope.taxonomy import normalise_label

    text = _text(raw)
    if not text:
        return ()
    out = []
    for tok in text.split(","):
        if not tok.strip():
            continue
        try:
            out.append(normalise_label(tok))
        except InputError as exc:
            where = f" (row {row})" if row is not None else ""
            raise InputError(path, f"unknown session label {tok.strip()!r}{where}: {exc.problem}") from exc
    return tuple(out)


def _label(raw: Any, path: str | Path, row: int) -> str | None:
    from marrowscope.taxonomy import normalise_label

    text = _text(raw)
    if not text:
        return None
    try:
        return normalise_label(text)
    except InputError as exc:
        raise InputError(path, f"unknown consensus label {text!r} (row {row}): {exc.problem}") from exc


def _box(x1: Any, y1: Any, x2: Any, y2: Any, path: str | Path, row: int) -> Box:
    try:
        coords = [float(v) for v in (x1, y1, x2, y2)]
        if not all(math.isfinite(v) for v in coords):
            raise ValueError("coordinates must be finite numbers")
        return Box(*coords)
    except (TypeError, ValueError, OverflowError) as exc:
        shown = ", ".join(str(v)[:20] for v in (x1, y1, x2, y2))
        raise InputError(path, f"row {row}: bad box ({shown}): {exc}") from exc


def _normalise_old_cells(df: pd.DataFrame, path: str | Path, rois_path: str | Path | None) -> pd.DataFrame:
    """Map the older internal cells format onto the current column names."""
    _require(df, OLD_CELL_COLUMNS, path, "cells (old format)")
    num = {  # numbers, never text (a text column would add up as "10" + "30" = "1030")
        c: pd.Series([_number(v, path, f"row {i + 2}, {c}") for i, v in enumerate(df[c])], index=df.index,
                     dtype="float64")
        for c in ("x_in_slide", "y_in_slide", "cell_width", "cell_height")
    }
    out = pd.DataFrame({
        "cell_id": df["cell_id"],
        "x1": num["x_in_slide"],
        "y1": num["y_in_slide"],
        "x2": num["x_in_slide"] + num["cell_width"],
        "y2": num["y_in_slide"] + num["cell_height"],
    })
    roi_col = next((c for c in ("rocellboxing_id", "roi_id") if c in df.columns), None)
    out["roi_id"] = df[roi_col] if roi_col else -1
    if "slide_id" in df.columns:
        out["slide_id"] = df["slide_id"].astype(str)
    elif rois_path is not None and roi_col is not None:
        rois = _read_frame(rois_path)
        id_col = "id" if "id" in rois.columns else "roi_id"
        _require(rois, (id_col, "slide_id"), rois_path, "ROI")
        lookup = dict(zip(rois[id_col], rois["slide_id"].astype(str), strict=False))
        out["slide_id"] = [lookup.get(r) for r in df[roi_col]]
        if out["slide_id"].isna().any():
            n = int(out["slide_id"].isna().sum())
            raise InputError(path, f"{n} cell(s) link to ROI ids missing from {rois_path}")
    else:
        raise InputError(
            path, "old-format cells CSV has no slide_id column; pass the ROI CSV (rois_path=...)"
        )
    for src, dst in (("original_consensus_label", "original_consensus_label"),
                     ("consensus_label", "original_consensus_label"),
                     ("all_original_annotations", "all_original_annotations")):
        if src in df.columns and dst not in out.columns:
            out[dst] = df[src]
    return out


def read_cells_csv(path: str | Path, *, rois_path: str | Path | None = None) -> dict[str, CellAnnotations]:
    """Read a labelled or detection-only cells CSV into ``{slide_id: CellAnnotations}`` (CSV/MRXS frame).

    Labelled vs detection-only is told by the ``original_consensus_label`` column. Labels are
    normalised to taxonomy names (``other:…`` tokens and ``annotation_error`` included); cells whose
    consensus is empty read with ``label=None``.
    """
    df = _read_frame(path)
    if not set(CELL_COLUMNS) <= set(df.columns) and set(OLD_CELL_COLUMNS) <= set(df.columns):
        log.info("%s: older internal cells format (x_in_slide, cell_width, ...)", path)
        df = _normalise_old_cells(df, path, rois_path)
    _require(df, CELL_COLUMNS, path, "cells")
    labelled = "original_consensus_label" in df.columns
    has_sessions = "all_original_annotations" in df.columns
    if df["cell_id"].isna().any():
        raise InputError(path, f"{int(df['cell_id'].isna().sum())} row(s) without cell_id")
    by_slide: dict[str, list[Cell]] = defaultdict(list)
    records = df.to_dict("records")
    for i, r in enumerate(records):
        row = i + 2  # header is line 1
        slide_id = _text(r["slide_id"])
        if not slide_id:
            raise InputError(path, f"row {row}: empty slide_id")
        cell = Cell(
            box=_box(r["x1"], r["y1"], r["x2"], r["y2"], path, row),
            label=_label(r["original_consensus_label"], path, row) if labelled else None,
            cell_id=_int_or(r["cell_id"], None, path, f"row {row}, cell_id"),
            roi_id=_int_or(r["roi_id"], -1, path, f"row {row}, roi_id"),
            session_labels=parse_session_labels(r["all_original_annotations"], path=path, row=row)
            if (labelled and has_sessions) else (),
        )
        by_slide[slide_id].append(cell)
    source = "bmdeep-csv:labelled" if labelled else "bmdeep-csv:detection-only"
    return {
        sid: CellAnnotations(cells=tuple(cells), slide_id=sid, source=source, extra={"frame": CSV_FRAME})
        for sid, cells in by_slide.items()
    }


def read_rois_csv(path: str | Path) -> dict[str, tuple[Region, ...]]:
    """Read an ROI CSV into ``{slide_id: regions}`` (CSV/MRXS frame). Old format ROIs are shrunk back."""
    df = _read_frame(path)
    old = not set(ROI_COLUMNS) <= set(df.columns) and set(OLD_ROI_COLUMNS) <= set(df.columns)
    if not old:
        _require(df, ROI_COLUMNS, path, "ROI")
    out: dict[str, list[Region]] = defaultdict(list)
    for i, r in enumerate(df.to_dict("records")):
        row = i + 2
        sid = _text(r["slide_id"])
        if old:
            w, h = (_number(r[c], path, f"row {row}, {c}") for c in ("width", "height"))
            x, y = (_number(r[c], path, f"row {row}, {c}") for c in ("x_in_slide", "y_in_slide"))
            cx, cy = x + w / 2, y + h / 2
            hw, hh = round(w / OLD_ROI_ENLARGEMENT / 2), round(h / OLD_ROI_ENLARGEMENT / 2)
            box = _box(cx - hw, cy - hh, cx + hw, cy + hh, path, row)
            rid = _int_or(r["id"], None, path, f"row {row}, id")
        else:
            box = _box(r["x1"], r["y1"], r["x2"], r["y2"], path, row)
            rid = _int_or(r["roi_id"], None, path, f"row {row}, roi_id")
        if rid is None:
            raise InputError(path, f"row {row}: empty ROI id")
        out[sid].append(Region(box=box, roi_id=rid))
    return {sid: tuple(regs) for sid, regs in out.items()}


def attach_rois(
    cells: Mapping[str, CellAnnotations], rois: Mapping[str, Sequence[Region]]
) -> dict[str, CellAnnotations]:
    """Put each slide's ROIs into its ``CellAnnotations.regions`` (slides with ROIs only get no cells)."""
    out: dict[str, CellAnnotations] = {}
    for sid in sorted(set(cells) | set(rois)):
        ann = cells.get(sid) or CellAnnotations(cells=(), slide_id=sid, source="bmdeep-csv",
                                                extra={"frame": CSV_FRAME})
        out[sid] = replace(ann, regions=tuple(rois.get(sid, ())))
    return out


def _coord(v: float) -> int | float:
    return int(v) if float(v).is_integer() else float(v)


def _as_map(annotations: Mapping[str, CellAnnotations] | Iterable[CellAnnotations]) -> list[CellAnnotations]:
    if isinstance(annotations, Mapping):
        return [replace(a, slide_id=a.slide_id or sid) for sid, a in annotations.items()]
    return list(annotations)


def write_cells_csv(
    annotations: Mapping[str, CellAnnotations] | Iterable[CellAnnotations],
    path: str | Path,
    *,
    labelled: bool | None = None,
) -> Path:
    """Write cells in the dataset schema (labelled when any cell has a label, unless ``labelled`` says).

    ``roi_id`` None is written as -1; every cell needs a ``cell_id`` and every annotation a ``slide_id``.
    Boxes are written as they are: pass them in the CSV (MRXS) frame.
    """
    anns = _as_map(annotations)
    if labelled is None:
        labelled = any(c.label is not None for a in anns for c in a.cells)
    rows: list[dict[str, Any]] = []
    for a in anns:
        if not a.slide_id:
            raise ValueError("every CellAnnotations needs a slide_id to be written to the cells CSV")
        for c in a.cells:
            if c.cell_id is None:
                raise ValueError(f"slide {a.slide_id}: a cell without cell_id cannot go into the cells CSV")
            r: dict[str, Any] = {
                "cell_id": int(c.cell_id), "slide_id": a.slide_id,
                "roi_id": -1 if c.roi_id is None else int(c.roi_id),
                "x1": _coord(c.box.x1), "y1": _coord(c.box.y1),
                "x2": _coord(c.box.x2), "y2": _coord(c.box.y2),
            }
            if labelled:
                r["all_original_annotations"] = ",".join(c.session_labels)
                r["original_consensus_label"] = c.label if c.label is not None else ""
            rows.append(r)
    cols = list(CELL_COLUMNS) + (list(LABEL_COLUMNS) if labelled else [])
    df = pd.DataFrame(rows, columns=cols)
    out = Path(path)
    with atomic_path(out) as tmp:
        escape_frame(df).to_csv(tmp, index=False)
    return out


def write_rois_csv(
    regions: Mapping[str, Sequence[Region]] | Iterable[CellAnnotations], path: str | Path
) -> Path:
    """Write ROIs (``{slide_id: regions}`` or annotations with regions) in the dataset ROI schema."""
    items: list[tuple[str, Sequence[Region]]]
    if isinstance(regions, Mapping):
        items = [(sid, regs) for sid, regs in regions.items()]
    else:
        items = []
        for a in regions:
            if not a.slide_id:
                raise ValueError("every CellAnnotations needs a slide_id to be written to the ROI CSV")
            items.append((a.slide_id, a.regions))
    rows = [
        {"roi_id": int(r.roi_id), "slide_id": sid, "x1": _coord(r.box.x1), "y1": _coord(r.box.y1),
         "x2": _coord(r.box.x2), "y2": _coord(r.box.y2)}
        for sid, regs in items for r in regs
    ]
    df = pd.DataFrame(rows, columns=list(ROI_COLUMNS))
    out = Path(path)
    with atomic_path(out) as tmp:
        escape_frame(df).to_csv(tmp, index=False)
    return out


def csv_to_dicom_offset(info: SlideInfo | Mapping[str, str]) -> tuple[float, float]:
    """(dx, dy) to ADD to CSV (MRXS-frame) coordinates to get DICOM coordinates: ``(-bounds_x, -bounds_y)``.

    Takes ``openslide.bounds-x`` / ``openslide.bounds-y`` from ``SlideInfo.properties`` (recovered from
    the DICOM SM header, dataset.md §3.3) or from a property mapping. Without them the frames are taken
    to coincide (0, 0) and a warning is logged.
    """
    props: Mapping[str, str] = info if isinstance(info, Mapping) else info.properties
    bx, by = props.get("openslide.bounds-x"), props.get("openslide.bounds-y")
    if bx is None and by is None:
        log.warning("no openslide.bounds-x/-y in the slide properties; taking CSV and DICOM frames as equal")
        return (0.0, 0.0)
    try:
        dx, dy = -float(bx or 0), -float(by or 0)
        if not (math.isfinite(dx) and math.isfinite(dy)):
            raise ValueError("not finite")
        return (dx, dy)
    except ValueError as exc:
        raise InputError(getattr(info, "path", "slide"), f"bad openslide bounds ({bx!r}, {by!r})") from exc


def csv_to_dicom(annotations: CellAnnotations, info: SlideInfo | Mapping[str, str]) -> CellAnnotations:
    """Shift CSV-frame annotations into the DICOM frame of the slide."""
    if annotations.extra.get("frame") == DICOM_FRAME:
        return annotations
    dx, dy = csv_to_dicom_offset(info)
    out = annotations.shifted(dx, dy)
    return replace(out, extra={**dict(out.extra), "frame": DICOM_FRAME})


def dicom_to_csv(annotations: CellAnnotations, info: SlideInfo | Mapping[str, str]) -> CellAnnotations:
    """Shift DICOM-frame annotations into the CSV (MRXS) frame."""
    if annotations.extra.get("frame") == CSV_FRAME:
        return annotations
    dx, dy = csv_to_dicom_offset(info)
    out = annotations.shifted(-dx, -dy)
    return replace(out, extra={**dict(out.extra), "frame": CSV_FRAME})
