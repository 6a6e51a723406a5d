"""Classifier: weights contract, TTA/temperature/uncertain prediction, metrics, label mapping."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from marrowscope.data.classification_datasets import HARD, PBC_CLASSES, SET, target_for_label
from marrowscope.engines.classify import (
    classify_crops,
    fit_temperature,
    negative_log_likelihood,
    softmax,
    tta_logits,
)
from marrowscope.errors import InputError
from marrowscope.eval.classification import (
    aggregate_probabilities,
    align_labels,
    evaluate_probabilities,
    expected_calibration_error,
    score_predictions,
    write_report,
)
from marrowscope.models.classifier import (
    CellClassifier,
    create_classifier,
    load_classifier,
    make_spec,
    save_classifier,
)
from marrowscope.models.weights import load_weights

CLASSES = ("lymphocyte", "monocyte", "segmented_neutrophil")


def test_model_contract_shapes_and_roundtrip(tmp_path):
    spec = make_spec(CLASSES, input_size=32, mpp=0.5, scheme=None)
    clf = create_classifier(spec, seed=3)
    crops = np.random.default_rng(0).integers(0, 255, (5, 32, 32, 3), dtype=np.uint8)
    z = clf.logits(clf.to_tensor(crops))
    assert tuple(z.shape) == (5, 3)
    path = tmp_path / "w.pt"
    save_classifier(path, clf.with_params(temperature=1.7, uncertain_threshold=0.4))
    back = load_classifier(path, device="cpu")
    assert back.classes == CLASSES
    assert back.input_size == 32 and back.mpp == 0.5
    assert back.temperature == pytest.approx(1.7) and back.uncertain_threshold == pytest.approx(0.4)
    z2 = back.logits(back.to_tensor(crops))
    assert torch.allclose(z, z2, atol=0.05)  # fp16 storage
    _, loaded_spec, _ = load_weights(path, task="classifier")
    assert loaded_spec.classes == CLASSES
    with pytest.raises(InputError, match="differ from the expected"):
        load_classifier(path, expect_classes=("monocyte", "lymphocyte", "segmented_neutrophil"))
    with pytest.raises(InputError, match="not a detector"):
        load_weights(path, task="detector")


def test_contract_mismatch_is_an_input_error():
    clf = create_classifier(make_spec(CLASSES, input_size=32, mpp=0.5))
    with pytest.raises(InputError, match=r"expects \(N, 32, 32, 3\)"):
        clf.to_tensor(np.zeros((2, 48, 48, 3), dtype=np.uint8))
    with pytest.raises(InputError, match="at least 2 distinct classes"):
        make_spec(("lymphocyte", "lymphocyte"))
    with pytest.raises(InputError, match="unknown classifier architecture"):
        create_classifier(make_spec(CLASSES, arch="no_such_net"))


def test_tv_backbone_builds():
    clf = create_classifier(make_spec(CLASSES, arch="tv:mobilenet_v3_small", input_size=32))
    assert tuple(clf.logits(clf.to_tensor(np.zeros((1, 32, 32, 3), np.uint8))).shape) == (1, 3)


class _MeanNet(torch.nn.Module):
    """Logits from the mean intensity: bright crops -> class 0, dark -> class 1."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.mean(dim=(1, 2, 3))
        return torch.stack([4 * m, -4 * m, torch.zeros_like(m)], dim=1)


def _stub(threshold: float = 0.0) -> CellClassifier:
    spec = make_spec(CLASSES, input_size=8, mpp=0.5, params={"uncertain_threshold": threshold})
    return CellClassifier(net=_MeanNet(), spec=spec)


def test_uncertain_threshold_and_tta():
    crops = np.stack([np.full((8, 8, 3), v, np.uint8) for v in (255, 128, 0)])
    res = classify_crops(_stub(0.6), crops, tta=8)
    assert res.probabilities.shape == (3, 3)
    np.testing.assert_allclose(res.probabilities.sum(axis=1), 1.0, atol=1e-6)
    assert res.labels[0] == "lymphocyte" and res.labels[2] == "monocyte"
    assert res.labels[1] is None  # mid-grey: top probability below 0.6
    assert res.uncertain.tolist() == [False, True, False]
    assert res.argmax_labels[1] in CLASSES
    # TTA of a rotation-invariant net equals no TTA
    clf = _stub()
    np.testing.assert_allclose(tta_logits(clf, crops, tta=8), tta_logits(clf, crops, tta=1), atol=1e-5)
    # a lower threshold labels everything
    assert None not in classify_crops(clf, crops, threshold=0.0).labels


def test_temperature_scaling_reduces_nll():
    rng = np.random.default_rng(1)
    n, c = 600, 4
    y = rng.integers(0, c, n)
    base = rng.normal(0, 1, (n, c))
    base[np.arange(n), y] += 1.0
    logits = base * 6.0  # overconfident
    t = fit_temperature(logits, y)
    assert t > 2.0
    assert negative_log_likelihood(softmax(logits, t), y) < negative_log_likelihood(softmax(logits), y) - 0.2
    assert expected_calibration_error(softmax(logits, t), y) < expected_calibration_error(softmax(logits), y)


def test_metrics_hand_made_case(tmp_path):
    classes = ("a", "b", "c")
    truth = ["a", "a", "b", "b", "c", "c"]
    pred = [0, 1, 1, 1, 2, 0]  # a: P 1/2 R 1/2; b: P 2/3 R 1; c: P 1 R 1/2
    probs = np.full((6, 3), 0.1)
    probs[np.arange(6), pred] = 0.8
    rep = evaluate_probabilities(probs, truth, classes)
    f1 = [0.5, 2 * (2 / 3) / (2 / 3 + 1), 2 * 0.5 / 1.5]
    assert rep.macro_f1 == pytest.approx(np.mean(f1))
    assert rep.balanced_accuracy == pytest.approx((0.5 + 1 + 0.5) / 3)
    assert rep.per_class["b"].precision == pytest.approx(2 / 3)
    assert rep.per_class["c"].support == 2
    assert rep.confusion.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert rep.accuracy == pytest.approx(4 / 6)
    # ECE: all confidences 0.8, accuracy 4/6
    assert rep.ece == pytest.approx(abs(0.8 - 4 / 6))
    metrics = write_report(rep, tmp_path)
    import json

    d = json.loads(metrics.read_text())
    for key in ("macro_f1", "macro_auc", "balanced_accuracy", "n_images", "per_class"):
        assert key in d
    assert d["n_images"] == 6
    assert (tmp_path / "confusion.png").stat().st_size > 1000


def test_label_targets_between_schemes():
    row, kind = target_for_label("promyelocyte", PBC_CLASSES)
    assert kind == HARD and PBC_CLASSES[int(row.argmax())] == "promyelocyte"
    row, kind = target_for_label("neutrophil", PBC_CLASSES)
    assert kind == SET
    assert {PBC_CLASSES[i] for i in np.nonzero(row)[0]} == {"neutrophilic_band", "segmented_neutrophil"}
    row, kind = target_for_label("immature_granulocyte", PBC_CLASSES)
    assert kind == SET and int(row.sum()) == 3
    assert target_for_label("myeloblast", PBC_CLASSES) is None
    # a finer label goes up to its class
    row, kind = target_for_label("segmented_basophil", PBC_CLASSES)
    assert kind == HARD and PBC_CLASSES[int(row.argmax())] == "basophil"


def test_scoring_maps_finer_predictions_up_to_pbc8():
    classes = ("promyelocyte", "neutrophilic_myelocyte", "segmented_neutrophil", "myeloblast")
    probs = np.array([
        [0.3, 0.3, 0.4, 0.0],  # ig 0.6 > neutrophil 0.4 -> ig
        [0.1, 0.1, 0.7, 0.1],  # neutrophil
        [0.0, 0.1, 0.1, 0.8],  # myeloblast: no pbc8 class -> (other), an error
    ])
    truth = ["immature_granulocyte", "neutrophil", "neutrophil"]
    rep = score_predictions(probs, classes, truth, eval_scheme="pbc8")
    assert "(other)" in rep.classes
    assert rep.confusion[rep.classes.index("ig"), rep.classes.index("ig")] == 1
    assert rep.per_class["neutrophil"].recall == pytest.approx(0.5)
    assert any("myeloblast" in n for n in rep.notes)
    agg, cols, _ = aggregate_probabilities(probs, classes, ("ig", "neutrophil"),
                                           {"promyelocyte": "ig", "neutrophilic_myelocyte": "ig",
                                            "segmented_neutrophil": "neutrophil"})
    assert cols == ("ig", "neutrophil", "(other)")
    np.testing.assert_allclose(agg.sum(axis=1), 1.0)


def test_alignment_without_scheme_reports_unknown_labels():
    classes = ("neutrophilic_band", "segmented_neutrophil", "lymphocyte")
    al = align_labels(classes, ["neutrophil", "lymphocyte", "plasma_cell"])
    assert al.model_to_eval["neutrophilic_band"] == "neutrophil"
    assert al.truth_to_eval["lymphocyte"] == "lymphocyte"
    assert al.truth_to_eval["plasma_cell"] is None
    assert any("plasma_cell" in n for n in al.notes)
    probs = np.array([[0.5, 0.4, 0.1], [0.1, 0.1, 0.8], [0.2, 0.2, 0.6]])
    rep = score_predictions(probs, classes, ["neutrophil", "lymphocyte", "plasma_cell"])
    assert rep.n_images == 2 and rep.extra["excluded"] == {"plasma_cell": 1}
    assert rep.macro_f1 == pytest.approx(1.0)


def test_batchnorm_adaptation_per_call(tmp_path):
    from marrowscope.engines.classify import MIN_STANDARDISE, adapt_batchnorm

    clf = create_classifier(make_spec(CLASSES, input_size=32, mpp=0.5), seed=1)
    rng = np.random.default_rng(0)
    crops = rng.integers(120, 255, (MIN_STANDARDISE, 32, 32, 3), dtype=np.uint8)
    bns = lambda net: [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]  # noqa: E731
    stored = [m.running_mean.clone() for m in bns(clf.net)]
    assert adapt_batchnorm(clf, crops) is clf  # the weights do not ask for it
    ask = clf.with_params(bn_adapt=True)
    assert adapt_batchnorm(ask, crops[: MIN_STANDARDISE - 1]) is ask  # too few crops: the stored statistics
    adapted = adapt_batchnorm(ask, crops)
    assert all(not m.training for m in bns(adapted.net))
    assert all(not torch.allclose(m.running_mean, s) for m, s in zip(bns(adapted.net), stored, strict=True))
    assert all(torch.equal(m.running_mean, s) for m, s in zip(bns(clf.net), stored, strict=True))  # a copy
    first = adapt_batchnorm(clf.with_params(bn_adapt=1), crops)
    changed = [not torch.allclose(m.running_mean, s) for m, s in zip(bns(first.net), stored, strict=True)]
    assert changed[0] and not any(changed[1:])
    # its pass stopped early, with the first layer's statistics those of a full pass
    assert torch.allclose(bns(first.net)[0].running_var, bns(adapted.net)[0].running_var)
    # the call's statistics reach the probabilities, through a folded copy (the same up to rounding)
    p0 = classify_crops(clf, crops, tta=1).probabilities
    p1 = classify_crops(ask, crops, tta=1).probabilities
    assert not np.allclose(p1, p0)
    assert not bns(adapt_batchnorm(ask, crops, fold=True).net)
    assert np.allclose(p1, softmax(tta_logits(adapted, crops, tta=1), clf.temperature), atol=1e-4)
    # a predicting-only load keeps BatchNorm unfolded for weights that adapt it
    save_classifier(tmp_path / "a.pt", ask)
    assert bns(load_classifier(tmp_path / "a.pt", device="cpu", optimise=True).net)
    save_classifier(tmp_path / "b.pt", clf)
    assert not bns(load_classifier(tmp_path / "b.pt", device="cpu", optimise=True).net)
