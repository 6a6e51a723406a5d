"""The one annotation type every reader yields and every writer takes.

Coordinates are level-0 pixels of the slide (or image) they belong to; boxes are x1, y1, x2, y2 with
x2 > x1 and y2 > y1. Labels are taxonomy label names (see :mod:`marrowscope.taxonomy`); ``None`` means
the box has no cell-type label (a detection-only box).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace

import numpy as np


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in level-0 pixels: x1 = xmin, y1 = ymin, x2 = xmax, y2 = ymax."""

    x1: float
    y1: float
    x2: float
    y2: float

    def __post_init__(self) -> None:
        if not (self.x2 > self.x1 and self.y2 > self.y1):
            raise ValueError(f"degenerate box {self.as_tuple()}: need x2 > x1 and y2 > y1")

    @property
    def width(self) -> float:
        return self.x2 - self.x1

    @property
    def height(self) -> float:
        return self.y2 - self.y1

    @property
    def center(self) -> tuple[float, float]:
        return ((self.x1 + self.x2) / 2.0, (self.y1 + self.y2) / 2.0)

    def as_tuple(self) -> tuple[float, float, float, float]:
        return (self.x1, self.y1, self.x2, self.y2)

    def shifted(self, dx: float, dy: float) -> Box:
        return Box(self.x1 + dx, self.y1 + dy, self.x2 + dx, self.y2 + dy)

    def contains_point(self, x: float, y: float) -> bool:
        return self.x1 <= x < self.x2 and self.y1 <= y < self.y2

    def within(self, width: float, height: float) -> bool:
        """True if the box lies inside an image of ``width`` x ``height`` pixels."""
        return self.x1 >= 0 and self.y1 >= 0 and self.x2 <= width and self.y2 <= height


@dataclass(frozen=True)
class Region:
    """A region of interest (e.g. a monolayer ROI) in level-0 pixels."""

    box: Box
    roi_id: int
    label: str = "region_of_interest"


@dataclass(frozen=True)
class Cell:
    """One boxed object.

    ``label``: taxonomy label (consensus or predicted), ``None`` for an unlabeled box.
    ``session_labels``: per-session expert labels in session order (session 0 first), already
    normalised to taxonomy labels. ``roi_id``: -1 outside any ROI, ``None`` when unknown.
    ``score``: detection confidence; ``probabilities``: class name -> probability for predictions.
    ``cell_id``: the dataset's own id of an annotated cell (never our numbering); ``detection_id``: our
    id of a detected object within its slide (``analyze``), with ``cell_id`` set only when the detection
    was matched to an annotated cell.
    """

    box: Box
    label: str | None = None
    cell_id: int | None = None
    roi_id: int | None = None
    session_labels: tuple[str, ...] = ()
    score: float | None = None
    probabilities: Mapping[str, float] | None = None
    detection_id: int | None = None

    @property
    def row_id(self) -> int | None:
        """This object's id in its own table: our ``detection_id`` for a detection, else ``cell_id``."""
        return self.detection_id if self.detection_id is not None else self.cell_id

    def with_label(self, label: str | None) -> Cell:
        return replace(self, label=label)


@dataclass(frozen=True)
class CellAnnotations:
    """All boxes (and ROIs) of one slide or image, in its level-0 pixel frame."""

    cells: tuple[Cell, ...]
    regions: tuple[Region, ...] = ()
    slide_id: str | None = None
    image_path: str | None = None
    width: int | None = None
    height: int | None = None
    mpp: float | None = None
    source: str = ""
    extra: Mapping[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.cells)

    def __bool__(self) -> bool:
        """Always true: an ROI-only set has no cells (``len() == 0``) yet is not "nothing". Test
        ``.cells`` or ``.regions`` for emptiness, and ``is None`` for absence."""
        return True

    def __iter__(self) -> Iterator[Cell]:
        return iter(self.cells)

    def label_counts(self) -> Counter[str]:
        """Cells per label; unlabeled boxes are counted under ``"haematological_structure"``."""
        return Counter(c.label if c.label is not None else "haematological_structure" for c in self.cells)

    def boxes_array(self) -> np.ndarray:
        """(N, 4) float array of x1, y1, x2, y2."""
        if not self.cells:
            return np.zeros((0, 4), dtype=np.float64)
        return np.array([c.box.as_tuple() for c in self.cells], dtype=np.float64)

    def labels(self) -> list[str | None]:
        return [c.label for c in self.cells]

    def with_cells(self, cells: Iterable[Cell]) -> CellAnnotations:
        return replace(self, cells=tuple(cells))

    def in_region(self, region: Region) -> CellAnnotations:
        """Cells whose box centre lies in ``region``."""
        return self.with_cells(c for c in self.cells if region.box.contains_point(*c.box.center))

    def shifted(self, dx: float, dy: float) -> CellAnnotations:
        """Move every box and region by (dx, dy) pixels (e.g. CSV frame -> DICOM frame)."""
        return replace(
            self,
            cells=tuple(replace(c, box=c.box.shifted(dx, dy)) for c in self.cells),
            regions=tuple(replace(r, box=r.box.shifted(dx, dy)) for r in self.regions),
        )


@dataclass(frozen=True)
class Detections:
    """Boxes (N, 4) x1,y1,x2,y2 in level-0 pixels, scores (N,), labels (N,) indices into ``classes``."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def above(self, threshold: float) -> Detections:
        keep = self.scores >= threshold
        return Detections(self.boxes[keep], self.scores[keep], self.labels[keep], self.classes)

    def to_annotations(self, threshold: float = 0.0, **fields: object) -> CellAnnotations:
        """The detections (score ≥ ``threshold``) as :class:`CellAnnotations` (label = class name)."""
        d = self.above(threshold)
        cells = tuple(
            Cell(box=Box(*map(float, b)), label=self.classes[int(c)], cell_id=i, score=float(s))
            for i, (b, s, c) in enumerate(zip(d.boxes, d.scores, d.labels, strict=True))
            if b[2] > b[0] and b[3] > b[1]
        )
        return CellAnnotations(cells=cells, **fields)  # type: ignore[arg-type]

    @staticmethod
    def empty(classes: tuple[str, ...]) -> Detections:
        return Detections(np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=np.int64), classes)
