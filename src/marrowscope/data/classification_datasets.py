"""Labelled crop sets for the cell classifier: targets over a class list, near-duplicate groups, splits.

A :class:`CropSet` holds contract-sized crops (uint8, (N, S, S, 3)) and one target row per crop over
the model's classes. Three kinds of target (``target_kind``):

- ``HARD`` (0): one-hot (a fine label the model has),
- ``SOFT`` (1): a probability vector, e.g. the votes of the per-session expert labels,
- ``SET`` (2): a 0/1 mask of admissible classes, for a coarse label such as PBC's ``IG``
  (unspecified immature granulocyte = promyelocyte, myelocyte or metamyelocyte). Training uses the
  partial-label loss ``-log(sum of the probabilities of the admissible classes)``.

Labels are mapped from the dataset's own names into the taxonomy (``marrowscope.taxonomy``) and then
onto the model's classes through the taxonomy's ancestors: a label finer than the classes goes up to
its class; a label coarser than the classes becomes a SET over its descendants among the classes.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from marrowscope.errors import InputError
from marrowscope.io.annotations.imagefolder import LabelledImage

log = logging.getLogger(__name__)

HARD, SOFT, SET = 0, 1, 2

# The classes of the PBC classifier: the taxonomy classes that PBC covers, at PBC's finest level
# (taxonomy.map_external("pbc", prefix) of the fine labels; IG and NEUTROPHIL are coarse).
PBC_CLASSES: tuple[str, ...] = (
    "promyelocyte", "neutrophilic_myelocyte", "neutrophilic_metamyelocyte", "neutrophilic_band",
    "segmented_neutrophil", "eosinophil", "basophil", "lymphocyte", "monocyte", "erythroblast",
    "thrombocyte",
)


def pbc_to_taxonomy(item: LabelledImage) -> str:
    """Taxonomy name of a PBC image: its fine label (file-name prefix) when known, else its group."""
    from marrowscope import taxonomy

    if item.fine_label:
        try:
            return taxonomy.map_external("pbc", item.fine_label)
        except InputError:
            pass
    try:
        return taxonomy.map_external("pbc", item.label)
    except InputError:
        return taxonomy.normalise_label(item.label, source=item.path)


def imagefolder_to_taxonomy(item: LabelledImage) -> str:
    """Taxonomy name of a generic image-folder item (fine label first, then label)."""
    from marrowscope import taxonomy

    for raw in (item.fine_label, item.label):
        if raw:
            try:
                return taxonomy.normalise_label(raw, source=item.path)
            except InputError:
                continue
    return taxonomy.normalise_label(item.label, source=item.path)


def _ancestors(name: str) -> tuple[str, ...]:
    from marrowscope import taxonomy

    return tuple(taxonomy.ancestors(name))


def target_for_label(label: str, classes: Sequence[str], scheme: Any = None) -> tuple[np.ndarray, int] | None:
    """(target row, kind) of a taxonomy ``label`` over ``classes``; None if it falls outside them.

    With a taxonomy ``scheme`` (a ``ClassScheme``), ``scheme.map_label`` decides; otherwise the label or
    its nearest ancestor among the classes gives a HARD target. A coarse label that maps to no single
    class gives a SET target over the classes its descendants map to.
    """
    from marrowscope import taxonomy

    c = len(classes)
    idx = {k: i for i, k in enumerate(classes)}
    row = np.zeros(c, dtype=np.float32)
    if scheme is not None:
        hit = scheme.map_label(label)
        if hit in idx:
            row[idx[hit]] = 1.0
            return row, HARD
        below = {scheme.map_label(d) for d in taxonomy.descendants(label)} & set(idx)
    else:
        for name in (label, *_ancestors(label)):
            if name in idx:
                row[idx[name]] = 1.0
                return row, HARD
        below = {k for k in classes if label in _ancestors(k)}
    if below:
        for k in below:
            row[idx[str(k)]] = 1.0
        return (row, SET) if len(below) > 1 else (row, HARD)
    return None


def scheme_for_classes(classes: Sequence[str], name: str, description: str = "") -> Any:
    """A taxonomy ``ClassScheme`` over ``classes``: every taxonomy label goes to its nearest class
    (itself or an ancestor), else None. Used for class lists that are not a packaged scheme."""
    from types import MappingProxyType

    from marrowscope import taxonomy

    mapping: dict[str, str | None] = {}
    for lab in taxonomy.LABELS:
        t = target_for_label(lab, classes)
        mapping[lab] = classes[int(t[0].argmax())] if t is not None and t[1] == HARD else None
    return taxonomy.ClassScheme(name=name, classes=tuple(classes), mapping=MappingProxyType(mapping),
                                description=description)


def scheme_of_spec(spec: Any) -> Any:
    """The ``ClassScheme`` of a classifier's WeightsSpec: ``params['scheme_def']`` when present (a
    scheme made for these weights), else the packaged scheme ``spec.scheme``, else one built from the
    class list."""
    from marrowscope import taxonomy

    d = spec.params.get("scheme_def") if spec.params else None
    if d:
        from types import MappingProxyType

        return taxonomy.ClassScheme(name=str(d["name"]), classes=tuple(d["classes"]),
                                    mapping=MappingProxyType(dict(d["mapping"])),
                                    description=str(d.get("description", "")))
    if spec.scheme and spec.scheme in taxonomy.list_schemes():
        sch = taxonomy.load_scheme(spec.scheme)
        if tuple(sch.classes) == tuple(spec.classes):
            return sch
    return scheme_for_classes(spec.classes, spec.scheme or "custom")


def soft_target(votes: Sequence[str], classes: Sequence[str], scheme: Any = None) -> np.ndarray | None:
    """Mean of the per-vote targets (a SET vote spreads evenly); None when no vote maps."""
    rows = []
    for v in votes:
        try:
            t = target_for_label(v, classes, scheme)
        except InputError:
            continue
        if t is not None:
            rows.append(t[0] / t[0].sum())
    if not rows:
        return None
    out = np.mean(rows, axis=0).astype(np.float32)
    return np.asarray(out / out.sum(), dtype=np.float32)


@dataclass(frozen=True)
class CropSet:
    """Contract crops with targets. ``labels``: taxonomy label per crop; ``source_labels``: the
    dataset's own label (e.g. PBC's 8 groups), used for scoring at the dataset's granularity."""

    images: np.ndarray  # (N, S, S, 3) uint8
    targets: np.ndarray  # (N, C) float32
    target_kind: np.ndarray  # (N,) int8
    classes: tuple[str, ...]
    labels: tuple[str, ...]
    source_labels: tuple[str, ...]
    groups: np.ndarray  # (N,) int64 near-duplicate / patient group id
    ids: tuple[str, ...] = ()
    meta: Mapping[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, index: np.ndarray) -> CropSet:
        ix = np.asarray(index, dtype=np.int64)
        return CropSet(
            images=self.images[ix], targets=self.targets[ix], target_kind=self.target_kind[ix],
            classes=self.classes, labels=tuple(self.labels[i] for i in ix),
            source_labels=tuple(self.source_labels[i] for i in ix), groups=self.groups[ix],
            ids=tuple(self.ids[i] for i in ix) if self.ids else (), meta=self.meta,
        )

    def hard_index(self) -> np.ndarray:
        """Class index per crop (argmax of the target; meaningful for HARD rows)."""
        return np.asarray(self.targets.argmax(axis=1), dtype=np.int64)


def concat_crop_sets(sets: Sequence[CropSet]) -> CropSet:
    """One CropSet of several over the same classes and crop size; group ids stay apart per set."""
    if not sets:
        raise InputError("dataset", "no crop set to combine")
    classes = sets[0].classes
    for cs in sets[1:]:
        if cs.classes != classes:
            raise InputError("dataset", f"crop sets over different classes: {classes} and {cs.classes}")
        if cs.images.shape[1:] != sets[0].images.shape[1:]:
            raise InputError("dataset", f"crop sets of different crop sizes: {sets[0].images.shape[1:]} and "
                                        f"{cs.images.shape[1:]}")
    groups, offset = [], 0
    for cs in sets:
        groups.append(cs.groups + offset)
        offset += int(cs.groups.max()) + 1 if len(cs) else 0
    return CropSet(
        images=np.concatenate([cs.images for cs in sets]),
        targets=np.concatenate([cs.targets for cs in sets]).astype(np.float32),
        target_kind=np.concatenate([cs.target_kind for cs in sets]).astype(np.int8), classes=classes,
        labels=tuple(x for cs in sets for x in cs.labels),
        source_labels=tuple(x for cs in sets for x in cs.source_labels),
        groups=np.concatenate(groups).astype(np.int64),
        ids=tuple(x for cs in sets for x in (cs.ids or ("",) * len(cs))),
        meta={k: v for cs in sets for k, v in cs.meta.items()},
    )


def phash_groups(hashes: Sequence[str], max_distance: int = 6) -> np.ndarray:
    """Union-find groups of 64-bit hex perceptual hashes within ``max_distance`` bits (Hamming)."""
    n = len(hashes)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    bits = np.array([[(int(h, 16) >> (63 - b)) & 1 for b in range(64)] for h in hashes], dtype=np.uint8)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    packed = np.packbits(bits, axis=1)  # (n, 8)
    table = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)
    for i in range(n - 1):
        d = table[np.bitwise_xor(packed[i + 1 :], packed[i])].sum(axis=1)
        for j in np.nonzero(d <= max_distance)[0]:
            a, b = find(i), find(i + 1 + int(j))
            if a != b:
                parent[b] = a
    roots = [find(i) for i in range(n)]
    _, inv = np.unique(np.array(roots), return_inverse=True)
    return np.asarray(inv, dtype=np.int64)


def grouped_split(
    strata: Sequence[str], groups: np.ndarray, val_fraction: float = 0.2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(train index, val index): whole groups go to one side, about ``val_fraction`` per stratum.

    When groups mix strata (patients holding many labels), whole groups are drawn until about
    ``val_fraction`` of all items are in validation."""
    rng = np.random.default_rng(seed)
    strata_arr = np.asarray(strata)
    mixed = any(len(set(strata_arr[groups == g].tolist())) > 1 for g in np.unique(groups))
    if mixed:  # groups are patients holding many labels: split whole groups to about val_fraction
        gs = [int(g) for g in np.unique(groups)]
        rng.shuffle(gs)
        target = round(len(strata_arr) * val_fraction)
        chosen: list[int] = []
        total = 0
        for g in gs[:-1] if len(gs) > 1 else []:  # keep at least one group for training
            if total >= target:
                break
            chosen.append(g)
            total += int(np.sum(groups == g))
        va = np.nonzero(np.isin(groups, chosen))[0].astype(np.int64)
        return np.setdiff1d(np.arange(len(strata_arr)), va), va
    val: list[int] = []
    taken_groups: set[int] = set()
    for s in sorted(set(strata_arr.tolist())):
        idx = np.nonzero(strata_arr == s)[0]
        gs = sorted({int(g) for g in groups[idx]} - taken_groups)
        rng.shuffle(gs)
        target = round(len(idx) * val_fraction)
        got = 0
        for g in gs:
            if got >= target:
                break
            members = np.nonzero(groups == g)[0]
            taken_groups.add(g)
            val.extend(int(m) for m in members)
            got += int(np.sum(strata_arr[members] == s))
    val_idx = np.array(sorted(set(val)), dtype=np.int64)
    train_idx = np.setdiff1d(np.arange(len(strata_arr)), val_idx)
    return train_idx, val_idx


def _cache_key(paths: Sequence[Path], extra: str) -> str:
    h = hashlib.sha1(extra.encode())
    for p in paths:
        h.update(str(p).encode())
        h.update(str(p.stat().st_mtime_ns).encode())
    return h.hexdigest()[:16]


def load_images_cached(
    paths: Sequence[Path], *, src_mpp: float | None, mpp: float, size: int, fit_size: int | None = None,
    cache_dir: Path | None = None, progress: bool = False,
) -> np.ndarray:
    """Contract crops of image files, cached as ``.npy`` in ``cache_dir`` (no cache when None)."""
    from marrowscope.data.crops import images_to_contract

    if cache_dir is None:
        return images_to_contract(paths, src_mpp=src_mpp, mpp=mpp, size=size, fit_size=fit_size,
                                  progress=progress)
    key = _cache_key(paths, f"{src_mpp}|{mpp}|{size}|{fit_size}")
    f = Path(cache_dir) / f"crops_{key}.npy"
    if f.is_file():
        arr = np.load(f)
        if arr.shape == (len(paths), size, size, 3):
            return np.asarray(arr)
    arr = images_to_contract(paths, src_mpp=src_mpp, mpp=mpp, size=size, fit_size=fit_size, progress=progress)
    from marrowscope.io.atomic import atomic_path

    with atomic_path(f, suffix=".npy") as tmp:
        np.save(tmp, arr)
    return arr


def crop_set_from_images(
    items: Sequence[LabelledImage], classes: Sequence[str], *, src_mpp: float | None, mpp: float, size: int,
    fit_size: int | None = None,
    to_taxonomy: Callable[[LabelledImage], str], source_label: Callable[[LabelledImage], str] | None = None,
    cache_dir: Path | None = None, progress: bool = False, drop_unmapped: bool = True, scheme: Any = None,
) -> tuple[CropSet, dict[str, int]]:
    """A CropSet from labelled images; returns it with the counts of labels outside ``classes``.

    Images whose label maps to none of ``classes`` are left out of the set (and counted in the
    returned dict) when ``drop_unmapped``; otherwise an :class:`InputError` is raised.
    """
    keep: list[int] = []
    rows: list[np.ndarray] = []
    kinds: list[int] = []
    labels: list[str] = []
    unmapped: dict[str, int] = {}
    for i, it in enumerate(items):
        name = to_taxonomy(it)
        t = target_for_label(name, classes, scheme)
        if t is None:
            unmapped[name] = unmapped.get(name, 0) + 1
            continue
        keep.append(i)
        rows.append(t[0])
        kinds.append(t[1])
        labels.append(name)
    if unmapped and not drop_unmapped:
        raise InputError("dataset", f"labels outside the model's classes: {unmapped}")
    if unmapped:
        log.warning("labels outside the model's classes, left out: %s", unmapped)
    kept = [items[i] for i in keep]
    if not kept:
        raise InputError("dataset", f"no image has a label among the classes {list(classes)}")
    images = load_images_cached([it.path for it in kept], src_mpp=src_mpp, mpp=mpp, size=size,
                                fit_size=fit_size, cache_dir=cache_dir, progress=progress)
    hashes = [it.extra.get("phash", "") for it in kept]
    if all(len(h) == 16 for h in hashes):
        groups = phash_groups(hashes)
    else:
        groups = np.arange(len(kept), dtype=np.int64)
    src = source_label or (lambda it: it.label)
    cs = CropSet(
        images=images, targets=np.stack(rows).astype(np.float32), target_kind=np.array(kinds, dtype=np.int8),
        classes=tuple(classes), labels=tuple(labels), source_labels=tuple(src(it) for it in kept),
        groups=groups, ids=tuple(str(it.path) for it in kept),
    )
    return cs, unmapped


DATASET_FORMATS = ("pbc", "imagefolder", "synth", "cohort", "reviewed")


def parse_dataset_arg(arg: str) -> tuple[str, Path]:
    """``FORMAT:PATH`` -> (format, path); a bare path is ``imagefolder``."""
    fmt, sep, rest = arg.partition(":")
    if not sep or fmt.lower() not in DATASET_FORMATS:
        return "imagefolder", Path(arg)
    return fmt.lower(), Path(rest)


def load_image_dataset(
    fmt: str, root: str | Path, classes: Sequence[str], *, mpp: float, size: int,
    src_mpp: float | None = None, fit_size: int | None = None, cache_dir: Path | None = None,
    progress: bool = False, scheme: Any = None,
) -> tuple[CropSet, dict[str, int]]:
    """A crop dataset (``pbc`` or ``imagefolder``) as contract crops over ``classes``.

    ``pbc``: PBC layout, labels mapped with ``taxonomy.map_external("pbc", ...)``, source mpp
    :data:`~marrowscope.data.crops.PBC_MPP` unless ``src_mpp`` is given; scoring labels are the 8 groups.
    ``imagefolder``: labels are taxonomy names (or aliases); without ``src_mpp`` each whole image is
    taken to be the contract field and only resized.
    """
    from marrowscope.data.crops import PBC_MPP
    from marrowscope.io.annotations.imagefolder import read_image_folder

    items = read_image_folder(root)
    if fmt == "pbc":
        return crop_set_from_images(
            items, classes, src_mpp=src_mpp or PBC_MPP, mpp=mpp, size=size, to_taxonomy=pbc_to_taxonomy,
            source_label=lambda it: it.label, cache_dir=cache_dir, progress=progress, scheme=scheme,
        )
    if fmt == "imagefolder":
        return crop_set_from_images(
            items, classes, src_mpp=src_mpp, mpp=mpp, size=size, fit_size=fit_size,
            to_taxonomy=imagefolder_to_taxonomy,
            source_label=lambda it: it.label, cache_dir=cache_dir, progress=progress, scheme=scheme,
        )
    raise InputError(f"{fmt}:{root}", f"not an image-folder format; use pbc: or imagefolder: ({fmt} given)")


def load_slide_dataset(
    fmt: str, root: str | Path, classes: Sequence[str], *, mpp: float, size: int, scheme: Any = None,
    progress: bool = False, keep_all: bool = False, soft_sessions: bool = True, cache: Any = None,
    rois_only: bool = False,
) -> tuple[CropSet, dict[str, int]]:
    """Consensus-labelled cells of a cohort folder (``cohort``: an IDC download + dataset CSVs;
    ``synth``: the synthetic cohort in the same layout), cropped from the slides at the contract.

    Group ids are patients (so splits keep each patient on one side). With ``soft_sessions`` a cell
    whose per-session expert labels are known gets a SOFT target (the votes' mean); otherwise its
    consensus label gives the target. Cells labelled ``no_consensus_found`` or without a label are
    skipped and counted. ``keep_all`` keeps cells whose label maps to no class (all-zero target rows),
    for evaluation, where they are reported. ``cache`` (a :class:`~marrowscope.data.patches.PatchStore`):
    crops come from its ROI patches (the slide is opened only for cells outside them); with ``rois_only``
    such cells are skipped instead (counted as ``(outside the cached ROIs)``), so only the ROIs are read.
    """
    from tqdm import tqdm

    from marrowscope.data.crops import crops_from_slide
    from marrowscope.io.cohort import discover_cohort, load_patient_annotations
    from marrowscope.io.slides import open_slide

    if fmt == "reviewed":  # the cells a hematologist vouched for in `marrowscope review`
        from marrowscope.review.dataset import load_reviewed_dataset

        return load_reviewed_dataset(root, classes, mpp=mpp, size=size, scheme=scheme, progress=progress,
                                     keep_all=keep_all)
    if fmt not in ("cohort", "synth"):
        raise InputError(f"{fmt}:{root}", "not a slide-cohort format; use cohort:, synth: or reviewed:")
    cohort = discover_cohort(root)
    if not cohort.patients:
        raise InputError(root, "no slides found in the cohort folder")
    images: list[np.ndarray] = []
    rows: list[np.ndarray] = []
    kinds: list[int] = []
    labels: list[str] = []
    groups: list[int] = []
    ids: list[str] = []
    skipped: dict[str, int] = {}
    for pi, entry in enumerate(tqdm(cohort.patients, desc="slides", disable=not progress, leave=False)):
        try:
            ann = load_patient_annotations(entry, "consensus")
        except InputError as e:
            log.warning("%s: %s; slide skipped", entry.slide_id, e)
            skipped["(slide without consensus)"] = skipped.get("(slide without consensus)", 0) + 1
            continue
        keep = []
        mine: list[tuple[np.ndarray, int, str, str]] = []  # target row, kind, label, id of each kept cell
        for cell in ann.cells:
            lab = cell.label
            if lab is None or lab == "no_consensus_found":
                key = lab or "(unlabelled)"
                skipped[key] = skipped.get(key, 0) + 1
                continue
            t = target_for_label(lab, classes, scheme)
            votes = cell.session_labels if soft_sessions else ()
            soft = soft_target(votes, classes, scheme) if votes else None
            if t is None and soft is None:
                skipped[lab] = skipped.get(lab, 0) + 1
                if not keep_all:
                    continue
                row, kind = np.zeros(len(classes), dtype=np.float32), HARD
            elif soft is not None and t is not None and t[1] == HARD:
                row, kind = soft, SOFT
            else:
                row, kind = t if t is not None else (soft, SOFT)  # type: ignore[assignment]
            keep.append(cell)
            cid = cell.cell_id if cell.cell_id is not None else len(ids) + len(mine)
            mine.append((row, kind, lab, f"{entry.patient_id}/{cid}"))
        if not keep:
            continue
        if cache is not None:
            crops, found = cache.crops_in_rois(keep, slide_id=entry.slide_id, mpp=mpp, size=size)
        else:
            crops, found = np.empty((len(keep), size, size, 3), dtype=np.uint8), np.zeros(len(keep), bool)
        if not found.all() and cache is not None and rois_only:
            n_out = int((~found).sum())
            skipped["(outside the cached ROIs)"] = skipped.get("(outside the cached ROIs)", 0) + n_out
            keep = [c for c, f in zip(keep, found, strict=True) if f]
            mine = [m for m, f in zip(mine, found, strict=True) if f]
            crops, found = crops[found], found[found]
        if not found.all():  # cells outside the cached ROIs (or no cache): from the slide
            if cache is not None:
                log.info("%s: %d cell(s) outside the cached ROIs; read from the slide", entry.slide_id,
                         int((~found).sum()))
            with open_slide(list(entry.slide_files)) as slide:
                rest = [c for c, f in zip(keep, found, strict=True) if not f]
                crops[~found] = crops_from_slide(slide, rest, mpp=mpp, size=size)
        for row, kind, lab, crop_id in mine:
            rows.append(row)
            kinds.append(kind)
            labels.append(lab)
            groups.append(pi)
            ids.append(crop_id)
        if len(crops):
            images.append(crops)
    if not rows:
        raise InputError(root, f"no labelled cell maps to the classes {list(classes)} (skipped: {skipped})")
    cs = CropSet(
        images=np.concatenate(images), targets=np.stack(rows).astype(np.float32),
        target_kind=np.array(kinds, dtype=np.int8), classes=tuple(classes), labels=tuple(labels),
        source_labels=tuple(labels), groups=np.array(groups, dtype=np.int64), ids=tuple(ids),
    )
    return cs, skipped
