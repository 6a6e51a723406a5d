"""QuPath GeoJSON: a FeatureCollection of rectangles QuPath imports (drag the file onto the image).

Each cell is a Feature with a closed Polygon ring and QuPath's properties::

    {"objectType": "detection",
     "classification": {"name": "lymphoblast", "color": [r, g, b]},
     "measurements": {"score": 0.93, "prob_lymphoblast": 0.93, ..., "cell_id": 17, "roi_id": 2}}

Colours default to the taxonomy's display colour for known labels and a stable colour derived from the
name otherwise. Regions (ROIs) are ``objectType: "annotation"``. Coordinates are level-0 pixels of the
image QuPath opens: for the dataset's DICOM slides these differ from the MRXS/CSV frame by the offset in
dataset.md §3.3 (shift the annotations first). Session labels go to ``metadata`` (QuPath ≥ 0.5 shows
it); the image's size, id and mpp to a top-level ``marrowscope`` member, which QuPath ignores.

:func:`read_geojson` reads these files back and QuPath exports in general (FeatureCollection, a bare
list of Features, or one Feature; measurements as a map or as a list of ``{name, value}``;
Polygon/MultiPolygon geometries become their bounding box; geometries without area are skipped).
"""

from __future__ import annotations

import colorsys
import hashlib
import json
import logging
import math
import os
import uuid
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from marrowscope.cells import Box, Cell, CellAnnotations, Region
from marrowscope.errors import InputError
from marrowscope.io.annotations._boxcheck import BoxPolicy, checked_box, read_text_file
from marrowscope.io.atomic import write_text_atomic

logger = logging.getLogger(__name__)

__all__ = ["label_color", "read_geojson", "write_geojson"]

OBJECT_TYPES = ("detection", "annotation", "cell", "tile")
REGION_LABELS = frozenset({"region_of_interest", "ROI", "Region", "Region*", "roi"})
PROB_PREFIX = "prob_"


def _hex_to_rgb(color: str) -> list[int]:
    c = color.lstrip("#")
    if len(c) != 6:
        raise ValueError(f"colour {color!r} is not '#rrggbb'")
    return [int(c[i : i + 2], 16) for i in (0, 2, 4)]


def label_color(label: str, colors: Mapping[str, str] | None = None) -> list[int]:
    """[r, g, b] for ``label``: ``colors`` first, then the taxonomy, then a stable hash colour."""
    if colors is not None and label in colors:
        return _hex_to_rgb(colors[label])
    try:
        from marrowscope.taxonomy import LABELS

        info = LABELS.get(label)
        if info is not None:
            return _hex_to_rgb(info.color)
    except ImportError:  # pragma: no cover - taxonomy is part of the package
        pass
    hue = int(hashlib.md5(label.encode("utf-8")).hexdigest()[:6], 16) / 0xFFFFFF
    r, g, b = colorsys.hls_to_rgb(hue, 0.5, 0.75)
    return [round(r * 255), round(g * 255), round(b * 255)]


def _ring(box: Box) -> list[list[list[float]]]:
    x1, y1, x2, y2 = box.as_tuple()
    return [[[x1, y1], [x2, y1], [x2, y2], [x1, y2], [x1, y1]]]


def _feature(
    fid: str, box: Box, object_type: str, label: str | None, colors: dict[str, list[int]],
    measurements: dict[str, float], metadata: dict[str, str],
) -> dict[str, Any]:
    props: dict[str, Any] = {"objectType": object_type}
    if label is not None:
        props["classification"] = {"name": label, "color": list(colors[label])}
    if measurements:
        props["measurements"] = measurements
    if metadata:
        props["metadata"] = metadata
    return {"type": "Feature", "id": fid, "geometry": {"type": "Polygon", "coordinates": _ring(box)},
            "properties": props}


def write_geojson(
    ann: CellAnnotations,
    path: str | os.PathLike[str],
    colors: Mapping[str, str] | None = None,
    object_type: str = "detection",
) -> Path:
    """Write ``ann`` as a QuPath-readable GeoJSON FeatureCollection (atomically).

    ``object_type``: QuPath type of the cell objects (``"detection"`` default; ``"annotation"`` makes
    them editable). ``colors``: label -> '#rrggbb' overrides."""
    if object_type not in OBJECT_TYPES:
        raise ValueError(f"object_type must be one of {', '.join(OBJECT_TYPES)}, not {object_type!r}")
    labels = {c.label for c in ann.cells if c.label is not None} | {r.label for r in ann.regions}
    rgb = {label: label_color(label, colors) for label in labels}
    ns = uuid.uuid5(uuid.NAMESPACE_URL, f"marrowscope:{ann.slide_id or ann.image_path or ''}")
    features: list[dict[str, Any]] = []
    for r in ann.regions:
        features.append(
            _feature(str(uuid.uuid5(ns, f"region/{r.roi_id}/{r.box.as_tuple()}")), r.box, "annotation",
                     r.label, rgb, {"roi_id": int(r.roi_id)}, {"kind": "region"})
        )
    for k, c in enumerate(ann.cells):
        meas: dict[str, float] = {}
        if c.score is not None:
            meas["score"] = float(c.score)
        for cls, p in (c.probabilities or {}).items():
            meas[f"{PROB_PREFIX}{cls}"] = float(p)
        if c.cell_id is not None:
            meas["cell_id"] = int(c.cell_id)
        if c.detection_id is not None:
            meas["detection_id"] = int(c.detection_id)
        if c.roi_id is not None:
            meas["roi_id"] = int(c.roi_id)
        meta = {"session_labels": "|".join(c.session_labels)} if c.session_labels else {}
        fid = str(uuid.uuid5(ns, f"cell/{k}"))
        features.append(_feature(fid, c.box, object_type, c.label, rgb, meas, meta))
    info = {
        k: v for k, v in (("slide_id", ann.slide_id), ("image_path", ann.image_path), ("width", ann.width),
                          ("height", ann.height), ("mpp", ann.mpp)) if v is not None
    }
    doc: dict[str, Any] = {"type": "FeatureCollection", "features": features}
    if info:
        doc["marrowscope"] = info
    return write_text_atomic(Path(path), json.dumps(doc, separators=(",", ":"), allow_nan=False) + "\n")


def _measurements(raw: object) -> dict[str, float]:
    out: dict[str, float] = {}
    items: list[tuple[object, object]] = []
    if isinstance(raw, dict):
        items = list(raw.items())
    elif isinstance(raw, list):  # QuPath <= 0.3: [{"name": ..., "value": ...}]
        items = [(m.get("name"), m.get("value")) for m in raw if isinstance(m, dict)]
    for name, value in items:
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            out[str(name)] = float(value)
    return out


def _coords(geometry: Mapping[str, Any]) -> list[tuple[float, float]]:
    gtype = geometry.get("type")
    coords = geometry.get("coordinates")
    if gtype == "Polygon":
        rings = [coords[0]] if coords else []
    elif gtype == "MultiPolygon":
        rings = [poly[0] for poly in coords or [] if poly]
    elif gtype == "GeometryCollection":
        return [p for g in geometry.get("geometries", []) if isinstance(g, dict) for p in _coords(g)]
    else:
        return []
    return [(float(p[0]), float(p[1])) for ring in rings for p in ring]


def _info_number(info: Mapping[str, Any], key: str, path: Path, *, integer: bool = False) -> float | None:
    """``marrowscope.<key>`` (image width, height, mpp) as a positive finite number, or None when absent."""
    v = info.get(key)
    if v is None:
        return None
    ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v > 0
    if not ok or (integer and v != int(v)):
        raise InputError(path, f"marrowscope.{key} must be a positive {'integer' if integer else 'number'}, "
                               f"got {v!r}")
    return float(v)


def _features(path: Path, data: object) -> list[Any]:
    if isinstance(data, list):
        return data
    if isinstance(data, dict):
        if data.get("type") == "FeatureCollection":
            feats = data.get("features")
            if not isinstance(feats, list):
                raise InputError(path, "FeatureCollection has no 'features' list")
            return feats
        if data.get("type") == "Feature":
            return [data]
    raise InputError(path, "not GeoJSON: expected a FeatureCollection, a Feature or a list of Features")


def read_geojson(
    path: str | os.PathLike[str],
    *,
    region_labels: Collection[str] = REGION_LABELS,
    clip: bool = False,
    tolerance: float = 1.0,
) -> CellAnnotations:
    """Read a QuPath (or marrowscope) GeoJSON file into one :class:`CellAnnotations`.

    ``annotation`` objects with no class or a class in ``region_labels`` become regions; every other
    object is a cell. Polygons become their bounding box. Measurements ``score``, ``prob_<class>``,
    ``cell_id`` and ``roi_id`` and metadata ``session_labels`` are read back. Points, lines and features
    without geometry are skipped with a warning. Boxes outside a known image size raise unless ``clip``.
    """
    p = Path(path)
    try:
        data = json.loads(read_text_file(p, "GeoJSON file"))
    except (json.JSONDecodeError, RecursionError) as exc:
        raise InputError(p, f"malformed JSON ({exc})") from exc
    info = data.get("marrowscope", {}) if isinstance(data, dict) else {}
    info = info if isinstance(info, dict) else {}
    width, height = (_info_number(info, k, p, integer=True) for k in ("width", "height"))
    mpp = _info_number(info, "mpp", p)
    policy = BoxPolicy(clip=clip, tolerance=tolerance, drop_degenerate=True)
    cells: list[Cell] = []
    regions: list[Region] = []
    skipped = 0
    for k, feat in enumerate(_features(p, data)):
        where = f"feature {k}"
        if not isinstance(feat, dict):
            raise InputError(p, f"{where} is not an object")
        props = feat.get("properties") or {}
        if not isinstance(props, dict):
            raise InputError(p, f"{where}: 'properties' must be an object")
        geometry = feat.get("geometry")
        try:
            pts = _coords(geometry) if isinstance(geometry, dict) else []
        except (TypeError, ValueError, IndexError, KeyError, OverflowError, RecursionError) as exc:
            raise InputError(p, f"{where}: malformed coordinates ({exc})") from exc
        cls = props.get("classification")
        label = str(cls["name"]) if isinstance(cls, dict) and cls.get("name") is not None else None
        if not pts:
            skipped += 1
            logger.warning("%s: %s has no polygon geometry; skipped", p, where)
            continue
        xs, ys = [q[0] for q in pts], [q[1] for q in pts]
        coords = (min(xs), min(ys), max(xs), max(ys))
        box = checked_box(coords, width, height, p, f"{where} ({label})", policy)
        if box is None:
            skipped += 1
            continue
        meas = _measurements(props.get("measurements"))
        roi = meas.get("roi_id")
        meta = props.get("metadata")
        meta = meta if isinstance(meta, dict) else {}
        if meta.get("kind") == "region" or (
            props.get("objectType") == "annotation" and (label is None or label in region_labels)
        ):
            regions.append(Region(box=box, roi_id=int(roi) if roi is not None else len(regions),
                                  label=label or "region_of_interest"))
            continue
        probs = {name[len(PROB_PREFIX):]: v for name, v in meas.items() if name.startswith(PROB_PREFIX)}
        sess = str(meta.get("session_labels", ""))
        cell_id = meas.get("cell_id")
        cells.append(Cell(
            box=box,
            label=label,
            cell_id=int(cell_id) if cell_id is not None else None,
            detection_id=int(meas["detection_id"]) if meas.get("detection_id") is not None else None,
            roi_id=int(roi) if roi is not None else None,
            session_labels=tuple(sess.split("|")) if sess else (),
            score=meas.get("score"),
            probabilities=probs or None,
        ))
    extra = {"format": "geojson"}
    if skipped:
        extra["skipped_features"] = str(skipped)
    return CellAnnotations(
        cells=tuple(cells),
        regions=tuple(regions),
        slide_id=str(info["slide_id"]) if info.get("slide_id") is not None else p.name.split(".")[0],
        image_path=str(info["image_path"]) if info.get("image_path") is not None else None,
        width=None if width is None else int(width),
        height=None if height is None else int(height),
        mpp=mpp,
        source=str(p),
        extra=extra,
    )
