"""Shared checks for the general annotation formats (VOC, YOLO, COCO, GeoJSON).

One policy for every format: a box that pokes out of its image by more than ``tolerance`` pixels is an
error (``InputError`` naming the file and the box) unless the caller asks for ``clip=True``; a box out by
less than that (rounding in normalised or 1-based formats) is clipped silently. A box with zero width or
height (it happens in real data, e.g. two BCCD boxes) is dropped with a warning and counted, unless
``drop_degenerate=False``, which makes it an error too.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

from marrowscope.cells import Box, Cell, CellAnnotations, Region
from marrowscope.errors import InputError
from marrowscope.io.formats import DATASET_IMAGE_SUFFIXES

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES: tuple[str, ...] = DATASET_IMAGE_SUFFIXES


@dataclass(frozen=True)
class BoxPolicy:
    """How readers treat boxes that are outside the image or have no area."""

    clip: bool = False
    tolerance: float = 1.0
    drop_degenerate: bool = True


def fmt_box(x1: float, y1: float, x2: float, y2: float) -> str:
    return "(" + ", ".join(f"{v:g}" for v in (x1, y1, x2, y2)) + ")"


def checked_box(
    coords: tuple[float, float, float, float],
    width: float | None,
    height: float | None,
    path: Path | str,
    where: str,
    policy: BoxPolicy,
) -> Box | None:
    """A valid :class:`Box` from x1, y1, x2, y2, or ``None`` when it has no area and may be dropped.

    ``where`` names the box in messages (e.g. ``"object 3"`` or ``"line 12"``).
    """
    x1, y1, x2, y2 = (float(v) for v in coords)
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        raise InputError(path, f"{where}: box {fmt_box(x1, y1, x2, y2)} has a non-finite coordinate")
    if width is not None and height is not None:
        excess = max(-x1, -y1, x2 - width, y2 - height, 0.0)
        if excess > policy.tolerance and not policy.clip:
            raise InputError(
                path,
                f"{where}: box {fmt_box(x1, y1, x2, y2)} lies outside the {width:g}x{height:g} image "
                f"(by {excess:g} px); fix the annotation or read with clip=True",
            )
        x1, x2 = (min(max(v, 0.0), float(width)) for v in (x1, x2))
        y1, y2 = (min(max(v, 0.0), float(height)) for v in (y1, y2))
    if not (x2 > x1 and y2 > y1):
        if policy.drop_degenerate:
            logger.warning("%s: %s: dropping box %s with no area", path, where, fmt_box(x1, y1, x2, y2))
            return None
        raise InputError(path, f"{where}: box {fmt_box(x1, y1, x2, y2)} has no area (need x2 > x1, y2 > y1)")
    return Box(x1, y1, x2, y2)


def read_text_file(path: Path, what: str = "file") -> str:
    """The UTF-8 text of ``path`` (a BOM is dropped); InputError when missing, unreadable or not text."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError as exc:
        raise InputError(path, f"{what} not found") from exc
    except UnicodeDecodeError as exc:
        raise InputError(path, f"{what} is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except OSError as exc:
        raise InputError(path, f"cannot read the {what} ({exc.strerror or exc})") from exc


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image file, reading only its header."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            w, h = img.size
    except FileNotFoundError as exc:
        raise InputError(path, "image file not found") from exc
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(path, f"cannot read the image header ({exc})") from exc
    return int(w), int(h)


def find_image(folder: Path, stem: str) -> Path | None:
    """The image ``folder/stem.<ext>`` for any usual image suffix (either case), or ``None``."""
    for suffix in IMAGE_SUFFIXES:
        for cand in (folder / (stem + suffix), folder / (stem + suffix.upper())):
            if cand.is_file():
                return cand
    return None


def image_annotations(
    cells: list[Cell],
    *,
    image_path: Path,
    width: int | None,
    height: int | None,
    source: str,
    extra: dict[str, str],
    dropped: int,
    regions: list[Region] | None = None,
    slide_id: str | None = None,
) -> CellAnnotations:
    """The :class:`CellAnnotations` of one image (``slide_id`` defaults to the image's file stem);
    ``dropped`` > 0 is recorded as ``extra["dropped_boxes"]``."""
    if dropped:
        extra["dropped_boxes"] = str(dropped)
    return CellAnnotations(
        cells=tuple(cells),
        regions=tuple(regions or ()),
        slide_id=image_path.stem if slide_id is None else slide_id,
        image_path=str(image_path),
        width=width,
        height=height,
        source=source,
        extra=extra,
    )
