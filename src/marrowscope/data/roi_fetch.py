"""ROI-only download: a cohort's annotation series and only the ROI regions of its slides, over DICOMweb.

    OUT/dicom/<PatientID>/<Study>/ANN_<Series>/*.dcm   every annotation series (as ``marrowscope fetch``)
    OUT/rois/index.json, OUT/rois/<key>.png|.webp      each ROI + ``context_um`` at the slide's own µm/px
                                                        (lossless PNG) and at each extra ``mpps`` (webp90)
    OUT/rois/slides/<SeriesUID>.json                    the slide's base-level header (no pixels)

Only the frames under the ROIs are requested (wsidicom's DICOMweb client fetches frames by number), so a
download is a few MB per slide instead of the whole 2.5-14 GB pyramid. Patients whose study lacks a
slide or a ROI series are named in the warnings; their annotation series are still kept. Re-running
resumes: files and patches already there are kept.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from marrowscope.data.patches import DEFAULT_CODEC, PatchStore, add_slide_rois
from marrowscope.io.atomic import write_text_atomic

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RoiFetchResult:
    out: Path
    patients: tuple[str, ...]
    annotation_files: int
    patches: int
    patch_bytes: int
    warnings: tuple[str, ...]


def fetch_rois(
    url: str,
    out: str | Path,
    *,
    patients: Sequence[str] | None = None,
    mpps: Sequence[float] = (),
    context_um: float = 25.0,
    timeout: float = 60.0,
    progress: bool = False,
) -> RoiFetchResult:
    """Download the annotation series and the ROI regions of every slide on the DICOMweb server ``url``
    (or of ``patients``) into ``out``; see the module docstring."""
    import pydicom
    from tqdm import tqdm

    from marrowscope.io.annotations.dicom_ann import annotation_ref_from_dataset, read_dicom_ann
    from marrowscope.io.dicomweb import dicomweb_client, download_series, list_series
    from marrowscope.io.slides.dicomweb import DicomWebSlide

    root = Path(out)
    client = dicomweb_client(url, timeout)
    series = list_series(client, patients)
    store = PatchStore(root / "rois")
    warnings: list[str] = []
    n_files = 0
    studies = sorted({(s.patient_id, s.study_uid) for s in series})
    for pid, study in tqdm(studies, desc="studies", unit="study", disable=not progress, leave=False):
        mine = [s for s in series if s.study_uid == study]
        rois: dict[str, list[object]] = {}  # referenced slide series -> regions
        for s in (x for x in mine if x.modality == "ANN"):
            for path in download_series(client, s, root):
                n_files += 1
                ref = annotation_ref_from_dataset(pydicom.dcmread(path, stop_before_pixels=True), path)
                if ref.kind == "roi":
                    found = read_dicom_ann(path).annotations.regions
                    rois.setdefault(ref.referenced_series_uid or "", []).extend(found)
        slides = [x for x in mine if x.modality == "SM"]
        if not slides:
            warnings.append(f"patient {pid}: no slide series on the server; ROI pixels not fetched")
            continue
        for sm in slides:
            regions = rois.get(sm.series_uid) or (rois.get("", []) if len(slides) == 1 else [])
            if not regions:
                warnings.append(
                    f"patient {pid}: no ROI series for slide series {sm.series_uid}; its pixels "
                    "were not fetched"
                )
                continue
            slide = DicomWebSlide(client, study, sm.series_uid)
            try:
                base = slide.base_dataset()
                write_text_atomic(
                    root / "rois" / "slides" / f"{sm.series_uid}.json",
                    json.dumps(
                        base.to_json_dict(
                            bulk_data_threshold=1 << 30, bulk_data_element_handler=lambda _e: ""
                        ),
                        indent=0,
                    )
                    + "\n",
                )
                for scales, codec in (((float(slide.info.mpp or 0.0),), "png"), (tuple(mpps), DEFAULT_CODEC)):
                    add_slide_rois(
                        store,
                        slide,
                        patient_id=pid,
                        slide_id=slide.info.slide_id,
                        source=f"dicomweb:{sm.series_uid}",
                        regions=regions,
                        mpps=scales,
                        context_um=context_um,
                        codec=codec,
                    )
            finally:
                slide.close()
    for w in warnings:
        log.warning("%s", w)
    return RoiFetchResult(
        out=root,
        patients=tuple(sorted({p for p, _ in studies})),
        annotation_files=n_files,
        patches=len(store),
        patch_bytes=sum(e.nbytes for e in store.entries.values()),
        warnings=tuple(warnings),
    )
