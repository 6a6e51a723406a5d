"""Small stand-ins for the detector, classifier and diagnosis model, and cheap synthetic slides.

Used by test_pipeline.py, test_report.py and test_batch.py. The stub detector finds dark (nuclear)
blobs in a tile; the stub classifier is a tiny torch network with fixed weights that calls dark blue
cells blasts and paler ones lymphocytes or neutrophils, so counts depend on the image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from marrowscope.cells import Box, CellAnnotations, Region
from marrowscope.io.slides.array import ArraySlide

BG = (238, 234, 240)
RBC = (222, 150, 160)
BLAST = (80, 40, 150)  # dark purple-blue nucleus
LYMPH = (120, 70, 170)
NEUT = (150, 100, 175)
CLASSES = ("myeloblast", "lymphocyte", "segmented_neutrophil", "erythrocyte")


@dataclass(frozen=True)
class _Pred:
    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray


class BlobDetector:
    """Connected components of dark pixels, as a detector at ``mpp`` with ``tile_size`` tiles."""

    def __init__(self, mpp: float = 0.5, tile_size: int = 256, fail_after: int | None = None) -> None:
        self._mpp = mpp
        self._tile = tile_size
        self.calls = 0
        self.fail_after = fail_after

    @property
    def mpp(self) -> float:
        return self._mpp

    @property
    def tile_size(self) -> int:
        return self._tile

    @property
    def classes(self) -> tuple[str, ...]:
        return ("cell",)

    def __call__(self, tiles: Sequence[np.ndarray]) -> list[_Pred]:
        from scipy import ndimage as ndi

        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise RuntimeError("simulated crash inside the detector")
        out = []
        for t in tiles:
            dark = t.astype(np.int32).mean(axis=2) < 170
            lab, n = ndi.label(dark)
            boxes = []
            for sl in ndi.find_objects(lab):
                if sl is None:
                    continue
                y, x = sl
                if (x.stop - x.start) >= 3 and (y.stop - y.start) >= 3:
                    boxes.append((x.start - 1, y.start - 1, x.stop + 1, y.stop + 1))
            b = np.array(boxes, dtype=np.float64).reshape(-1, 4)
            out.append(_Pred(b, np.full(len(b), 0.9), np.zeros(len(b), dtype=np.int64)))
        return out


def stub_classifier(classes: Sequence[str] = CLASSES, mpp: float = 0.5, size: int = 16):  # noqa: ANN201
    """A CellClassifier whose logits are a fixed linear function of the crop's mean colour."""
    import torch
    from torch import nn

    from marrowscope.models.classifier import CellClassifier, make_spec

    net = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, len(classes)))
    with torch.no_grad():
        w = torch.zeros(len(classes), 3)
        # normalised channel means (x - 0.5) / 0.25; blasts: low red; lymphocytes: mid; neutrophils: pale
        w[0] = torch.tensor([-4.0, 0.0, 0.0])
        w[2] = torch.tensor([8.0, 0.0, 0.0])
        net[2].weight.copy_(w)
        net[2].bias.copy_(torch.tensor([0.0, 1.0, -1.0] + [-5.0] * (len(classes) - 3)))
    spec = make_spec(list(classes), arch="stub", input_size=size, mpp=mpp, scheme=None,
                     params={"temperature": 1.0, "uncertain_threshold": 0.0})
    return CellClassifier(net=net.eval(), spec=spec)


def stub_diagnosis():  # noqa: ANN201
    """A DiagnosisModel fitted on a few made-up differentials (ALL, AML, control)."""
    import pandas as pd

    from marrowscope.models.diagnosis import DiagnosisClassifier, DiagnosisModel

    rng = np.random.default_rng(0)
    rows, y = [], []
    for dx, blast in (("AML", 0.6), ("ALL", 0.05), ("control", 0.02)):
        for _ in range(8):
            n = 200
            b = int(rng.binomial(n, blast))
            lym = int(rng.binomial(n - b, 0.7 if dx == "ALL" else 0.2))
            rows.append({"myeloblast": b, "lymphocyte": lym, "segmented_neutrophil": n - b - lym})
            y.append(dx)
    X = pd.DataFrame(rows)
    est = DiagnosisClassifier(estimator="logreg", calibration=None).fit(X, y)
    return DiagnosisModel(estimator=est, input_columns=tuple(X.columns), classes=tuple(est.classes_),
                          feature_names=tuple(est.feature_names_out_))


def stub_models(diagnosis: bool = True, fail_after: int | None = None):  # noqa: ANN201
    from marrowscope.engines.pipeline import Models
    from marrowscope.report.results import ModelRef

    refs = (ModelRef("stub-detector", "detector", "<memory>", "0" * 64),
            ModelRef("stub-classifier", "classifier", "<memory>", "1" * 64))
    dx = stub_diagnosis() if diagnosis else None
    return Models(BlobDetector(fail_after=fail_after), stub_classifier(), dx, refs)


def _disk(img: np.ndarray, cx: int, cy: int, r: int, color: tuple[int, int, int]) -> None:
    h, w = img.shape[:2]
    y0, y1, x0, x1 = max(0, cy - r), min(h, cy + r + 1), max(0, cx - r), min(w, cx + r + 1)
    yy, xx = np.mgrid[y0:y1, x0:x1]
    img[y0:y1, x0:x1][(xx - cx) ** 2 + (yy - cy) ** 2 <= r * r] = color


def smear_image(width: int = 1024, height: int = 512, n_cells: int = 60, seed: int = 0,
                blast_share: float = 0.3) -> np.ndarray:
    """Pale background with red cells and well separated nucleated cells on a jittered grid."""
    rng = np.random.default_rng(seed)
    img = np.full((height, width, 3), BG, np.uint8)
    for _ in range(int(width * height * 0.22 / 200)):  # red cells cover about a fifth of the smear
        _disk(img, int(rng.integers(8, width - 8)), int(rng.integers(8, height - 8)), 8, RBC)
    step = int(np.sqrt(width * height / max(n_cells, 1)))
    k = 0
    for cy in range(step // 2, height - 10, step):
        for cx in range(step // 2, width - 10, step):
            if k >= n_cells:
                break
            u = rng.random()
            color = BLAST if u < blast_share else (LYMPH if u < blast_share + 0.35 else NEUT)
            _disk(img, cx + int(rng.integers(-3, 4)), cy + int(rng.integers(-3, 4)), 9, color)
            k += 1
    return img


def smear_slide(slide_id: str = "s1", mpp: float | None = 0.5, **kw: object) -> ArraySlide:
    return ArraySlide(smear_image(**kw), mpp=mpp, slide_id=slide_id)  # type: ignore[arg-type]


def two_rois(width: int = 1024, height: int = 512) -> CellAnnotations:
    return CellAnnotations(
        cells=(),
        regions=(Region(Box(0, 0, width // 2, height), 1), Region(Box(width // 2, 0, width, height), 2)),
    )


def write_dicom_slide(root, image: np.ndarray, *, mpp: float = 0.5, slide_id: str = "dcm1",  # noqa: ANN001, ANN201
                      patient_id: str = "P1", rois: CellAnnotations | None = None):
    """A DICOM WSI in the IDC layout under ``root/dicom/<patient>/<study>/SM_<uid>/`` and, when ``rois``
    has regions, a DICOM ANN ROI series beside it. Returns the DicomSlideRef."""
    from pathlib import Path

    from marrowscope.io.annotations.dicom_ann_writer import write_dicom_ann
    from marrowscope.io.slides.dicom_writer import deterministic_uid, write_dicom_wsi

    study = deterministic_uid("study", slide_id)
    series = deterministic_uid("series", slide_id)
    folder = Path(root) / "dicom" / patient_id / study / f"SM_{series}"
    ref = write_dicom_wsi(image, folder, mpp=mpp, slide_id=slide_id, patient_id=patient_id, study_uid=study,
                          series_uid=series, n_levels=2, tile_size=256)
    if rois is not None and rois.regions:
        ann_series = deterministic_uid("roi", slide_id)
        write_dicom_ann(rois, folder.parent / f"ANN_{ann_series}" / "roi.dcm", source_image=ref.base_file,
                        kind="roi", series_uid=ann_series)
    return ref
