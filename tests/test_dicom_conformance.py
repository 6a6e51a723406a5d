"""Every kind of DICOM file marrowscope writes passes ``dciodvfy`` (Debian ``dicom3tools``) without errors.

Kinds: the WSI pyramid (``io.slides.dicom_writer``), the dataset-layout ANN series ROI / Session k /
Consensus / Unlabeled (``io.annotations.dicom_ann_writer``, as ``marrowscope synth`` writes them) and the
AUTOMATIC predictions ANN of ``analyze`` (``report.outputs``).

Known false positive (documented, ignored): dciodvfy's 2022 release reports
``Only valid for AnnotationCoordinateType of 3D - attribute <CommonZCoordinateValue>`` on every 2D
annotation group although the attribute is absent (its rule tests the condition, not the presence).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

from conftest import require_program
from marrowscope.cells import Box, Cell, CellAnnotations, Region
from pipeline_stubs import smear_image, stub_models, write_dicom_slide


@pytest.fixture(autouse=True)
def _need_dciodvfy() -> None:
    """Skip locally without dicom3tools (naming the package); fail under CI, which installs it."""
    require_program("dciodvfy", "dicom3tools")

#: the one dciodvfy 2022 false positive we accept (see the module docstring)
KNOWN_FALSE_POSITIVE = "Only valid for AnnotationCoordinateType of 3D - attribute <CommonZCoordinateValue>"


def dciodvfy_errors(path: Path) -> list[str]:
    """The error lines dciodvfy reports for ``path``, without the known false positive."""
    exe = require_program("dciodvfy", "dicom3tools")
    run = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=120)
    lines = (run.stdout + run.stderr).splitlines()
    return [ln for ln in lines if ln.startswith("Error") and KNOWN_FALSE_POSITIVE not in ln]


def _assert_conformant(files: list[Path]) -> None:
    assert files
    bad = {str(f): errs for f in files if (errs := dciodvfy_errors(f))}
    assert not bad, json.dumps(bad, indent=1)


def test_synthetic_cohort_dicom_is_conformant(tmp_path: Path) -> None:
    from marrowscope.cli.main import main

    out = tmp_path / "D"
    args = ["synth", "--patients", "1", "--out", str(out), "--seed", "2", "--slide-size", "768",
            "--roi-size", "256", "--rois", "1", "--cells-per-roi", "5", "--workers", "1"]  # fmt: skip
    assert main(args) == 0
    files = sorted(out.rglob("*.dcm"))
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    descriptions = {str(h.get("SeriesDescription", "")) for h in headers}
    modalities = {str(h.Modality) for h in headers}
    assert modalities == {"SM", "ANN"}
    assert any("Session" in d for d in descriptions) and any("Consensus" in d for d in descriptions)
    _assert_conformant(files)
    for f in files:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        if "ClinicalTrialSeriesID" in ds:
            assert "ClinicalTrialCoordinatingCenterName" in ds


def test_every_ann_kind_is_conformant(tmp_path: Path) -> None:
    from marrowscope.io.annotations.dicom_ann_writer import write_dataset_series, write_dicom_ann

    ref = write_dicom_slide(tmp_path / "c", smear_image(width=512, height=512), slide_id="k1")
    cells = (
        Cell(Box(10, 10, 40, 40), label="myeloblast", session_labels=("myeloblast", "lymphocyte"), roi_id=1,
             cell_id=1),
        Cell(Box(50, 50, 80, 90), label="lymphocyte", session_labels=("lymphocyte",), roi_id=1, cell_id=2),
        Cell(Box(300, 300, 330, 330), label=None, cell_id=3),
    )
    ann = CellAnnotations(cells=cells, regions=(Region(Box(0, 0, 256, 256), 1),))
    files = list(write_dataset_series(ann, tmp_path / "study", source_image=ref.base_file))
    pred = CellAnnotations(cells=tuple(
        Cell(c.box, label=lab, score=0.9, probabilities={"myeloblast": 0.7, "ig": 0.3}, roi_id=c.roi_id,
             cell_id=c.cell_id) for c, lab in zip(cells, ("myeloblast", "ig", "myeloblast"), strict=True)))
    files.append(write_dicom_ann(pred, tmp_path / "auto.dcm", source_image=ref.base_file, kind="automatic",
                                 algorithm_name="test", algorithm_version="1"))
    kinds = {str(pydicom.dcmread(f).SeriesDescription) for f in files}
    assert len(kinds) == 6, kinds  # ROI, 2 sessions, consensus, unlabeled, automatic
    _assert_conformant(files + list(ref.files))
    auto = pydicom.dcmread(files[-1])
    declared = {str(i.CodingSchemeDesignator) for i in auto.CodingSchemeIdentificationSequence}
    assert {"99MRWSCP", "EFO"} <= declared


def test_analyze_predictions_are_conformant_and_name_every_model(tmp_path: Path) -> None:
    from marrowscope.engines.batch import analyze_batch
    from marrowscope.engines.pipeline import AnalysisConfig

    root = tmp_path / "cohort"
    rois = CellAnnotations(cells=(), regions=(Region(Box(0, 0, 512, 512), 1),))
    write_dicom_slide(root, smear_image(), slide_id="dcm-A", rois=rois)
    models = stub_models()
    s = analyze_batch([root], tmp_path / "out", AnalysisConfig(target_cells=20, tta=1), models=models,
                      progress=False)
    assert [x.status for x in s.slides] == ["done"]
    pred = tmp_path / "out" / "dcm-A" / "predictions.dcm"
    _assert_conformant([pred])
    ds = pydicom.dcmread(pred)
    for g in ds.AnnotationGroupSequence:
        (item,) = g.AnnotationGroupAlgorithmIdentificationSequence
        assert str(item.AlgorithmName) == "marrowscope"
        for m in models.refs:
            assert f"{m.task}={m.name} sha256:{m.sha256}" in str(item.AlgorithmParameters)
    equipment = ds.ContributingEquipmentSequence
    assert [(str(e.ManufacturerModelName), str(e.SoftwareVersions)) for e in equipment] == [
        (m.name, m.sha256) for m in models.refs]
    assert [str(e.PurposeOfReferenceCodeSequence[0].CodeValue) for e in equipment] == ["109102"] * 2
    import highdicom as hd

    assert len(hd.ann.annread(pred).get_annotation_groups()) == len(ds.AnnotationGroupSequence)
    versions = ds.SoftwareVersions
    assert all(len(v) <= 64 for v in (versions if isinstance(versions, pydicom.multival.MultiValue)
                                      else [versions]))
    declared = {str(i.CodingSchemeDesignator) for i in ds.CodingSchemeIdentificationSequence}
    assert "99MRWSCP" in declared


def test_the_checker_catches_a_missing_type2_attribute(tmp_path: Path) -> None:
    """The check can fail: a Session series without its Type 2 ClinicalTrialCoordinatingCenterName."""
    from marrowscope.io.annotations.dicom_ann_writer import write_dicom_ann

    ref = write_dicom_slide(tmp_path / "c", np.full((256, 256, 3), 230, np.uint8), slide_id="k2")
    ann = CellAnnotations(cells=(Cell(Box(10, 10, 40, 40), label="lymphocyte",
                                      session_labels=("lymphocyte",), cell_id=1),))
    p = write_dicom_ann(ann, tmp_path / "s.dcm", source_image=ref.base_file, kind="session", session=0)
    assert not dciodvfy_errors(p)
    ds = pydicom.dcmread(p)
    del ds.ClinicalTrialCoordinatingCenterName
    ds.save_as(p)
    assert any("ClinicalTrialCoordinatingCenterName" in e for e in dciodvfy_errors(p))
