"""benchmarks/peers.py: the YOLO-format copy of the training data reads back as the same boxes."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

from marrowscope.cells import Box, Cell, CellAnnotations
from marrowscope.data.detection_datasets import DetectionSample, yolo_samples

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from peers import write_yolo_dataset  # noqa: E402

CLASSES = ("WBC", "RBC", "Platelet")


def _sample(tmp: Path, name: str, cells: list[tuple[str, float, float, float, float]]) -> DetectionSample:
    path = tmp / f"{name}.jpg"
    Image.fromarray(np.full((120, 160, 3), 200, np.uint8)).save(path)
    ann = CellAnnotations(tuple(Cell(Box(x1, y1, x2, y2), lab) for lab, x1, y1, x2, y2 in cells),
                          image_path=str(path))
    return DetectionSample(name, ann, name)


def test_yolo_copy_round_trip(tmp_path: Path) -> None:
    a = _sample(tmp_path, "a", [("WBC", 10, 20, 50, 60), ("Platelet", 100, 5, 112, 17)])
    b = _sample(tmp_path, "b", [("RBC", 3, 90, 30, 118)])
    out = tmp_path / "yolo"
    yaml = write_yolo_dataset([a, a, a, b], [b], CLASSES, out)
    assert "train.txt" in yaml.read_text()
    listed = (out / "train.txt").read_text().split()
    assert [Path(p).name for p in listed] == ["a.jpg"] * 3 + ["b.jpg"]  # a repeated sample, listed 3 times
    assert all(Path(p).is_file() for p in listed)
    back = {s.image_id: s for s in yolo_samples(out, CLASSES, "train")}
    assert sorted(back) == ["a", "b"]
    for key, src in (("a", a), ("b", b)):
        got, want = back[key].annotations.cells, src.annotations.cells
        assert [c.label for c in got] == [c.label for c in want]
        np.testing.assert_allclose([[c.box.x1, c.box.y1, c.box.x2, c.box.y2] for c in got],
                                   [[c.box.x1, c.box.y1, c.box.x2, c.box.y2] for c in want], atol=1e-3)
    assert [s.image_id for s in yolo_samples(out, CLASSES, "val")] == ["b"]
