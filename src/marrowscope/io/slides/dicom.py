"""DICOM whole-slide images (VL Whole Slide Microscopy Image Storage) through wsidicom.

Only slide (SM) instances are handed to wsidicom: it crashes on folders that also hold the dataset's
RECTANGLE annotation (ANN) objects. Files are told apart by their DICOM headers, not their names.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from marrowscope.errors import InputError
from marrowscope.io.slides.base import SlideInfo, SlideLevel, SlideReader

log = logging.getLogger(__name__)

SM_SOP_CLASS_UID = "1.2.840.10008.5.1.4.1.1.77.1.6"  # VL Whole Slide Microscopy Image Storage
ANN_SOP_CLASS_UID = "1.2.840.10008.5.1.4.1.1.91.1"  # Microscopy Bulk Simple Annotations Storage
COMMENT_CODE = ("121106", "DCM")  # concept "Comment" holding the OpenSlide property JSON
_HEADER_TAGS = (
    "SOPClassUID",
    "SOPInstanceUID",
    "SeriesInstanceUID",
    "StudyInstanceUID",
    "ImageType",
    "TotalPixelMatrixColumns",
    "TotalPixelMatrixRows",
    "ContainerIdentifier",
    "PatientID",
    "SeriesDescription",
    "Modality",
)


@dataclass(frozen=True)
class DicomFileHeader:
    """The few header fields used to sort a folder of DICOM files."""

    path: Path
    sop_class_uid: str
    sop_instance_uid: str
    series_uid: str
    study_uid: str
    image_type: tuple[str, ...]
    columns: int
    rows: int
    container_id: str
    patient_id: str
    series_description: str
    modality: str

    @property
    def is_slide(self) -> bool:
        return self.sop_class_uid == SM_SOP_CLASS_UID

    @property
    def is_volume(self) -> bool:
        """A pyramid level (not a label, overview or thumbnail image)."""
        return self.is_slide and (len(self.image_type) < 3 or self.image_type[2] == "VOLUME")


def quiet_dicom_imports() -> None:
    """Import wsidicom (and through it dicomweb_client) without pydicom's deprecation notice.

    dicomweb_client imports ``pydicom.encaps.get_frame_offsets``, which pydicom 3 reports through
    its logger at WARNING level on every first import: noise for the user, so the ``pydicom``
    logger is muted for the duration of that one import.
    """
    import sys
    import warnings

    if "wsidicom" in sys.modules and "dicomweb_client" in sys.modules:
        return
    logger = logging.getLogger("pydicom")
    was_disabled = logger.disabled
    logger.disabled = True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import wsidicom  # noqa: F401

            with contextlib.suppress(ImportError):  # optional dependency of wsidicom
                import dicomweb_client.file  # noqa: F401
    finally:
        logger.disabled = was_disabled


def _has_dicm_magic(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def check_not_empty(path: Path) -> None:
    """InputError naming ``path`` when the file has no bytes at all (an interrupted copy or download)."""
    try:
        empty = path.stat().st_size == 0
    except OSError as e:
        raise InputError(path, f"cannot read this file ({e.strerror or e})") from e
    if empty:
        raise InputError(path, "file is empty (0 bytes); remove it or copy it again")


def read_header(path: Path) -> DicomFileHeader:
    """Read the sorting fields of one DICOM file; InputError if it is not a readable DICOM file."""
    import pydicom

    check_not_empty(path)
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=list(_HEADER_TAGS))
    except Exception as e:  # pydicom raises many types (struct.error, ...) on damaged headers
        problem = f"not a readable DICOM file ({type(e).__name__}: {e}); the file may be truncated"
        raise InputError(path, problem) from e
    if "SOPClassUID" not in ds:
        raise InputError(path, "DICOM file has no SOPClassUID; it may be truncated or not a DICOM object")

    def text(name: str) -> str:
        v = ds.get(name)
        return "" if v is None else str(v)

    def number(name: str) -> int:
        v = ds.get(name)
        try:
            return int(v) if v is not None else 0
        except (TypeError, ValueError, OverflowError):
            return 0

    try:  # pydicom decodes values on first use: a damaged one raises here, not in the caller
        image_type = ds.get("ImageType")
        return DicomFileHeader(
            path=path,
            sop_class_uid=text("SOPClassUID"),
            sop_instance_uid=text("SOPInstanceUID"),
            series_uid=text("SeriesInstanceUID"),
            study_uid=text("StudyInstanceUID"),
            image_type=tuple(str(t) for t in image_type) if image_type is not None else (),
            columns=number("TotalPixelMatrixColumns"),
            rows=number("TotalPixelMatrixRows"),
            container_id=text("ContainerIdentifier"),
            patient_id=text("PatientID"),
            series_description=text("SeriesDescription"),
            modality=text("Modality"),
        )
    except Exception as e:  # noqa: BLE001
        raise InputError(path, f"damaged DICOM header ({type(e).__name__}: {e}); re-download it") from e


def scan_dicom(paths: Iterable[Path]) -> list[DicomFileHeader]:
    """Headers of the DICOM files among ``paths``.

    A file counts as DICOM when it has the ``DICM`` preamble or ends in ``.dcm``; such a file that
    cannot be read raises InputError. Other files (READMEs, CSVs, DICOMDIR) are skipped.
    """
    headers = []
    for p in sorted(paths):
        if not p.is_file() or p.name.upper() == "DICOMDIR":
            continue
        if _has_dicm_magic(p) or p.suffix.lower() == ".dcm":
            headers.append(read_header(p))
    return headers


def find_slide_files(source: Path | Sequence[Path], series_uid: str | None = None) -> list[DicomFileHeader]:
    """The SM instances of the one slide in ``source`` (a folder, searched recursively, or files).

    ANN and other non-slide objects are ignored. Several slide series → InputError naming them,
    unless ``series_uid`` picks one.
    """
    if isinstance(source, Path):
        if not source.exists():
            raise InputError(source, "no such file or folder")
        where: Path | str = source
        candidates = [p for p in source.rglob("*") if p.is_file()] if source.is_dir() else [source]
    else:
        candidates = [Path(p) for p in source]
        missing = [p for p in candidates if not p.is_file()]
        if missing:
            raise InputError(missing[0], "no such file")
        if not candidates:
            raise InputError("<file list>", "empty list of DICOM files")
        where = candidates[0].parent if len({p.parent for p in candidates}) == 1 else "<file list>"
    headers = scan_dicom(candidates)
    slides = [h for h in headers if h.is_slide]
    if not slides:
        if not candidates:
            raise InputError(where, "folder is empty; expected the DICOM files of one whole-slide image")
        others = sorted({h.modality or h.sop_class_uid for h in headers})
        found = f"{len(headers)} DICOM file(s) ({', '.join(others)})" if headers else "no DICOM files"
        raise InputError(
            where,
            f"no DICOM whole-slide image (SM) instances found: {found} among {len(candidates)} file(s)",
        )
    by_series: dict[str, list[DicomFileHeader]] = defaultdict(list)
    for h in slides:
        by_series[h.series_uid].append(h)
    if series_uid is not None:
        if series_uid not in by_series:
            found = ", ".join(sorted(by_series))
            raise InputError(where, f"slide series {series_uid} not found; found {found}")
        return by_series[series_uid]
    if len(by_series) > 1:
        listing = "; ".join(
            f"{uid} ({hs[0].container_id or 'no ContainerIdentifier'}, {hs[0].path.parent})"
            for uid, hs in sorted(by_series.items())
        )
        raise InputError(
            where,
            f"holds {len(by_series)} slides (SM series): {listing}. Pass the folder or files of one slide",
        )
    return next(iter(by_series.values()))


def openslide_properties_item(properties_json: str) -> Any:
    """The AcquisitionContextSequence item (TEXT, DCM 121106 "Comment") holding OpenSlide property JSON;
    :func:`openslide_properties_from_dataset` reads it back."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    concept = Dataset()
    concept.CodeValue, concept.CodingSchemeDesignator = COMMENT_CODE
    concept.CodeMeaning = "Comment"
    item = Dataset()
    item.ValueType = "TEXT"
    item.ConceptNameCodeSequence = Sequence([concept])
    item.TextValue = properties_json
    return item


def openslide_properties_from_dataset(ds: Any) -> dict[str, str]:
    """OpenSlide properties stored as JSON in AcquisitionContextSequence (TEXT, DCM 121106 "Comment")."""
    out: dict[str, str] = {}
    for item in ds.get("AcquisitionContextSequence", None) or []:
        if str(item.get("ValueType", "")) != "TEXT":
            continue
        codes = item.get("ConceptNameCodeSequence", None) or []
        if codes:
            code = (str(codes[0].get("CodeValue", "")), str(codes[0].get("CodingSchemeDesignator", "")))
            if code != COMMENT_CODE:
                continue
        text = str(item.get("TextValue", ""))
        try:
            parsed = json.loads(text)
        except (json.JSONDecodeError, ValueError):
            out.setdefault("dicom.Comment", text)
            continue
        if isinstance(parsed, Mapping):
            out.update({str(k): str(v) for k, v in parsed.items()})
    return out


def dicom_properties(ds: Any) -> dict[str, str]:
    """``dicom.*`` identifiers of a slide's base instance plus its OpenSlide properties."""
    props = openslide_properties_from_dataset(ds)
    for key in (
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "SOPInstanceUID",
        "ContainerIdentifier",
        "PatientID",
        "PatientAge",
        "PatientSex",
        "StudyDescription",
        "SeriesDescription",
        "SeriesNumber",
        "FrameOfReferenceUID",
        "PhotometricInterpretation",
        "Manufacturer",
    ):
        v = ds.get(key)
        if v is not None and str(v) != "":
            props[f"dicom.{key}"] = str(v)
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if ts is not None:
        props["dicom.TransferSyntaxUID"] = str(ts)
    return props


# wsidicom keeps decoded and encoded tiles of a slide in two LRU caches of 100 MB each by default. The
# analysis reads each counting field once (detection) and then crops inside it (classification): the
# tiles of one field with its context are all it re-reads (a 2048 px field + 25 µm: up to 3,072 px a
# side, 13^2 tiles of 256 px = 33 MB decoded, 4^2 of 1024 px = 50 MB), so a file slide's caches hold
# that much (at least FRAME_CACHE_BYTES, at most wsidicom's default); the DICOMweb reader keeps
# wsidicom's default (a miss costs a request there).
FRAME_CACHE_BYTES = 32 * 2**20
_FIELD_SPAN_PX = 3072
_WSIDICOM_CACHE_BYTES = 100 * 2**20


def frame_cache_bytes(tile_width: int, tile_height: int) -> int:
    """Bytes per wsidicom tile cache for a file slide with tiles of this size (see FRAME_CACHE_BYTES)."""
    nx = -(-_FIELD_SPAN_PX // max(1, tile_width)) + 1
    ny = -(-_FIELD_SPAN_PX // max(1, tile_height)) + 1
    return min(_WSIDICOM_CACHE_BYTES, max(FRAME_CACHE_BYTES, nx * ny * tile_width * tile_height * 3))

_PLACEHOLDER_SPACING_MM = 1e-3  # 1 µm/px: only lets wsidicom order the levels; never reported as a size


def _fill_missing_pixel_spacing(wsi_source: Any) -> None:
    """Give every pyramid level of a slide without PixelSpacing a stand-in spacing in memory.

    wsidicom needs a spacing to build the pyramid (``WsiDicomNoResolutionError`` otherwise); each
    level gets the placeholder times its power-of-two downsample from the base width. The slide's
    real pixel size comes from the user (``--mpp``); nothing is written to the files.
    """
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as DicomSequence
    from wsidicom.metadata import ImageType

    base_width = int(wsi_source.base_dataset.image_size.width)
    for reader in wsi_source.readers:
        ds = reader.dataset
        if reader.image_type != ImageType.VOLUME or ds.pixel_spacing is not None:
            continue
        width = max(1, int(ds.image_size.width))
        spacing = _PLACEHOLDER_SPACING_MM * 2 ** round(math.log2(max(base_width / width, 1.0)))
        shared = ds.get("SharedFunctionalGroupsSequence") or DicomSequence([Dataset()])
        ds.SharedFunctionalGroupsSequence = shared
        measures = shared[0].get("PixelMeasuresSequence") or DicomSequence([Dataset()])
        shared[0].PixelMeasuresSequence = measures
        measures[0].PixelSpacing = [spacing, spacing]
        for cached in ("pixel_measure", "pixel_spacing"):  # wsidicom caches these per dataset
            ds.__dict__.pop(cached, None)


def _open_wsidicom(files: Sequence[Path], label: str) -> tuple[Any, float | None]:
    """(WsiDicom, the base level's µm/px from the header, None when it has no PixelSpacing)."""
    quiet_dicom_imports()
    from wsidicom import WsiDicom
    from wsidicom.file import WsiDicomFileSource

    source = None
    try:
        source = WsiDicomFileSource.open(files)
        file_mpp = None
        spacing = source.base_dataset.pixel_spacing
        if spacing is None:
            _fill_missing_pixel_spacing(source)
        else:
            file_mpp = float(spacing.width) * 1000.0
        wsi = WsiDicom(source, True)
    except Exception as e:  # wsidicom raises many types for damaged files
        if source is not None:
            source.close()
        raise InputError(label, f"cannot open the DICOM slide ({type(e).__name__}: {e})") from e
    return wsi, file_mpp


class DicomSlide(SlideReader):
    """A DICOM WSI series opened with wsidicom (only its SM instances)."""

    def __init__(
        self,
        source: Path | Sequence[Path],
        mpp: float | None = None,
        series_uid: str | None = None,
    ) -> None:
        import pydicom

        headers = find_slide_files(source, series_uid)
        volumes = [h for h in headers if h.is_volume] or headers
        base = max(volumes, key=lambda h: (h.columns * h.rows, h.path.name))
        self._files = [h.path for h in headers]
        self._base_path = base.path
        label = str(source) if isinstance(source, Path) else str(base.path.parent)
        if mpp is not None and not (mpp > 0 and math.isfinite(mpp)):
            raise InputError(label, f"pixel size must be a positive number of µm/px, got {mpp}")
        self._wsi, file_mpp = _open_wsidicom(self._files, label)
        try:
            base_ds = pydicom.dcmread(base.path, stop_before_pixels=True)
            props = dicom_properties(base_ds)  # decodes the values used (pydicom decodes on first use)
        except Exception as e:
            self._wsi.close()
            raise InputError(base.path, f"cannot read the slide header ({type(e).__name__}: {e})") from e
        self._setup(label, base_ds, file_mpp, mpp, base.path.stem, props)
        self._wsi.resize_cache(frame_cache_bytes(*self._tile_sizes[0]))

    def _setup(
        self,
        label: str,
        base_ds: Any,
        file_mpp: float | None,
        mpp: float | None,
        fallback_id: str,
        props: dict[str, str] | None = None,
    ) -> None:
        """Levels and :class:`SlideInfo` of the open ``self._wsi`` (files or DICOMweb).

        ``file_mpp`` is the header's base-level µm/px (None without PixelSpacing), ``mpp`` the user's.
        """
        self._base_ds = base_ds
        if props is None:
            props = dicom_properties(base_ds)
        the_mpp = float(mpp) if mpp is not None else file_mpp
        if the_mpp is None:
            log.warning("%s: the DICOM header has no PixelSpacing; give the pixel size with --mpp (µm/px)",
                        label)
        levels = []
        self._wsi_levels: list[int] = []
        self._tile_sizes: list[tuple[int, int]] = []
        self._jpeg_levels: dict[int, bool] = {}
        for i, lvl in enumerate(self._wsi.levels):
            d = float(2**lvl.level)
            level_mpp = None if the_mpp is None else the_mpp * d
            levels.append(SlideLevel(i, int(lvl.size.width), int(lvl.size.height), d, level_mpp))
            self._wsi_levels.append(int(lvl.level))
            self._tile_sizes.append((int(lvl.tile_size.width), int(lvl.tile_size.height)))
        if file_mpp is None:
            props["marrowscope.mpp_missing"] = "the DICOM header has no PixelSpacing"
        if the_mpp is not None:
            props["marrowscope.mpp"] = repr(the_mpp)
        if file_mpp is not None:
            props["marrowscope.dicom_mpp"] = repr(file_mpp)
        cid = props.get("dicom.ContainerIdentifier", "")
        slide_id = cid if cid and cid != "Unknown" else props.get("dicom.SeriesInstanceUID", fallback_id)
        self.info = SlideInfo(
            path=label,
            slide_id=slide_id,
            format="dicom",
            width=levels[0].width,
            height=levels[0].height,
            mpp=the_mpp,
            levels=tuple(levels),
            properties=props,
        )

    @property
    def files(self) -> tuple[Path, ...]:
        """The SM instance files of this slide."""
        return tuple(self._files)

    def base_dataset(self) -> Any:
        """The pydicom Dataset (header only) of the base-level SM instance."""
        return self._base_ds

    def read_region(self, x: int, y: int, width: int, height: int, level: int = 0) -> np.ndarray:
        self._check_region_args(width, height, level)
        lv = self.info.levels[level]
        lx, ly = math.floor(x / lv.downsample), math.floor(y / lv.downsample)
        x0, y0 = max(lx, 0), max(ly, 0)
        x1, y1 = min(lx + int(width), lv.width), min(ly + int(height), lv.height)
        out = np.full((int(height), int(width), 3), 255, dtype=np.uint8)
        if x1 <= x0 or y1 <= y0:
            return out
        try:
            img = self._wsi.read_region((x0, y0), self._wsi_levels[level], (x1 - x0, y1 - y0))
        except Exception as e:
            problem = f"cannot read pixels at level {level} ({type(e).__name__}: {e})"
            raise InputError(self.info.path, problem) from e
        arr = np.asarray(img.convert("RGB"))
        out[y0 - ly : y1 - ly, x0 - lx : x1 - lx] = arr
        return out

    def reduced_read_factors(self, level: int, factor: int) -> bool:
        """JPEG tiles whose size ``factor`` divides: the decoder's DCT scaling shrinks them 2, 4 or 8x."""
        tw, th = self._tile_sizes[level]
        if factor not in (2, 4, 8) or tw % factor or th % factor:
            return False
        if level not in self._jpeg_levels:
            from PIL import Image

            try:
                with Image.open(io.BytesIO(self._encoded_tile(level, 0, 0))) as im:
                    self._jpeg_levels[level] = im.format == "JPEG"
            except Exception:  # noqa: BLE001 - not decodable by Pillow: the full-scale path reads it
                self._jpeg_levels[level] = False
        return self._jpeg_levels[level]

    def _encoded_tile(self, level: int, tx: int, ty: int) -> bytes:
        data = self._wsi.read_encoded_tile(self._wsi_levels[level], (tx, ty), crop_to_image_boundary=False)
        return bytes(data)

    def read_level_reduced(self, x0: int, y0: int, x1: int, y1: int, level: int, factor: int) -> np.ndarray:
        """As :meth:`SlideReader.read_level_reduced`, each JPEG tile decoded at 1/``factor`` scale
        (Pillow ``draft``: libjpeg's DCT scaling, several times faster than a full decode)."""
        if not self.reduced_read_factors(level, factor):
            return super().read_level_reduced(x0, y0, x1, y1, level, factor)
        from PIL import Image

        lv, f = self.info.levels[level], factor
        tw, th = self._tile_sizes[level]
        rw, rh = tw // f, th // f
        ax, ay, bx, by = x0 // f, y0 // f, -(-x1 // f), -(-y1 // f)
        out = np.full((by - ay, bx - ax, 3), 255, dtype=np.uint8)
        vx1, vy1 = min(bx, -(-lv.width // f)), min(by, -(-lv.height // f))  # reduced pixels on the level
        vx0, vy0 = max(ax, 0), max(ay, 0)
        if vx1 <= vx0 or vy1 <= vy0:
            return out
        for ty in range(vy0 // rh, (vy1 - 1) // rh + 1):
            for tx in range(vx0 // rw, (vx1 - 1) // rw + 1):
                try:
                    with Image.open(io.BytesIO(self._encoded_tile(level, tx, ty))) as im:
                        im.draft("RGB", (rw, rh))
                        tile = im.convert("RGB")
                except Exception as e:
                    problem = f"cannot read pixels at level {level} ({type(e).__name__}: {e})"
                    raise InputError(self.info.path, problem) from e
                if tile.size != (rw, rh):  # the decoder could not scale this far: finish with a box filter
                    tile = tile.resize((rw, rh), Image.Resampling.BOX)
                arr = np.asarray(tile)
                px0, py0 = max(tx * rw, vx0), max(ty * rh, vy0)
                px1, py1 = min((tx + 1) * rw, vx1), min((ty + 1) * rh, vy1)
                out[py0 - ay : py1 - ay, px0 - ax : px1 - ax] = arr[py0 - ty * rh : py1 - ty * rh,
                                                                    px0 - tx * rw : px1 - tx * rw]
        return out

    def close(self) -> None:
        self._wsi.close()


__all__ = [
    "ANN_SOP_CLASS_UID",
    "SM_SOP_CLASS_UID",
    "DicomFileHeader",
    "DicomSlide",
    "dicom_properties",
    "find_slide_files",
    "openslide_properties_from_dataset",
    "read_header",
    "scan_dicom",
]
