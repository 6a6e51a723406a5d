"""Detection datasets: every format becomes a list of :class:`DetectionSample`.

A sample is an image loader plus :class:`CellAnnotations` whose labels are the MODEL's class names,
the image's scale (mpp, ``None`` = already at the model's scale) and a group id (patient or image) that
train/validation splits keep together.

    samples = load_detection_dataset("yolo:../shared/data/txl_pbc/TXL_PBC", ("WBC", "RBC", "Platelet"))

Formats: ``voc:PATH[:SPLIT]``, ``yolo:PATH[:SPLIT]``, ``coco:JSON[:IMAGES_ROOT]``, ``cohort:DIR``.
Class names are matched case-insensitively and ignoring a plural ``s`` (``Platelets`` -> ``Platelet``);
a one-class model (e.g. ``cell``) takes every box.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from marrowscope.cells import CellAnnotations
from marrowscope.data.crops import load_image_rgb
from marrowscope.errors import InputError

logger = logging.getLogger(__name__)

FORMATS: tuple[str, ...] = ("voc", "yolo", "coco", "cohort")
_CACHE_CONTEXT_UM = 25.0  # the patch cache's default context margin


load_rgb = load_image_rgb  # an image file as RGB uint8 (H, W, 3); kept as this module's public name


@dataclass(frozen=True)
class DetectionSample:
    """One training/evaluation image: its boxes (labels = model classes), scale and split group."""

    image_id: str
    annotations: CellAnnotations
    group: str
    mpp: float | None = None
    loader: Callable[[], np.ndarray] | None = None

    def load(self) -> np.ndarray:
        if self.loader is not None:
            return self.loader()
        if self.annotations.image_path is None:
            raise InputError(self.image_id, "sample has neither a loader nor an image path")
        return load_rgb(self.annotations.image_path)


def _norm(name: str) -> str:
    k = name.strip().lower().replace(" ", "_").replace("-", "_")
    return k[:-1] if k.endswith("s") and len(k) > 3 else k


def class_mapping(dataset_labels: Sequence[str], classes: Sequence[str],
                  mapping: Mapping[str, str | None] | None = None) -> dict[str, str | None]:
    """Map dataset label names to model classes (``None`` = drop the box).

    Explicit ``mapping`` first (its names matched case/plural-insensitively too); else the same match
    against ``classes``; a one-class model takes every
    label. Labels that match nothing raise :class:`InputError` naming them."""
    mapping = dict(mapping or {})
    mapped = {_norm(k): v for k, v in mapping.items()}
    by_norm = {_norm(c): c for c in classes}
    out: dict[str, str | None] = {}
    unknown = []
    for lab in dataset_labels:
        if lab in mapping:
            out[lab] = mapping[lab]
        elif _norm(lab) in mapped:  # "Platelets" as "Platelet="
            out[lab] = mapped[_norm(lab)]
        elif _norm(lab) in by_norm:
            out[lab] = by_norm[_norm(lab)]
        elif len(classes) == 1:
            out[lab] = classes[0]
        else:
            unknown.append(lab)
    if unknown:
        raise InputError(
            "labels",
            f"dataset labels {sorted(set(unknown))} match none of the model classes {list(classes)}; "
            "pass a class mapping (e.g. --class-map NAME=CLASS) or drop them (NAME=)",
        )
    return out


def map_annotations(ann: CellAnnotations, classes: Sequence[str],
                    mapping: Mapping[str, str | None] | None = None) -> CellAnnotations:
    """``ann`` with labels mapped to ``classes`` (unlabelled boxes go to a one-class model only)."""
    labels = sorted({c.label for c in ann.cells if c.label is not None})
    m = class_mapping(labels, classes, mapping)
    cells = []
    for c in ann.cells:
        if c.label is None:
            if len(classes) != 1:
                raise InputError(ann.source or ann.image_path or "annotations",
                                 "unlabelled boxes need a one-class model")
            cells.append(c.with_label(classes[0]))
            continue
        target = m[c.label]
        if target is not None:
            cells.append(c.with_label(target))
    return ann.with_cells(cells)


def samples_from_annotations(anns: Sequence[CellAnnotations], classes: Sequence[str], *,
                             mpp: float | None = None, mapping: Mapping[str, str | None] | None = None,
                             group_of: Callable[[CellAnnotations], str] | None = None
                             ) -> list[DetectionSample]:
    out: list[DetectionSample] = []
    for a in anns:
        image_id = a.slide_id or (Path(a.image_path).stem if a.image_path else str(len(out)))
        out.append(DetectionSample(
            image_id=image_id, annotations=map_annotations(a, classes, mapping),
            group=group_of(a) if group_of else image_id, mpp=a.mpp if a.mpp is not None else mpp,
        ))
    return out


def voc_samples(root: str | Path, classes: Sequence[str], split: str | None = None, *,
                mpp: float | None = None, mapping: Mapping[str, str | None] | None = None
                ) -> list[DetectionSample]:
    from marrowscope.io.annotations.voc import read_voc_folder

    anns = read_voc_folder(root, split, clip=True)
    return samples_from_annotations(anns, classes, mpp=mpp, mapping=mapping)


def yolo_samples(root: str | Path, classes: Sequence[str], split: str | None = None, *,
                 mpp: float | None = None, mapping: Mapping[str, str | None] | None = None
                ) -> list[DetectionSample]:
    from marrowscope.io.annotations.yolo import read_yolo_folder

    anns = read_yolo_folder(root, split, clip=True)
    return samples_from_annotations(anns, classes, mpp=mpp, mapping=mapping)


def coco_samples(json_path: str | Path, classes: Sequence[str], images_root: str | Path | None = None, *,
                 mpp: float | None = None, mapping: Mapping[str, str | None] | None = None
                ) -> list[DetectionSample]:
    try:
        from marrowscope.io.annotations.coco import read_coco
    except ImportError as e:  # pragma: no cover - lands with the general-formats helper
        raise InputError(json_path, "COCO reading is not available in this version") from e
    return samples_from_annotations(read_coco(json_path, images_root), classes, mpp=mpp, mapping=mapping)


def parse_dataset_arg(arg: str) -> tuple[str, str, str | None]:
    """``FORMAT:PATH[:EXTRA]`` -> (format, path, extra); EXTRA is a split (voc/yolo) or images root (coco)."""
    fmt, sep, rest = arg.partition(":")
    fmt = fmt.lower()
    if not sep or fmt not in FORMATS:
        raise InputError(arg, f"dataset must be FORMAT:PATH with FORMAT in {', '.join(FORMATS)}")
    path, extra = rest, None
    if not Path(rest).exists() and ":" in rest:
        path, _, extra = rest.rpartition(":")
    if not Path(path).exists():
        raise InputError(path, "dataset path not found")
    return fmt, path, extra or None


def load_detection_dataset(arg: str, classes: Sequence[str], *, mpp: float | None = None,
                           mapping: Mapping[str, str | None] | None = None
                ) -> list[DetectionSample]:
    """Read a dataset given as ``FORMAT:PATH[:EXTRA]`` into samples for a model with ``classes``."""
    fmt, path, extra = parse_dataset_arg(arg)
    if fmt == "voc":
        return voc_samples(path, classes, extra, mpp=mpp, mapping=mapping)
    if fmt == "yolo":
        return yolo_samples(path, classes, extra, mpp=mpp, mapping=mapping)
    if fmt == "coco":
        return coco_samples(path, classes, extra, mpp=mpp, mapping=mapping)
    return cohort_samples(path, classes)


def dataset_classes(arg: str) -> tuple[str, ...]:
    """The class names a dataset carries (YOLO/COCO: file order; VOC: sorted; cohort: ``cell``)."""
    fmt, path, extra = parse_dataset_arg(arg)
    if fmt == "cohort":
        return ("cell",)
    if fmt == "yolo":
        from marrowscope.io.annotations.yolo import read_yolo_classes

        return tuple(read_yolo_classes(path, extra))
    if fmt == "voc":
        from marrowscope.io.annotations.voc import read_voc_folder

        anns = read_voc_folder(path, extra, clip=True)
    else:
        from marrowscope.io.annotations.coco import read_coco

        anns = read_coco(path, extra, clip=True)
    names: list[str] = []
    for a in anns:
        for c in a.cells:
            if c.label is not None and c.label not in names:
                names.append(c.label)
    if not names:
        raise InputError(path, "no labelled boxes to take class names from; pass --classes")
    return tuple(names) if fmt == "coco" else tuple(sorted(names))


def _roi_loader(slide_files: tuple[str, ...], box: tuple[int, int, int, int]) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from marrowscope.io.slides import open_slide

        x1, y1, x2, y2 = box
        with open_slide([Path(f) for f in slide_files]) as slide:
            return slide.read_region(x1, y1, x2 - x1, y2 - y1, level=0)

    return load


def _cached_loader(store: Any, entry: Any) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        return np.asarray(store.roi_image(entry))

    return load


#: the class name of red cells in a two-class detector (``cell``, ``red_cell``), and the labels that go to it
RED_CELL = "red_cell"
RED_CELL_LABELS = frozenset({"erythrocyte"})


def _red_cell_class(classes: Sequence[str]) -> str | None:
    return RED_CELL if len(classes) == 2 and RED_CELL in classes else None


def cohort_samples(root: str | Path, classes: Sequence[str] = ("cell",), *,
                   patients: Sequence[str] | None = None, cache: Any = None,
                   cache_mpp: float | None = None, cache_context_um: float | None = None
                   ) -> list[DetectionSample]:
    """Every ROI of a cohort folder (IDC-style download or the synthetic cohort) as one sample.

    All boxes inside the ROI, labelled (consensus) and unlabelled, become the model's one class, as in
    the pediatric dataset's detection task; with ``classes`` a pair holding ``red_cell``, boxes labelled
    ``erythrocyte`` go to ``red_cell`` and all others (unlabelled ones too) to the other class. Boxes come
    from the DICOM ANN series, else from the dataset CSVs. The group is the patient, so splits keep a
    patient's ROIs together.

    ``cache`` (a :class:`~marrowscope.data.patches.PatchStore`) with ``cache_mpp``: ROIs with a cached
    patch at that scale are read from the cache (boxes scaled to it, ``mpp`` = ``cache_mpp``) instead of
    the slide."""
    from marrowscope.cells import Box
    from marrowscope.io.cohort import discover_cohort, load_patient_annotations

    red = _red_cell_class(classes)
    if len(classes) != 1 and red is None:
        raise InputError(root, f"cohort boxes are one class, or cell and {RED_CELL}; the model has "
                               f"{', '.join(classes)}")
    nucleated = next(c for c in classes if c != red)
    cohort = discover_cohort(root)
    if not cohort.patients:
        raise InputError(root, "no slides found in the cohort folder")
    out: list[DetectionSample] = []
    for entry in cohort.patients:
        if patients is not None and entry.patient_id not in patients:
            continue
        try:
            ann = load_patient_annotations(entry, "boxes", with_sessions=False)
        except InputError:
            try:
                ann = load_patient_annotations(entry, "csv")
            except InputError as e:
                logger.warning("%s: no boxes (%s); skipped", entry.slide_id, e)
                continue
        if not ann.regions:
            logger.warning("%s: no ROIs; skipped", entry.slide_id)
            continue
        for region in ann.regions:
            rb = region.box
            x1, y1 = int(np.floor(rb.x1)), int(np.floor(rb.y1))
            x2, y2 = int(np.ceil(rb.x2)), int(np.ceil(rb.y2))
            w, h = x2 - x1, y2 - y1
            cells = []
            for c in ann.in_region(region).cells:
                b = c.box.shifted(-x1, -y1)
                bx = (max(0.0, b.x1), max(0.0, b.y1), min(float(w), b.x2), min(float(h), b.y2))
                if bx[2] - bx[0] >= 1 and bx[3] - bx[1] >= 1:
                    lab = red if red is not None and c.label in RED_CELL_LABELS else nucleated
                    cells.append(replace(c, box=Box(*bx), label=lab))
            roi_ann = CellAnnotations(cells=tuple(cells), slide_id=f"{entry.slide_id}_roi{region.roi_id}",
                                      width=w, height=h, mpp=entry.mpp, source=str(root),
                                      extra={"patient_id": entry.patient_id, "roi": str((x1, y1, x2, y2))})
            cached = None
            if cache is not None and cache_mpp is not None:
                from marrowscope.data.patches import slide_fingerprint

                cached = cache.lookup(slide_fingerprint(entry), rb.as_tuple(), cache_mpp,
                                      _CACHE_CONTEXT_UM if cache_context_um is None else cache_context_um)
            if cached is not None:
                f = 1.0 / cached.scale
                wx, wy, ww, wh = cached.roi_window()
                ox, oy = cached.to_patch(x1, y1)
                dx, dy = ox - wx, oy - wy  # the ROI window starts at a whole patch pixel
                scaled = tuple(replace(c, box=Box(min(ww, c.box.x1 * f + dx), min(wh, c.box.y1 * f + dy),
                                                  min(ww, c.box.x2 * f + dx), min(wh, c.box.y2 * f + dy)))
                               for c in cells)
                out.append(DetectionSample(
                    image_id=roi_ann.slide_id or "",
                    annotations=replace(roi_ann, cells=scaled, width=ww, height=wh, mpp=cached.mpp),
                    group=entry.patient_id, mpp=cached.mpp, loader=_cached_loader(cache, cached)))
                continue
            out.append(DetectionSample(
                image_id=roi_ann.slide_id or "", annotations=roi_ann, group=entry.patient_id, mpp=entry.mpp,
                loader=_roi_loader(tuple(str(f) for f in entry.slide_files), (x1, y1, x2, y2)),
            ))
    if not out:
        raise InputError(root, "no ROI with boxes found in the cohort")
    return out


def estimate_mpp(anns: Sequence[CellAnnotations], label: str, diameter_um: float) -> float | None:
    """µm/px from the median side of ``label`` boxes (e.g. red cells, ~7.5 µm); ``None`` if none."""
    sides = [np.sqrt(c.box.width * c.box.height) for a in anns for c in a.cells if c.label == label]
    if not sides:
        return None
    return float(diameter_um / np.median(sides))


def with_mpp(samples: Sequence[DetectionSample], mpp: float | None) -> list[DetectionSample]:
    return [replace(s, mpp=mpp) for s in samples]


def split_by_group(samples: Sequence[DetectionSample], val_fraction: float, seed: int
                   ) -> tuple[list[DetectionSample], list[DetectionSample]]:
    """Train/validation split that keeps every group (patient or image) on one side."""
    groups = sorted({s.group for s in samples})
    if not 0 < val_fraction < 1 or len(groups) < 2:
        return list(samples), []
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(groups))
    n_val = max(1, round(len(groups) * val_fraction))
    val_groups = {groups[i] for i in order[:n_val]}
    return ([s for s in samples if s.group not in val_groups], [s for s in samples if s.group in val_groups])


BLOOD_CLASSES: tuple[str, ...] = ("WBC", "RBC", "Platelet")
#: blood-field images (BCCD 640x480) have no recorded pixel size; ~7.5 µm red cells span ~100 px
BLOOD_FIELD_MPP = 0.075


def blood_recipe_samples(data_root: str | Path, *, bccd_repeats: int = 3,
                         classes: Sequence[str] = BLOOD_CLASSES,
                         mapping: Mapping[str, str | None] | None = None,
                         txl_splits: Sequence[str] = ("train", "val"),
                         txl_mpp: Mapping[str, float] | None = None,
                         ) -> tuple[list[DetectionSample], list[DetectionSample]]:
    """The ``detector-blood`` training data, on BCCD's own VOC split. Returns (train, validation).

    - train: BCCD ``train`` (193 images) listed ``bccd_repeats`` times (each copy gets its own random
      augmentation), plus every TXL-PBC ``train``/``val`` image that is **not** a copy of a BCCD image
      (``bccd_duplicates.csv``: 194 TXL images are BCCD fields re-annotated with more red cells);
    - validation: BCCD ``val`` (81 images) with BCCD's own boxes; BCCD ``test`` is never touched.

    Leaving TXL's re-annotated copies out keeps one annotation style per field (BCCD boxes most, not
    all, red cells; the copies box every one), and repeating BCCD's training fields weights that
    style, the one BCCD's validation and test splits are scored against. In a GPU sweep (3-4 epochs,
    validation AP@0.5) these two choices gave 0.869 -> 0.896 over BCCD train + all other TXL images.
    Every image is taken as a field at :data:`BLOOD_FIELD_MPP`. ``classes``/``mapping`` relabel the
    boxes (e.g. ``WBC`` to ``cell``, red cells and platelets dropped); ``txl_splits``: the TXL-PBC splits;
    ``txl_mpp``: µm/px per TXL-PBC source (e.g. :func:`~marrowscope.data.ood_datasets.txl_source_scales`)
    instead of :data:`BLOOD_FIELD_MPP` for every TXL image."""
    import csv

    root = Path(data_root)
    bccd = root / "bccd" / "BCCD"
    txl = root / "txl_pbc" / "TXL_PBC"
    dup_csv = root / "txl_pbc" / "bccd_duplicates.csv"
    for p in (bccd, txl, dup_csv):
        if not p.exists():
            raise InputError(p, "blood recipe data not found (expected BCCD and TXL-PBC under the data root)")
    with open(dup_csv, newline="") as f:
        copies = {Path(row["txl_path"]).stem for row in csv.DictReader(f)}
    bccd_train = voc_samples(bccd, classes, "train", mpp=BLOOD_FIELD_MPP, mapping=mapping)
    train = bccd_train * max(1, bccd_repeats)
    source_of: dict[str, str] = {}
    if txl_mpp:
        from marrowscope.data.ood_datasets import read_txl_manifest

        source_of = {Path(r["abs_path"]).stem: r["source"] for r in read_txl_manifest(root / "txl_pbc",
                                                                                      txl_splits)}
    for split in txl_splits:
        train.extend(replace(s, mpp=(txl_mpp or {}).get(source_of.get(s.image_id, ""), BLOOD_FIELD_MPP))
                     for s in yolo_samples(txl, classes, split, mpp=BLOOD_FIELD_MPP, mapping=mapping)
                     if s.image_id not in copies)
    val = voc_samples(bccd, classes, "val", mpp=BLOOD_FIELD_MPP, mapping=mapping)
    logger.info("blood recipe: %d training images (BCCD train x%d, %d TXL-PBC), %d validation (BCCD val); "
                "%d TXL copies of BCCD fields left out", len(train), bccd_repeats,
                len(train) - len(bccd_train) * max(1, bccd_repeats), len(val), len(copies))
    return train, val


#: blood-field boxes for a nucleated-cell detector: white cells are cells, red cells and platelets background
NUCLEATED_MAPPING: dict[str, str | None] = {"WBC": "cell", "RBC": None, "Platelet": None}
#: the same for a detector with a red-cell class: white cells are cells, red cells ``red_cell``
RED_CELL_MAPPING: dict[str, str | None] = {"WBC": "cell", "RBC": RED_CELL, "Platelet": None}


def leave_one_source_out(data_root: str | Path, source: str, *, bccd_repeats: int = 3,
                         classes: Sequence[str] = ("cell",),
                         mapping: Mapping[str, str | None] | None = NUCLEATED_MAPPING,
                         txl_mpp: Mapping[str, float] | None = None,
                         ) -> tuple[list[DetectionSample], list[DetectionSample], list[DetectionSample]]:
    """The blood fields of :func:`blood_recipe_samples` (TXL-PBC ``train`` only) with one of TXL-PBC's four
    sources (``bccd``, ``bcd``, ``pbc``, ``raabin``) held out. Returns (train, validation, test).

    - train: the recipe's fields whose source is not ``source`` (BCCD's own fields count as ``bccd``);
    - validation: BCCD ``val`` or, when ``source`` is ``bccd``, the TXL-PBC ``val`` images of the three
      other sources: nothing of the held-out source is used to choose;
    - test: every TXL-PBC image (``train`` and ``val``) of ``source``, at its source's scale (PBC fields at
      0.1 µm/px, the others at :data:`BLOOD_FIELD_MPP`); BCCD ``test`` is never touched.

    ``txl_mpp`` (µm/px per source, e.g. read from each source's red cells): every TXL-PBC image, in
    training, validation and test, is taken at its source's scale instead."""
    from marrowscope.data.crops import PBC_MPP
    from marrowscope.data.ood_datasets import TXL_SOURCES, txl_detection_by_source

    key = source.strip().lower()
    if key not in TXL_SOURCES:
        raise InputError(source, f"unknown TXL-PBC source; use one of {', '.join(TXL_SOURCES)}")
    root = Path(data_root)
    train, val = blood_recipe_samples(root, bccd_repeats=bccd_repeats, classes=classes, mapping=mapping,
                                      txl_splits=("train",), txl_mpp=txl_mpp)
    txl = root / "txl_pbc"
    mpps = {k: PBC_MPP if k == "pbc" else BLOOD_FIELD_MPP for k in TXL_SOURCES}
    mpps.update(txl_mpp or {})
    by_source = txl_detection_by_source(txl, classes, splits=("train", "val"), mpp=mpps, mapping=mapping)
    source_of = {s.image_id: k for k, v in by_source.items() for s in v}
    train = [s for s in train if source_of.get(s.image_id, "bccd") != key]
    if key == "bccd":
        others = txl_detection_by_source(txl, classes, splits=("val",), mapping=mapping)
        val = [replace(s, mpp=(txl_mpp or {}).get(k, BLOOD_FIELD_MPP)) for k, v in others.items() if k != key
               for s in v]
    test = by_source.get(key, [])
    if not test:
        raise InputError(txl, f"TXL-PBC has no images of source {key!r} to hold out")
    logger.info("leave out %s: %d training entries, %d validation, %d test images", key, len(train), len(val),
                len(test))
    return train, val, test


def _require_boxed_red_cells(cohort: Path) -> None:
    """A synthetic cohort used to train a ``red_cell`` class must box its background red cells."""
    from marrowscope.data.synth.cohort import RECORD_NAME, read_synth_record

    if not (cohort / RECORD_NAME).is_file():
        logger.warning("%s: not a synthetic cohort; its unboxed red cells are background to red_cell", cohort)
        return
    if not read_synth_record(cohort).get("config", {}).get("box_red_cells"):
        raise InputError(cohort, "this synthetic cohort leaves its background red cells unboxed, so they "
                                 "would teach red_cell the opposite: write it with marrowscope synth "
                                 "--box-red-cells")


def marrow_recipe_samples(data_root: str | Path, cohort: str | Path, *, bccd_repeats: int = 3,
                          cohort_repeats: int = 4, val_fraction: float = 0.2, seed: int = 0,
                          txl_mpp: Mapping[str, float] | None = None,
                          classes: Sequence[str] = ("cell", RED_CELL),
                          ) -> tuple[list[DetectionSample], list[DetectionSample]]:
    """The ``detector-marrow`` training data: classes ``cell`` (nucleated cells) and ``red_cell``
    (``classes=("cell",)``: nucleated cells only, red cells background). Returns (train, val).

    - real blood fields as in :func:`blood_recipe_samples` (BCCD ``train`` x ``bccd_repeats``, the TXL-PBC
      ``train`` images that copy no BCCD field), white-cell boxes as ``cell``, red-cell boxes as
      ``red_cell``, platelets background; TXL-PBC ``val`` is held out (it is scored per source) and BCCD
      ``test`` never touched;
    - the synthetic cohort ``cohort`` (every boxed object of its ROIs, as in the pediatric dataset's
      detection task: marrow-like density, blasts, erythroid stages, megakaryocytes that no real set
      here boxes; with ``red_cell``, its boxed red cells: a synthetic cohort must then be written with
      ``synth --box-red-cells``, or its unboxed red cells would teach the opposite), split by patient,
      the training ROIs listed ``cohort_repeats`` times;
    - validation: BCCD ``val`` (white cells, red cells) plus the cohort's validation patients.

    ``txl_mpp``: as in :func:`blood_recipe_samples`."""
    red = _red_cell_class(classes) is not None
    if red:
        _require_boxed_red_cells(Path(cohort))
    blood_train, blood_val = blood_recipe_samples(
        data_root, bccd_repeats=bccd_repeats, classes=tuple(classes), txl_splits=("train",), txl_mpp=txl_mpp,
        mapping=RED_CELL_MAPPING if red else NUCLEATED_MAPPING)
    synth = cohort_samples(cohort, tuple(classes))
    if not synth:
        raise InputError(cohort, "the synthetic cohort has no ROIs (write one with marrowscope synth)")
    synth_train, synth_val = split_by_group(synth, val_fraction, seed)
    train = blood_train + synth_train * max(1, cohort_repeats)
    logger.info("marrow recipe: %d training entries (%d blood fields, %d cohort ROIs x%d), "
                "%d validation (%d BCCD val, %d cohort ROIs)", len(train), len(blood_train),
                len(synth_train), cohort_repeats, len(blood_val) + len(synth_val), len(blood_val),
                len(synth_val))
    return train, blood_val + synth_val
