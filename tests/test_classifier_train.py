"""Classifier training (deterministic, resumable, set-valued targets) and the CLI on a tiny PBC folder."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from marrowscope.data.cell_augment import AugmentConfig, augment_batch, dihedral
from marrowscope.data.classification_datasets import HARD, SET, CropSet
from marrowscope.engines.train_classifier import TrainConfig, classification_loss, train_classifier
from marrowscope.models.classifier import load_classifier, make_spec, save_classifier

CLASSES = ("lymphocyte", "monocyte", "neutrophilic_band", "segmented_neutrophil")


def _tiny_set(n: int = 48, size: int = 20, seed: int = 0) -> CropSet:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % len(CLASSES)
    colours = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200], [200, 200, 40]], dtype=np.int64)
    imgs = np.clip(colours[y][:, None, None, :] + rng.integers(-20, 20, (n, size, size, 3)), 0, 255)
    targets = np.eye(len(CLASSES), dtype=np.float32)[y]
    kind = np.full(n, HARD, dtype=np.int8)
    # two crops labelled only "neutrophil": band or segmented
    targets[-2:] = 0
    targets[-2:, 2:] = 1
    kind[-2:] = SET
    return CropSet(images=imgs.astype(np.uint8), targets=targets, target_kind=kind, classes=CLASSES,
                   labels=tuple(CLASSES[i] for i in y), source_labels=tuple(CLASSES[i] for i in y),
                   groups=np.arange(n), ids=tuple(str(i) for i in range(n)))


def test_set_loss_and_soft_targets():
    logits = torch.tensor([[2.0, 0.0, 1.0, 1.0]])
    t = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    set_loss = classification_loss(logits, t, torch.tensor([SET]))
    p = torch.softmax(logits, 1)[0]
    assert float(set_loss) == pytest.approx(-float(torch.log(p[2] + p[3])), rel=1e-5)
    soft = classification_loss(logits, t, torch.tensor([HARD]))  # read as soft 0.5/0.5
    assert float(soft) == pytest.approx(-float(0.5 * torch.log(p[2]) + 0.5 * torch.log(p[3])), rel=1e-5)


def test_augment_is_seeded_and_shaped():
    x = torch.rand(4, 3, 24, 24)
    a = augment_batch(x, 16, AugmentConfig(), torch.Generator().manual_seed(5))
    b = augment_batch(x, 16, AugmentConfig(), torch.Generator().manual_seed(5))
    assert a.shape == (4, 3, 16, 16) and torch.equal(a, b)
    assert float(a.min()) >= 0 and float(a.max()) <= 1
    assert torch.equal(dihedral(dihedral(x, 1), 3), x)


def test_training_is_deterministic_and_resumes(tmp_path):
    data = _tiny_set()
    spec = make_spec(CLASSES, input_size=16, mpp=0.5, scheme=None)
    cfg = TrainConfig(epochs=2, batch_size=16, lr=5e-3, warmup_epochs=0, seed=7, eval_every=1)
    full = train_classifier(spec, data, data, tmp_path / "full", cfg, progress=False)
    assert full.finished and full.epochs_done == 2 and "macro_f1" in full.history[-1]
    # interrupted after epoch 1 (time budget 0), then resumed: the same weights as the uninterrupted run
    stop = replace(cfg, max_minutes=0.0)
    part = train_classifier(spec, data, data, tmp_path / "part", stop, progress=False)
    assert not part.finished and part.epochs_done == 1
    resumed = train_classifier(spec, data, data, tmp_path / "part", cfg, progress=False)
    assert resumed.finished and resumed.epochs_done == 2
    a = load_classifier(full.weights)
    b = load_classifier(resumed.weights)
    for (ka, va), (_, vb) in zip(a.net.state_dict().items(), b.net.state_dict().items(), strict=True):
        assert torch.equal(va, vb), ka
    with pytest.raises(Exception, match="different spec or config"):
        train_classifier(spec, data, data, tmp_path / "part", replace(cfg, lr=1e-3), progress=False)


def test_cli_evaluate_on_pbc_layout(tmp_path):
    from marrowscope.cli.main import main
    from marrowscope.models.classifier import create_classifier
    from test_classifier_data import _write_pbc_folder

    _write_pbc_folder(tmp_path / "pbc", n_per=2)
    classes = ("promyelocyte", "neutrophilic_myelocyte", "segmented_neutrophil", "lymphocyte", "myeloblast")
    clf = create_classifier(make_spec(classes, input_size=16, mpp=0.45, scheme=None))
    save_classifier(tmp_path / "w.pt", clf)
    rc = main(["evaluate", "classifier", "--weights", str(tmp_path / "w.pt"), "--dataset",
               f"pbc:{tmp_path / 'pbc'}", "--out", str(tmp_path / "ev"), "--tta", "2"])
    assert rc == 0
    d = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    for key in ("macro_f1", "macro_auc", "balanced_accuracy", "n_images", "per_class"):
        assert key in d
    assert d["n_images"] == 12
    assert set(d["classes"]) >= {"ig", "neutrophil", "lymphocyte"}
    assert any("myeloblast" in n for n in d["notes"])  # a model class PBC cannot score is reported
    rows = (tmp_path / "ev" / "predictions.csv").read_text().splitlines()
    assert len(rows) == 13
    rc = main(["evaluate", "classifier", "--weights", str(tmp_path / "w.pt"), "--dataset",
               f"pbc:{tmp_path / 'missing'}", "--out", str(tmp_path / "ev2")])
    assert rc != 0


def test_slide_cohort_dataset_and_evaluation(tmp_path):
    """Consensus cells of a (tiny) synthetic cohort: crops from the DICOM slides, soft session targets."""
    from marrowscope import taxonomy
    from marrowscope.data.classification_datasets import SOFT, load_slide_dataset
    from marrowscope.data.synth.cohort import SynthConfig, generate_cohort
    from marrowscope.engines.evaluate import evaluate_classifier
    from marrowscope.models.classifier import create_classifier

    generate_cohort(SynthConfig(n_patients=1, seed=3, slide_size=1536, roi_size=384, n_rois=1,
                                cells_per_roi=12), tmp_path / "synth")
    sch = taxonomy.load_scheme("bmdeep33")
    cs, skipped = load_slide_dataset("synth", tmp_path / "synth", sch.classes, mpp=0.45, size=24, scheme=sch)
    assert len(cs) > 0 and cs.images.shape[1:] == (24, 24, 3)
    assert (cs.target_kind == SOFT).any()
    np.testing.assert_allclose(cs.targets.sum(axis=1)[cs.target_kind == SOFT], 1.0, atol=1e-5)
    assert len(set(cs.groups.tolist())) == 1  # one patient, one group
    clf = create_classifier(make_spec(sch.classes, input_size=24, mpp=0.45, scheme="bmdeep33"))
    save_classifier(tmp_path / "w.pt", clf)
    rep = evaluate_classifier(tmp_path / "w.pt", f"synth:{tmp_path / 'synth'}", tmp_path / "ev", tta=1)
    assert rep.n_images + sum(rep.extra["excluded"].values()) == len(cs) + sum(
        v for k, v in skipped.items() if k not in ("no_consensus_found", "(unlabelled)",
                                                   "(slide without consensus)"))
    assert (tmp_path / "ev" / "metrics.json").is_file()


def test_cli_train_on_pbc_layout(tmp_path):
    from marrowscope.cli.main import main
    from test_classifier_data import _write_pbc_folder

    _write_pbc_folder(tmp_path / "pbc", n_per=4)
    args = ["train", "classifier", "--dataset", f"pbc:{tmp_path / 'pbc'}", "--out", str(tmp_path / "run"),
            "--epochs", "1", "--input-size", "16", "--batch-size", "8", "--eval-every", "1"]
    assert main(args) == 0
    clf = load_classifier(tmp_path / "run" / "classifier.pt")
    assert clf.classes[0] == "promyelocyte" and clf.spec.scheme == "pbc_fine"
    assert clf.spec.params["scheme_def"]["mapping"]["segmented_basophil"] == "basophil"
    assert clf.temperature > 0 and clf.uncertain_threshold == 0.5
    assert (clf.spec.training_data or "").startswith(f"pbc:{tmp_path / 'pbc'}: ")
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert set(split["train"]).isdisjoint(split["val"]) and len(split["train"]) + len(split["val"]) == 24
    assert main(args) == 0  # resumes: nothing left to train, finalises again


def test_init_from_weights_with_other_classes_maps_the_head_by_name():
    from marrowscope.engines.train_classifier import init_state_from
    from marrowscope.errors import InputError
    from marrowscope.models.classifier import create_classifier

    small = create_classifier(make_spec(CLASSES, input_size=16, mpp=0.5, scheme=None), seed=1)
    big_classes = ("myeloblast", "monocyte", "plasma_cell", "lymphocyte", "segmented_neutrophil")
    big = create_classifier(make_spec(big_classes, input_size=16, mpp=0.5, scheme=None), seed=2)
    fresh = {k: v.clone() for k, v in big.net.state_dict().items()}
    assert init_state_from(big.net, small.net, CLASSES, big_classes) == 3
    got, init = big.net.state_dict(), small.net.state_dict()
    head = [k for k in got if got[k].ndim >= 1 and got[k].shape[0] == len(big_classes)]
    assert head  # the last Linear layer's weight and bias
    for k in got:
        if k in head:
            for new_i, old_i in ((1, 1), (3, 0), (4, 3)):  # monocyte, lymphocyte, segmented_neutrophil
                assert torch.equal(got[k][new_i], init[k][old_i].float()), k
            for new_i in (0, 2):  # classes the initial weights lack keep the fresh initialisation
                assert torch.equal(got[k][new_i], fresh[k][new_i]), k
        else:
            assert torch.equal(got[k], init[k].float() if init[k].is_floating_point() else init[k]), k
    other = create_classifier(make_spec(("myeloblast", "plasma_cell"), input_size=16, mpp=0.5, scheme=None))
    with pytest.raises(InputError, match="share no class"):
        init_state_from(other.net, small.net, CLASSES, ("myeloblast", "plasma_cell"))


def test_cli_train_on_real_crops_and_the_synthetic_cohort(tmp_path):
    """Two datasets (a PBC folder + a synthetic cohort): bmdeep33 classes, each split on its own (the
    PBC part of the split is the one PBC alone gets), ``missing`` keeps only synthetic cells of classes
    PBC lacks, and a PBC-class model starts the run (its head mapped by class name)."""
    from marrowscope import taxonomy
    from marrowscope.cli.main import main
    from marrowscope.data.classification_datasets import PBC_CLASSES
    from marrowscope.data.synth.cohort import SynthConfig, generate_cohort
    from marrowscope.models.classifier import create_classifier
    from test_classifier_data import _write_pbc_folder

    _write_pbc_folder(tmp_path / "pbc", n_per=4)
    generate_cohort(SynthConfig(n_patients=1, seed=3, slide_size=1536, roi_size=384, n_rois=1,
                                cells_per_roi=14), tmp_path / "synth")
    init = create_classifier(make_spec(PBC_CLASSES, input_size=16, mpp=0.45, scheme=None))
    save_classifier(tmp_path / "pbc.pt", init)
    common = ["--input-size", "16", "--batch-size", "8", "--eval-every", "1", "--epochs", "1"]
    assert main(["train", "classifier", "--dataset", f"pbc:{tmp_path / 'pbc'}", "--out",
                 str(tmp_path / "alone"), *common]) == 0
    args = ["train", "classifier", "--dataset", f"pbc:{tmp_path / 'pbc'}", "--dataset",
            f"synth:{tmp_path / 'synth'}", "--out", str(tmp_path / "mix"), "--synthetic-classes", "missing",
            "--init-weights", str(tmp_path / "pbc.pt"), *common]
    assert main(args) == 0
    clf = load_classifier(tmp_path / "mix" / "classifier.pt")
    assert clf.classes == taxonomy.load_scheme("bmdeep33").classes
    split = json.loads((tmp_path / "mix" / "split.json").read_text())
    alone = json.loads((tmp_path / "alone" / "split.json").read_text())
    pbc_val = [i for i in split["val"] if i.startswith(str(tmp_path / "pbc"))]
    assert sorted(pbc_val) == sorted(alone["val"])
    assert set(split["train"]).isdisjoint(split["val"])
    n_syn = split["per_dataset"][f"synth:{tmp_path / 'synth'}"]
    assert n_syn["train"] + n_syn["val"] > 0
    assert split["unmapped"][f"synth:{tmp_path / 'synth'}"]["(class covered by real data)"] > 0
    assert "synthetic cohort" in (clf.spec.training_data or "") and "pbc:" in (clf.spec.training_data or "")
    assert main([*args[:-len(common)], "--synthetic-classes", "some"]) != 0
