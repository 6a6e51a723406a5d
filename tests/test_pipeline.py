"""Whole-slide pipeline: regions -> detect -> classify -> count -> diagnose (stub models, small slides)."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import numpy as np
import pytest

from marrowscope import taxonomy
from marrowscope.cells import Box, CellAnnotations, Region
from marrowscope.counting import compute_differential
from marrowscope.data.regions import FieldSelectionConfig
from marrowscope.engines.pipeline import (
    AnalysisConfig,
    _detector_threshold,
    analyze_slide,
    diagnose,
    load_models,
)
from marrowscope.errors import InputError
from marrowscope.io.slides.array import ArraySlide
from pipeline_stubs import BG, BlobDetector, smear_slide, stub_diagnosis, stub_models, two_rois

FIELDS = FieldSelectionConfig(field_size_px=256)


def _cfg(**kw: object) -> AnalysisConfig:
    base = AnalysisConfig(target_cells=30, tta=1, fields=FIELDS)
    return replace(base, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def models():  # noqa: ANN201
    return stub_models()


def test_annotated_rois_are_all_counted_and_counts_match_cells(models) -> None:  # noqa: ANN001
    slide = smear_slide()
    r = analyze_slide(slide, models, _cfg(target_cells=5), annotations=two_rois())
    assert [g.roi_id for g in r.regions] == [1, 2]
    assert all(g.source == "annotated ROI" for g in r.regions)
    assert sum(g.n_cells for g in r.regions) == len(r.cells) > 40
    assert {c.roi_id for c in r.cells} == {1, 2}
    labels = [c.label for c in r.cells]
    countable = Counter(lab for lab in labels if lab is not None and taxonomy.is_countable(lab))
    assert dict(countable) == dict(r.differential.counts)
    assert r.differential.n_counted == sum(countable.values())
    assert r.differential.not_counted.get("uncertain", 0) == labels.count(None)
    # each cell belongs to the region holding its centre, once
    for c in r.cells:
        reg = next(g for g in r.regions if g.roi_id == c.roi_id)
        assert Box(*reg.box).contains_point(*c.box.center)
    assert len({c.detection_id for c in r.cells}) == len(r.cells)  # our ids; cell_id stays empty
    assert all(c.cell_id is None for c in r.cells)
    # every cell has a full probability vector over the classifier's classes
    assert all(c.probabilities and abs(sum(c.probabilities.values()) - 1) < 1e-6 for c in r.cells)
    assert r.run.models == models.refs and r.run.seed == 0 and r.run.timings["total"] > 0
    assert set(r.run.timings) >= {"regions", "detect", "classify", "count", "total"}


def test_auto_fields_stop_when_target_is_met(models) -> None:  # noqa: ANN001
    slide = smear_slide(blast_share=0.0)  # no blasts: no threshold straddled beyond 5 %
    r = analyze_slide(slide, models, _cfg(target_cells=12, extend_for_thresholds=False))
    assert all(g.source == "auto field" for g in r.regions)
    assert r.differential.n_counted >= 12
    assert len(r.regions) < 8  # 8 fields of 256 px on a 1024 x 512 slide
    # without the first field the target was not met yet
    first = r.regions[0]
    assert sum(1 for c in r.cells if c.roi_id == first.roi_id) < 12 or len(r.regions) == 1


def test_counting_goes_on_while_an_interval_straddles_a_threshold(models) -> None:  # noqa: ANN001
    slide = smear_slide(blast_share=0.3)
    short = analyze_slide(slide, models, _cfg(target_cells=10, extend_for_thresholds=False))
    longer = analyze_slide(slide, models, _cfg(target_cells=10, extend_for_thresholds=True))
    assert short.differential.flags, "the stub slide should leave a threshold undecided after 10 cells"
    assert len(longer.regions) > len(short.regions)
    assert longer.differential.n_counted > short.differential.n_counted


def test_warnings_name_a_straddled_threshold_and_a_short_count(models) -> None:  # noqa: ANN001
    r = analyze_slide(smear_slide(), models, _cfg(target_cells=10_000, max_cells=10_000))
    assert any(w.code == "few_cells" and "target 10000" in w.message for w in r.warnings)
    assert any(w.code == "threshold_undecided" and "straddles" in w.message
               for w in r.warnings) == bool(r.differential.flags)


def test_slide_without_pixel_size_asks_for_mpp(models) -> None:  # noqa: ANN001
    with pytest.raises(InputError, match="--mpp"):
        analyze_slide(smear_slide(mpp=None), models, _cfg())


def test_blank_slide_has_no_smear_area(models) -> None:  # noqa: ANN001
    blank = ArraySlide(np.full((512, 512, 3), BG, np.uint8), mpp=0.5, slide_id="blank")
    with pytest.raises(InputError, match="no smear area"):
        analyze_slide(blank, models, _cfg())


def test_rois_without_cells_fail_clearly(models) -> None:  # noqa: ANN001
    img = np.full((512, 512, 3), BG, np.uint8)
    rois = CellAnnotations(cells=(), regions=(Region(Box(0, 0, 256, 256), 1),))
    with pytest.raises(InputError, match="no cells were detected"):
        analyze_slide(ArraySlide(img, mpp=0.5), models, _cfg(), annotations=rois)


def test_empty_region_is_reported_and_the_rest_counted(models) -> None:  # noqa: ANN001
    slide = smear_slide()
    rois = CellAnnotations(cells=(), regions=(Region(Box(0, 0, 1024, 512), 1), Region(Box(0, 0, 64, 64), 2)))
    r = analyze_slide(slide, models, _cfg(), annotations=rois)
    # region 2 lies inside region 1, which took its cells first (centre rule, first region wins)
    assert [g.n_cells for g in r.regions][1] == 0
    assert any(w.code == "empty_region" and "region 2" in w.message and "no cells" in w.message
               for w in r.warnings)


def test_without_diagnosis_model_there_is_no_suggestion() -> None:
    r = analyze_slide(smear_slide(), stub_models(diagnosis=False), _cfg(), annotations=two_rois())
    assert r.diagnosis is None and r.differential.n_counted > 0


def test_diagnose_gives_probabilities_and_the_rule_baseline() -> None:
    model = stub_diagnosis()
    aml = compute_differential(["myeloblast"] * 60 + ["segmented_neutrophil"] * 40)
    dx = diagnose(aml, model, "stub")
    assert abs(sum(dx.probabilities.values()) - 1) < 1e-6
    assert dx.suggestion == max(dx.probabilities, key=dx.probabilities.__getitem__)
    assert dx.rule_baseline == "AML" and "60.0 %" in dx.rule_reason
    normal = compute_differential(["lymphocyte"] * 30 + ["segmented_neutrophil"] * 70)
    assert diagnose(normal, model, "stub").rule_baseline == "control"


def test_detector_threshold_comes_from_the_weights_or_the_config() -> None:
    class WithSpec(BlobDetector):
        class spec:  # noqa: N801 - a stand-in for WeightsSpec
            params = {"operating_threshold": 0.7}

    assert _detector_threshold(WithSpec(), AnalysisConfig()) == 0.7
    assert _detector_threshold(WithSpec(), AnalysisConfig(score_threshold=0.2)) == 0.2
    assert _detector_threshold(BlobDetector(), AnalysisConfig()) == 0.5


def test_load_models_from_weight_files(tmp_path) -> None:  # noqa: ANN001
    """Tiny random-weight models written to files load by path, with their hashes recorded."""
    from marrowscope.models.classifier import create_classifier, make_spec, save_classifier
    from marrowscope.models.detector import build_detector, detector_spec, save_detector
    from marrowscope.models.diagnosis import save_diagnosis_model
    from marrowscope.models.weights import sha256_file

    dspec = detector_spec(["cell"], mpp=0.5, tile_size=128, fpn_channels=16, representation_size=32)
    save_detector(tmp_path / "det.pt", build_detector(dspec), dspec)
    cspec = make_spec(["myeloblast", "lymphocyte"], input_size=32, mpp=0.5)
    save_classifier(tmp_path / "clf.pt", create_classifier(cspec))
    save_diagnosis_model(stub_diagnosis().estimator, tmp_path / "dx.skops")
    cfg = AnalysisConfig(detector=str(tmp_path / "det.pt"), classifier=str(tmp_path / "clf.pt"),
                         diagnosis=str(tmp_path / "dx.skops"))
    m = load_models(cfg, device="cpu")
    assert m.detector.mpp == 0.5 and m.classifier.classes == ("myeloblast", "lymphocyte")
    assert m.diagnosis is not None and set(m.diagnosis.classes) == {"ALL", "AML", "control"}
    assert [(r.task, r.sha256) for r in m.refs] == [
        ("detector", sha256_file(tmp_path / "det.pt")), ("classifier", sha256_file(tmp_path / "clf.pt")),
        ("diagnosis", sha256_file(tmp_path / "dx.skops")),
    ]
    with pytest.raises(InputError, match="no such file or bundled model"):
        load_models(replace(cfg, detector=str(tmp_path / "missing.pt")))


def test_a_cell_on_the_border_of_two_regions_is_counted_once(models) -> None:  # noqa: ANN001
    from pipeline_stubs import BLAST, _disk

    img = np.full((512, 1024, 3), BG, np.uint8)
    _disk(img, 512, 256, 9, BLAST)  # centre exactly on the border of the two ROIs
    _disk(img, 200, 200, 9, BLAST)
    r = analyze_slide(ArraySlide(img, mpp=0.5), models, _cfg(), annotations=two_rois())
    assert len(r.cells) == 2
    assert sorted(c.roi_id for c in r.cells) == [1, 2]  # x = 512 belongs to the right ROI [512, 1024)
    assert all(c.box.width > 15 for c in r.cells)  # seen whole, not cut at the region's edge
    no_context = analyze_slide(ArraySlide(img, mpp=0.5), models, _cfg(context_um=0.0), annotations=two_rois())
    assert len(no_context.cells) == 3  # the old behaviour: both halves counted


def test_counts_are_rekeyed_to_the_diagnosis_model_columns() -> None:
    from marrowscope.engines.pipeline import model_columns

    counts = {"segmented_eosinophil": 3.0, "myeloblast": 5.0, "plasma_cell": 2.0}
    out, unused = model_columns(counts, ("eosinophil", "myeloblast", "lymphocyte"))
    assert out == {"eosinophil": 3.0, "myeloblast": 5.0}  # fine label -> its coarse ancestor column
    assert unused == ("plasma_cell",)
    assert model_columns(counts, ()) == (counts, ())
    # coarse predictions for a model of fine labels: the mature (segmented) form
    fine = ("segmented_eosinophil", "eosinophilic_myelocyte", "basophilic_band", "segmented_basophil")
    assert model_columns({"eosinophil": 2.0, "basophil": 1.0}, fine) == (
        {"segmented_eosinophil": 2.0, "segmented_basophil": 1.0}, ())
    ery = ("proerythroblast", "basophilic_erythroblast", "polychromatic_erythroblast")
    assert model_columns({"erythroblast": 3.0}, ery) == ({"polychromatic_erythroblast": 3.0}, ())
    model = stub_diagnosis()  # columns myeloblast, lymphocyte, segmented_neutrophil
    dx = diagnose(compute_differential(["myeloblast"] * 5 + ["plasma_cell"] * 5), model, "stub")
    assert dx.unused_labels == ("plasma_cell",)


def test_classifier_classes_are_mapped_to_taxonomy_labels() -> None:
    from marrowscope.engines.pipeline import class_labels

    got = class_labels(["ig", "neutrophil", "platelet", "myeloblast"], "pbc8")
    assert got == {"ig": "immature_granulocyte", "neutrophil": "neutrophil", "platelet": "platelet",
                   "myeloblast": "myeloblast"}
    with pytest.raises(InputError, match="not a cell label"):
        class_labels(["no-such-cell"])


def test_no_extension_for_a_threshold_that_max_cells_cannot_decide(models) -> None:  # noqa: ANN001
    slide = smear_slide(blast_share=0.3)
    capped = analyze_slide(slide, models, _cfg(target_cells=10, max_cells=12))
    short = analyze_slide(slide, models, _cfg(target_cells=10, extend_for_thresholds=False, max_cells=12))
    # counting goes on only for a flag that 12 cells in all can decide (the cap is the flags' own)
    decidable = [f for f in short.differential.flags if f.cells_needed is not None and f.cells_needed > 0]
    assert all(short.differential.n_counted + f.cells_needed <= 12 for f in decidable)
    assert (len(capped.regions) > len(short.regions)) == bool(decidable)
    assert any(f.cells_needed is None for f in short.differential.flags)  # e.g. 30 % blasts vs 25 %


def test_a_slide_with_only_level_0_says_so_in_the_summary(models) -> None:  # noqa: ANN001
    from pipeline_stubs import smear_image

    flat = ArraySlide(smear_image(), mpp=0.25, slide_id="flat", levels=[1])
    r = analyze_slide(flat, models, _cfg(target_cells=5))
    assert any(w.code == "no_low_res_level" and "only level 0" in w.message and "tile by tile" in w.message
               for w in r.warnings)
    pyramid = ArraySlide(smear_image(), mpp=0.25, slide_id="pyr")
    codes = [w.code for w in analyze_slide(pyramid, models, _cfg(target_cells=5)).warnings]
    assert "no_low_res_level" not in codes


class _BloodLikeDetector(BlobDetector):
    """The blob detector with a blood detector's classes: the first half of the blobs of each tile are
    called WBC, the rest RBC (as ``detector-blood`` has WBC, RBC and Platelet boxes)."""

    @property
    def classes(self) -> tuple[str, ...]:
        return ("WBC", "RBC", "Platelet")

    def __call__(self, tiles):  # noqa: ANN001, ANN204
        out = []
        for p in super().__call__(tiles):
            lab = np.zeros(len(p.boxes), dtype=np.int64)
            lab[len(lab) // 2:] = 1
            out.append(type(p)(p.boxes, p.scores, lab))
        return out


def test_only_nucleated_boxes_of_a_multi_class_detector_are_classified(models) -> None:  # noqa: ANN001
    from marrowscope.engines.pipeline import nucleated_class_indices

    assert nucleated_class_indices(("WBC", "RBC", "Platelet")) == [0]
    assert nucleated_class_indices(("cell",)) == [0] and nucleated_class_indices(("a", "b")) == [0, 1]
    assert nucleated_class_indices(("cell", "red_cell")) == [0]  # detector-marrow: red cells are not counted
    slide = smear_slide()
    one = analyze_slide(slide, models, _cfg(target_cells=5), annotations=two_rois())
    blood = replace(models, detector=_BloodLikeDetector())
    r = analyze_slide(slide, blood, _cfg(target_cells=5), annotations=two_rois())
    assert 0 < len(r.cells) < len(one.cells)  # the RBC boxes are not cells to classify and count
    assert {c.box for c in r.cells} < {c.box for c in one.cells}


def test_analyze_defaults_are_the_real_slide_models_and_the_demo_names_the_synthetic_ones() -> None:
    from marrowscope.engines.pipeline import REAL_SLIDE_MODELS, SYNTHETIC_MODELS
    from marrowscope.models.registry import list_models

    cfg = AnalysisConfig()
    assert (cfg.detector, cfg.classifier, cfg.diagnosis) == (
        REAL_SLIDE_MODELS["detector"], REAL_SLIDE_MODELS["classifier"], REAL_SLIDE_MODELS["diagnosis"])
    kinds = {m.name: json_kind(m.path) for m in list_models()}
    assert kinds[cfg.detector] in ("real", "mixed") and kinds[cfg.classifier] in ("real", "mixed")
    syn = AnalysisConfig.synthetic(target_cells=7)
    assert (syn.detector, syn.classifier, syn.target_cells) == (
        SYNTHETIC_MODELS["detector"], SYNTHETIC_MODELS["classifier"], 7)
    assert kinds[syn.detector] == kinds[syn.classifier] == "synthetic"


def json_kind(weights) -> str:  # noqa: ANN001
    import json

    return str(json.loads((weights.parent / "meta.json").read_text())["training_data_kind"])
