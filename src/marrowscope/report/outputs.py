"""Everything written for one analysed slide, into ``<out_dir>/<slide_id>/``, all or nothing.

Files: ``cells.parquet`` + ``cells.csv`` (one row per detected object: box, class, probabilities,
region), ``cells.geojson`` (QuPath), ``predictions.dcm`` (DICOM ANN referencing the source slide;
DICOM slides only), ``summary.json`` (the canonical result and its run record) and ``report.html``.
They are written into a hidden temporary folder beside the target and moved into place at the end, so
a slide's folder exists only when complete (:func:`marrowscope.io.atomic.atomic_dir`).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from marrowscope import __version__
from marrowscope.io.atomic import atomic_dir, normal_permissions
from marrowscope.io.slides.base import SlideReader
from marrowscope.report.results import SlideResult

if TYPE_CHECKING:
    from marrowscope.io.annotations.dicom_ann_writer import Algorithm

log = logging.getLogger(__name__)

SUMMARY = "summary.json"
REPORT = "report.html"
CELLS_STEM = "cells"
GEOJSON = "cells.geojson"
DICOM_ANN = "predictions.dcm"
FINGERPRINT = "fingerprint.json"


@dataclass(frozen=True)
class SlideOutputs:
    """Paths of one slide's outputs (``dicom_ann`` is None when not written, with the reason)."""

    folder: Path
    summary: Path
    report: Path
    cells_parquet: Path
    cells_csv: Path
    geojson: Path
    dicom_ann: Path | None
    dicom_ann_skipped: str | None = None


def safe_name(slide_id: str) -> str:
    """A folder name for ``slide_id`` (letters, digits, ``._-``; anything else becomes ``_``)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", slide_id).strip("._") or "slide"
    return name[:128]


def slide_folder(out_dir: str | Path, slide_id: str) -> Path:
    return Path(out_dir) / safe_name(slide_id)


def ann_models(result: SlideResult) -> list[Algorithm]:
    """The models behind a predictions ANN (detector, classifier, diagnosis): name and the full sha256
    of their weights, for its Algorithm Identification parameters and Contributing Equipment."""
    from marrowscope.io.annotations.dicom_ann_writer import Algorithm

    return [Algorithm(Path(m.name).name[:64], m.sha256, task=m.task) for m in result.run.models]


def _write_ann(result: SlideResult, slide: SlideReader, path: Path) -> str | None:
    """Write the DICOM ANN; return None on success, else why it was not written."""
    base = getattr(slide, "base_dataset", None)
    if base is None or slide.info.format != "dicom":
        return (f"the slide is not DICOM (format {slide.info.format}); a DICOM ANN must reference a DICOM "
                "slide, so the predictions are in the cell table and GeoJSON only")
    if not result.cells.cells:
        return "no objects detected"
    from marrowscope.io.annotations.dicom_ann_writer import write_dicom_ann

    try:
        write_dicom_ann(
            result.cells, path, source_image=base(), kind="automatic", generation="AUTOMATIC",
            algorithm_name="marrowscope", algorithm_version=__version__, models=ann_models(result),
            series_description="marrowscope cell predictions (research use only)",
            software_versions=[f"marrowscope {__version__}"]
            + [f"{m.task} {m.name}"[:64] for m in ann_models(result)],
        )
    except Exception as e:  # noqa: BLE001 - a failed ANN must not lose the rest of the outputs
        log.warning("%s: DICOM ANN not written: %s", slide.info.slide_id, e)
        return f"writing the DICOM ANN failed ({type(e).__name__}: {e})"
    return None


def summary_dict(result: SlideResult, files: dict[str, Any]) -> dict[str, Any]:
    """``result.to_dict()`` plus the list of files written beside it."""
    d = result.to_dict()
    d["outputs"] = files
    return d


def write_slide_outputs(result: SlideResult, slide: SlideReader, out_dir: str | Path, *,
                        folder: Path | None = None,
                        fingerprint: dict[str, Any] | None = None) -> SlideOutputs:
    """Write all outputs of ``result`` into ``out_dir/<slide_id>/`` (or ``folder``), replacing an older
    folder only when marrowscope wrote it. ``fingerprint`` (slide and settings, see
    :mod:`marrowscope.engines.fingerprint`) goes into ``fingerprint.json`` for reuse checks on a rerun."""
    from marrowscope.io.annotations.geojson import write_geojson
    from marrowscope.io.annotations.table import write_cell_table
    from marrowscope.report.colors import CLASS_COLORS
    from marrowscope.report.html import write_report

    target = folder if folder is not None else slide_folder(out_dir, result.slide.slide_id)
    classes = _classes(result)
    with atomic_dir(target) as tmp:
        write_cell_table(result.cells, tmp / CELLS_STEM, classes=classes)
        write_geojson(result.cells, tmp / GEOJSON, colors=CLASS_COLORS)  # the report's colours
        skipped = _write_ann(result, slide, tmp / DICOM_ANN)
        files: dict[str, Any] = {
            "cells_parquet": f"{CELLS_STEM}.parquet",
            "cells_csv": f"{CELLS_STEM}.csv",
            "geojson": GEOJSON,
            "dicom_ann": None if skipped else DICOM_ANN,
            "dicom_ann_skipped": skipped,
            "report": REPORT,
        }
        summary = summary_dict(result, files)
        (tmp / SUMMARY).write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n", encoding="utf-8")
        write_report(result, slide, tmp / REPORT, files=files)
        if fingerprint is not None:
            (tmp / FINGERPRINT).write_text(json.dumps(fingerprint, indent=1) + "\n", encoding="utf-8")
        normal_permissions(tmp)  # files a library wrote with its own temporaries too
    log.info("%s: outputs in %s", result.slide.slide_id, target)
    return SlideOutputs(
        folder=target,
        summary=target / SUMMARY,
        report=target / REPORT,
        cells_parquet=target / f"{CELLS_STEM}.parquet",
        cells_csv=target / f"{CELLS_STEM}.csv",
        geojson=target / GEOJSON,
        dicom_ann=None if skipped else target / DICOM_ANN,
        dicom_ann_skipped=skipped,
    )


def _classes(result: SlideResult) -> list[str] | None:
    """Probability columns in lineage and maturation order (the classifier's classes, from the first
    cell that has them; names the taxonomy does not know go last)."""
    from marrowscope import taxonomy

    for c in result.cells.cells:
        if c.probabilities:
            return taxonomy.in_differential_order(c.probabilities)
    return None
