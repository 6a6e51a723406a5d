"""Write an RGB array as a pyramidal DICOM whole-slide image shaped like the IDC bone-marrow slides.

The image is written as a tiled, losslessly (zstd) compressed pyramidal TIFF (tifffile, level by
level, each level box-filtered from the previous one, in row strips) into a temporary folder,
converted with ``wsidicomizer`` (tiffslide source; each tile JPEG-encoded once, 4:2:2, at
``jpeg_quality``) and the series is moved into place atomically. Result: one VL Whole Slide
Microscopy Image Storage series, one instance per level, JPEG Baseline, YBR_FULL_422, downsample 4
per level, with the identifiers and descriptions of the real dataset (dataset.md §3.2) and the
OpenSlide property JSON in AcquisitionContextSequence (§3.3).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from marrowscope.errors import InputError
from marrowscope.io.atomic import atomic_dir
from marrowscope.io.slides.array import as_rgb_uint8

log = logging.getLogger(__name__)

SERIES_DESCRIPTION = "Bone marrow aspirate smear, May-Gruenwald-Giemsa stain"
STUDY_DESCRIPTION = "Bone marrow aspirate smear, pediatric leukemia"
MANUFACTURER = "marrowscope"
MODEL_NAME = "marrowscope synthetic slide writer"
LEVEL_FACTOR = 4
_STRIP_ROWS = 1024  # rows of the finer level reduced at a time (bounds temporary memory)


@dataclass(frozen=True)
class DicomSlideRef:
    """Where a written DICOM WSI series lies and what it is."""

    folder: Path
    study_uid: str
    series_uid: str
    base_sop_uid: str
    files: tuple[Path, ...]
    width: int
    height: int
    mpp: float

    @property
    def base_file(self) -> Path:
        """The base-level (level 0) instance: ``files`` are ordered finest level first."""
        return self.files[0]


def deterministic_uid(*parts: object) -> str:
    """A DICOM UID derived from ``parts`` (same parts, same UID), under pydicom's root."""
    from pydicom.uid import generate_uid

    return str(generate_uid(entropy_srcs=[str(p) for p in parts]))


class _UidSequence:
    """Zero-argument UID generator for wsidicomizer: deterministic given the seed text."""

    def __init__(self, seed: str) -> None:
        self._seed = seed
        self._n = 0

    def __call__(self) -> str:
        self._n += 1
        return deterministic_uid(self._seed, self._n)


def reduce_by(image: np.ndarray, factor: int, out_shape: tuple[int, int] | None = None) -> np.ndarray:
    """Box-filter ``image`` by an integer ``factor``, working in row strips.

    The image is treated as padded with white to ``out_shape * factor`` (default: the ceiling).
    """
    from PIL import Image

    h, w = image.shape[:2]
    oh, ow = out_shape if out_shape is not None else (math.ceil(h / factor), math.ceil(w / factor))
    if oh * factor < h or ow * factor < w:
        raise ValueError(f"out_shape {out_shape} too small for {h} x {w} / {factor}")
    out = np.full((oh, ow, 3), 255, dtype=np.uint8)
    strip = max(factor, (_STRIP_ROWS // factor) * factor)
    for y0 in range(0, h, strip):
        block = image[y0 : y0 + strip]
        bh = block.shape[0]
        ph, pw = math.ceil(bh / factor) * factor, ow * factor
        if (ph, pw) != block.shape[:2]:
            padded = np.full((ph, pw, 3), 255, dtype=np.uint8)
            padded[:bh, :w] = block
            block = padded
        oy = y0 // factor
        # PIL's reduce is the box mean (rounded), ~5x faster than a numpy reshape-sum
        out[oy : oy + ph // factor] = np.asarray(Image.fromarray(np.ascontiguousarray(block)).reduce(factor))
    return out


def padded_size(width: int, height: int, n_levels: int) -> tuple[int, int]:
    """The written level-0 size: rounded up to a multiple of ``4 ** (n_levels - 1)`` so that every
    level is exactly 4x smaller than the one above (wsidicom requires exact pyramid scales)."""
    m = LEVEL_FACTOR ** (n_levels - 1)
    return math.ceil(width / m) * m, math.ceil(height / m) * m


TileReader = Callable[[int, int, int, int], np.ndarray]
"""``read(x, y, width, height)`` -> (height, width, 3) uint8 RGB level-0 pixels of that region."""

_IN_MEMORY_BYTES = 512 * 2**20  # a coarser level larger than this is kept in a file (np.memmap), not RAM


def _blank(shape: tuple[int, ...], scratch: Path | None, name: str) -> np.ndarray:
    """A white (h, w, 3) uint8 array: in memory, or a temporary memory-mapped file when large."""
    if scratch is None or math.prod(shape) <= _IN_MEMORY_BYTES:
        return np.full(shape, 255, dtype=np.uint8)
    arr = np.lib.format.open_memmap(scratch / f"{name}.npy", mode="w+", dtype=np.uint8, shape=shape)
    arr[:] = 255
    return arr


def _white_pad(t: np.ndarray, tile: int) -> np.ndarray:
    if t.shape[:2] != (tile, tile):
        full = np.full((tile, tile, 3), 255, dtype=np.uint8)
        full[: t.shape[0], : t.shape[1]] = t
        return full
    return np.ascontiguousarray(t)


def _tiles(level: np.ndarray, shape: tuple[int, int], tile: int) -> Iterator[np.ndarray]:
    """Row-major tiles of ``level`` seen as padded with white to ``shape`` (tifffile tile iterator)."""
    for y in range(0, shape[0], tile):
        for x in range(0, shape[1], tile):
            yield _white_pad(level[y : y + tile, x : x + tile], tile)


def _write_tiff(read: TileReader, width: int, height: int, path: Path, *, mpp: float, tile_size: int,
                n_levels: int) -> None:
    """Losslessly compressed (zstd) tiled pyramid: the only lossy step is wsidicomizer's JPEG.

    Level 0 is read tile by tile from ``read`` (row-major) and each tile's 4x box-reduction goes into
    level 1 as it passes, so level 0 is never held whole; each coarser level is reduced from the one
    above (a temporary file beside ``path`` where it is large)."""
    import tifffile
    from PIL import Image

    res = 1e4 / mpp  # pixels per centimetre
    pw, ph = padded_size(width, height, n_levels)
    t = tile_size
    nxt = _blank((ph // LEVEL_FACTOR, pw // LEVEL_FACTOR, 3), path.parent, "level1") if n_levels > 1 else None
    q = t // LEVEL_FACTOR

    def level0() -> Iterator[np.ndarray]:
        for y in range(0, ph, t):
            for x in range(0, pw, t):
                w, h = min(t, width - x), min(t, height - y)
                blank = w <= 0 or h <= 0
                tile = np.full((t, t, 3), 255, np.uint8) if blank else _white_pad(read(x, y, w, h), t)
                if nxt is not None:
                    # PIL's reduce is the box mean (rounded), as reduce_by: tiles are multiples of 4
                    ly, lx = y // LEVEL_FACTOR, x // LEVEL_FACTOR
                    small = np.asarray(Image.fromarray(tile).reduce(LEVEL_FACTOR))
                    # (the last row and column of tiles reach past the padded size)
                    nxt[ly : ly + q, lx : lx + q] = small[: nxt.shape[0] - ly, : nxt.shape[1] - lx]
                yield tile

    def page(tiles: Iterator[np.ndarray], shape: tuple[int, int], i: int) -> None:
        f = LEVEL_FACTOR**i
        tw.write(tiles, shape=(*shape, 3), dtype=np.uint8, tile=(t, t), compression="zstd",
                 compressionargs={"level": 1}, photometric="rgb", subfiletype=0 if i == 0 else 1,
                 resolution=(res / f, res / f), resolutionunit="CENTIMETER", metadata=None)

    with tifffile.TiffWriter(path, bigtiff=pw * ph * 3 > 2**31) as tw:
        page(level0(), (ph, pw), 0)
        level = nxt
        for i in range(1, n_levels):
            assert level is not None
            f = LEVEL_FACTOR**i
            page(_tiles(level, (ph // f, pw // f), t), (ph // f, pw // f), i)
            if i + 1 < n_levels:
                level = reduce_by(level, LEVEL_FACTOR, (ph // (f * LEVEL_FACTOR), pw // (f * LEVEL_FACTOR)))


def _header_dataset(
    *,
    slide_id: str,
    patient_id: str,
    study_uid: str,
    series_uid: str,
    properties_json: str,
    patient_age: str | None,
    patient_sex: str | None,
) -> object:
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    from marrowscope.io.slides.dicom import openslide_properties_item

    ds = Dataset()
    ds.PatientID = patient_id
    if patient_age is not None:
        ds.PatientAge = patient_age
    if patient_sex is not None:
        ds.PatientSex = patient_sex
    ds.StudyInstanceUID = study_uid
    ds.StudyDescription = STUDY_DESCRIPTION
    ds.StudyID = slide_id[:16]
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = 1
    ds.SeriesDescription = SERIES_DESCRIPTION
    ds.ContainerIdentifier = slide_id
    ds.Manufacturer = MANUFACTURER
    ds.ManufacturerModelName = MODEL_NAME
    ds.AcquisitionContextSequence = Sequence([openslide_properties_item(properties_json)])
    return ds


def _metadata(slide_id: str, patient_id: str, patient_sex: str | None, mpp: float) -> object:
    from wsidicom.geometry import SizeMm
    from wsidicom.metadata import (
        Equipment,
        Image,
        Label,
        Patient,
        PatientSex,
        Pyramid,
        Series,
        Slide,
        Study,
        WsiMetadata,
    )

    sex = {"M": PatientSex.M, "F": PatientSex.F, "O": PatientSex.O}.get((patient_sex or "").upper())
    return WsiMetadata(
        study=Study(description=STUDY_DESCRIPTION),
        series=Series(number=1, description=SERIES_DESCRIPTION),
        patient=Patient(identifier=patient_id, sex=sex),
        equipment=Equipment(manufacturer=MANUFACTURER, model_name=MODEL_NAME),
        slide=Slide(identifier=slide_id),
        pyramid=Pyramid(image=Image(pixel_spacing=SizeMm(mpp / 1000.0, mpp / 1000.0)), optical_paths=[]),
        label=Label(),
    )


def write_dicom_wsi(
    image: np.ndarray,
    out_dir: Path,
    *,
    mpp: float,
    slide_id: str,
    patient_id: str,
    study_uid: str | None = None,
    tile_size: int = 256,
    n_levels: int = 3,
    jpeg_quality: int = 90,
    openslide_properties: Mapping[str, str] | None = None,
    patient_age: str | None = None,
    patient_sex: str | None = None,
    series_uid: str | None = None,
) -> DicomSlideRef:
    """Write ``image`` (H, W, 3 uint8 RGB) as a DICOM WSI series into the folder ``out_dir``.

    The written slide is ``padded_size(width, height, n_levels)``: the image padded with white at
    the right and bottom to a multiple of ``4 ** (n_levels - 1)`` px (exact pyramid scales);
    level-0 coordinates are unchanged. ``out_dir`` is replaced as a whole (atomically); it should
    be dedicated to this series, e.g. ``dicom/<PatientID>/<StudyInstanceUID>/SM_<SeriesUID>``.
    UIDs not given are derived deterministically from ``slide_id`` and ``patient_id``.
    ``openslide_properties`` (the MRXS's OpenSlide properties, e.g. ``openslide.bounds-x``) are
    stored as JSON in the header; when not
    given, mpp and zero bounds are stored.
    """
    rgb = as_rgb_uint8(image, Path(out_dir))
    return write_dicom_wsi_tiles(
        lambda x, y, w, h: rgb[y : y + h, x : x + w], rgb.shape[1], rgb.shape[0], out_dir, mpp=mpp,
        slide_id=slide_id, patient_id=patient_id, study_uid=study_uid, tile_size=tile_size, n_levels=n_levels,
        jpeg_quality=jpeg_quality, openslide_properties=openslide_properties, patient_age=patient_age,
        patient_sex=patient_sex, series_uid=series_uid)


def write_dicom_wsi_tiles(
    read: TileReader,
    width: int,
    height: int,
    out_dir: Path,
    *,
    mpp: float,
    slide_id: str,
    patient_id: str,
    study_uid: str | None = None,
    tile_size: int = 256,
    n_levels: int = 3,
    jpeg_quality: int = 90,
    openslide_properties: Mapping[str, str] | None = None,
    patient_age: str | None = None,
    patient_sex: str | None = None,
    series_uid: str | None = None,
) -> DicomSlideRef:
    """Write a ``width`` x ``height`` slide whose level-0 pixels come from ``read(x, y, w, h)`` as a DICOM
    WSI series, without ever holding the image: level 0 is asked for tile by tile (row-major, each tile
    once) and the coarser levels are built as it passes (in temporary files beside ``out_dir`` where
    large). Everything else as :func:`write_dicom_wsi`, which calls this with slices of its array."""
    from marrowscope.io.slides.dicom import quiet_dicom_imports

    quiet_dicom_imports()
    from wsidicom.codec import JpegSettings, Subsampling
    from wsidicomizer import WsiDicomizer

    out_dir = Path(out_dir)
    if width < 1 or height < 1:
        raise InputError(out_dir, f"slide size must be positive, got {width} x {height}")
    if not (mpp > 0 and math.isfinite(mpp)):
        raise InputError(out_dir, f"pixel size must be a positive number of µm/px, got {mpp}")
    if n_levels < 1:
        raise InputError(out_dir, f"n_levels must be at least 1, got {n_levels}")
    if not 1 <= jpeg_quality <= 100:
        raise InputError(out_dir, f"jpeg_quality must be 1..100, got {jpeg_quality}")
    if tile_size < 16 or tile_size % 16:
        raise InputError(out_dir, f"tile_size must be a positive multiple of 16, got {tile_size}")
    w, h = padded_size(width, height, n_levels)
    study_uid = study_uid or deterministic_uid("study", patient_id, slide_id)
    series_uid = series_uid or deterministic_uid("series", patient_id, slide_id)
    props = {
        "openslide.mpp-x": repr(float(mpp)),
        "openslide.mpp-y": repr(float(mpp)),
        "openslide.bounds-x": "0",
        "openslide.bounds-y": "0",
        "openslide.bounds-width": str(w),
        "openslide.bounds-height": str(h),
    }
    props.update({str(k): str(v) for k, v in (openslide_properties or {}).items()})
    header = _header_dataset(
        slide_id=slide_id,
        patient_id=patient_id,
        study_uid=study_uid,
        series_uid=series_uid,
        properties_json=json.dumps(props, sort_keys=True),
        patient_age=patient_age,
        patient_sex=patient_sex,
    )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".wsi-tiff-", dir=out_dir.parent) as tmp:
        tiff = Path(tmp) / f"{slide_id}.tif"
        _write_tiff(read, width, height, tiff, mpp=mpp, tile_size=tile_size, n_levels=n_levels)
        with atomic_dir(out_dir) as staging:
            WsiDicomizer.convert(
                tiff,
                staging,
                metadata=_metadata(slide_id, patient_id, patient_sex, mpp),  # type: ignore[arg-type]
                metadata_post_processor=header,  # type: ignore[arg-type]
                tile_size=tile_size,
                uid_generator=_UidSequence(f"{study_uid}/{series_uid}"),
                include_label=False,
                include_overview=False,
                include_thumbnail=False,
                workers=1,
                offset_table="eot",
                encoding=JpegSettings(quality=jpeg_quality, subsampling=Subsampling.R422),
                force_transcoding=True,
            )
            _rename_by_level(staging)
    files = tuple(sorted(out_dir.glob("*.dcm")))
    base_sop = _base_sop_uid(files)
    log.info("wrote DICOM WSI %s (%d x %d px, %d levels) to %s", slide_id, w, h, len(files), out_dir)
    return DicomSlideRef(
        folder=out_dir,
        study_uid=study_uid,
        series_uid=series_uid,
        base_sop_uid=base_sop,
        files=files,
        width=w,
        height=h,
        mpp=float(mpp),
    )


def _rename_by_level(folder: Path) -> None:
    """Name files ``level<k>_<SOPInstanceUID>.dcm`` (finest first) so listings read in pyramid order."""
    import pydicom

    entries = []
    for f in folder.glob("*.dcm"):
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        entries.append((-int(ds.TotalPixelMatrixColumns), str(ds.SOPInstanceUID), f))
    for k, (_, uid, f) in enumerate(sorted(entries)):
        shutil.move(f, folder / f"level{k}_{uid}.dcm")


def _base_sop_uid(files: tuple[Path, ...]) -> str:
    import pydicom

    best: tuple[int, str] | None = None
    for f in files:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        cols = int(ds.TotalPixelMatrixColumns)
        if best is None or cols > best[0]:
            best = (cols, str(ds.SOPInstanceUID))
    if best is None:
        raise InputError(files, "no DICOM instance was written")
    return best[1]
