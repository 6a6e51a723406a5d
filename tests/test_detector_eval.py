"""Detection metrics against hand-computed cases."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from marrowscope.cells import Box, Cell, CellAnnotations
from marrowscope.engines.detect import Detections
from marrowscope.eval.detection import evaluate_detections, plot_pr_curve, write_metrics_json


def _truth(*boxes: tuple[float, float, float, float], label: str = "a") -> CellAnnotations:
    return CellAnnotations(tuple(Cell(Box(*b), label) for b in boxes), width=100, height=100)


def _pred(boxes: list[list[float]], scores: list[float], labels: list[int], classes: tuple[str, ...]
          ) -> Detections:
    b = np.array(boxes, float).reshape(-1, 4)
    return Detections(b, np.array(scores), np.array(labels, np.int64), classes)


def test_ap_matches_hand_computation(tmp_path: Path) -> None:
    # image 1: TP (0.9) and FP (0.8); image 2: TP (0.7). Ranked: TP, FP, TP -> precision 1 at recall 0.5,
    # 2/3 at recall 1. COCO's 101-point interpolation: 51 points at 1.0 and 50 at 2/3.
    cls = ("a",)
    truths = [_truth((0, 0, 10, 10)), _truth((50, 50, 60, 60))]
    preds = [_pred([[0, 0, 10, 10], [20, 20, 30, 30]], [0.9, 0.8], [0, 0], cls),
             _pred([[50, 50, 60, 60]], [0.7], [0], cls)]
    m = evaluate_detections(preds, truths, cls, threshold=0.75)
    expected = (51 * 1.0 + 50 * 2 / 3) / 101
    assert m.ap50 == pytest.approx(expected)
    assert m.ap == pytest.approx(expected)  # exact boxes: the same at every IoU threshold
    assert m.ap50_per_class == {"a": pytest.approx(expected)}
    # at threshold 0.75: predictions 0.9 (TP) and 0.8 (FP) -> precision 1/2, recall 1/2
    assert m.precision == pytest.approx(0.5) and m.recall == pytest.approx(0.5)
    assert m.n_images == 2 and m.n_true == {"a": 2}
    out = write_metrics_json(m, tmp_path / "metrics.json")
    d = json.loads(out.read_text())
    assert {"ap50", "ap", "ap50_per_class", "n_images", "precision", "recall"} <= set(d)
    assert plot_pr_curve(m, tmp_path / "pr.png").stat().st_size > 1000


def test_per_class_and_localisation() -> None:
    cls = ("a", "b")
    cells = (Cell(Box(0, 0, 10, 10), "a"), Cell(Box(40, 40, 60, 60), "b"))
    truths = [CellAnnotations(cells, width=100, height=100)]
    # class a found exactly; class b box shifted: IoU = 10*20/(2*400-200) = 1/3 < 0.5 -> missed
    preds = [_pred([[0, 0, 10, 10], [50, 40, 70, 60]], [0.9, 0.8], [0, 1], cls)]
    m = evaluate_detections(preds, truths, cls)
    assert m.ap50_per_class["a"] == pytest.approx(1.0)
    assert m.ap50_per_class["b"] == pytest.approx(0.0)
    assert m.ap50 == pytest.approx(0.5)


def test_class_without_truth_is_left_out_of_the_mean() -> None:
    cls = ("a", "b")
    m = evaluate_detections([_pred([[0, 0, 10, 10]], [0.9], [0], cls)], [_truth((0, 0, 10, 10))], cls)
    assert m.ap50 == pytest.approx(1.0) and np.isnan(m.ap50_per_class["b"])
    assert m.to_json_dict()["ap50_per_class"]["b"] is None


def test_bootstrap_intervals_equal_evaluating_each_resample_from_scratch() -> None:
    from marrowscope.eval.detection import bootstrap_ap

    rng = np.random.default_rng(4)
    cls = ("a", "b")
    truths, preds, groups = [], [], []
    for i in range(9):
        xy = rng.uniform(0, 80, (6, 2))
        labels = rng.integers(0, 2, 6)
        cells = tuple(Cell(Box(x, y, x + 15, y + 15), cls[int(k)])
                      for (x, y), k in zip(xy, labels, strict=True))
        truths.append(CellAnnotations(cells, width=100, height=100))
        jitter = xy + rng.normal(0, 3, xy.shape)  # some boxes miss at strict IoU
        boxes = [[x, y, x + 15, y + 15] for x, y in jitter[:5]] + [[1, 1, 9, 9]]  # a miss, a false positive
        preds.append(_pred(boxes, list(rng.uniform(0.1, 1, 6)), [int(k) for k in labels[:5]] + [0], cls))
        groups.append(f"p{i // 3}")  # three images per patient
    (lo50, hi50), (lo, hi) = bootstrap_ap(preds, truths, cls, groups, n_boot=12, seed=3)
    # the same draws, each resample evaluated from scratch
    names = sorted(set(groups))
    members = {g: [i for i, x in enumerate(groups) if x == g] for g in names}
    draws = np.random.default_rng([3, 2203])
    ap50s, aps = [], []
    for _ in range(12):
        idx = [i for k in draws.integers(0, len(names), len(names)) for i in members[names[int(k)]]]
        m = evaluate_detections([preds[i] for i in idx], [truths[i] for i in idx], cls)
        ap50s.append(m.ap50)
        aps.append(m.ap)
    assert (lo50, hi50) == pytest.approx(tuple(np.percentile(ap50s, (2.5, 97.5))))
    assert (lo, hi) == pytest.approx(tuple(np.percentile(aps, (2.5, 97.5))))
    assert lo50 < hi50  # the resamples differ
