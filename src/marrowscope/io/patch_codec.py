"""The file codecs of ROI patches (:mod:`marrowscope.data.patches`): one (H, W, 3) uint8 array per file.

``webpNN`` (lossy WebP at quality NN, the default ``webp90``), ``jpegNN`` (JPEG at quality NN, 4:2:0),
``png`` (lossless) and ``npy`` (raw arrays, the patches of version-1 caches). Kept in ``io`` so that the
slide reader over an ROI-only download (:mod:`marrowscope.io.slides.roi_patches`) decodes them too.
"""

from __future__ import annotations

import io
import re

import numpy as np

from marrowscope.errors import InputError

DEFAULT_CODEC = "webp90"
CODECS: tuple[str, ...] = ("webpNN", "jpegNN", "png", "npy (read only)")
EXT = {"webp": "webp", "jpeg": "jpg", "png": "png", "npy": "npy"}


def parse_codec(codec: str) -> tuple[str, int]:
    m = re.fullmatch(r"(webp|jpeg)(\d{1,3})|(png)|(npy)", codec)
    if m is None or (m.group(2) is not None and not 1 <= int(m.group(2)) <= 100):
        raise InputError(codec, "unknown patch codec; use webpNN or jpegNN (NN: quality 1-100) or png")
    if m.group(1):
        return m.group(1), int(m.group(2))
    return (m.group(3) or m.group(4)), 0


def encode_patch(array: np.ndarray, codec: str) -> bytes:
    """``array`` (H, W, 3) uint8 as the bytes of a ``codec`` file (see :data:`CODECS`)."""
    from PIL import Image

    name, quality = parse_codec(codec)
    arr = np.ascontiguousarray(array[..., :3], dtype=np.uint8)
    buf = io.BytesIO()
    if name == "npy":
        np.save(buf, arr)
    elif name == "png":
        Image.fromarray(arr).save(buf, format="PNG", compress_level=6)
    elif name == "webp":
        Image.fromarray(arr).save(buf, format="WEBP", quality=quality, method=4)
    else:
        Image.fromarray(arr).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def decode_patch(data: bytes, codec: str) -> np.ndarray:
    """The (H, W, 3) uint8 array of a patch file's bytes."""
    from PIL import Image

    if parse_codec(codec)[0] == "npy":
        return np.asarray(np.load(io.BytesIO(data)))
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))
