"""The cohort adapter: every ROI of a (tiny synthetic) cohort becomes one one-class sample."""

from __future__ import annotations

from pathlib import Path

import pytest

from marrowscope.data.detection_datasets import cohort_samples, load_detection_dataset
from marrowscope.data.synth.cohort import SynthConfig, generate_cohort, read_synth_record
from marrowscope.errors import InputError


@pytest.fixture(scope="module")
def tiny_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cohort") / "c"
    cfg = SynthConfig(n_patients=2, seed=5, slide_size=768, roi_size=256, n_rois=1, cells_per_roi=8,
                      kind_weights={"labelled": 1.0, "detection_only": 1.0})
    generate_cohort(cfg, out)
    return out


def test_cohort_rois_become_samples(tiny_cohort: Path) -> None:
    samples = cohort_samples(tiny_cohort)
    assert len(samples) == 2 and len({s.group for s in samples}) == 2
    for s in samples:
        ann = s.annotations
        assert ann.width == 256 and ann.height == 256 and s.mpp == pytest.approx(0.11)
        assert len(ann) > 0 and {c.label for c in ann} == {"cell"}
        boxes = ann.boxes_array()
        assert boxes.min() >= 0 and boxes[:, 2].max() <= 256 and boxes[:, 3].max() <= 256
        assert s.load().shape == (256, 256, 3)
    # the boxes the generator placed are all there (labelled and unlabeled alike)
    record = read_synth_record(tiny_cohort)
    n_true = sum(int(sl["n_annotated"]) for sl in record["slides"])
    assert 0.9 * n_true <= sum(len(s.annotations) for s in samples) <= n_true
    assert len(load_detection_dataset(f"cohort:{tiny_cohort}", ("cell",))) == 2


def test_cohort_needs_a_one_class_model(tiny_cohort: Path) -> None:
    with pytest.raises(InputError, match="one class"):
        cohort_samples(tiny_cohort, ("a", "b"))


def test_cohort_red_cell_class_takes_the_erythrocyte_boxes(tmp_path: Path) -> None:
    out = tmp_path / "r"
    generate_cohort(SynthConfig(n_patients=1, seed=5, slide_size=1536, roi_size=512, n_rois=1,
                                cells_per_roi=8, box_red_cells=True), out)
    one = cohort_samples(out)
    two = cohort_samples(out, ("cell", "red_cell"))
    assert [len(s.annotations) for s in one] == [len(s.annotations) for s in two]  # the same boxes
    labels = [c.label for s in two for c in s.annotations]
    consensus = [c.label for s in cohort_samples(out, ("x",)) for c in s.annotations]
    assert set(consensus) == {"x"}
    record = read_synth_record(out)
    n_red = int(record["slides"][0]["counts"].get("erythrocyte", 0))
    # every box whose consensus label is erythrocyte (the ROI's background red cells) is red_cell
    assert labels.count("red_cell") == n_red > 10 and labels.count("cell") > 0
    # the background red cells are class-level boxes: no simulated vote, so none becomes an "artifact", and
    # the other boxes keep the labels of the same cohort written without them
    plain = tmp_path / "p"
    generate_cohort(SynthConfig(n_patients=1, seed=5, slide_size=1536, roi_size=512, n_rois=1,
                                cells_per_roi=8), plain)
    before = [(c["box"], c["label"]) for c in read_synth_record(plain)["patients"][0]["cells"]]
    truth = record["patients"][0]["cells"]
    added = [c for c in truth if (c["box"], c["label"]) not in before]
    assert len(truth) == len(before) + len(added) and len(added) > 10
    assert all(c["true_label"] == c["label"] == "erythrocyte" and c["session_labels"] == ["erythrocyte"] * 2
               for c in added)
