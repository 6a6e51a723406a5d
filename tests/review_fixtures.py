"""An ``analyze`` output folder for the review tests: a DICOM slide with two ROIs and a PNG slide, analysed
with the stub models of pipeline_stubs.py (and a stub diagnosis model saved to disk, so the live tally
can load it from the run record as it would the bundled one)."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

from PIL import Image

from pipeline_stubs import smear_image, stub_diagnosis, stub_models, two_rois, write_dicom_slide

DICOM_KEY = "rv1"
PNG_KEY = "rv2"


def build_output(root: Path) -> Path:
    from marrowscope.engines.batch import analyze_batch
    from marrowscope.engines.pipeline import AnalysisConfig
    from marrowscope.models.diagnosis import load_diagnosis_model, save_diagnosis_model
    from marrowscope.models.weights import sha256_file
    from marrowscope.report.results import ModelRef

    slides = root / "slides"
    write_dicom_slide(
        slides / "dcm", smear_image(seed=1, blast_share=0.3), slide_id=DICOM_KEY, rois=two_rois()
    )
    (slides / "png").mkdir(parents=True)
    Image.fromarray(smear_image(seed=2, blast_share=0.1)).save(slides / "png" / f"{PNG_KEY}.png")
    dx_path = save_diagnosis_model(stub_diagnosis().estimator, root / "models" / "stub-dx.skops")
    models = stub_models()
    models = replace(
        models,
        diagnosis=load_diagnosis_model(dx_path),
        refs=models.refs + (ModelRef("stub-dx", "diagnosis", str(dx_path), sha256_file(dx_path)),),
    )
    out = root / "out"
    cfg = AnalysisConfig(target_cells=20, tta=1, diagnosis="stub-dx")
    for src, mpp in ((slides / "dcm" / "dicom", None), (slides / "png" / f"{PNG_KEY}.png", 0.5)):
        summary = analyze_batch([src], out, cfg, mpp=mpp, models=models, progress=False)
        assert not summary.failures, summary.failures
    return out


def fresh_copy(src: Path, dst: Path) -> Path:
    """A copy of the output folder (the slides it references stay where they are)."""
    shutil.copytree(src, dst)
    return dst
