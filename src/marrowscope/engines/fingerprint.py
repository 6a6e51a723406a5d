"""Fingerprints that decide whether a finished slide folder can be reused on a rerun.

A slide folder is reused only when both match what the earlier run recorded in its ``fingerprint.json``:

- the **slide**: for DICOM its series UID and every instance's SOP Instance UID and file size; for a
  slide file its name, size and a SHA-256 of its first and last MiB (for MRXS also every file of its
  data folder), plus the resolved path (a moved slide with the same content is the same slide);
- the **settings**: the analysis config, the ``--mpp`` override, the ROIs counted (their source and
  boxes) and the identity (SHA-256) of each model.

:func:`compare` says why a folder cannot be reused, in words that go into ``batch_summary.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from marrowscope.cells import CellAnnotations
from marrowscope.report.outputs import FINGERPRINT

_EDGE = 1 << 20


@dataclass(frozen=True)
class Fingerprint:
    slide: Mapping[str, Any]
    settings: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps({"slide": self.slide, "settings": self.settings}, default=list))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Fingerprint:
        return cls(slide=dict(d.get("slide") or {}), settings=dict(d.get("settings") or {}))


def _edges_sha256(path: Path, size: int) -> str:
    """SHA-256 of the first and last MiB (whole-file hashes of multi-GB slides would cost minutes)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(_EDGE))
        if size > 2 * _EDGE:
            f.seek(size - _EDGE)
        h.update(f.read(_EDGE))
    return h.hexdigest()


def _file_entry(path: Path, name: str) -> list[Any]:
    size = path.stat().st_size
    return [name, size, _edges_sha256(path, size)]


def dicom_fingerprint(series_uid: str | None, files: Sequence[str]) -> dict[str, Any]:
    """Series UID and (SOP Instance UID, size) of every instance file of a DICOM slide."""
    import pydicom

    instances = []
    for f in files:
        p = Path(f)
        try:
            ds = pydicom.dcmread(p, stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
            uid = str(getattr(ds, "SOPInstanceUID", ""))
        except Exception:  # noqa: BLE001 - an unreadable header still has a size; opening reports it
            uid = ""
        instances.append([uid, p.stat().st_size])
    return {"format": "dicom", "series_uid": series_uid or "", "instances": sorted(instances)}


def file_fingerprint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Name, size and edge hash of a slide file (and of every file in an MRXS data folder)."""
    p = Path(path)
    files = [_file_entry(p, p.name)] if p.is_file() else []
    data = p.with_suffix("")
    if p.suffix.lower() == ".mrxs" and data.is_dir():
        files += [_file_entry(f, f"{data.name}/{f.name}") for f in sorted(data.iterdir()) if f.is_file()]
    return {"format": "file", "path": str(p.resolve()), "files": files}


def rois_signature(rois: CellAnnotations | None, source: str | None) -> dict[str, Any] | None:
    if rois is None:
        return None
    return {"from": source, "frame": rois.extra.get("frame"),
            "regions": [[r.roi_id, *r.box.as_tuple()] for r in rois.regions]}


def settings_fingerprint(config: Mapping[str, Any], mpp: float | str | None, rois: Mapping[str, Any] | None,
                         models: Mapping[str, str]) -> dict[str, Any]:
    return {"config": dict(config), "mpp": mpp, "rois": rois, "models": dict(models)}


def read_fingerprint(folder: Path) -> Fingerprint | None:
    try:
        return Fingerprint.from_dict(json.loads((folder / FINGERPRINT).read_text(encoding="utf-8")))
    except (OSError, ValueError, AttributeError):
        return None


def same_slide_content(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Equal slides, apart from where the slide file lies."""
    def strip(d: Mapping[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in d.items() if k != "path"}

    return strip(a) == strip(b)


def _differing(a: Mapping[str, Any], b: Mapping[str, Any], prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if va == vb:
            continue
        if isinstance(va, Mapping) and isinstance(vb, Mapping):
            out += _differing(va, vb, f"{prefix}{k}.")
        else:
            out.append(f"{prefix}{k}")
    return out


def settings_change(before: Mapping[str, Any], now: Mapping[str, Any]) -> str | None:
    """None when equal, else which settings changed (e.g. ``config.target_cells, config.diagnosis``)."""
    keys = _differing(before, now)
    return None if not keys else "settings changed since the earlier run (" + ", ".join(keys) + ")"
