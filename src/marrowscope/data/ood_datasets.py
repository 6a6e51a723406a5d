"""Out-of-domain evaluation sets: single-cell crops from other labs, at a classifier's contract.

Formats (``FORMAT:PATH``, also accepted by ``marrowscope evaluate classifier``):

- ``bccd-wbc:PATH`` — BCCD fields (``PATH`` = the folder holding ``BCCD/`` and
  ``wbc_subtype_labels.csv``, or the VOC root itself with the CSV beside it or one level up). **Rule:**
  a field is used when it has exactly one ``WBC`` box and exactly one subtype label; the crop is the
  contract field (``input_size * mpp`` µm, e.g. 64 px x 0.45 = 28.8 µm) centred on the box centre,
  with the field's surroundings as context and white outside the image. Fields without a subtype,
  with two or more subtypes (``"NEUTROPHIL, EOSINOPHIL"``), without a WBC box or with two or more
  WBC boxes are skipped and **counted** (``EvalCrops.skipped``). BCCD has no recorded pixel size:
  its red cells (~7.5 µm) have a median box side of 102 px (``estimate_mpp`` over all 337 fields
  gives 0.0735 µm/px), so :data:`BCCD_MPP` is 0.075 µm/px, the scale ``detector-blood`` uses too.
- ``matek:PATH`` — the Matek et al. bone-marrow crops (TCIA "Bone-Marrow-Cytomorphology"): either the
  TCIA layout ``CODE/.../CODE_00001.jpg`` (a top folder per code, any sub-folders) or flat folders of
  files named ``CODE_<n>.<ext>`` (e.g. ``../shared/data/matek_bm_samples/images``). The code is the
  file-name prefix; every one of the 21 codes maps through ``taxonomy.map_external("matek", ...)``;
  an unknown code, or a file whose prefix disagrees with its code folder, is a one-line
  :class:`~marrowscope.errors.InputError` naming the file and the label. 250 px crops, taken to be
  :data:`~marrowscope.data.crops.MATEK_MPP` µm/px.
- ``txl-pbc:PATH[:SOURCE]`` — TXL-PBC (``PATH`` = the folder with ``manifest.csv`` and ``TXL_PBC/``)
  split by its source dataset (``manifest.csv`` column ``source_inferred_from_size``): for
  classification the fields that carry a PBC cell type (source PBC) with exactly one WBC box, cropped
  around that box like BCCD; ``SOURCE`` (``bccd``, ``bcd``, ``pbc``, ``raabin``) restricts to one source.
  :func:`txl_detection_by_source` gives the detection samples per source.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from marrowscope.data.scale import RED_CELL_UM
from marrowscope.errors import InputError
from marrowscope.io.formats import DATASET_IMAGE_SUFFIXES
from marrowscope.taxonomy import UnknownLabelError

log = logging.getLogger(__name__)

#: µm/px taken for BCCD's 640 x 480 fields (red-cell size; the detector-blood scale)
BCCD_MPP = 0.075
OOD_FORMATS = ("bccd-wbc", "matek", "txl-pbc")
TXL_SOURCES: Mapping[str, str] = {
    "bccd": "BCCD", "bcd": "BCD (Kaggle blood cell detection)", "pbc": "PBC", "raabin": "Raabin-WBC",
}


@dataclass(frozen=True)
class EvalCrops:
    """Contract crops with taxonomy truth labels. ``source_labels``: the dataset's own labels;
    ``groups``: the sub-source of each crop (e.g. TXL-PBC's source dataset); ``skipped``: counts of
    items left out by the adapter's rule, by reason."""

    images: np.ndarray  # (N, S, S, 3) uint8
    labels: tuple[str, ...]
    source_labels: tuple[str, ...]
    ids: tuple[str, ...]
    groups: tuple[str, ...] = ()
    skipped: Mapping[str, int] = field(default_factory=dict)
    src_mpp: float | None = None

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def summary(self) -> dict[str, object]:
        counts: dict[str, int] = {}
        for lab in self.source_labels:
            counts[lab] = counts.get(lab, 0) + 1
        return {"n": len(self), "by_label": dict(sorted(counts.items())), "skipped": dict(self.skipped),
                "src_mpp": self.src_mpp}


def _count(d: dict[str, int], key: str) -> None:
    d[key] = d.get(key, 0) + 1


def _crops_around(items: Sequence[tuple[Path, tuple[float, float]]], *, src_mpp: float, mpp: float,
                  size: int) -> np.ndarray:
    from marrowscope.data.crops import image_to_contract, load_image_rgb

    out = np.empty((len(items), size, size, 3), dtype=np.uint8)
    for k, (path, centre) in enumerate(items):
        out[k] = image_to_contract(load_image_rgb(path), src_mpp=src_mpp, mpp=mpp, size=size, center=centre)
    return out


# --- BCCD single-WBC fields -----------------------------------------------------------------------------
def _bccd_paths(root: Path) -> tuple[Path, Path]:
    """(VOC root, subtype CSV) of a BCCD folder."""
    for voc in (root / "BCCD", root):
        if (voc / "Annotations").is_dir():
            for csv_path in (voc / "wbc_subtype_labels.csv", voc.parent / "wbc_subtype_labels.csv"):
                if csv_path.is_file():
                    return voc, csv_path
            raise InputError(root, "no wbc_subtype_labels.csv beside the BCCD folder; bccd-wbc needs the "
                                   "per-image WBC subtype labels (Kaggle/BCCD labels.csv)")
    raise InputError(root, "not a BCCD folder: no BCCD/Annotations or Annotations/ inside")


def read_bccd_subtypes(csv_path: Path) -> dict[str, list[str]]:
    """``BloodImage_%05d`` -> its subtype labels (empty list when blank)."""
    out: dict[str, list[str]] = {}
    with csv_path.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            raw_id = (row.get("Image") or "").strip()
            if not raw_id:
                continue
            try:
                key = f"BloodImage_{int(float(raw_id)):05d}"
            except ValueError as e:
                raise InputError(csv_path, f"Image id {raw_id!r} is not a number") from e
            out[key] = [p.strip() for p in (row.get("Category") or "").split(",") if p.strip()]
    return out


def bccd_wbc_crops(root: str | Path, *, mpp: float, size: int, src_mpp: float = BCCD_MPP,
                   split: str | None = None) -> EvalCrops:
    """BCCD fields with exactly one WBC box and one subtype label, cropped around the box (see the
    module docstring for the rule); skipped fields are counted by reason."""
    from marrowscope import taxonomy
    from marrowscope.io.annotations.voc import read_voc_folder

    voc, csv_path = _bccd_paths(Path(root))
    subtypes = read_bccd_subtypes(csv_path)
    skipped: dict[str, int] = {}
    items: list[tuple[Path, tuple[float, float]]] = []
    labels: list[str] = []
    source: list[str] = []
    for ann in read_voc_folder(voc, split, clip=True):
        stem = Path(ann.image_path or ann.slide_id or "").stem
        wbcs = [c for c in ann.cells if (c.label or "").strip().lower() == "wbc"]
        subs = subtypes.get(stem)
        if subs is None or not subs:
            _count(skipped, "no subtype label")
            continue
        if len(subs) > 1:
            _count(skipped, "two or more subtype labels")
            continue
        if not wbcs:
            _count(skipped, "no WBC box")
            continue
        if len(wbcs) > 1:
            _count(skipped, "two or more WBC boxes")
            continue
        try:
            lab = taxonomy.map_external("bccd", subs[0])
        except UnknownLabelError as e:
            raise InputError(csv_path, f"{stem}: unknown BCCD subtype label {subs[0]!r}; known: neutrophil, "
                                       "eosinophil, lymphocyte, monocyte, basophil") from e
        if ann.image_path is None:
            raise InputError(stem, "VOC annotation without an image file")
        items.append((Path(ann.image_path), wbcs[0].box.center))
        labels.append(lab)
        source.append(subs[0].strip().lower())
    if not items:
        raise InputError(root, f"no BCCD field with exactly one WBC box and one subtype label (skipped: "
                               f"{skipped})")
    images = _crops_around(items, src_mpp=src_mpp, mpp=mpp, size=size)
    log.info("bccd-wbc: %d crops; skipped %s", len(items), skipped)
    return EvalCrops(images=images, labels=tuple(labels), source_labels=tuple(source),
                     ids=tuple(str(p) for p, _ in items), groups=tuple("bccd" for _ in items),
                     skipped=skipped, src_mpp=src_mpp)


# --- Matek / TCIA bone-marrow crops ----------------------------------------------------------------------
def matek_code(path: Path, root: Path) -> str:
    """The Matek code of a crop file: its name prefix, checked against a code folder above it."""
    from marrowscope import taxonomy

    code = path.stem.split("_")[0].strip().upper()
    try:
        taxonomy.map_external("matek", code)
    except UnknownLabelError as e:
        raise InputError(path, f"unknown Matek code {code!r} (file names must start with one of the 21 "
                               "codes, e.g. BLA_00001.jpg)") from e
    rel = path.relative_to(root).parts[:-1]
    if rel:
        top = rel[0].strip().upper()
        try:
            taxonomy.map_external("matek", top)
        except UnknownLabelError:
            top = ""
        if top and top != code:
            raise InputError(path, f"file label {code!r} disagrees with its code folder {rel[0]!r}")
    return code


def matek_crops(root: str | Path, *, mpp: float, size: int, src_mpp: float | None = None) -> EvalCrops:
    """Matek crops of either layout (see the module docstring), labels through the taxonomy."""
    from marrowscope import taxonomy
    from marrowscope.data.crops import MATEK_MPP, images_to_contract

    base = Path(root)
    if not base.is_dir():
        raise InputError(base, "not a folder; matek: needs a folder of CODE/ folders or CODE_<n>.jpg files")
    files = sorted(p for p in base.rglob("*") if p.is_file() and p.suffix.lower() in DATASET_IMAGE_SUFFIXES)
    if not files:
        raise InputError(base, "no images found (expected CODE/.../CODE_00001.jpg or CODE_<n>.jpg files)")
    codes = [matek_code(p, base) for p in files]
    labels = [taxonomy.map_external("matek", c) for c in codes]
    s_mpp = float(src_mpp or MATEK_MPP)
    images = images_to_contract(files, src_mpp=s_mpp, mpp=mpp, size=size)
    return EvalCrops(images=images, labels=tuple(labels), source_labels=tuple(codes),
                     ids=tuple(str(p) for p in files), groups=tuple("matek" for _ in files), src_mpp=s_mpp)


# --- TXL-PBC by source --------------------------------------------------------------------------------
def _txl_root(root: Path) -> tuple[Path, Path]:
    for base in (root, root.parent):
        if (base / "manifest.csv").is_file() and (base / "TXL_PBC").is_dir():
            return base, base / "manifest.csv"
    raise InputError(root, "not a TXL-PBC folder: needs manifest.csv and TXL_PBC/ (images, labels)")


def txl_source_key(source: str) -> str:
    """Short key (bccd, bcd, pbc, raabin) of a ``source_inferred_from_size`` value."""
    for k, v in TXL_SOURCES.items():
        if source.strip().lower() in (k, v.lower()):
            return k
    raise InputError(source, f"unknown TXL-PBC source; known: {', '.join(TXL_SOURCES.values())}")


def read_txl_manifest(root: str | Path, splits: Sequence[str] = ("train", "val")) -> list[dict[str, str]]:
    base, manifest = _txl_root(Path(root))
    with manifest.open(newline="", encoding="utf-8") as fh:
        rows = [dict(r) for r in csv.DictReader(fh)]
    need = {"path", "label_path", "split", "source_inferred_from_size"}
    if rows and not need <= set(rows[0]):
        raise InputError(manifest, f"manifest lacks columns {sorted(need - set(rows[0]))}")
    out = []
    for r in rows:
        if r["split"] not in splits:
            continue
        r["source"] = txl_source_key(r["source_inferred_from_size"])
        r["abs_path"] = str(base / r["path"])
        r["abs_label_path"] = str(base / r["label_path"])
        out.append(r)
    return out


def _yolo_wbc_centres(label_path: Path, width: int, height: int, wbc_class: int = 0
                      ) -> list[tuple[float, float]]:
    out = []
    for ln in label_path.read_text(encoding="utf-8").splitlines():
        parts = ln.split()
        if len(parts) >= 5 and int(float(parts[0])) == wbc_class:
            out.append((float(parts[1]) * width, float(parts[2]) * height))
    return out


def txl_cell_crops(root: str | Path, *, mpp: float, size: int, source: str | None = None,
                   src_mpp: float | None = None, splits: Sequence[str] = ("train", "val")) -> EvalCrops:
    """TXL-PBC fields that carry a cell type (``pbc_cell_type``) and exactly one WBC box, cropped
    around it; ``groups`` = source key. PBC-derived fields are at :data:`~marrowscope.data.crops.PBC_MPP`."""
    from marrowscope import taxonomy
    from marrowscope.data.crops import PBC_MPP

    rows = read_txl_manifest(root, splits)
    if source is not None:
        key = txl_source_key(source)
        rows = [r for r in rows if r["source"] == key]
    skipped: dict[str, int] = {}
    items: list[tuple[Path, tuple[float, float]]] = []
    labels: list[str] = []
    raw: list[str] = []
    groups: list[str] = []
    for r in rows:
        ct = (r.get("pbc_cell_type") or "").strip()
        if not ct:
            _count(skipped, f"{r['source']}: no cell type")
            continue
        try:
            lab = taxonomy.map_external("txl", ct)
        except UnknownLabelError as e:
            raise InputError(r["abs_path"], f"unknown TXL-PBC cell type {ct!r}") from e
        centres = _yolo_wbc_centres(Path(r["abs_label_path"]), int(r["width"]), int(r["height"]))
        if len(centres) != 1:
            _count(skipped, f"{r['source']}: {'no' if not centres else 'two or more'} WBC box(es)")
            continue
        items.append((Path(r["abs_path"]), centres[0]))
        labels.append(lab)
        raw.append(ct)
        groups.append(r["source"])
    if not items:
        raise InputError(root, f"no TXL-PBC field with a cell type and one WBC box (skipped: {skipped})")
    s_mpp = float(src_mpp or PBC_MPP)
    images = _crops_around(items, src_mpp=s_mpp, mpp=mpp, size=size)
    return EvalCrops(images=images, labels=tuple(labels), source_labels=tuple(raw),
                     ids=tuple(str(p) for p, _ in items), groups=tuple(groups), skipped=skipped,
                     src_mpp=s_mpp)


def txl_detection_by_source(root: str | Path, classes: Sequence[str], *, splits: Sequence[str] = ("val",),
                            mpp: Mapping[str, float] | None = None,
                            mapping: Mapping[str, str | None] | None = None) -> dict[str, list[Any]]:
    """TXL-PBC detection samples (``DetectionSample``) grouped by source key; ``mpp``: per source key
    (e.g. PBC fields at 0.1 µm/px, the others at the blood-field scale)."""
    from dataclasses import replace

    from marrowscope.data.detection_datasets import yolo_samples

    base, _ = _txl_root(Path(root))
    rows = read_txl_manifest(base, splits)
    src_of = {Path(r["abs_path"]).stem: r["source"] for r in rows}
    out: dict[str, list[Any]] = {}
    for sp in splits:
        for s in yolo_samples(base / "TXL_PBC", classes, sp, mapping=mapping):
            k = src_of.get(s.image_id)
            if k is not None:
                out.setdefault(k, []).append(replace(s, mpp=(mpp or {}).get(k)))
    return dict(sorted(out.items()))




def txl_source_scales(root: str | Path, *, splits: Sequence[str] = ("train", "val")) -> dict[str, float]:
    """µm/px of each TXL-PBC source read from its own red-cell boxes (median box side = 7.5 µm), for
    fields that carry no pixel size (JPEGs from four labs and scanners)."""
    from marrowscope.data.detection_datasets import BLOOD_CLASSES, estimate_mpp

    by = txl_detection_by_source(root, BLOOD_CLASSES, splits=splits)
    out = {}
    for k, v in by.items():
        m = estimate_mpp([s.annotations for s in v], "RBC", RED_CELL_UM)
        if m is not None:
            out[k] = m
    return out


# --- one entry point -------------------------------------------------------------------------------------
def parse_ood_arg(arg: str) -> tuple[str, Path, str | None] | None:
    """``bccd-wbc:PATH``, ``matek:PATH``, ``txl-pbc:PATH[:SOURCE]`` -> (format, path, extra); None when
    ``arg`` is not one of these formats."""
    fmt, sep, rest = arg.partition(":")
    if not sep or fmt.lower() not in OOD_FORMATS:
        return None
    extra = None
    if not Path(rest).exists() and ":" in rest:
        rest, _, extra = rest.rpartition(":")
    return fmt.lower(), Path(rest), extra or None


def load_eval_crops(arg: str, *, mpp: float, size: int, src_mpp: float | None = None) -> EvalCrops:
    """Crops of an out-of-domain set given as ``FORMAT:PATH`` at the contract ``(size, mpp)``."""
    parsed = parse_ood_arg(arg)
    if parsed is None:
        known = ", ".join(f + ":PATH" for f in OOD_FORMATS)
        raise InputError(arg, f"not an out-of-domain crop set; use one of {known}")
    fmt, path, extra = parsed
    if not path.exists():
        raise InputError(path, "dataset path not found")
    if fmt == "bccd-wbc":
        return bccd_wbc_crops(path, mpp=mpp, size=size, src_mpp=src_mpp or BCCD_MPP, split=extra)
    if fmt == "matek":
        return matek_crops(path, mpp=mpp, size=size, src_mpp=src_mpp)
    return txl_cell_crops(path, mpp=mpp, size=size, source=extra, src_mpp=src_mpp)
