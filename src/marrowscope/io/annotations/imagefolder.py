"""Single-cell image folders: class subfolders and/or a ``manifest.csv`` (the PBC layout).

Two layouts are read, and a folder may have both:

- ``ROOT/manifest.csv`` with at least the columns ``path,label`` (``fine_label`` and any other
  columns are optional; extra columns are kept in :attr:`LabelledImage.extra`). ``path`` is relative
  to ``ROOT``. This is the layout of the PBC dataset (``path,label,fine_label,fine_label_name,width,
  height,phash``). When a manifest exists it is the truth: files in the class folders that it does
  not list are ignored (and counted in a warning).
- ``ROOT/<label>/<image>`` class subfolders without a manifest. If every file of a folder is named
  ``<PREFIX>_<digits>.<ext>`` (the PBC naming, e.g. ``SNE_12345.jpg``), the prefix becomes the
  ``fine_label``; otherwise ``fine_label`` is ``None``.

Labels are kept exactly as the dataset writes them; mapping into the taxonomy is the dataset
adapter's job (:func:`marrowscope.taxonomy.map_external`).
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from marrowscope.errors import InputError
from marrowscope.io.formats import DATASET_IMAGE_SUFFIXES

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset(DATASET_IMAGE_SUFFIXES)
MANIFEST_NAME = "manifest.csv"
_PREFIX_RE = re.compile(r"^([A-Za-z]+)_\d+$")


@dataclass(frozen=True)
class LabelledImage:
    """One single-cell image with the dataset's own labels.

    ``path``: absolute path; ``label``: the dataset's class (folder or ``label`` column);
    ``fine_label``: a finer label when the dataset has one (e.g. PBC's ``SNE``), else ``None``;
    ``extra``: other manifest columns (e.g. ``phash``), as strings.
    """

    path: Path
    label: str
    fine_label: str | None = None
    extra: Mapping[str, str] = field(default_factory=dict)


def read_image_folder(root: str | Path) -> list[LabelledImage]:
    """Read a single-cell image folder (manifest.csv and/or class subfolders), sorted by path."""
    root_p = Path(root)
    if not root_p.exists():
        raise InputError(root_p, "image folder not found")
    if not root_p.is_dir():
        raise InputError(root_p, "not a folder; expected a folder of class subfolders or a manifest.csv")
    manifest = root_p / MANIFEST_NAME
    if manifest.is_file():
        items = _read_manifest(root_p, manifest)
    else:
        items = _read_class_folders(root_p)
    if not items:
        raise InputError(
            root_p,
            "no images found; expected class subfolders with images (.jpg/.png/.tif/.bmp) or a "
            "manifest.csv with columns path,label[,fine_label]",
        )
    items.sort(key=lambda it: str(it.path))
    log.info("%s: %d images in %d classes", root_p, len(items), len({it.label for it in items}))
    return items


def _read_manifest(root: Path, manifest: Path) -> list[LabelledImage]:
    with open(manifest, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in ("path", "label") if c not in columns]
        if missing:
            raise InputError(
                manifest,
                f"missing column(s) {', '.join(missing)}; found {', '.join(columns) or 'none'} "
                "(a manifest needs at least path,label; fine_label is optional)",
            )
        rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    items: list[LabelledImage] = []
    missing_files: list[str] = []
    for i, row in enumerate(rows, start=2):
        rel, label = row.get("path", ""), row.get("label", "")
        if not rel or not label:
            raise InputError(manifest, f"line {i}: empty path or label")
        p = (root / rel).resolve()
        if not p.is_file():
            missing_files.append(rel)
            continue
        fine = row.get("fine_label") or None
        extra = {k: v for k, v in row.items() if k not in ("path", "label", "fine_label")}
        items.append(LabelledImage(path=p, label=label, fine_label=fine, extra=extra))
    if missing_files:
        shown = ", ".join(missing_files[:5]) + (" ..." if len(missing_files) > 5 else "")
        raise InputError(
            manifest,
            f"{len(missing_files)} listed image(s) do not exist under {root} (e.g. {shown}); "
            "paths in manifest.csv are relative to its folder",
        )
    listed = {it.path for it in items}
    unlisted = [
        p for p in root.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and p.resolve() not in listed
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    ]
    if unlisted:
        log.warning("%s: %d image(s) not listed in manifest.csv are ignored", root, len(unlisted))
    return items


def _read_class_folders(root: Path) -> list[LabelledImage]:
    items: list[LabelledImage] = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(
            p for p in sub.rglob("*")
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
        )
        if not files:
            log.warning("%s: class folder has no images, skipped", sub)
            continue
        matches = [_PREFIX_RE.match(p.stem) for p in files]
        use_prefix = all(m is not None for m in matches)
        for p, m in zip(files, matches, strict=True):
            fine = m.group(1) if (use_prefix and m is not None) else None
            items.append(LabelledImage(path=p.resolve(), label=sub.name, fine_label=fine))
    loose = [p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if loose and not items:
        raise InputError(
            root,
            f"{len(loose)} image(s) lie directly in the folder without labels; put them in class "
            "subfolders (ROOT/<label>/<image>) or add a manifest.csv with columns path,label",
        )
    if loose:
        log.warning("%s: %d unlabelled image(s) directly in the folder are ignored", root, len(loose))
    return items
