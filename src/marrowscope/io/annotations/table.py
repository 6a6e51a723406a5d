"""Cell tables: one row per cell, as a pandas DataFrame, Parquet and CSV.

Columns, in order: ``slide_id, cell_id, detection_id, roi_id, frame, x1, y1, x2, y2, label, score,
prob_<class>..., session_labels`` (session labels joined with ``|``). ``cell_id`` is the dataset's own
id of an annotated cell (empty for a detection no annotated cell matched); ``detection_id`` our id of a
detected object; both and ``roi_id`` are nullable integers; a missing label, score or probability is
empty. Coordinates are level-0 pixels of the slide in the coordinate frame named by ``frame``:
``dicom`` (the DICOM image: the dataset's MRXS canvas shifted by the OpenSlide bounds), ``csv`` (the
dataset CSVs' MRXS canvas) or ``level0`` (any other slide). The Parquet metadata also records
``dataset_csv_offset`` (dx, dy to ADD to reach the dataset CSV frame) when it is known;
``marrowscope export OUT --format dataset-csv`` writes predictions in that frame.

The Parquet file also keeps the slide's metadata (image path, size, mpp, regions) in its schema
metadata under ``marrowscope``, so :func:`read_cell_table` on Parquet gives back the whole
:class:`~marrowscope.cells.CellAnnotations`; CSV keeps the cells only.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from marrowscope.cells import Box, Cell, CellAnnotations, Region
from marrowscope.errors import InputError
from marrowscope.io.atomic import atomic_path
from marrowscope.io.csvsafe import escape_frame, unescape_frame

logger = logging.getLogger(__name__)

__all__ = [
    "BASE_COLUMNS",
    "cells_to_frame",
    "frame_to_annotations",
    "frame_to_cells",
    "read_cell_table",
    "read_cell_table_by_slide",
    "write_cell_table",
]

BASE_COLUMNS: tuple[str, ...] = (
    "slide_id", "cell_id", "detection_id", "roi_id", "frame", "x1", "y1", "x2", "y2", "label", "score",
)
DEFAULT_FRAME = "level0"
REQUIRED_COLUMNS: tuple[str, ...] = ("x1", "y1", "x2", "y2")
PROB_PREFIX = "prob_"
SESSION_SEP = "|"
_META_KEY = b"marrowscope"


def _prob_classes(anns: Sequence[CellAnnotations], classes: Sequence[str] | None) -> list[str]:
    if classes is not None:
        return list(classes)
    seen: dict[str, None] = {}
    for ann in anns:
        for c in ann.cells:
            for k in c.probabilities or {}:
                seen.setdefault(k, None)
    return list(seen)


def cells_to_frame(
    ann: CellAnnotations | Sequence[CellAnnotations], classes: Sequence[str] | None = None
) -> pd.DataFrame:
    """One row per cell (of one slide, or of several stacked). ``classes`` fixes the order (and set) of
    the ``prob_<class>`` columns; by default every class seen, in order of first appearance."""
    anns = [ann] if isinstance(ann, CellAnnotations) else list(ann)
    prob_cols = _prob_classes(anns, classes)
    rows: dict[str, list[Any]] = {c: [] for c in BASE_COLUMNS}
    probs: dict[str, list[float]] = {c: [] for c in prob_cols}
    sessions: list[str] = []
    for a in anns:
        for c in a.cells:
            rows["slide_id"].append(a.slide_id)
            rows["cell_id"].append(c.cell_id)
            rows["detection_id"].append(c.detection_id)
            rows["roi_id"].append(c.roi_id)
            rows["frame"].append(a.extra.get("frame", DEFAULT_FRAME))
            for k, v in zip(("x1", "y1", "x2", "y2"), c.box.as_tuple(), strict=True):
                rows[k].append(float(v))
            rows["label"].append(c.label)
            rows["score"].append(float(c.score) if c.score is not None else math.nan)
            p = c.probabilities or {}
            for cls in prob_cols:
                probs[cls].append(float(p[cls]) if cls in p else math.nan)
            sessions.append(SESSION_SEP.join(c.session_labels))
    df = pd.DataFrame(
        {
            "slide_id": pd.array(rows["slide_id"], dtype="string"),
            "cell_id": pd.array(rows["cell_id"], dtype="Int64"),
            "detection_id": pd.array(rows["detection_id"], dtype="Int64"),
            "roi_id": pd.array(rows["roi_id"], dtype="Int64"),
            "frame": pd.array(rows["frame"], dtype="string"),
            **{k: pd.array(rows[k], dtype="float64") for k in ("x1", "y1", "x2", "y2")},
            "label": pd.array(rows["label"], dtype="string"),
            "score": pd.array(rows["score"], dtype="float64"),
            **{f"{PROB_PREFIX}{cls}": pd.array(v, dtype="float64") for cls, v in probs.items()},
            "session_labels": pd.array(sessions, dtype="string"),
        }
    )
    return df


def _missing(value: object) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _opt_int(value: object, where: str, path: str) -> int | None:
    if _missing(value):
        return None
    try:
        f = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError) as exc:
        raise InputError(path, f"{where}: {value!r} is not an integer") from exc
    if not math.isfinite(f) or f != int(f):
        raise InputError(path, f"{where}: {value!r} is not an integer")
    return int(f)


def _opt_float(value: object, where: str, path: str) -> float | None:
    """A score or probability cell: empty -> None, else a finite number (InputError otherwise)."""
    if _missing(value) or value == "":
        return None
    try:
        f = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError) as exc:
        raise InputError(path, f"{where}: {value!r} is not a number") from exc
    if not math.isfinite(f):
        raise InputError(path, f"{where}: {value!r} is not a finite number")
    return f


def _frame_cells(df: pd.DataFrame, path: str) -> list[Cell]:
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(path, f"cell table lacks column(s) {', '.join(missing)} (need x1, y1, x2, y2)")
    prob_cols = [c for c in df.columns if isinstance(c, str) and c.startswith(PROB_PREFIX)]
    cells = []
    records = df.to_dict("records")
    for i, r in enumerate(records):
        where = f"row {i + 1}"
        try:
            coords = [float(r[k]) for k in REQUIRED_COLUMNS]
        except (TypeError, ValueError, OverflowError) as exc:
            raise InputError(path, f"{where}: non-numeric box coordinate ({exc})") from exc
        if not all(math.isfinite(v) for v in coords) or not (coords[2] > coords[0] and coords[3] > coords[1]):
            raise InputError(path, f"{where}: invalid box {tuple(coords)} (need finite x2 > x1, y2 > y1)")
        label = r.get("label")
        sess = r.get("session_labels")
        probs = {c[len(PROB_PREFIX):]: v for c in prob_cols
                 if (v := _opt_float(r[c], f"{where}, {c}", path)) is not None}
        score = _opt_float(r.get("score"), f"{where}, score", path)
        cells.append(
            Cell(
                box=Box(*coords),
                label=None if _missing(label) or label == "" else str(label),
                cell_id=_opt_int(r.get("cell_id"), where, path),
                detection_id=_opt_int(r.get("detection_id"), where, path),
                roi_id=_opt_int(r.get("roi_id"), where, path),
                session_labels=() if _missing(sess) or sess == "" else tuple(str(sess).split(SESSION_SEP)),
                score=score,
                probabilities=probs or None,
            )
        )
    return cells


def _slide_ids(df: pd.DataFrame) -> list[str | None]:
    if "slide_id" not in df.columns:
        return [None]
    ids = [None if _missing(v) else str(v) for v in df["slide_id"].tolist()]
    return list(dict.fromkeys(ids)) or [None]


def frame_to_annotations(
    df: pd.DataFrame, *, path: str | os.PathLike[str] = "<frame>", meta: Mapping[str, Any] | None = None
) -> dict[str | None, CellAnnotations]:
    """Split a cell table by ``slide_id`` (first-seen order) into :class:`CellAnnotations`."""
    where = str(path)
    out: dict[str | None, CellAnnotations] = {}
    ids = _slide_ids(df)
    if df.empty and meta:
        ids = [None if k == "None" else k for k in meta]
    for sid in ids:
        if "slide_id" in df.columns:
            mask = df["slide_id"].isna() if sid is None else (df["slide_id"].astype("string") == sid)
            part = df[mask.fillna(False).astype(bool)]
        else:
            part = df
        cells = tuple(_frame_cells(part, where))
        try:  # the Parquet file's own metadata (written by write_cell_table): regions, size, mpp, frame
            info = dict((meta or {}).get(str(sid), {}))
            regions = tuple(Region(Box(*(float(v) for v in r["box"])), int(r["roi_id"]), str(r["label"]))
                            for r in info.get("regions", []))
            size = [None if info.get(k) is None else int(info[k]) for k in ("width", "height")]
            mpp = None if info.get("mpp") is None else float(info["mpp"])
            image_path = None if info.get("image_path") is None else str(info["image_path"])
            offset = info.get("dataset_csv_offset")
            offset_text = None if offset is None else ",".join(f"{float(v):g}" for v in offset)
        except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as exc:
            problem = f"damaged marrowscope metadata in the table ({type(exc).__name__}: {exc})"
            raise InputError(where, problem) from exc
        extra = {"format": "cell_table"}
        frames = [] if "frame" not in part.columns else list(dict.fromkeys(
            str(v) for v in part["frame"].tolist() if not _missing(v)))
        if len(frames) > 1:
            raise InputError(where, f"slide {sid}: cells in several coordinate frames {frames}")
        frame = frames[0] if frames else info.get("frame")
        if frame:
            extra["frame"] = str(frame)
        if offset_text is not None:
            extra["dataset_csv_offset"] = offset_text
        out[sid] = CellAnnotations(
            cells=cells, regions=regions, slide_id=sid, image_path=image_path, width=size[0], height=size[1],
            mpp=mpp, source=where, extra=extra,
        )
    return out


def frame_to_cells(df: pd.DataFrame, *, path: str | os.PathLike[str] = "<frame>") -> CellAnnotations:
    """The cells of a one-slide table (raises when it holds several slides)."""
    parts = frame_to_annotations(df, path=path)
    if len(parts) > 1:
        raise InputError(path, f"the table holds {len(parts)} slides; use frame_to_annotations")
    return next(iter(parts.values()))


def _offset(a: CellAnnotations) -> list[float] | None:
    raw = a.extra.get("dataset_csv_offset")
    if not raw:
        return None
    dx, dy = (float(v) for v in str(raw).split(","))
    return [dx, dy]


def _meta(anns: Sequence[CellAnnotations]) -> bytes:
    info = {
        str(a.slide_id): {
            "image_path": a.image_path,
            "width": a.width,
            "height": a.height,
            "mpp": a.mpp,
            "frame": a.extra.get("frame", DEFAULT_FRAME),
            "dataset_csv_offset": _offset(a),
            "regions": [
                {"box": list(r.box.as_tuple()), "roi_id": r.roi_id, "label": r.label} for r in a.regions
            ],
        }
        for a in anns
    }
    return json.dumps(info).encode("utf-8")


def _paths(stem: str | os.PathLike[str]) -> tuple[Path, Path]:
    s = Path(stem)
    if s.suffix.lower() in (".parquet", ".csv"):
        s = s.with_suffix("")
    return s.parent / f"{s.name}.parquet", s.parent / f"{s.name}.csv"


def write_cell_table(
    ann: CellAnnotations | Sequence[CellAnnotations],
    stem: str | os.PathLike[str],
    classes: Sequence[str] | None = None,
) -> tuple[Path, Path]:
    """Write ``<stem>.parquet`` and ``<stem>.csv`` (both atomically: neither appears if either fails).

    Returns (parquet path, csv path)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    anns = [ann] if isinstance(ann, CellAnnotations) else list(ann)
    df = cells_to_frame(anns, classes)
    pq_path, csv_path = _paths(stem)
    table = pa.Table.from_pandas(df, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), _META_KEY: _meta(anns)})
    with atomic_path(pq_path) as tmp_pq, atomic_path(csv_path) as tmp_csv:
        pq.write_table(table, tmp_pq)
        escape_frame(df).to_csv(tmp_csv, index=False)
    logger.info("wrote %d cells to %s and %s", len(df), pq_path, csv_path)
    return pq_path, csv_path


def _read_frame(path: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    if not path.is_file():
        raise InputError(path, "cell table not found")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(path)
            raw = (table.schema.metadata or {}).get(_META_KEY)
            meta = json.loads(raw) if raw else {}
            return table.to_pandas(), meta
        if suffix in (".csv", ".tsv"):
            df = pd.read_csv(
                path,
                sep="\t" if suffix == ".tsv" else ",",
                dtype={"slide_id": "string", "label": "string", "session_labels": "string",
                       "frame": "string"},
                keep_default_na=False,
                na_values=[""],
            )
            return unescape_frame(df), {}
    except InputError:
        raise
    except Exception as exc:  # pyarrow/pandas raise many types for corrupt files
        raise InputError(path, f"cannot read the cell table ({type(exc).__name__}: {exc})") from exc
    raise InputError(path, "unknown cell table type: use .parquet or .csv")


def read_cell_table_by_slide(path: str | os.PathLike[str]) -> dict[str | None, CellAnnotations]:
    """Every slide in a Parquet or CSV cell table, keyed by slide_id."""
    p = Path(path)
    df, meta = _read_frame(p)
    return frame_to_annotations(df, path=p, meta=meta)


def read_cell_table(path: str | os.PathLike[str], slide_id: str | None = None) -> CellAnnotations:
    """The cells of one slide from a Parquet or CSV cell table (``slide_id`` picks one when the table
    holds several). Parquet written by :func:`write_cell_table` also restores image size, mpp and
    regions."""
    p = Path(path)
    parts = read_cell_table_by_slide(p)
    if slide_id is not None:
        if slide_id not in parts:
            raise InputError(p, f"no cells of slide {slide_id!r} (slides: {', '.join(map(str, parts))})")
        return parts[slide_id]
    if len(parts) > 1:
        raise InputError(
            p, f"the table holds {len(parts)} slides; pass slide_id= or use read_cell_table_by_slide"
        )
    return next(iter(parts.values()))
