"""Slides: one ``open_slide()`` for DICOM WSI, MRXS/SVS/TIFF, plain images and in-memory arrays."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from marrowscope.errors import InputError
from marrowscope.io.formats import DICOM_SUFFIXES, IMAGE_SUFFIXES, OPENSLIDE_SUFFIXES
from marrowscope.io.slides.array import ArraySlide
from marrowscope.io.slides.base import SlideInfo, SlideLevel, SlideReader

log = logging.getLogger(__name__)



# A plain image is decoded whole into memory (PNG and JPEG have no tiles to read lazily): a slide-sized
# image the user names is legitimate input, so Pillow's decompression-bomb guard (~179 Mpx) is replaced
# by this bound: 2**29 px (e.g. 23170 x 23170, 1.6 GB as RGB). Larger scans belong in a tiled TIFF.
MAX_IMAGE_PIXELS = 2**29
_PIL_LIMIT_LOCK = threading.Lock()


def _too_big(path: Path, size: tuple[int, int]) -> InputError:
    w, h = size
    return InputError(
        path,
        f"image is {w} x {h} px ({w * h:,} px), more than the {MAX_IMAGE_PIXELS:,} px a plain image may have "
        "(it is decoded whole into memory); save it as a tiled pyramidal TIFF "
        "(e.g. `vips tiffsave IN OUT.tif --tile --pyramid --compression jpeg`) and analyse that",
    )


def _open_image(path: Path, mpp: float | None) -> ArraySlide:
    """A PNG/JPEG/... file as an in-memory slide, up to :data:`MAX_IMAGE_PIXELS` (checked before decoding)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with _PIL_LIMIT_LOCK:  # Pillow's limit is a module global: lifted only while this file is read
            saved = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
            try:
                with Image.open(path) as img:
                    if img.width * img.height > MAX_IMAGE_PIXELS:
                        raise _too_big(path, img.size)
                    img.load()
                    rgb = img if img.mode == "RGB" else img.convert("RGB")
                    arr = np.asarray(rgb)
                    del rgb
            finally:
                Image.MAX_IMAGE_PIXELS = saved
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as e:
        raise InputError(path, f"cannot read this image ({type(e).__name__}: {e})") from e
    except MemoryError as e:
        raise InputError(path, "not enough memory to decode this image; save it as a tiled pyramidal "
                               "TIFF and analyse that") from e
    return ArraySlide(arr, mpp=mpp, slide_id=path.stem, path=str(path), format="image")


def _is_dicom_file(path: Path) -> bool:
    from marrowscope.io.slides.dicom import _has_dicm_magic

    return path.suffix.lower() in DICOM_SUFFIXES or _has_dicm_magic(path)


def open_slide(
    source: str | Path | Sequence[str | Path] | np.ndarray,
    mpp: float | None = None,
    *,
    series_uid: str | None = None,
) -> SlideReader:
    """Open a slide and return its reader.

    ``source`` may be: a folder of DICOM files (searched recursively; only the whole-slide image
    instances are used, annotation objects beside them are ignored; a folder holding several slides
    needs ``series_uid``), one DICOM file (its slide's instances are taken from the same folder), a
    list of DICOM files, the slide header of an ROI-only download (``rois/slides/<uid>.json``, see
    :mod:`marrowscope.io.slides.roi_patches`), an MRXS/SVS/NDPI/TIFF file (OpenSlide, tiffslide
    fallback for TIFF), a PNG/JPEG image, or an RGB array. ``mpp`` sets the pixel size (µm/px),
    overriding the file's.
    """
    if isinstance(source, np.ndarray):
        return ArraySlide(source, mpp=mpp)
    if isinstance(source, (list, tuple)):
        from marrowscope.io.slides.dicom import DicomSlide
        from marrowscope.io.slides.roi_patches import RoiPatchSlide, is_roi_header

        if len(source) == 1 and is_roi_header(source[0]):  # the slide of an ROI-only download
            return RoiPatchSlide(source[0], mpp=mpp)
        return DicomSlide([Path(p) for p in source], mpp=mpp, series_uid=series_uid)
    if not isinstance(source, (str, Path)):
        raise InputError(repr(source)[:80], f"cannot open a slide from a {type(source).__name__}")
    path = Path(source)
    if not path.exists():
        raise InputError(path, "no such file or folder")
    if path.is_dir():
        from marrowscope.io.slides.dicom import DicomSlide

        return DicomSlide(path, mpp=mpp, series_uid=series_uid)
    suffix = path.suffix.lower()
    if path.stat().st_size == 0:
        raise InputError(path, "file is empty")
    if suffix in IMAGE_SUFFIXES:
        return _open_image(path, mpp)
    from marrowscope.io.slides.roi_patches import RoiPatchSlide, is_roi_header

    if is_roi_header(path):
        return RoiPatchSlide(path, mpp=mpp)
    if _is_dicom_file(path):
        from marrowscope.io.slides.dicom import DicomSlide, read_header

        header = read_header(path)
        if not header.is_slide:
            raise InputError(
                path,
                f"this DICOM file is not a whole-slide image (Modality {header.modality or '?'}); "
                "use `marrowscope info` for annotation files",
            )
        siblings = [p for p in path.parent.iterdir() if p.is_file() and _is_dicom_file(p)]
        same = []
        for p in siblings:
            try:
                h = read_header(p)
            except InputError:
                continue
            if h.is_slide and h.series_uid == header.series_uid:
                same.append(p)
        return DicomSlide(same or [path], mpp=mpp, series_uid=header.series_uid)
    from marrowscope.io.slides.openslide_ import open_vendor_slide

    if suffix in OPENSLIDE_SUFFIXES:
        return open_vendor_slide(path, mpp)
    raise InputError(
        path,
        f"unsupported slide format '{suffix or path.name}'; expected a DICOM folder or file, "
        f"{', '.join(OPENSLIDE_SUFFIXES)}, or an image ({', '.join(IMAGE_SUFFIXES)})",
    )


__all__ = ["ArraySlide", "SlideInfo", "SlideLevel", "SlideReader", "open_slide"]
