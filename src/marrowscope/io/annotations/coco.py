"""COCO detection JSON: ``images``, ``annotations`` (``bbox`` = x, y, width, height), ``categories``.

Labels are the category NAMES. Boxes become x1, y1, x2, y2. A ``score`` on an annotation (COCO results
style) is kept. marrowscope's own extras travel in each annotation's ``attributes`` (the key CVAT and
others use): ``cell_id`` (else the annotation ``id``), ``roi_id``, ``session_labels``, ``probabilities``,
``unlabeled`` (a box without a cell-type label) and ``region`` (a :class:`~marrowscope.cells.Region`).
Other tools ignore these keys; pycocotools loads the file as usual.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from marrowscope.cells import Box, Cell, CellAnnotations, Region
from marrowscope.errors import InputError
from marrowscope.io.annotations._boxcheck import (
    BoxPolicy,
    checked_box,
    image_annotations,
    image_size,
    read_text_file,
)
from marrowscope.io.atomic import write_text_atomic

logger = logging.getLogger(__name__)

__all__ = ["read_coco", "write_coco"]

UNLABELED_CATEGORY = "unlabeled"


def _load(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(read_text_file(path, "COCO JSON file"))
    except (json.JSONDecodeError, RecursionError) as exc:
        raise InputError(path, f"malformed JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise InputError(path, "not a COCO file: the top level must be an object with images/annotations")
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(data.get(k), list)]
    if missing:
        raise InputError(path, f"not a COCO detection file: missing list(s) {', '.join(missing)}")
    return data


def _num(value: object, path: Path, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(path, f"{what}: expected a number, got {value!r}")
    try:
        return float(value)
    except OverflowError:
        raise InputError(path, f"{what}: number out of range ({value!r})") from None


def _int(value: object, path: Path, what: str) -> int:
    """A JSON integer (``3`` or ``3.0``); anything else is an InputError naming ``what``."""
    f = _num(value, path, what)
    if not math.isfinite(f) or f != int(f):
        raise InputError(path, f"{what}: expected an integer, got {value!r}")
    return int(f)


def _opt_int(value: object, path: Path, what: str) -> int | None:
    return None if value is None else _int(value, path, what)


def _opt_float(value: object, path: Path, what: str) -> float | None:
    if value is None:
        return None
    f = _num(value, path, what)
    if not math.isfinite(f):
        raise InputError(path, f"{what}: expected a finite number, got {value!r}")
    return f


def read_coco(
    json_path: str | os.PathLike[str],
    images_root: str | os.PathLike[str] | None = None,
    *,
    clip: bool = False,
    tolerance: float = 1.0,
    drop_degenerate: bool = True,
) -> list[CellAnnotations]:
    """One :class:`CellAnnotations` per COCO image, in file order (images without boxes included).

    ``image_path`` is ``images_root / file_name`` (default: the JSON's folder). Width and height come
    from the image entry, else from the image header. Boxes outside the image raise unless ``clip``."""
    path = Path(json_path)
    data = _load(path)
    policy = BoxPolicy(clip=clip, tolerance=tolerance, drop_degenerate=drop_degenerate)
    root = Path(images_root) if images_root is not None else path.parent

    cats: dict[int, str] = {}
    for k, cat in enumerate(data["categories"]):
        if not isinstance(cat, dict) or "id" not in cat or "name" not in cat:
            raise InputError(path, f"categories[{k}] needs 'id' and 'name'")
        cats[_int(cat["id"], path, f"categories[{k}].id")] = str(cat["name"])

    images: dict[int, dict[str, Any]] = {}
    for k, img in enumerate(data["images"]):
        if not isinstance(img, dict) or "id" not in img or "file_name" not in img:
            raise InputError(path, f"images[{k}] needs 'id' and 'file_name'")
        images[_int(img["id"], path, f"images[{k}].id")] = img
    cells: dict[int, list[Cell]] = {i: [] for i in images}
    regions: dict[int, list[Region]] = {i: [] for i in images}
    dropped: dict[int, int] = dict.fromkeys(images, 0)
    sizes: dict[int, tuple[int | None, int | None]] = {}
    for i, img in images.items():
        w, h = img.get("width"), img.get("height")
        if w and h:
            sizes[i] = (_int(w, path, f"image {i} width"), _int(h, path, f"image {i} height"))
        else:
            p = root / str(img["file_name"])
            sizes[i] = image_size(p) if p.is_file() else (None, None)

    for k, a in enumerate(data["annotations"]):
        where = f"annotations[{k}]"
        if not isinstance(a, dict):
            raise InputError(path, f"{where} is not an object")
        for key in ("image_id", "category_id", "bbox"):
            if key not in a:
                raise InputError(path, f"{where} has no '{key}'")
        image_id = _int(a["image_id"], path, f"{where}.image_id")
        cat_id = _int(a["category_id"], path, f"{where}.category_id")
        if image_id not in images:
            raise InputError(path, f"{where}: image_id {image_id} is not in images")
        if cat_id not in cats:
            raise InputError(path, f"{where}: category_id {cat_id} is not in categories")
        bbox = a["bbox"]
        if not isinstance(bbox, list) or len(bbox) != 4:
            raise InputError(path, f"{where}: bbox must be [x, y, width, height]")
        x, y, bw, bh = (_num(v, path, f"{where}.bbox") for v in bbox)
        label = cats[cat_id]
        w, h = sizes[image_id]
        box = checked_box((x, y, x + bw, y + bh), w, h, path, f"{where} ({label})", policy)
        if box is None:
            dropped[image_id] += 1
            continue
        attrs = a.get("attributes") if isinstance(a.get("attributes"), dict) else {}
        assert isinstance(attrs, dict)
        if attrs.get("region"):
            roi = _opt_int(attrs.get("roi_id"), path, f"{where}.attributes.roi_id")
            regions[image_id].append(
                Region(box=box, roi_id=roi if roi is not None else len(regions[image_id]), label=label)
            )
            continue
        probs = attrs.get("probabilities")
        sessions = attrs.get("session_labels", [])
        if not isinstance(sessions, list):
            raise InputError(path, f"{where}.attributes.session_labels must be a list of labels")
        cells[image_id].append(
            Cell(
                box=box,
                label=None if attrs.get("unlabeled") else label,
                cell_id=_opt_int(attrs.get("cell_id", a.get("id")), path, f"{where} cell id"),
                roi_id=_opt_int(attrs.get("roi_id"), path, f"{where}.attributes.roi_id"),
                session_labels=tuple(str(s) for s in sessions),
                score=_opt_float(a.get("score"), path, f"{where}.score"),
                probabilities=(
                    {str(c): _num(p, path, f"{where} probability of {c}") for c, p in probs.items()}
                    if isinstance(probs, dict) else None
                ),
            )
        )

    out = []
    for i, img in images.items():
        file_name = str(img["file_name"])
        out.append(
            image_annotations(
                cells[i], image_path=root / file_name, width=sizes[i][0], height=sizes[i][1],
                source=str(path), extra={"format": "coco", "image_id": str(i)}, dropped=dropped[i],
                regions=regions[i], slide_id=Path(file_name).stem,
            )
        )
    logger.info("read %d images, %d annotations from %s", len(out), len(data["annotations"]), path)
    return out


def _attrs(cell: Cell) -> dict[str, Any]:
    attrs: dict[str, Any] = {}
    if cell.cell_id is not None:
        attrs["cell_id"] = int(cell.cell_id)
    if cell.roi_id is not None:
        attrs["roi_id"] = int(cell.roi_id)
    if cell.session_labels:
        attrs["session_labels"] = list(cell.session_labels)
    if cell.probabilities is not None:
        attrs["probabilities"] = {str(k): float(v) for k, v in cell.probabilities.items()}
    if cell.label is None:
        attrs["unlabeled"] = True
    return attrs


def write_coco(
    anns: Iterable[CellAnnotations],
    path: str | os.PathLike[str],
    categories: Sequence[str] | None = None,
    *,
    info: Mapping[str, Any] | None = None,
) -> Path:
    """Write a COCO detection JSON (atomically).

    ``categories``: class names in id order (ids start at 1); default: every label found, sorted.
    A label not in ``categories`` raises. Boxes without a label go to a category ``"unlabeled"`` (marked
    ``attributes.unlabeled`` so they read back as ``None``); regions are written as annotations of
    their label with ``attributes.region``. ``file_name`` is the image's file name (``read_coco`` looks
    for it beside the JSON or under ``images_root``). The image size must be known."""
    out_path = Path(path)
    items = list(anns)
    names: list[str]
    if categories is None:
        found = {c.label for a in items for c in a.cells if c.label is not None}
        found |= {r.label for a in items for r in a.regions}
        names = sorted(found)
    else:
        names = list(categories)
    if any(c.label is None for a in items for c in a.cells) and UNLABELED_CATEGORY not in names:
        names.append(UNLABELED_CATEGORY)
    cat_id = {n: k + 1 for k, n in enumerate(names)}

    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for k, ann in enumerate(items, start=1):
        where = ann.image_path or ann.slide_id or f"images[{k - 1}]"
        if ann.width is None or ann.height is None:
            if not (ann.image_path and Path(ann.image_path).is_file()):
                raise InputError(
                    where, "cannot write COCO without the image size: set width/height or image_path"
                )
            w, h = image_size(Path(ann.image_path))
            ann = replace(ann, width=w, height=h)
        stem = ann.slide_id or f"image_{k:05d}"
        file_name = Path(ann.image_path).name if ann.image_path else f"{stem}.png"
        images.append(
            {"id": k, "file_name": file_name, "width": int(ann.width or 0), "height": int(ann.height or 0)}
        )
        boxes: list[tuple[str, Box, dict[str, Any], float | None]] = [
            (c.label if c.label is not None else UNLABELED_CATEGORY, c.box, _attrs(c), c.score)
            for c in ann.cells
        ]
        boxes += [(r.label, r.box, {"region": True, "roi_id": int(r.roi_id)}, None) for r in ann.regions]
        for label, box, attrs, score in boxes:
            if label not in cat_id:
                raise InputError(where, f"label {label!r} is not among the categories ({', '.join(names)})")
            entry: dict[str, Any] = {
                "id": len(annotations) + 1,
                "image_id": k,
                "category_id": cat_id[label],
                "bbox": [box.x1, box.y1, box.width, box.height],
                "area": box.width * box.height,
                "iscrowd": 0,
            }
            if score is not None:
                entry["score"] = float(score)
            if attrs:
                entry["attributes"] = attrs
            annotations.append(entry)
    doc = {
        "info": dict(info) if info is not None else {"description": "written by marrowscope"},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i, "name": n, "supercategory": "cell"} for n, i in cat_id.items()],
    }
    return write_text_atomic(out_path, json.dumps(doc, indent=1) + "\n")
