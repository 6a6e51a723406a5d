"""Pictures for the report: slide overview with regions, a field with its boxes, cell galleries.

Every picture is returned as a ``data:`` URI so the HTML report is a single self-contained file.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from marrowscope.cells import Box, Cell
from marrowscope.io.slides.base import SlideReader


def to_data_uri(image: np.ndarray | Image.Image, fmt: str = "JPEG", quality: int = 85) -> str:
    img = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
    buf = io.BytesIO()
    if fmt.upper() == "JPEG":
        img.convert("RGB").save(buf, format="JPEG", quality=quality)
        mime = "image/jpeg"
    else:
        img.save(buf, format="PNG")
        mime = "image/png"
    return f"data:{mime};base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"


def _hex_to_rgb(color: str) -> tuple[int, int, int]:
    c = color.lstrip("#")
    return (int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16))


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: fixed-size bitmap font
        return ImageFont.load_default()


def _overview(slide: SlideReader, max_size: int) -> Image.Image:
    """The whole slide with its longer side ``max_size`` px (or the slide's size if smaller), read from
    the coarsest pyramid level that is still at least that large (piece by piece when that level is big:
    :meth:`SlideReader.thumbnail`)."""
    return Image.fromarray(slide.thumbnail(max_size)).convert("RGB")


def overview_with_regions(
    slide: SlideReader, regions: Sequence[tuple[Box, str]], max_size: int = 900
) -> Image.Image:
    """Slide thumbnail with each region outlined and captioned (level-0 boxes)."""
    thumb = _overview(slide, max_size)
    sx, sy = thumb.width / slide.info.width, thumb.height / slide.info.height
    draw = ImageDraw.Draw(thumb)
    font = _font(max(11, thumb.width // 50))
    for box, caption in regions:
        xy = (box.x1 * sx, box.y1 * sy, box.x2 * sx, box.y2 * sy)
        draw.rectangle(xy, outline=(0, 90, 200), width=2)
        tx, ty = xy[0] + 4, xy[1] + 3
        bb = draw.textbbox((tx, ty), caption, font=font)
        draw.rectangle((bb[0] - 2, bb[1] - 1, bb[2] + 2, bb[3] + 1), fill=(255, 255, 255))
        draw.text((tx, ty), caption, fill=(0, 60, 160), font=font)
    return thumb


def field_with_boxes(
    slide: SlideReader,
    field: Box,
    cells: Iterable[Cell],
    color_of: Callable[[str | None], str],
    max_size: int = 900,
) -> Image.Image:
    """One field at the finest level that fits ``max_size``, with every cell box drawn in its class colour.

    Where the level is still twice the picture or more, JPEG tiles are decoded at 1/2-1/8 scale
    (:meth:`~marrowscope.io.slides.base.SlideReader.read_level_reduced`): a 2048 px field for a 900 px
    picture needs a quarter of the pixels decoded and resized."""
    info = slide.info
    level = info.levels[0]
    for lv in info.levels:
        if max(field.width, field.height) / lv.downsample >= max_size * 0.9:
            level = lv
    w = max(1, round(field.width / level.downsample))
    h = max(1, round(field.height / level.downsample))
    factor = 1
    while factor < 8 and max(w, h) / (2 * factor) >= max_size:
        factor *= 2
    if factor > 1 and slide.reduced_read_factors(level.index, factor):
        x0, y0 = round(field.x1 / level.downsample), round(field.y1 / level.downsample)
        img = Image.fromarray(slide.read_level_reduced(x0, y0, x0 + w, y0 + h, level.index, factor))
    else:
        img = Image.fromarray(slide.read_region(round(field.x1), round(field.y1), w, h, level=level.index))
    scale = min(1.0, max_size / max(img.width, img.height))
    if scale < 1.0:
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))))
    s = img.width / field.width
    draw = ImageDraw.Draw(img)
    width = max(2, round(img.width / 300))  # visible at any picture size
    for c in cells:
        b = c.box
        xy = ((b.x1 - field.x1) * s, (b.y1 - field.y1) * s, (b.x2 - field.x1) * s, (b.y2 - field.y1) * s)
        # a thin white halo under the class colour keeps every colour visible on dark purple nuclei
        draw.rectangle(xy, outline=(255, 255, 255), width=width + 2)
        draw.rectangle(xy, outline=_hex_to_rgb(color_of(c.label)), width=width)
    return img


def cell_crop(
    slide: SlideReader, box: Box, size: int = 96, context: float = 0.25, min_side_um: float = 14.0,
    outline: str | None = None,
) -> Image.Image:
    """A square crop around ``box`` with some context (at least ``min_side_um`` wide), resized to ``size``
    pixels; ``outline`` ('#rrggbb') draws the box itself."""
    cx, cy = box.center
    side = max(box.width, box.height) * (1 + 2 * context)
    if slide.info.mpp:
        side = max(side, min_side_um / slide.info.mpp)
    x, y = round(cx - side / 2), round(cy - side / 2)
    s = max(1, round(side))
    img = Image.fromarray(slide.read_region(x, y, s, s, level=0)).resize((size, size))
    if outline is not None:
        k = size / s
        draw = ImageDraw.Draw(img)
        draw.rectangle(((box.x1 - x) * k, (box.y1 - y) * k, (box.x2 - x) * k, (box.y2 - y) * k),
                       outline=_hex_to_rgb(outline), width=1)
    return img


@dataclass(frozen=True)
class GalleryItem:
    """One gallery crop: the picture, the cell's detection id and its predicted class probability."""

    uri: str
    detection_id: int | None
    probability: float | None  # top class probability (None: no classifier output)
    label: str | None


def _top_probability(c: Cell) -> float | None:
    return max(c.probabilities.values()) if c.probabilities else None


def gallery(
    slide: SlideReader, cells_by_class: Mapping[str, Sequence[Cell]], per_class: int = 12, size: int = 80,
    color_of: Callable[[str | None], str] | None = None,
) -> dict[str, list[GalleryItem]]:
    """Class -> up to ``per_class`` cell crops, most confident first (box outlined in ``color_of(label)``
    when given), each with its detection id and probability."""
    out: dict[str, list[GalleryItem]] = {}
    for cls, cells in cells_by_class.items():
        ranked = sorted(cells, key=lambda c: -(_top_probability(c) or c.score or 0.0))
        out[cls] = [
            GalleryItem(
                to_data_uri(cell_crop(slide, c.box, size, outline=color_of(c.label) if color_of else None)),
                c.detection_id if c.detection_id is not None else c.cell_id, _top_probability(c), c.label)
            for c in ranked[:per_class]
        ]
    return out
