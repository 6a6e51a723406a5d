"""Per-slide outputs: cell table, GeoJSON, DICOM ANN, summary.json and the self-contained HTML report."""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import replace

import pandas as pd
import pytest

from marrowscope import taxonomy
from marrowscope.engines.pipeline import AnalysisConfig, analyze_slide
from marrowscope.io.annotations.geojson import read_geojson
from marrowscope.io.annotations.table import read_cell_table
from marrowscope.report.html import render_report
from marrowscope.report.outputs import write_slide_outputs
from marrowscope.report.results import RESEARCH_NOTICE
from pipeline_stubs import smear_image, smear_slide, stub_models, two_rois, write_dicom_slide

CFG = AnalysisConfig(target_cells=20, tta=1)


@pytest.fixture(scope="module")
def models():  # noqa: ANN201
    return stub_models()


@pytest.fixture(scope="module")
def array_run(models, tmp_path_factory):  # noqa: ANN001, ANN201
    slide = smear_slide("slide/A 1")
    result = analyze_slide(slide, models, CFG, annotations=two_rois())
    out = write_slide_outputs(result, slide, tmp_path_factory.mktemp("out"))
    return result, out


def test_outputs_are_complete_and_counts_match_the_cell_table(array_run) -> None:  # noqa: ANN001
    result, out = array_run
    assert out.folder.name == "slide_A_1"  # slide id made safe for a folder name
    names = sorted(p.name for p in out.folder.iterdir())
    assert names == [".marrowscope-owned", "cells.csv", "cells.geojson", "cells.parquet", "report.html",
                     "summary.json"]
    assert not [p for p in out.folder.parent.iterdir() if p.name.startswith(".")]  # no temporary left
    summary = json.loads(out.summary.read_text())
    table = pd.read_csv(out.cells_csv)
    assert len(table) == summary["n_objects"] == len(result.cells)
    labels = table["label"].dropna()
    countable = Counter(lab for lab in labels if taxonomy.is_countable(lab))
    assert dict(countable) == summary["differential"]["counts"]
    assert summary["differential"]["n_counted"] == sum(countable.values())
    assert summary["differential"]["not_counted"].get("uncertain", 0) == int(table["label"].isna().sum())
    assert set(table["roi_id"]) == {1, 2}
    assert {c for c in table.columns if c.startswith("prob_")} == {f"prob_{c}" for c in models_classes()}
    back = read_cell_table(out.cells_parquet)
    assert len(back) == len(result.cells) and len(back.regions) == 2
    # summary.json: canonical result + run record + file list
    assert summary["notice"] == RESEARCH_NOTICE
    assert summary["run"]["seed"] == 0 and summary["run"]["models"][0]["sha256"]
    assert summary["outputs"]["dicom_ann"] is None
    assert "not DICOM" in summary["outputs"]["dicom_ann_skipped"]
    assert summary["diagnosis"]["suggestion"] in summary["diagnosis"]["classes"]


def models_classes() -> tuple[str, ...]:
    from pipeline_stubs import CLASSES

    return CLASSES


def test_geojson_is_a_qupath_feature_collection(array_run) -> None:  # noqa: ANN001
    result, out = array_run
    doc = json.loads(out.geojson.read_text())
    assert doc["type"] == "FeatureCollection"
    feats = doc["features"]
    cells = [f for f in feats if f["properties"]["objectType"] == "detection"]
    assert len(cells) == len(result.cells)
    assert all(f["type"] == "Feature" and f["geometry"]["type"] == "Polygon" for f in feats)
    labelled = [f for f in cells if "classification" in f["properties"]]
    assert labelled and all({"name", "color"} <= set(f["properties"]["classification"]) for f in labelled)
    back = read_geojson(out.geojson)
    assert len(back.cells) == len(result.cells)


def test_report_is_self_contained_and_shows_what_a_hematologist_needs(array_run) -> None:  # noqa: ANN001
    result, out = array_run
    html = out.report.read_text()
    # no external assets: every src/href is a data URI or a relative file beside the report
    for url in re.findall(r'(?:src|href)="([^"]+)"', html):
        assert url.startswith("data:") or not re.match(r"[a-z]+://", url), url
    assert "<link" not in html and "<script" not in html
    assert html.count("data:image/jpeg;base64,") >= 3  # overview, field, gallery
    d = result.differential
    assert "Research use only" in html
    assert f"{d.n_counted}</div>" in html  # cells counted card
    assert f"{100 * d.blast_fraction:.1f} %" in html
    assert f"{100 * d.blast_interval[0]:.1f}–{100 * d.blast_interval[1]:.1f} %" in html
    for name, n in d.counts.items():
        assert name.replace("_", " ").capitalize() in html and f">{n}<" in html
    assert "Wilson" in html and "M : E ratio" in html and "I:Mg" in html
    assert "Objects outside the denominator" in html
    assert result.diagnosis is not None and result.diagnosis.suggestion in html and "rule baseline" in html
    assert "Cell gallery" in html and "sha256" in html and "Provenance" in html
    if d.flags:
        assert "Threshold not decided" in html


def test_report_lists_uncertain_cells_outside_the_denominator(models) -> None:  # noqa: ANN001
    slide = smear_slide()
    cfg = replace(CFG, uncertain_threshold=0.999)  # the stub is never that sure: every cell uncertain
    result = analyze_slide(slide, models, cfg, annotations=two_rois())
    assert result.differential.n_counted == 0
    html = render_report(result, slide)
    assert "Uncertain (classifier abstained)" in html
    assert "no countable cells" in html


def test_dicom_slide_gets_a_dicom_ann_that_references_it(models, tmp_path) -> None:  # noqa: ANN001
    import highdicom as hd

    from marrowscope.io.annotations.dicom_ann import read_dicom_ann
    from marrowscope.io.slides import open_slide

    ref = write_dicom_slide(tmp_path / "in", smear_image(seed=3), slide_id="dcm-1")
    with open_slide(ref.folder) as slide:
        result = analyze_slide(slide, models, CFG, annotations=two_rois())
        out = write_slide_outputs(result, slide, tmp_path / "out")
    assert out.dicom_ann is not None and out.dicom_ann.is_file()
    ann = read_dicom_ann(out.dicom_ann)
    assert ann.kind == "automatic"
    assert ann.referenced_sop_uid == ref.base_sop_uid and ann.referenced_series_uid == ref.series_uid
    assert ann.study_uid == ref.study_uid
    assert len(ann.annotations.cells) == len(result.cells)
    got = Counter(c.label for c in ann.annotations.cells if c.label in result.differential.counts)
    assert dict(got) == dict(result.differential.counts)
    assert all(c.probabilities for c in ann.annotations.cells)
    # plain highdicom reads it as AI-generated annotations of the slide
    obj = hd.ann.annread(out.dicom_ann)
    groups = obj.get_annotation_groups()
    assert groups and all(g.AnnotationGroupGenerationType == "AUTOMATIC" for g in groups)
    assert obj.ReferencedSeriesSequence[0].SeriesInstanceUID == ref.series_uid
    summary = json.loads(out.summary.read_text())
    assert summary["outputs"]["dicom_ann"] == "predictions.dcm" and summary["slide"]["format"] == "dicom"
