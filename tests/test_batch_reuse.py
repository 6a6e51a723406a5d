"""Issue 15, point 3: a batch never gives a wrong result quietly (ROIs, reuse of finished slides)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from marrowscope.cells import Box, CellAnnotations, Region
from marrowscope.engines.batch import analyze_batch
from marrowscope.engines.pipeline import AnalysisConfig
from pipeline_stubs import smear_image, stub_models, write_dicom_slide

CFG = AnalysisConfig(target_cells=20, tta=1)


def _summary(folder: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((folder / "summary.json").read_text())


def test_rois_csv_is_used_for_a_dicom_slide(tmp_path: Path) -> None:
    from marrowscope.io.annotations.bmdeep_csv import write_rois_csv

    root = tmp_path / "cohort"
    own = CellAnnotations(cells=(), regions=(Region(Box(0, 0, 512, 512), 1),))
    write_dicom_slide(root, smear_image(), slide_id="dcm-A", rois=own)
    write_rois_csv({"dcm-A": (Region(Box(512, 0, 1024, 300), 7),)}, tmp_path / "rois.csv")
    s = analyze_batch([root], tmp_path / "out", CFG, rois=tmp_path / "rois.csv", models=stub_models(),
                      progress=False)
    assert s.slides[0].status == "done" and s.slides[0].rois_from == "--rois file"
    assert [r["roi_id"] for r in _summary(tmp_path / "out" / "dcm-A")["regions"]] == [7]


def test_roi_only_annotations_are_not_falsy() -> None:
    ann = CellAnnotations(cells=(), regions=(Region(Box(0, 0, 5, 5), 1),))
    assert len(ann) == 0 and bool(ann)


def test_changed_settings_redo_the_slide_and_say_why(tmp_path: Path) -> None:
    img = tmp_path / "s.png"
    Image.fromarray(smear_image()).save(img)
    out = tmp_path / "out"
    first = analyze_batch([img], out, CFG, mpp=0.5, models=stub_models(), progress=False)
    assert first.slides[0].status == "done" and _summary(out / "s")["diagnosis"]
    same = analyze_batch([img], out, CFG, mpp=0.5, models=stub_models(), progress=False)
    assert same.slides[0].status == "skipped"
    cfg2 = AnalysisConfig(target_cells=50, tta=1, diagnosis=None)
    again = analyze_batch([img], out, cfg2, mpp=0.5, models=stub_models(diagnosis=False), progress=False)
    st = again.slides[0]
    assert st.status == "done"
    why = st.redone_because or ""
    assert "config.target_cells" in why and "config.diagnosis" in why
    assert _summary(out / "s")["diagnosis"] is None  # the new settings' result, not the old one
    batch = json.loads((out / "batch_summary.json").read_text())
    assert "config.target_cells" in batch["slides"][0]["redone_because"]
    assert batch["config"]["target_cells"] == 50
    # the pixel size override is a setting too
    mpp = analyze_batch([img], out, cfg2, mpp=0.4, models=stub_models(diagnosis=False), progress=False)
    assert mpp.slides[0].status == "done" and "mpp" in (mpp.slides[0].redone_because or "")


def test_a_changed_slide_file_is_redone(tmp_path: Path) -> None:
    img = tmp_path / "s.png"
    Image.fromarray(smear_image(seed=1)).save(img)
    out = tmp_path / "out"
    analyze_batch([img], out, CFG, mpp=0.5, models=stub_models(), progress=False)
    Image.fromarray(smear_image(seed=2, blast_share=0.6)).save(img)  # same name, other pixels
    s = analyze_batch([img], out, CFG, mpp=0.5, models=stub_models(), progress=False)
    assert s.slides[0].status == "done" and "slide's files changed" in (s.slides[0].redone_because or "")


def test_two_dicom_slides_sharing_a_container_id_keep_their_own_results(tmp_path: Path) -> None:
    from marrowscope.io.slides.dicom_writer import deterministic_uid, write_dicom_wsi

    root = tmp_path / "cohort"
    for i, (patient, share) in enumerate((("P1", 0.05), ("P2", 0.7))):
        study, series = deterministic_uid("study", f"x{i}"), deterministic_uid("series", f"x{i}")
        folder = root / "dicom" / patient / study / f"SM_{series}"
        write_dicom_wsi(smear_image(seed=i, blast_share=share), folder,
                        mpp=0.5, slide_id="SAME-CONTAINER", patient_id=patient, study_uid=study,
                        series_uid=series, n_levels=2, tile_size=256)
    out = tmp_path / "out"
    s = analyze_batch([root], out, CFG, models=stub_models(), progress=False)
    assert [x.status for x in s.slides] == ["done", "done"]
    folders = {Path(x.folder or "") for x in s.slides}
    assert len(folders) == 2
    series = {json.loads((f / "fingerprint.json").read_text())["slide"]["series_uid"] for f in folders}
    assert len(series) == 2
    assert s.slides[0].blast_fraction != s.slides[1].blast_fraction
    again = analyze_batch([root], out, CFG, models=stub_models(), progress=False)
    assert [x.status for x in again.slides] == ["skipped", "skipped"]
    assert [x.blast_fraction for x in again.slides] == [x.blast_fraction for x in s.slides]


def test_a_truncated_roi_series_fails_its_slide_not_the_others(tmp_path: Path) -> None:
    root = tmp_path / "cohort"
    rois = CellAnnotations(cells=(), regions=(Region(Box(0, 0, 512, 512), 1),))
    write_dicom_slide(root, smear_image(), slide_id="bad", patient_id="P1", rois=rois)
    write_dicom_slide(root, smear_image(seed=3), slide_id="good", patient_id="P2", rois=rois)
    ann = next(p for p in root.rglob("roi.dcm") if "P1" in p.parts)
    data = ann.read_bytes()
    ann.write_bytes(data[: len(data) * 2 // 3])
    s = analyze_batch([root], tmp_path / "out", CFG, models=stub_models(), progress=False)
    status = {x.slide_id: x for x in s.slides}
    assert status["good"].status == "done" and (status["good"].rois_from or "").startswith("DICOM ANN")
    bad = [x for x in s.slides if x.slide_id != "good"]
    assert len(bad) == 1 and bad[0].status == "failed"
    assert "ROI" in (bad[0].reason or "")


def test_a_truncated_rois_csv_is_an_error_not_no_rois(tmp_path: Path) -> None:
    from marrowscope.errors import InputError

    img = tmp_path / "s.png"
    Image.fromarray(smear_image()).save(img)
    (tmp_path / "rois.csv").write_text("slide_id,roi_id,x1,y1,x2,y2\n")
    with pytest.raises(InputError, match="no ROIs in this ROI CSV"):
        analyze_batch([img], tmp_path / "out", CFG, mpp=0.5, rois=tmp_path / "rois.csv",
                      models=stub_models(), progress=False)


def test_bundled_names_beat_a_file_of_the_same_name_in_the_cwd(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    from marrowscope.models.registry import BUNDLED_DIR, resolve_model

    monkeypatch.chdir(tmp_path)
    (tmp_path / "detector-synth").write_bytes(b"planted")
    path, sha = resolve_model("detector-synth", task="detector")
    assert path.resolve().is_relative_to(BUNDLED_DIR) and sha
    explicit, sha2 = resolve_model("./detector-synth", task="detector")
    assert explicit.resolve() == (tmp_path / "detector-synth").resolve() and sha2 is None


