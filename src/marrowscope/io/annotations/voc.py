"""Pascal VOC XML: one ``<annotation>`` file per image, boxes as ``<bndbox>`` xmin/ymin/xmax/ymax.

Labels are the ``<name>`` text as written (e.g. ``WBC``, ``RBC``, ``Platelets`` in BCCD); mapping them into
the taxonomy is the dataset adapter's job (:func:`marrowscope.taxonomy.map_external`). Coordinates are
taken as written (no 1-based shift): VOC tools disagree on the convention and the difference is one pixel.

Folder layout (``read_voc_folder``)::

    ROOT/Annotations/<id>.xml
    ROOT/JPEGImages/<id>.jpg
    ROOT/ImageSets/Main/<split>.txt     (one id per line)
"""

from __future__ import annotations

import logging
import os
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from marrowscope.cells import Cell, CellAnnotations
from marrowscope.errors import InputError
from marrowscope.io.annotations._boxcheck import (
    BoxPolicy,
    checked_box,
    find_image,
    image_annotations,
    image_size,
    read_text_file,
)
from marrowscope.io.atomic import write_text_atomic

logger = logging.getLogger(__name__)

__all__ = ["read_voc", "read_voc_folder", "voc_splits", "write_voc", "write_voc_folder"]


def _text(node: ET.Element | None, tag: str) -> str | None:
    if node is None:
        return None
    child = node.find(tag)
    if child is None or child.text is None:
        return None
    return child.text.strip()


def _resolve_image(xml_path: Path, filename: str | None, image_root: Path | None) -> Path:
    name = filename or (xml_path.stem + ".jpg")
    if image_root is not None:
        folder = image_root
    elif xml_path.parent.name == "Annotations":
        folder = xml_path.parent.parent / "JPEGImages"
    else:
        folder = xml_path.parent
    cand = folder / name
    if cand.is_file():
        return cand
    # Some VOC exports write the filename without its suffix, or with another one.
    found = find_image(folder, Path(name).stem) or find_image(folder, xml_path.stem)
    return found if found is not None else cand


def read_voc(
    xml_path: str | os.PathLike[str],
    image_root: str | os.PathLike[str] | None = None,
    *,
    clip: bool = False,
    tolerance: float = 1.0,
    drop_degenerate: bool = True,
) -> CellAnnotations:
    """Read one VOC XML file.

    ``image_root``: folder holding the image; by default ``../JPEGImages`` when the XML sits in an
    ``Annotations`` folder, else the XML's own folder. Width and height come from ``<size>`` (or from the
    image header when ``<size>`` is missing or zero). Boxes outside the image raise :class:`InputError`
    unless ``clip=True`` (see :mod:`._boxcheck`); boxes with no area are dropped and counted in
    ``extra["dropped_boxes"]``.
    """
    path = Path(xml_path)
    policy = BoxPolicy(clip=clip, tolerance=tolerance, drop_degenerate=drop_degenerate)
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError as exc:
        raise InputError(path, "VOC annotation file not found") from exc
    except ET.ParseError as exc:
        raise InputError(path, f"malformed VOC XML ({exc})") from exc
    if root.tag != "annotation":
        raise InputError(path, f"not a VOC annotation: root element is <{root.tag}>, expected <annotation>")

    image_path = _resolve_image(path, _text(root, "filename"), Path(image_root) if image_root else None)
    width: int | None = None
    height: int | None = None
    size = root.find("size")
    try:
        w_txt, h_txt = _text(size, "width"), _text(size, "height")
        if w_txt and h_txt and float(w_txt) > 0 and float(h_txt) > 0:
            width, height = int(float(w_txt)), int(float(h_txt))
    except (ValueError, OverflowError) as exc:
        raise InputError(path, f"<size> has a non-numeric width or height ({exc})") from exc
    if width is None and image_path.is_file():
        width, height = image_size(image_path)

    cells: list[Cell] = []
    dropped = 0
    for i, obj in enumerate(root.findall("object")):
        where = f"object {i}"
        name = _text(obj, "name")
        if not name:
            raise InputError(path, f"{where} has no <name>")
        bnd = obj.find("bndbox")
        if bnd is None:
            raise InputError(path, f"{where} ({name}) has no <bndbox>")
        vals = [_text(bnd, k) for k in ("xmin", "ymin", "xmax", "ymax")]
        if any(v is None for v in vals):
            raise InputError(path, f"{where} ({name}): <bndbox> needs xmin, ymin, xmax and ymax")
        try:
            x1, y1, x2, y2 = (float(v) for v in vals if v is not None)
        except ValueError as exc:
            raise InputError(path, f"{where} ({name}): non-numeric box coordinate ({exc})") from exc
        box = checked_box((x1, y1, x2, y2), width, height, path, f"{where} ({name})", policy)
        if box is None:
            dropped += 1
            continue
        cells.append(Cell(box=box, label=name, cell_id=i))

    return image_annotations(
        cells, image_path=image_path, width=width, height=height, source=str(path),
        extra={"format": "voc"}, dropped=dropped,
    )


def _voc_base(root: Path) -> Path:
    """``root`` itself when it holds ``Annotations/``, or its only child that does (e.g. bccd/BCCD)."""
    if (root / "Annotations").is_dir():
        return root
    if root.is_dir():
        kids = [p for p in sorted(root.iterdir()) if (p / "Annotations").is_dir()]
        if len(kids) == 1:
            return kids[0]
        if len(kids) > 1:
            names = ", ".join(p.name for p in kids)
            raise InputError(root, f"several VOC roots inside ({names}); pass one of them")
    raise InputError(root, "not a VOC folder: no Annotations/ subfolder")


def voc_splits(root: str | os.PathLike[str]) -> list[str]:
    """The split names listed in ``ImageSets/Main`` (e.g. train, val, trainval, test)."""
    main = _voc_base(Path(root)) / "ImageSets" / "Main"
    return sorted(p.stem for p in main.glob("*.txt") if "_" not in p.stem) if main.is_dir() else []


def read_voc_folder(
    root: str | os.PathLike[str],
    split: str | None = None,
    *,
    clip: bool = False,
    tolerance: float = 1.0,
    drop_degenerate: bool = True,
) -> list[CellAnnotations]:
    """Read a VOC dataset folder: every XML in ``Annotations/`` (sorted by name), or only the ids listed
    in ``ImageSets/Main/<split>.txt``. ``root`` may also be the folder just above the VOC root."""
    base = _voc_base(Path(root))
    ann_dir = base / "Annotations"
    if split is None:
        xmls = sorted(ann_dir.glob("*.xml"))
    else:
        split_file = base / "ImageSets" / "Main" / f"{split}.txt"
        if not split_file.is_file():
            have = ", ".join(voc_splits(base)) or "none"
            raise InputError(split_file, f"no such split list (splits here: {have})")
        ids = [ln.split()[0] for ln in read_text_file(split_file, "split list").splitlines() if ln.strip()]
        xmls = [ann_dir / f"{i}.xml" for i in ids]
        missing = [p for p in xmls if not p.is_file()]
        if missing:
            raise InputError(
                split_file, f"{len(missing)} listed ids have no XML in Annotations/, e.g. {missing[0].name}"
            )
    if not xmls:
        raise InputError(ann_dir, "no VOC annotation files (*.xml) found")
    out = []
    for xml in xmls:
        ann = read_voc(xml, clip=clip, tolerance=tolerance, drop_degenerate=drop_degenerate)
        if split is not None:
            ann = _with_extra(ann, split=split)
        out.append(ann)
    logger.info("read %d VOC files from %s (split=%s)", len(out), base, split)
    return out


def _with_extra(ann: CellAnnotations, **items: str) -> CellAnnotations:
    return replace(ann, extra={**ann.extra, **items})


def _voc_xml(ann: CellAnnotations, filename: str, folder: str, unlabeled_name: str) -> str:
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = folder
    ET.SubElement(root, "filename").text = filename
    src = ET.SubElement(root, "source")
    ET.SubElement(src, "database").text = "marrowscope"
    size = ET.SubElement(root, "size")
    ET.SubElement(size, "width").text = str(ann.width)
    ET.SubElement(size, "height").text = str(ann.height)
    ET.SubElement(size, "depth").text = "3"
    ET.SubElement(root, "segmented").text = "0"
    for cell in ann.cells:
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = cell.label if cell.label is not None else unlabeled_name
        ET.SubElement(obj, "pose").text = "Unspecified"
        ET.SubElement(obj, "truncated").text = "0"
        ET.SubElement(obj, "difficult").text = "0"
        bnd = ET.SubElement(obj, "bndbox")
        x1, y1 = round(cell.box.x1), round(cell.box.y1)
        # Rounding must not collapse a small box.
        x2, y2 = max(round(cell.box.x2), x1 + 1), max(round(cell.box.y2), y1 + 1)
        for tag, v in (("xmin", x1), ("ymin", y1), ("xmax", x2), ("ymax", y2)):
            ET.SubElement(bnd, tag).text = str(v)
    ET.indent(root, space="\t")
    return ET.tostring(root, encoding="unicode") + "\n"


def write_voc(
    ann: CellAnnotations,
    xml_path: str | os.PathLike[str],
    *,
    folder: str = "JPEGImages",
    filename: str | None = None,
    unlabeled_name: str = "cell",
) -> Path:
    """Write one VOC XML file (atomically). Coordinates are rounded to whole pixels, as VOC readers
    expect integers. Needs the image size (``ann.width``/``height`` or a readable ``ann.image_path``).
    Boxes without a label are written as ``unlabeled_name``."""
    path = Path(xml_path)
    if ann.width is None or ann.height is None:
        if ann.image_path and Path(ann.image_path).is_file():
            w, h = image_size(Path(ann.image_path))
            ann = replace(ann, width=w, height=h)
        else:
            raise InputError(path, "cannot write VOC without the image size: set width/height or image_path")
    if filename is None:
        filename = Path(ann.image_path).name if ann.image_path else f"{ann.slide_id or path.stem}.jpg"
    return write_text_atomic(path, _voc_xml(ann, filename, folder, unlabeled_name))


def write_voc_folder(
    anns: Iterable[CellAnnotations],
    root: str | os.PathLike[str],
    *,
    split: str | None = None,
    unlabeled_name: str = "cell",
) -> list[Path]:
    """Write ``ROOT/Annotations/<id>.xml`` for each image (id = image file stem, else slide_id) and,
    with ``split``, the id list ``ROOT/ImageSets/Main/<split>.txt``. Images are not copied."""
    base = Path(root)
    written: list[Path] = []
    ids: list[str] = []
    for k, ann in enumerate(anns):
        stem = Path(ann.image_path).stem if ann.image_path else (ann.slide_id or f"image_{k:05d}")
        ids.append(stem)
        written.append(write_voc(ann, base / "Annotations" / f"{stem}.xml", unlabeled_name=unlabeled_name))
    if split is not None:
        write_text_atomic(base / "ImageSets" / "Main" / f"{split}.txt", "".join(f"{i}\n" for i in ids))
    return written
