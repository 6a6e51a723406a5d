"""A slide of an ROI-only download (``marrowscope fetch --rois-only``): its ROI regions, nothing else.

    OUT/rois/slides/<SeriesInstanceUID>.json   the slide's base-level SM header (DICOM JSON, no pixels)
    OUT/rois/index.json + OUT/rois/<key>.png   the ROI patches (each ROI + a margin at level 0, lossless)

:class:`RoiPatchSlide` opens the header and reads level-0 pixels from the patches of its series (those
at the slide's own µm/px); everywhere else the slide is white, as outside a slide. It has one level, so
resampled reads (``read_region_mpp``) resample level 0. Only the ROIs can be analysed: use the slide's
annotated ROIs (which is what the download holds).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from marrowscope.errors import InputError
from marrowscope.io.patch_codec import decode_patch
from marrowscope.io.slides.base import SlideInfo, SlideLevel, SlideReader

INDEX = "index.json"


def is_roi_header(path: str | Path) -> bool:
    """True for ``<store>/slides/<uid>.json`` beside a patch index (an ROI-only download's slide)."""
    p = Path(path)
    return p.suffix == ".json" and p.parent.name == "slides" and (p.parent.parent / INDEX).is_file()


def read_roi_header(path: str | Path) -> Any:
    """The pydicom Dataset of an ROI-only slide header."""
    import pydicom

    try:
        return pydicom.Dataset.from_json(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise InputError(path, f"not a readable slide header of an ROI-only download ({e}); fetch it "
                               "again") from e


def _header_mpp(ds: Any) -> float | None:
    try:
        spacing = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
        return float(spacing[1]) * 1000.0
    except (AttributeError, IndexError, KeyError, TypeError, ValueError):
        return None


class RoiPatchSlide(SlideReader):
    """The slide of ROI-only header ``path`` (see the module docstring)."""

    def __init__(self, path: str | Path, mpp: float | None = None) -> None:
        from marrowscope.io.slides.dicom import dicom_properties

        self.path = Path(path)
        ds = read_roi_header(self.path)
        series = str(ds.get("SeriesInstanceUID", "") or self.path.stem)
        store = self.path.parent.parent
        try:
            rows = json.loads((store / INDEX).read_text(encoding="utf-8"))["patches"]
        except (OSError, ValueError, KeyError) as e:
            raise InputError(store / INDEX, f"patch index unreadable ({e}); fetch the ROIs again") from e
        mine = [r for r in rows if r.get("source") == f"dicomweb:{series}" and (store / r["file"]).is_file()]
        file_mpp = _header_mpp(ds) or (float(mine[0]["level0_mpp"]) if mine else None)
        # level-0 patches only (the download's other scales are resampled copies)
        self._patches = [r for r in mine if file_mpp is not None and abs(float(r["mpp"]) - file_mpp) < 1e-9]
        self._store = store
        self._decoded: dict[str, np.ndarray] = {}
        width, height = int(ds.get("TotalPixelMatrixColumns", 0)), int(ds.get("TotalPixelMatrixRows", 0))
        if width <= 0 or height <= 0:
            raise InputError(self.path, "slide header has no TotalPixelMatrixColumns/Rows; fetch it again")
        the_mpp = float(mpp) if mpp is not None else file_mpp
        props = dicom_properties(ds)
        props["marrowscope.roi_only"] = f"{len(self._patches)} ROI patch(es)"
        if the_mpp is not None:
            props["marrowscope.mpp"] = repr(the_mpp)
        cid = props.get("dicom.ContainerIdentifier", "")
        self.info = SlideInfo(
            path=str(self.path),
            slide_id=cid if cid and cid != "Unknown" else series,
            format="dicom-rois",
            width=width,
            height=height,
            mpp=the_mpp,
            levels=(SlideLevel(0, width, height, 1.0, the_mpp),),
            properties=props,
        )

    def _pixels(self, row: dict[str, Any]) -> np.ndarray:
        key = str(row["key"])
        if key not in self._decoded:
            if len(self._decoded) >= 4:  # a slide has ~2 ROIs; keep a few decoded
                self._decoded.pop(next(iter(self._decoded)))
            data = (self._store / row["file"]).read_bytes()
            self._decoded[key] = decode_patch(data, str(row.get("codec", "npy")))
        return self._decoded[key]

    def read_region(self, x: int, y: int, width: int, height: int, level: int = 0) -> np.ndarray:
        self._check_region_args(width, height, level)
        out = np.full((int(height), int(width), 3), 255, dtype=np.uint8)
        for r in self._patches:
            ox, oy = int(round(r["origin"][0])), int(round(r["origin"][1]))
            x0, y0 = max(x, ox), max(y, oy)
            x1, y1 = min(x + int(width), ox + int(r["width"])), min(y + int(height), oy + int(r["height"]))
            if x1 <= x0 or y1 <= y0:
                continue
            px = self._pixels(r)
            out[y0 - y : y1 - y, x0 - x : x1 - x] = px[y0 - oy : y1 - oy, x0 - ox : x1 - ox]
        return out

    def close(self) -> None:
        self._decoded.clear()
