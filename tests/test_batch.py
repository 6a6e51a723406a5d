"""Batches: many slides, resumable after a kill, bad slides reported while the others go on, ROIs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from marrowscope import taxonomy
from marrowscope.cells import Box, CellAnnotations, Region
from marrowscope.engines.batch import analyze_batch
from marrowscope.engines.pipeline import AnalysisConfig
from pipeline_stubs import BG, BlobDetector, smear_image, stub_diagnosis, stub_models, write_dicom_slide

CFG = AnalysisConfig(target_cells=20, tta=1)


def _png(folder: Path, name: str, image: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / f"{name}.png"
    Image.fromarray(image).save(p)
    return p


def _three_slides(folder: Path) -> list[Path]:
    return [_png(folder, f"slide{i}", smear_image(seed=i, blast_share=0.1 * i)) for i in range(3)]


def _no_temporaries(out: Path) -> None:
    assert not [p for p in out.rglob(".*") if p.name.endswith(".part") or ".part" in p.name]


def test_three_slides_counts_match_tables_and_index(tmp_path) -> None:  # noqa: ANN001
    slides = _three_slides(tmp_path / "in")
    out = tmp_path / "out"
    s = analyze_batch([tmp_path / "in"], out, CFG, mpp=0.5, models=stub_models(), progress=False)
    assert [Path(x.source) for x in s.slides] == slides  # a folder of images: every image in it
    assert [x.status for x in s.slides] == ["done"] * 3 and not s.failures
    for st in s.slides:
        folder = Path(st.folder or "")
        summary = json.loads((folder / "summary.json").read_text())
        table = pd.read_csv(folder / "cells.csv")
        counts = table["label"].dropna().value_counts().to_dict()
        counted = {k: v for k, v in counts.items() if taxonomy.is_countable(k)}
        assert counted == summary["differential"]["counts"]
        assert st.n_counted == summary["differential"]["n_counted"] == sum(counted.values())
        assert st.rois_from == "automatic monolayer fields"
    rows = list(csv.DictReader((out / "cohort.csv").open()))
    assert [r["slide_id"] for r in rows] == ["slide0", "slide1", "slide2"]
    assert all(r["status"] == "done" and r["suggestion"] and r["rule_baseline"] for r in rows)
    r2 = rows[2]
    lo, mid, hi = (float(r2[k]) for k in ("blast_ci_low_percent", "blast_percent", "blast_ci_high_percent"))
    assert lo <= mid <= hi
    index = (out / "index.html").read_text()
    assert all(f'href="slide{i}/report.html"' in index for i in range(3))
    batch = json.loads((out / "batch_summary.json").read_text())
    assert batch["n_done"] == 3 and batch["failures"] == []


class _Kill(BaseException):
    """Stands in for a kill (not an Exception, so the batch does not catch it)."""


def test_killed_batch_resumes_without_redoing_or_half_written_output(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    slides = _three_slides(tmp_path / "in")
    out = tmp_path / "out"
    models = stub_models()
    calls_per_slide = []

    class Killer(BlobDetector):
        def __call__(self, tiles):  # noqa: ANN001, ANN204
            if len(calls_per_slide) == 1 and self.calls >= 2:  # in the middle of the second slide
                raise _Kill
            return super().__call__(tiles)

    import marrowscope.engines.batch as batch_mod

    real = batch_mod.analyze_slide

    def counting(slide, m, cfg, annotations=None, progress=None):  # noqa: ANN001, ANN202
        m.detector.calls = 0
        r = real(slide, m, cfg, annotations=annotations)
        calls_per_slide.append(slide.info.slide_id)
        return r

    monkeypatch.setattr(batch_mod, "analyze_slide", counting)
    from dataclasses import replace

    with pytest.raises(_Kill):
        analyze_batch(slides, out, CFG, mpp=0.5, models=replace(models, detector=Killer()), progress=False)
    assert (out / "slide0" / "summary.json").is_file()
    assert not (out / "slide1").exists() and not (out / "slide2").exists()
    _no_temporaries(out)
    first = (out / "slide0" / "summary.json").stat().st_mtime_ns

    # a kill while the second slide's outputs are being written leaves no folder either
    import marrowscope.report.html as html_mod

    def crash(*a, **k):  # noqa: ANN002, ANN003, ANN202
        raise _Kill

    monkeypatch.setattr(html_mod, "write_report", crash)
    calls_per_slide.clear()
    with pytest.raises(_Kill):
        analyze_batch(slides, out, CFG, mpp=0.5, models=models, progress=False)
    assert calls_per_slide == ["slide1"] and not (out / "slide1").exists()
    _no_temporaries(out)
    monkeypatch.undo()

    monkeypatch.setattr(batch_mod, "analyze_slide", counting)
    calls_per_slide.clear()
    s = analyze_batch(slides, out, CFG, mpp=0.5, models=models, progress=False)
    assert calls_per_slide == ["slide1", "slide2"]  # slide0 not redone
    assert [x.status for x in s.slides] == ["skipped", "done", "done"]
    assert (out / "slide0" / "summary.json").stat().st_mtime_ns == first
    assert s.slides[0].n_counted is not None and s.slides[0].suggestion  # filled from its summary.json
    _no_temporaries(out)


def test_bad_slides_are_reported_and_the_others_go_on(tmp_path) -> None:  # noqa: ANN001
    good = _png(tmp_path, "good", smear_image())
    blank = _png(tmp_path, "blank", np.full((512, 512, 3), BG, np.uint8))
    text = tmp_path / "notes.txt"
    text.write_text("not a slide")
    missing = tmp_path / "missing.svs"
    out = tmp_path / "out"
    s = analyze_batch([blank, good, text, missing], out, CFG, mpp=0.5, models=stub_models(), progress=False)
    status = {Path(x.source).name: x for x in s.slides}
    assert status["good.png"].status == "done"
    assert "no smear area" in (status["blank.png"].reason or "")
    assert "unsupported slide format" in (status["notes.txt"].reason or "")
    assert "no such file" in (status["missing.svs"].reason or "")
    batch = json.loads((out / "batch_summary.json").read_text())
    assert batch["n_failed"] == 3
    assert {f["source"] for f in batch["failures"]} == {str(blank), str(text), str(missing)}
    assert all(f["reason"] for f in batch["failures"])
    assert "no smear area" in (out / "index.html").read_text()
    # without --mpp an image has no pixel size: the message says how to fix it
    s2 = analyze_batch([good], tmp_path / "out2", CFG, models=stub_models(), progress=False)
    assert s2.slides[0].status == "failed" and "--mpp" in (s2.slides[0].reason or "")


def test_rois_from_a_geojson_file_are_used(tmp_path) -> None:  # noqa: ANN001
    from marrowscope.io.annotations.geojson import write_geojson

    img = _png(tmp_path, "s", smear_image())
    rois = CellAnnotations(cells=(), regions=(Region(Box(0, 0, 300, 300), 5),))
    write_geojson(rois, tmp_path / "rois.geojson")
    s = analyze_batch([img], tmp_path / "out", CFG, mpp=0.5, rois=tmp_path / "rois.geojson",
                      models=stub_models(), progress=False)
    assert s.slides[0].status == "done" and s.slides[0].rois_from == "--rois file"
    summary = json.loads((tmp_path / "out" / "s" / "summary.json").read_text())
    assert [r["roi_id"] for r in summary["regions"]] == [5]
    assert summary["regions"][0]["source"] == "annotated ROI"


def test_dicom_cohort_uses_its_roi_series(tmp_path) -> None:  # noqa: ANN001
    root = tmp_path / "cohort"
    rois = CellAnnotations(cells=(), regions=(Region(Box(0, 0, 512, 512), 1),))
    ref = write_dicom_slide(root, smear_image(), slide_id="dcm-A", rois=rois)
    out = tmp_path / "out"
    s = analyze_batch([root], out, CFG, models=stub_models(), progress=False)
    assert [x.status for x in s.slides] == ["done"]
    assert (s.slides[0].rois_from or "").startswith("DICOM ANN ROI series")
    summary = json.loads((out / "dcm-A" / "summary.json").read_text())
    assert [r["roi_id"] for r in summary["regions"]] == [1]
    assert (out / "dcm-A" / "predictions.dcm").is_file()
    # the SM series folder alone: the ROI series beside it is still found; the slide is already done
    s2 = analyze_batch([ref.folder], out, CFG, models=stub_models(), progress=False)
    assert [x.status for x in s2.slides] == ["skipped"]


def test_two_copies_of_one_slide_side_by_side_are_analysed_apart(tmp_path) -> None:  # noqa: ANN001
    """Two cohorts holding the same series (same UIDs: e.g. two synthetic cohorts of one seed, or a copy)
    in one parent folder: each cohort's slide is its own files only, never merged with the other's."""
    from marrowscope.engines.batch import collect_jobs

    ref = write_dicom_slide(tmp_path / "one", smear_image(), slide_id="dcm-A")
    write_dicom_slide(tmp_path / "two", smear_image(), slide_id="dcm-A")
    for name in ("one", "two"):
        jobs, bad = collect_jobs([tmp_path / name])
        assert not bad and len(jobs) == 1
        files = jobs[0].slide_files
        assert files and all(Path(f).is_relative_to(tmp_path / name) for f in files)
    s = analyze_batch([tmp_path / "two"], tmp_path / "out", CFG, models=stub_models(), progress=False)
    assert [x.status for x in s.slides] == ["done"], s.slides[0].reason
    jobs, _ = collect_jobs([ref.folder])  # the SM series folder itself: its own files
    assert {Path(f).parent for f in jobs[0].slide_files} == {ref.folder}


def test_demo_names_a_missing_model(tmp_path) -> None:  # noqa: ANN001
    from marrowscope.cli.main import main

    code = main(["demo", "--out", str(tmp_path / "d"), "--detector", "no-such-detector"])
    assert code == 2
    assert not (tmp_path / "d").exists()


def test_demo_missing_model_message(tmp_path) -> None:  # noqa: ANN001
    from marrowscope.engines.demo import check_models
    from marrowscope.errors import InputError

    det = tmp_path / "det.pt"
    det.write_bytes(b"")  # a file is accepted by name; loading checks it later
    with pytest.raises(InputError, match="demo needs the classifier model 'nope'.*--classifier"):
        check_models(AnalysisConfig(detector=str(det), classifier="nope", diagnosis=None))


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):  # noqa: ANN001, ANN201
    """Tiny random-weight detector, bmdeep33 classifier and diagnosis model written to files."""
    from marrowscope.models.classifier import create_classifier, make_spec, save_classifier
    from marrowscope.models.detector import build_detector, detector_spec, save_detector
    from marrowscope.models.diagnosis import save_diagnosis_model

    d = tmp_path_factory.mktemp("models")
    dspec = detector_spec(["cell"], mpp=0.4, tile_size=256, fpn_channels=16, representation_size=32,
                          detections_per_img=15, operating_threshold=0.0)
    save_detector(d / "det.pt", build_detector(dspec), dspec)
    cspec = make_spec(list(taxonomy.load_scheme("bmdeep33").classes), input_size=32, mpp=0.45)
    save_classifier(d / "clf.pt", create_classifier(cspec))
    save_diagnosis_model(stub_diagnosis().estimator, d / "dx.skops")
    return d


@pytest.mark.slow
def test_demo_runs_end_to_end_with_model_files(tmp_path, model_files) -> None:  # noqa: ANN001
    """The demo chain (synthetic DICOM slide with 2 ROI -> analysis -> report) with tiny random models."""
    from marrowscope.engines.demo import run_demo

    cfg = AnalysisConfig(detector=str(model_files / "det.pt"), classifier=str(model_files / "clf.pt"),
                         diagnosis=str(model_files / "dx.skops"), tta=1)
    r = run_demo(tmp_path / "demo", cfg, slide_size=2048, roi_size=640, n_rois=2, cells_per_roi=12,
                 progress=False)
    assert r.report.is_file() and r.report.name == "report.html"
    summary = json.loads((r.report.parent / "summary.json").read_text())
    assert [g["source"] for g in summary["regions"]] == ["annotated ROI", "annotated ROI"]
    assert summary["outputs"]["dicom_ann"] == "predictions.dcm"
    assert summary["slide"]["patient_id"]
    assert (tmp_path / "demo" / "index.html").is_file() and r.batch.n_done == 1


def test_two_files_with_the_same_name_are_not_confused(tmp_path) -> None:  # noqa: ANN001
    a = _png(tmp_path / "a", "same", smear_image(seed=1))
    b = _png(tmp_path / "b", "same", smear_image(seed=2))
    s = analyze_batch([a, b], tmp_path / "out", CFG, mpp=0.5, models=stub_models(), progress=False)
    assert [x.status for x in s.slides] == ["done", "failed"]
    assert "already holds the results of another slide" in (s.slides[1].reason or "")


def test_cli_analyze_reports_failures_and_exits_1(tmp_path, capsys, model_files) -> None:  # noqa: ANN001
    from marrowscope.cli.main import main

    bad = tmp_path / "notes.txt"
    bad.write_text("x")
    blank = _png(tmp_path, "blank", np.full((300, 300, 3), BG, np.uint8))
    models = ["--detector", str(model_files / "det.pt"), "--classifier", str(model_files / "clf.pt"),
              "--diagnosis", "none"]
    code = main(["analyze", str(bad), str(blank), "--out", str(tmp_path / "out"), "--mpp", "0.5", *models])
    err = capsys.readouterr().err
    assert code == 1
    assert "unsupported slide format" in err and "no smear area" in err
    batch = json.loads((tmp_path / "out" / "batch_summary.json").read_text())
    assert batch["n_failed"] == 2


def test_missing_model_stops_the_batch_with_one_message(tmp_path, capsys) -> None:  # noqa: ANN001
    from marrowscope.cli.main import main

    img = _png(tmp_path, "s", smear_image())
    code = main(["analyze", str(img), "--out", str(tmp_path / "out"), "--mpp", "0.5", "--detector", "nope"])
    err = capsys.readouterr().err
    assert code == 2 and "nope: no such file or bundled model" in err
    assert not (tmp_path / "out" / "s").exists()


def test_a_zero_byte_dcm_in_a_cohort_is_named_and_the_others_go_on(tmp_path) -> None:  # noqa: ANN001
    root = tmp_path / "cohort"
    write_dicom_slide(root, smear_image(seed=1), slide_id="dcm-A", patient_id="PA")
    write_dicom_slide(root, smear_image(seed=2), slide_id="dcm-B", patient_id="PB")
    empty = root / "dicom" / "PB" / "empty.dcm"
    empty.write_bytes(b"")
    out = tmp_path / "out"
    s = analyze_batch([root], out, CFG, models=stub_models(), progress=False)
    status = {x.slide_id or x.source: x for x in s.slides}
    assert status["dcm-A"].status == status["dcm-B"].status == "done"
    assert status[str(empty)].status == "failed" and "empty" in (status[str(empty)].reason or "")
    batch = json.loads((out / "batch_summary.json").read_text())
    assert batch["n_done"] == 2 and batch["n_failed"] == 1
    assert [f["source"] for f in batch["failures"]] == [str(empty)]


def test_one_valid_dicom_file_is_not_blamed_for_a_broken_sibling(tmp_path) -> None:  # noqa: ANN001
    ref = write_dicom_slide(tmp_path / "c", smear_image(seed=1), slide_id="dcm-A")
    (ref.folder / "broken.dcm").write_bytes(b"")
    s = analyze_batch([ref.base_file], tmp_path / "out", CFG, models=stub_models(), progress=False)
    assert [(x.slide_id, x.status) for x in s.slides] == [("dcm-A", "done")]
    # the broken file itself, named: the message says what is wrong with it
    s2 = analyze_batch([ref.folder / "broken.dcm"], tmp_path / "out2", CFG, models=stub_models(),
                       progress=False)
    assert [x.status for x in s2.slides] == ["failed"]
    assert s2.slides[0].source == str(ref.folder / "broken.dcm") and "empty" in (s2.slides[0].reason or "")


def test_a_dicom_file_that_is_not_a_slide_is_reported_not_dropped(tmp_path) -> None:  # noqa: ANN001
    rois = CellAnnotations(cells=(), regions=(Region(Box(0, 0, 512, 512), 1),))
    ref = write_dicom_slide(tmp_path / "c", smear_image(), slide_id="dcm-A", rois=rois)
    ann = next(ref.folder.parent.glob("ANN_*/roi.dcm"))
    s = analyze_batch([ann], tmp_path / "out", CFG, models=stub_models(), progress=False)
    assert [x.status for x in s.slides] == ["failed"]
    assert "not a whole-slide image" in (s.slides[0].reason or "")


def test_dicom_slide_without_pixel_spacing_needs_and_takes_mpp(tmp_path) -> None:  # noqa: ANN001
    import pydicom

    ref = write_dicom_slide(tmp_path / "c", smear_image(), slide_id="dcm-A")
    for f in ref.folder.glob("*.dcm"):
        ds = pydicom.dcmread(f)
        del ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
        ds.save_as(f)
    s = analyze_batch([tmp_path / "c"], tmp_path / "out", CFG, models=stub_models(), progress=False)
    assert [x.status for x in s.slides] == ["failed"]
    reason = s.slides[0].reason or ""
    assert "no PixelSpacing" in reason and "--mpp" in reason
    s2 = analyze_batch([tmp_path / "c"], tmp_path / "out2", CFG, mpp=0.5, models=stub_models(),
                       progress=False)
    assert [x.status for x in s2.slides] == ["done"] and (s2.slides[0].n_counted or 0) > 0
