"""ROI patch cache: each annotated ROI (plus a context margin) read once from its slide at the µm/px a
model needs, stored compressed with a JSON index; training and evaluation read the cache.

    store = build_roi_cache(cohort.patients, "OUT/patches", mpps=(0.25, 0.45))
    samples = cohort_samples(root, ("cell",), cache=store)      # detector ROIs from the cache
    crops = store.crops(cells, mpp=0.45, size=80)                 # classifier crops from the cache

Layout: ``ROOT/index.json`` (one entry per patch: patient, slide, ROI box in level-0 px, the level-0
position of the patch's first pixel, its mpp and shape, codec, file, bytes, and a fingerprint of the
slide it was read from) and ``ROOT/<key>.<ext>`` (H, W, 3) uint8. The key hashes the slide fingerprint,
the ROI box, the mpp, the margin and the codec, so a changed slide or setting is a new patch and a cache
can be shared by runs and stages. Writes are atomic: an interrupted build leaves complete patches and an
index that lists only them.

Codecs (:data:`marrowscope.io.patch_codec.CODECS`): ``webp90`` (the default: lossy WebP at quality
90), ``jpegNN`` (JPEG at quality NN, 4:2:0), ``png`` (lossless) and, read only, ``npy`` (the raw arrays
of version-1 caches). The slides are JPEG already (the dataset's frames: JPEG Baseline 4:2:2, ~18:1),
so a lossless cache of their decoded pixels at a model's scale is larger than the frames it replaces;
lossy WebP at quality 90 keeps each patch within ~38-40 dB PSNR of the direct read (closer than JPEG
q90) at ~65 % of JPEG's bytes (``benchmarks/bench_patch_cache.py`` measures both; docs/reproduction.md).
``png`` serves where the pixels must stay exact (the level-0 ROIs of an ROI-only download).

A patch covers the ROI plus ``context_um`` on each side (clipped to the slide), so cells on the ROI edge
keep their context in classifier crops; detector inputs need no margin (``context_um=0``).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from marrowscope.cells import Box, Cell
from marrowscope.errors import InputError
from marrowscope.io.atomic import atomic_path, write_text_atomic
from marrowscope.io.patch_codec import DEFAULT_CODEC, EXT, decode_patch, encode_patch, parse_codec

log = logging.getLogger(__name__)

INDEX = "index.json"
VERSION = 2
READS_VERSIONS = (1, 2)  # version 1: raw .npy patches (codec "npy")


@dataclass(frozen=True)
class PatchEntry:
    key: str
    patient_id: str
    slide_id: str
    roi: tuple[float, float, float, float]  # the ROI, level-0 px of the slide (x1, y1, x2, y2)
    origin: tuple[float, float]  # level-0 position of the patch's pixel (0, 0) corner
    mpp: float  # µm/px of the patch
    level0_mpp: float  # µm/px of the slide's level 0
    width: int
    height: int
    file: str  # relative to the store
    nbytes: int  # bytes of the file
    source: str  # fingerprint of the slide read
    codec: str = "npy"  # see CODECS (version-1 indexes have no codec: raw .npy)

    @property
    def scale(self) -> float:
        """Level-0 pixels per patch pixel."""
        return self.mpp / self.level0_mpp

    def to_patch(self, x: float, y: float) -> tuple[float, float]:
        """A level-0 point in patch pixels."""
        return (x - self.origin[0]) / self.scale, (y - self.origin[1]) / self.scale

    def roi_window(self) -> tuple[int, int, int, int]:
        """The ROI inside the patch: (x, y, width, height) in patch pixels."""
        x0, y0 = self.to_patch(self.roi[0], self.roi[1])
        x1, y1 = self.to_patch(self.roi[2], self.roi[3])
        ix0, iy0 = max(0, round(x0)), max(0, round(y0))
        return ix0, iy0, min(self.width, round(x1)) - ix0, min(self.height, round(y1)) - iy0

    def contains(self, x: float, y: float) -> bool:
        return self.roi[0] <= x < self.roi[2] and self.roi[1] <= y < self.roi[3]


def slide_fingerprint(entry: Any) -> str:
    """A cheap fingerprint of a cohort slide (series UID, file names and sizes; no content read)."""
    h = hashlib.sha256(f"{entry.series_uid}|{entry.slide_id}".encode())
    for f in entry.slide_files:
        p = Path(f)
        h.update(f"|{p.name}:{p.stat().st_size}".encode())
    return h.hexdigest()[:20]


def patch_key(
    source: str, roi: Sequence[float], mpp: float, context_um: float, codec: str = DEFAULT_CODEC
) -> str:
    text = json.dumps(
        [VERSION, source, [round(float(v), 3) for v in roi], round(mpp, 6), round(context_um, 3), codec]
    )
    return hashlib.sha256(text.encode()).hexdigest()[:24]


class PatchStore:
    """The cache folder (see the module docstring). ``bytes_read`` counts the patch file bytes read."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.entries: dict[str, PatchEntry] = {}
        self.bytes_read = 0
        path = self.root / INDEX
        if path.is_file():
            try:
                d = json.loads(path.read_text())
            except ValueError as e:
                raise InputError(path, f"patch cache index is not valid JSON ({e}); remove the folder") from e
            if d.get("version") not in READS_VERSIONS:
                raise InputError(
                    path,
                    f"patch cache version {d.get('version')} (this version reads "
                    f"{', '.join(map(str, READS_VERSIONS))}); use a new cache folder",
                )
            for row in d["patches"]:
                pe = PatchEntry(**{**row, "roi": tuple(row["roi"]), "origin": tuple(row["origin"])})
                if (self.root / pe.file).is_file():
                    self.entries[pe.key] = pe

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, key: object) -> bool:
        return key in self.entries

    def find(
        self, *, patient_id: str | None = None, slide_id: str | None = None, mpp: float | None = None
    ) -> list[PatchEntry]:
        out = [
            e
            for e in self.entries.values()
            if (patient_id is None or e.patient_id == patient_id)
            and (slide_id is None or e.slide_id == slide_id)
            and (mpp is None or abs(e.mpp - mpp) < 1e-9)
        ]
        return sorted(out, key=lambda e: (e.slide_id, e.roi))

    def lookup(
        self, source: str, roi: Sequence[float], mpp: float, context_um: float
    ) -> PatchEntry | None:
        """The patch of ``roi`` at ``mpp`` with ``context_um`` in any codec (the default one first)."""
        codecs = [DEFAULT_CODEC, *sorted({e.codec for e in self.entries.values()} - {DEFAULT_CODEC})]
        for c in codecs:
            e = self.entries.get(patch_key(source, roi, mpp, context_um, c))
            if e is not None:
                return e
        return None

    def add(self, entry: PatchEntry, array: np.ndarray) -> PatchEntry:
        """Encode ``array`` with ``entry.codec`` into ``entry.file``; returns the entry with its size."""
        data = encode_patch(array, entry.codec)
        with atomic_path(self.root / entry.file, suffix=".part") as tmp:
            Path(tmp).write_bytes(data)
        entry = replace(entry, nbytes=len(data))
        self.entries[entry.key] = entry
        self._write_index()
        return entry

    def _write_index(self) -> None:
        doc = {
            "version": VERSION,
            "patches": [asdict(e) for e in sorted(self.entries.values(), key=lambda e: e.key)],
        }
        write_text_atomic(self.root / INDEX, json.dumps(doc, indent=1) + "\n")

    def read(self, entry: PatchEntry | str) -> np.ndarray:
        """The whole patch, decoded."""
        e = self.entries[entry] if isinstance(entry, str) else entry
        data = (self.root / e.file).read_bytes()
        self.bytes_read += len(data)
        return decode_patch(data, e.codec)

    def roi_image(self, entry: PatchEntry) -> np.ndarray:
        """The ROI alone (margin cut off)."""
        x, y, w, h = entry.roi_window()
        return np.ascontiguousarray(self.read(entry)[y : y + h, x : x + w])

    def crops(self, cells: Iterable[Cell | Box], *, slide_id: str, mpp: float, size: int) -> np.ndarray:
        """Classifier crops (same contract as :func:`marrowscope.data.crops.crops_from_slide`) of a slide's
        cells, each cut from the cached patch of the ROI that holds its centre (finest patch not coarser
        than ``mpp``). A cell in no cached ROI raises :class:`KeyError`."""
        out, found = self.crops_in_rois(cells, slide_id=slide_id, mpp=mpp, size=size)
        if not found.all():
            raise KeyError(f"{slide_id}: {int((~found).sum())} cell(s) in no cached ROI at <= {mpp} µm/px")
        return out

    def crops_in_rois(
        self, cells: Iterable[Cell | Box], *, slide_id: str, mpp: float, size: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """As :meth:`crops`, plus a mask of the cells found in a cached ROI; the crops of the others are
        left white (255) for the caller to fill (e.g. from the slide) or drop."""
        from marrowscope.data.crops import crop_at
        from marrowscope.io.slides.array import ArraySlide

        patches = [e for e in self.find(slide_id=slide_id) if e.mpp <= mpp + 1e-9]
        readers: dict[str, ArraySlide] = {}
        boxes = [c.box if isinstance(c, Cell) else c for c in cells]
        out = np.full((len(boxes), size, size, 3), 255, dtype=np.uint8)
        found = np.zeros(len(boxes), dtype=bool)
        for k, b in enumerate(boxes):
            cx, cy = b.center
            inside = [e for e in patches if e.contains(cx, cy)]
            if not inside:
                continue
            e = max(inside, key=lambda p: p.mpp)
            if e.key not in readers:
                readers[e.key] = ArraySlide(self.read(e), mpp=e.mpp, slide_id=e.key, levels=1)
            px, py = e.to_patch(cx, cy)
            out[k] = crop_at(readers[e.key], px, py, mpp=mpp, size=size)
            found[k] = True
        return out, found


def _rois_of(entry: Any) -> tuple[Any, ...]:
    from marrowscope.io.cohort import load_patient_annotations

    try:
        return tuple(load_patient_annotations(entry, "roi").regions)
    except InputError:
        pass
    if entry.csv_annotations is not None and entry.csv_annotations.regions:
        return tuple(load_patient_annotations(entry, "csv").regions)
    return ()


def add_slide_rois(
    store: PatchStore,
    slide: Any,
    *,
    patient_id: str,
    slide_id: str,
    source: str,
    regions: Sequence[Any],
    mpps: Sequence[float],
    context_um: float = 25.0,
    pairs: bool = False,
    codec: str = DEFAULT_CODEC,
) -> list[PatchEntry]:
    """Read ``regions`` (level-0 ROIs of the open ``slide``, any :class:`SlideReader`, e.g. a DICOMweb
    one) plus ``context_um`` at each of ``mpps`` into ``store`` as ``codec`` files; patches already there
    are skipped. ``pairs``: ``regions`` and ``mpps`` are zipped instead of crossed."""
    parse_codec(codec)
    info = slide.info
    if info.mpp is None:
        raise InputError(slide_id, "slide has no pixel size; the ROI cache needs one")
    margin0 = context_um / info.mpp
    todo = list(zip(regions, mpps, strict=True)) if pairs else [(r, m) for r in regions for m in mpps]
    added = []
    for region, m in todo:
        b = region.box
        key = patch_key(source, b.as_tuple(), m, context_um, codec)
        if key in store:
            continue
        x0, y0 = max(0.0, b.x1 - margin0), max(0.0, b.y1 - margin0)
        x1, y1 = min(float(info.width), b.x2 + margin0), min(float(info.height), b.y2 + margin0)
        # start on the pixel grid of the level the resampled read uses (a level-0 position inside a
        # level pixel would shift the patch by up to a level pixel against its recorded origin)
        ds = float(info.level_for_mpp(m).downsample) if abs(m - info.mpp) >= 1e-9 else 1.0
        x0, y0 = float(np.floor(x0 / ds) * ds), float(np.floor(y0 / ds) * ds)
        if abs(m - info.mpp) < 1e-9:  # the slide's own scale: plain level-0 pixels
            arr = slide.read_region(int(x0), int(y0), int(np.ceil(x1 - x0)), int(np.ceil(y1 - y0)), level=0)
        else:
            arr = slide.read_region_mpp(x0, y0, x1 - x0, y1 - y0, m)
        arr = np.ascontiguousarray(np.asarray(arr)[..., :3])
        entry = PatchEntry(
            key=key,
            patient_id=patient_id,
            slide_id=slide_id,
            roi=b.as_tuple(),
            origin=(x0, y0),
            mpp=float(m),
            level0_mpp=float(info.mpp),
            width=int(arr.shape[1]),
            height=int(arr.shape[0]),
            file=f"{key}.{EXT[parse_codec(codec)[0]]}",
            nbytes=0,
            source=source,
            codec=codec,
        )
        added.append(store.add(entry, arr))
    return added


def build_roi_cache(
    entries: Sequence[Any],
    root: str | Path,
    *,
    mpps: Sequence[float],
    context_um: float = 25.0,
    codec: str = DEFAULT_CODEC,
    progress: bool = False,
) -> PatchStore:
    """Read every ROI of the cohort ``entries`` (:class:`~marrowscope.io.cohort.PatientEntry`) once per
    ``mpps`` into the store at ``root`` as ``codec`` files; patches already there are kept (an
    interrupted build resumes). A slide without ROIs is logged and skipped."""
    from tqdm import tqdm

    from marrowscope.io.slides import open_slide

    store = PatchStore(root)
    store.root.mkdir(parents=True, exist_ok=True)
    for entry in tqdm(entries, desc="ROI cache", unit="slide", disable=not progress, leave=False):
        rois = _rois_of(entry)
        if not rois:
            log.warning("patient %s: no ROI to cache", entry.patient_id)
            continue
        source = slide_fingerprint(entry)
        todo = [
            (r, m)
            for r in rois
            for m in mpps
            if patch_key(source, r.box.as_tuple(), m, context_um, codec) not in store
        ]
        if not todo:
            continue
        with open_slide([Path(f) for f in entry.slide_files]) as slide:
            add_slide_rois(
                store,
                slide,
                patient_id=entry.patient_id,
                slide_id=entry.slide_id,
                source=source,
                regions=[r for r, _ in todo],
                mpps=[m for _, m in todo],
                context_um=context_um,
                pairs=True,
                codec=codec,
            )
    return store


def cache_summary(store: PatchStore) -> Mapping[str, Any]:
    by_mpp: dict[float, list[PatchEntry]] = {}
    for e in store.entries.values():
        by_mpp.setdefault(e.mpp, []).append(e)
    return {
        "n_patches": len(store),
        "codecs": sorted({e.codec for e in store.entries.values()}),
        "bytes": sum(e.nbytes for e in store.entries.values()),
        "by_mpp": {
            str(m): {"n": len(v), "bytes": sum(e.nbytes for e in v)} for m, v in sorted(by_mpp.items())
        },
    }
