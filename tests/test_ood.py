"""OOD score of a slide: statistics stored with the weights; the ``ood_slide`` warning appears on a
clearly foreign slide and not on an in-domain one (stub models, small synthetic slides)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from marrowscope.data.crops import crops_from_slide
from marrowscope.data.regions import FieldSelectionConfig
from marrowscope.engines.ood import OODStats, fit_ood_stats, ood_stats_of, score_crops, slide_ood
from marrowscope.engines.pipeline import AnalysisConfig, analyze_slide
from marrowscope.io.slides.array import ArraySlide
from pipeline_stubs import smear_image, stub_models, two_rois

CFG = AnalysisConfig(target_cells=30, tta=1, fields=FieldSelectionConfig(field_size_px=256))


def _foreign(seed: int) -> np.ndarray:
    """The same smear in another 'stain': channels rotated (green-brown cells on a cyan background)."""
    img = smear_image(seed=seed)
    return np.ascontiguousarray(img[..., [1, 2, 0]])


@pytest.fixture(scope="module")
def models_with_ood():  # noqa: ANN201
    models = stub_models()
    clf = models.classifier
    crops, labels = [], []
    for seed in (0, 1, 2):
        slide = ArraySlide(smear_image(seed=seed), mpp=0.5, slide_id=f"train{seed}")
        res = analyze_slide(slide, models, CFG, annotations=two_rois())
        crops.append(crops_from_slide(slide, list(res.cells.cells), mpp=clf.mpp, size=clf.input_size))
        labels += [c.label for c in res.cells.cells]
        assert res.ood is None  # no statistics yet: no score
    names = {n: i for i, n in enumerate(clf.classes)}
    y = np.array([names.get(lab or "", 0) for lab in labels])
    st = fit_ood_stats(clf, np.concatenate(crops), y)
    return replace(models, classifier=clf.with_params(ood=st.to_dict()))


def test_stats_round_trip_through_the_weights_params(models_with_ood) -> None:  # noqa: ANN001
    st = ood_stats_of(models_with_ood.classifier)
    assert st is not None and st.slide_threshold > 0
    again = OODStats.from_dict(st.to_dict())
    np.testing.assert_allclose(again.class_means, st.class_means, atol=1e-5)


def test_warning_on_a_foreign_slide_not_on_an_in_domain_one(models_with_ood) -> None:  # noqa: ANN001
    home = analyze_slide(ArraySlide(smear_image(seed=7), mpp=0.5, slide_id="home"), models_with_ood, CFG,
                         annotations=two_rois())
    away = analyze_slide(ArraySlide(_foreign(seed=7), mpp=0.5, slide_id="away"), models_with_ood, CFG,
                         annotations=two_rois())
    assert home.ood is not None and not home.ood["flagged"]
    assert "ood_slide" not in [w.code for w in home.warnings]
    assert away.ood is not None and away.ood["flagged"]
    assert away.ood["score"] > 3 * home.ood["score"]
    (w,) = [w for w in away.warnings if w.code == "ood_slide"]
    assert "unlike the classifier's training data" in w.message
    d = away.to_dict()
    assert d["ood"]["flagged"] is True and "ood_slide" in [x["code"] for x in d["warnings"]]


def test_no_statistics_no_score() -> None:
    clf = stub_models().classifier
    crops = np.full((4, 16, 16, 3), 120, dtype=np.uint8)
    assert score_crops(clf, crops) is None and slide_ood(clf, crops) is None
