"""YOLO txt in the Ultralytics layout: one ``<stem>.txt`` per image, lines ``class cx cy w h`` (0–1).

Layouts read by :func:`read_yolo_folder` (``SPLIT`` = train, val, test, ...)::

    ROOT/images/<stem>.jpg          ROOT/labels/<stem>.txt            (flat)
    ROOT/images/SPLIT/<stem>.jpg    ROOT/labels/SPLIT/<stem>.txt      (split subfolders)
    ROOT/SPLIT/images/<stem>.jpg    ROOT/SPLIT/labels/<stem>.txt      (Roboflow-style export)

Class names, first found wins: the ``classes`` argument, ``labels/classes.txt``, ``ROOT/classes.txt``,
``data.yaml`` ``names``, ``labels/SPLIT/classes.txt``. When several exist and disagree, a warning says so
(TXL-PBC ships ``Platelet`` in labels/classes.txt, ``Platelets`` in data.yaml and ``PC`` in
labels/train/classes.txt). Labels are the class NAMES. Boxes are de-normalised with the real image size,
read from the image header. A line ``class cx cy w h conf`` (prediction output) keeps ``conf`` as the
score; a segmentation line ``class x1 y1 x2 y2 ...`` becomes the polygon's bounding box. An image without
a label file has no boxes (Ultralytics' background image).
"""

from __future__ import annotations

import logging
import math
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path

from marrowscope.cells import Cell, CellAnnotations
from marrowscope.errors import InputError
from marrowscope.io.annotations._boxcheck import (
    IMAGE_SUFFIXES,
    BoxPolicy,
    checked_box,
    image_annotations,
    image_size,
    read_text_file,
)
from marrowscope.io.atomic import atomic_path, check_writable_target, claim_file, make_dirs, write_text_atomic

logger = logging.getLogger(__name__)

__all__ = ["read_yolo_classes", "read_yolo_file", "read_yolo_folder", "write_yolo_folder"]

_SPLIT_ORDER = ("train", "val", "valid", "test")


def _parse_names_yaml(path: Path) -> list[str] | None:
    """``names`` from a data.yaml (list or {index: name} mapping); ``None`` when absent."""
    text = read_text_file(path, "YAML file")
    try:
        import yaml

        data = yaml.safe_load(text)
    except ImportError:  # pragma: no cover - PyYAML comes with the environment; tiny fallback
        data = _tiny_yaml_names(text)
    except Exception as exc:
        raise InputError(path, f"malformed YAML ({str(exc).splitlines()[0]})") from exc
    if not isinstance(data, dict) or "names" not in data:
        return None
    names = data["names"]
    if isinstance(names, dict):
        try:
            keys = sorted(names, key=int)
            if [int(k) for k in keys] != list(range(len(keys))):
                raise ValueError("not 0..N-1")
            return [str(names[k]).strip() for k in keys]
        except (TypeError, ValueError) as exc:
            raise InputError(path, "names: mapping keys must be class indices 0..N-1") from exc
    if isinstance(names, list):
        return [str(n).strip() for n in names]
    raise InputError(path, "names: must be a list or an {index: name} mapping")


def _tiny_yaml_names(text: str) -> dict[str, list[str]]:  # pragma: no cover - used without PyYAML only
    for line in text.splitlines():
        if line.startswith("names:") and "[" in line:
            inner = line.split("[", 1)[1].rsplit("]", 1)[0]
            return {"names": [t.strip().strip("'\"") for t in inner.split(",") if t.strip()]}
    return {}


def _read_classes_txt(path: Path) -> list[str]:
    names = [ln.strip() for ln in read_text_file(path, "class list").splitlines() if ln.strip()]
    if not names:
        raise InputError(path, "classes.txt is empty: list one class name per line")
    return names


def read_yolo_classes(root: str | os.PathLike[str], split: str | None = None) -> list[str]:
    """The class names of a YOLO folder (see the module doc for where they are looked up)."""
    base = Path(root)
    found: list[tuple[Path, list[str]]] = []
    for cand in (base / "labels" / "classes.txt", base / "classes.txt"):
        if cand.is_file():
            found.append((cand, _read_classes_txt(cand)))
    for name in ("data.yaml", "data.yml", "dataset.yaml"):
        cand = base / name
        if cand.is_file():
            names = _parse_names_yaml(cand)
            if names:
                found.append((cand, names))
            break
    split_dirs = [base / "labels" / split] if split else sorted(p for p in (base / "labels").glob("*/"))
    split_dirs += [base / split / "labels"] if split else []
    for d in split_dirs:
        cand = d / "classes.txt"
        if cand.is_file():
            found.append((cand, _read_classes_txt(cand)))
    if not found:
        raise InputError(
            base, "no class names: put classes.txt in labels/ or the root, or a data.yaml with names"
        )
    first_path, first = found[0]
    for other_path, other in found[1:]:
        if other != first:
            logger.warning(
                "%s: class names %s differ from %s in %s; using the latter file's names",
                other_path, other, first, first_path,
            )
    return first


def _pairs(images_dir: Path, labels_dir: Path) -> list[tuple[Path, Path]]:
    images = sorted(
        p for p in images_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    stems = {p.stem for p in images}
    if labels_dir.is_dir():
        orphans = [
            p for p in labels_dir.glob("*.txt") if p.stem not in stems and p.name != "classes.txt"
        ]
        if orphans:
            logger.warning(
                "%s: %d label files have no image, e.g. %s", labels_dir, len(orphans), orphans[0].name
            )
    return [(img, labels_dir / f"{img.stem}.txt") for img in images]


def _layout(base: Path, split: str | None) -> list[tuple[str | None, Path, Path]]:
    """(split name, images dir, labels dir) triples to read."""
    def has_images(d: Path) -> bool:
        return d.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in d.iterdir() if p.is_file())

    if split is not None:
        for images_dir, labels_dir in (
            (base / "images" / split, base / "labels" / split),
            (base / split / "images", base / split / "labels"),
        ):
            if images_dir.is_dir():
                return [(split, images_dir, labels_dir)]
        raise InputError(
            base, f"no images for split {split!r} (looked in images/{split}/ and {split}/images/)"
        )
    if has_images(base / "images"):
        return [(None, base / "images", base / "labels")]

    def split_key(name: str) -> tuple[int, str]:
        return (_SPLIT_ORDER.index(name) if name in _SPLIT_ORDER else len(_SPLIT_ORDER), name)

    out: list[tuple[str | None, Path, Path]] = []
    if (base / "images").is_dir():
        subs = [p for p in (base / "images").iterdir() if p.is_dir()]
        for d in sorted(subs, key=lambda p: split_key(p.name)):
            out.append((d.name, d, base / "labels" / d.name))
    if not out and base.is_dir():
        subs = [p for p in base.iterdir() if (p / "images").is_dir()]
        for d in sorted(subs, key=lambda p: split_key(p.name)):
            out.append((d.name, d / "images", d / "labels"))
    if not out:
        raise InputError(base, "not a YOLO folder: no images/ (flat or with split subfolders) found")
    return out


def read_yolo_file(
    label_path: str | os.PathLike[str],
    image_path: str | os.PathLike[str],
    classes: Sequence[str],
    *,
    clip: bool = False,
    tolerance: float = 1.0,
    drop_degenerate: bool = True,
) -> CellAnnotations:
    """Read one YOLO label file for ``image_path`` (its size is read from the image header).

    A missing label file means an image without boxes."""
    lpath, ipath = Path(label_path), Path(image_path)
    policy = BoxPolicy(clip=clip, tolerance=tolerance, drop_degenerate=drop_degenerate)
    width, height = image_size(ipath)
    cells: list[Cell] = []
    dropped = 0
    lines = read_text_file(lpath, "YOLO label file").splitlines() if lpath.is_file() else []
    for n, line in enumerate(lines, start=1):
        parts = line.split()
        if not parts:
            continue
        where = f"line {n}"
        try:
            idx_f = float(parts[0])
            vals = [float(t) for t in parts[1:]]
        except ValueError as exc:
            raise InputError(
                lpath, f"{where}: non-numeric value ({exc}); expected 'class cx cy w h'"
            ) from exc
        if not math.isfinite(idx_f) or idx_f != int(idx_f) or not 0 <= int(idx_f) < len(classes):
            raise InputError(
                lpath,
                f"{where}: class index {parts[0]} is not in 0..{len(classes) - 1} "
                f"(classes: {', '.join(classes)})",
            )
        label = classes[int(idx_f)]
        score: float | None = None
        if len(vals) in (4, 5):
            cx, cy, bw, bh = vals[:4]
            score = vals[4] if len(vals) == 5 else None
            coords = (
                (cx - bw / 2) * width, (cy - bh / 2) * height, (cx + bw / 2) * width, (cy + bh / 2) * height
            )
        elif len(vals) >= 6 and len(vals) % 2 == 0:
            xs, ys = vals[0::2], vals[1::2]
            coords = (min(xs) * width, min(ys) * height, max(xs) * width, max(ys) * height)
        else:
            raise InputError(
                lpath, f"{where}: {len(parts)} values; expected 'class cx cy w h' (0-1 normalised)"
            )
        box = checked_box(coords, width, height, lpath, f"{where} ({label})", policy)
        if box is None:
            dropped += 1
            continue
        cells.append(Cell(box=box, label=label, cell_id=n - 1, score=score))
    return image_annotations(
        cells, image_path=ipath, width=width, height=height, source=str(lpath),
        extra={"format": "yolo", "label_path": str(lpath)}, dropped=dropped,
    )


def read_yolo_folder(
    root: str | os.PathLike[str],
    split: str | None = None,
    *,
    classes: Sequence[str] | None = None,
    clip: bool = False,
    tolerance: float = 1.0,
    drop_degenerate: bool = True,
) -> list[CellAnnotations]:
    """Read every image of a YOLO folder (one split, or all splits in train, val, test order).

    Each result has ``extra["split"]`` when the folder is split. Images are read in name order."""
    base = Path(root)
    if not base.is_dir():
        raise InputError(base, "YOLO folder not found")
    names = list(classes) if classes is not None else read_yolo_classes(base, split)
    out: list[CellAnnotations] = []
    for split_name, images_dir, labels_dir in _layout(base, split):
        if not labels_dir.is_dir():
            logger.warning("%s: no labels folder; every image reads as having no boxes", labels_dir)
        for img, lbl in _pairs(images_dir, labels_dir):
            ann = read_yolo_file(
                lbl, img, names, clip=clip, tolerance=tolerance, drop_degenerate=drop_degenerate
            )
            if split_name is not None:
                ann = replace(ann, extra={**ann.extra, "split": split_name})
            out.append(ann)
    if not out:
        raise InputError(base, f"no images found (split={split})")
    logger.info("read %d YOLO images from %s (split=%s)", len(out), base, split)
    return out


def _yolo_lines(ann: CellAnnotations, index: dict[str, int], where: str) -> str:
    assert ann.width is not None and ann.height is not None
    w, h = float(ann.width), float(ann.height)
    lines = []
    for cell in ann.cells:
        if cell.label is None or cell.label not in index:
            raise InputError(where, f"label {cell.label!r} is not among the classes ({', '.join(index)})")
        b = cell.box
        vals = ((b.x1 + b.x2) / 2 / w, (b.y1 + b.y2) / 2 / h, b.width / w, b.height / h)
        lines.append(f"{index[cell.label]} " + " ".join(f"{v:.6f}" for v in vals) + "\n")
    return "".join(lines)


def write_yolo_folder(
    anns: Iterable[CellAnnotations],
    root: str | os.PathLike[str],
    classes: Sequence[str],
    split: str | None = None,
    *,
    images: str = "copy",
) -> Path:
    """Write an Ultralytics folder: ``labels[/split]/<stem>.txt``, ``labels/classes.txt`` and
    ``data.yaml``; with ``images="copy"`` (default) or ``"link"`` the images go to ``images[/split]/``
    (``"none"``: labels only; the reader then needs the images put there by hand).

    Every label must be one of ``classes``; the image size must be known (width/height or a readable
    image). Files are written atomically one by one. Returns ``root``."""
    if images not in ("copy", "link", "none"):
        raise ValueError(f"images must be 'copy', 'link' or 'none', not {images!r}")
    base = Path(root)
    index = {name: i for i, name in enumerate(classes)}
    sub = Path(split) if split else Path()
    labels_dir, images_dir = base / "labels" / sub, base / "images" / sub
    for k, ann in enumerate(anns):
        src = Path(ann.image_path) if ann.image_path else None
        where = str(src) if src is not None else (ann.slide_id or f"annotations #{k}")
        if ann.width is None or ann.height is None:
            if src is None or not src.is_file():
                raise InputError(
                    where, "cannot write YOLO without the image size: set width/height or image_path"
                )
            w, h = image_size(src)
            ann = replace(ann, width=w, height=h)
        stem = src.stem if src is not None else (ann.slide_id or f"image_{k:05d}")
        write_text_atomic(labels_dir / f"{stem}.txt", _yolo_lines(ann, index, where))
        if images != "none":
            if src is None or not src.is_file():
                raise InputError(where, "image file not found; write with images='none' for labels only")
            dest = images_dir / f"{stem}{src.suffix}"
            make_dirs(dest.parent)
            if images == "copy":
                with atomic_path(dest) as tmp:
                    shutil.copyfile(src, tmp)
            else:
                check_writable_target(dest)  # only a link (or file) marrowscope made is replaced
                dest.unlink(missing_ok=True)
                dest.symlink_to(src.resolve())
                claim_file(dest)
    write_text_atomic(base / "labels" / "classes.txt", "".join(f"{c}\n" for c in classes))
    split_root = base / ("images" if images != "none" else "labels")
    splits: list[str] = []
    if split and split_root.is_dir():
        splits = sorted(p.name for p in split_root.iterdir() if p.is_dir())
    yaml_lines = [f"path: {base.resolve()}"]
    if splits:
        yaml_lines += [f"{s}: images/{s}" for s in splits]
    else:
        yaml_lines += ["train: images", "val: images"]
    yaml_lines += [f"nc: {len(classes)}", "names:"]
    yaml_lines += [f"  {i}: {_yaml_str(c)}" for i, c in enumerate(classes)]
    write_text_atomic(base / "data.yaml", "\n".join(yaml_lines) + "\n")
    return base


def _yaml_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"
