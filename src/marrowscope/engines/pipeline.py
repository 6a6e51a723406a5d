"""Whole-slide analysis: regions → detect → classify → count → diagnose, as one :class:`SlideResult`.

Counting follows the hematologist's procedure: regions are taken in order (annotated ROIs first, all of
them; otherwise monolayer fields best first) until ``target_cells`` countable cells are counted; when the
blast interval still straddles a diagnostic threshold, counting goes on (up to ``max_cells``) while fields
remain.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np

from marrowscope import __version__, taxonomy
from marrowscope.cells import Box, Cell, CellAnnotations
from marrowscope.counting import Differential, compute_differential
from marrowscope.data.regions import FieldQuality, FieldSelectionConfig, select_regions
from marrowscope.engines.classify import classify_cells
from marrowscope.engines.detect import TileDetector, detect_region
from marrowscope.errors import InputError
from marrowscope.io.slides.base import SlideReader
from marrowscope.models.classifier import CellClassifier
from marrowscope.report.results import (
    DiagnosisResult,
    ModelRef,
    RegionResult,
    RunRecord,
    SlideResult,
    SlideSummary,
    environment,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AnalysisConfig:
    detector: str = "detector-synth"
    classifier: str = "classifier-synth"
    diagnosis: str | None = "diagnosis-synth"
    target_cells: int = 500  # countable cells for the differential (ICSH: 500 on marrow)
    max_cells: int = 5000  # upper bound when extending for a straddled threshold
    extend_for_thresholds: bool = True
    score_threshold: float | None = None  # None: the detector's own operating point
    uncertain_threshold: float | None = None  # None: the classifier's own
    tta: int = 4
    batch_size: int = 4
    seed: int = 0
    use_annotated_rois: bool = True
    context_um: float = 25.0  # detection looks this far beyond each region (cells on its edge seen whole)
    fields: FieldSelectionConfig = field(default_factory=FieldSelectionConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Models:
    detector: TileDetector
    classifier: CellClassifier
    diagnosis: Any | None  # marrowscope.models.diagnosis.DiagnosisModel
    refs: tuple[ModelRef, ...]


def load_models(cfg: AnalysisConfig, device: str | None = None) -> Models:
    """Load the three models named in ``cfg`` (bundled names or paths), with their hashes."""
    from marrowscope.models.classifier import load_classifier
    from marrowscope.models.detector import load_detector
    from marrowscope.models.diagnosis import load_diagnosis_model
    from marrowscope.models.registry import resolve_model
    from marrowscope.models.weights import sha256_file

    refs = []
    det = load_detector(cfg.detector, device=device)
    p, _ = resolve_model(cfg.detector, task="detector")
    refs.append(ModelRef(str(cfg.detector), "detector", str(p), sha256_file(p)))
    clf = load_classifier(cfg.classifier, device=device)
    p, _ = resolve_model(cfg.classifier, task="classifier")
    refs.append(ModelRef(str(cfg.classifier), "classifier", str(p), sha256_file(p)))
    diag = None
    if cfg.diagnosis:
        p, sha = resolve_model(cfg.diagnosis, task="diagnosis")
        diag = load_diagnosis_model(p, sha256=sha)
        refs.append(ModelRef(str(cfg.diagnosis), "diagnosis", str(p), sha256_file(p)))
    return Models(det, clf, diag, tuple(refs))


def _detector_threshold(det: TileDetector, cfg: AnalysisConfig) -> float:
    if cfg.score_threshold is not None:
        return cfg.score_threshold
    spec = getattr(det, "spec", None)
    params = getattr(spec, "params", {}) or {}
    return float(params.get("operating_threshold", params.get("score_threshold", 0.5)))


def _is_countable(label: str | None) -> bool:
    return label is not None and label in taxonomy.LABELS and taxonomy.is_countable(label)


def _clip(b: Sequence[float], width: int, height: int) -> Box | None:
    x1, y1 = max(0.0, float(b[0])), max(0.0, float(b[1]))
    x2, y2 = min(float(width), float(b[2])), min(float(height), float(b[3]))
    return Box(x1, y1, x2, y2) if x2 > x1 and y2 > y1 else None


def _count_region(
    slide: SlideReader, fq: FieldQuality, models: Models, cfg: AnalysisConfig, taken: Sequence[Box],
    next_id: int, timings: dict[str, float],
) -> list[Cell]:
    box = fq.region.box
    t0 = time.perf_counter()
    # detect with a margin of context so a cell on the region's edge is seen whole: its true centre then
    # decides the one region it belongs to (no cell is counted twice by two adjacent fields)
    m = cfg.context_um / slide.info.mpp if slide.info.mpp else 0.0
    w, h = slide.info.width, slide.info.height
    seen = Box(max(0.0, box.x1 - m), max(0.0, box.y1 - m),
               min(float(w), box.x2 + m), min(float(h), box.y2 + m))
    det = detect_region(slide, seen, models.detector, batch_size=cfg.batch_size)
    det = det.above(_detector_threshold(models.detector, cfg))
    timings["detect"] = timings.get("detect", 0.0) + time.perf_counter() - t0
    cells: list[Cell] = []
    for b, s in zip(det.boxes, det.scores, strict=True):
        cb = _clip(b, slide.info.width, slide.info.height)
        if cb is None:
            continue
        cx, cy = cb.center
        # centre rule: a cell belongs to the region holding its centre, and to the first such region
        if not box.contains_point(cx, cy) or any(t.contains_point(cx, cy) for t in taken):
            continue
        cells.append(Cell(box=cb, score=float(s), roi_id=fq.region.roi_id, cell_id=next_id + len(cells)))
    if not cells:
        return []
    t1 = time.perf_counter()
    result = classify_cells(models.classifier, slide, cells, tta=cfg.tta, threshold=cfg.uncertain_threshold)
    timings["classify"] = timings.get("classify", 0.0) + time.perf_counter() - t1
    names = class_labels(result.classes, getattr(getattr(models.classifier, "spec", None), "scheme", None))
    out = []
    for c, lab, p in zip(cells, result.labels, result.probabilities, strict=True):
        probs = {k: float(v) for k, v in zip(result.classes, p, strict=True)}
        out.append(replace(c, label=None if lab is None else names[lab], probabilities=probs))
    return out


def class_labels(classes: Sequence[str], scheme: str | None = None) -> dict[str, str]:
    """Taxonomy label of each classifier class (``ig`` of the PBC scheme -> ``immature_granulocyte``).

    Tries the label itself, the taxonomy's normalisation, then the external dataset vocabularies (the
    scheme's own first). Raises :class:`InputError` for a class no vocabulary knows."""
    order = list(taxonomy.EXTERNAL_DATASETS)
    hint = {"pbc8": "pbc", "blood3": "bccd"}.get(scheme or "")
    if hint in order:
        order.remove(hint)
        order.insert(0, hint)
    out: dict[str, str] = {}
    for c in classes:
        if c in taxonomy.LABELS:
            out[c] = c
            continue
        for attempt in [lambda x: taxonomy.normalise_label(x)] + [
            (lambda x, d=d: taxonomy.map_external(d, x)) for d in order
        ]:
            try:
                out[c] = attempt(c)
                break
            except InputError:
                continue
        else:
            raise InputError(c, "classifier class is not a cell label marrowscope knows (docs/taxonomy.md); "
                                "retrain with a taxonomy class scheme")
    return out


def _differential(cells: Sequence[Cell]) -> Differential:
    uncertain = sum(1 for c in cells if c.label is None)
    return compute_differential([c.label for c in cells if c.label is not None], uncertain=uncertain)


def _needs_more(diff: Differential, cfg: AnalysisConfig) -> bool:
    if diff.n_counted < cfg.target_cells:
        return True
    if not cfg.extend_for_thresholds or diff.n_counted >= cfg.max_cells:
        return False
    # go on only for a threshold that more counting can decide within max_cells
    room = cfg.max_cells - diff.n_counted
    return any(f.cells_needed is not None and 0 < f.cells_needed <= room for f in diff.flags)


def diagnose(diff: Differential, model: Any, name: str) -> DiagnosisResult:
    """Diagnosis probabilities from the differential's counts, with the rule baseline beside them."""
    import pandas as pd

    from marrowscope.models.diagnosis import RuleBaseline

    counts = {k: float(v) for k, v in diff.counts.items()}
    model_counts, unused = model_columns(counts, tuple(getattr(model, "input_columns", ()) or ()))
    probs = model.predict_proba_table(pd.DataFrame([model_counts]))[0]
    row = pd.DataFrame([counts])
    classes = tuple(str(c) for c in model.classes)
    suggestion = classes[int(np.argmax(probs))]
    # the rules only need the class names; fit them on one row per class
    table = pd.DataFrame([counts] * len(classes))
    rules = RuleBaseline().fit(table, list(classes))
    outcome = str(rules.rule_outcomes(row)[0])
    rule_class = str(rules.predict(row)[0])
    reason = (
        f"rule '{outcome}': blasts {100 * diff.blast_pct:.1f} % "
        f"(lymphoid {100 * diff.lymphoid_blast_pct:.1f} %, "
        f"myeloid incl. equivalents {100 * diff.myeloid_blast_pct:.1f} %); thresholds ALL ≥ 25 % lymphoid "
        "blasts, AML ≥ 20 % myeloid blasts, CML: left-shifted granulopoiesis with basophilia/eosinophilia"
    )
    return DiagnosisResult(
        model=name,
        classes=classes,
        probabilities={c: float(p) for c, p in zip(classes, probs, strict=True)},
        suggestion=suggestion,
        rule_baseline=rule_class,
        rule_reason=reason,
        unused_labels=unused,
    )


def _role(label: str) -> tuple[bool, ...]:
    """Which counting groups a label belongs to (blasts, immature/mature granulo- and erythropoiesis)."""
    from marrowscope import counting as k

    groups = (k.BLAST_LABELS, k.IMMATURE_GRANULOPOIESIS, k.MATURE_GRANULOPOIESIS, k.IMMATURE_ERYTHROPOIESIS,
              k.MATURE_ERYTHROPOIESIS)
    return tuple(label in g for g in groups) + (taxonomy.is_countable(label),)


def _column_for(label: str, cols: set[str]) -> str | None:
    if label in cols:
        return label
    if label not in taxonomy.LABELS:
        return None
    for a in taxonomy.ancestors(label):  # a model trained on coarse labels takes fine predictions
        if a in cols:
            return a
    # a coarse prediction (bmdeep33 'eosinophil') for a model of fine labels: the descendant that plays
    # the same role in the differential (mature granulocyte...), the segmented form first
    # (or, for a group with no role of its own such as 'erythroblast', a mature stage of it)
    from marrowscope import counting as k

    mature = k.MATURE_GRANULOPOIESIS | k.MATURE_ERYTHROPOIESIS
    options = [d for d in taxonomy.descendants(label) if d in cols and taxonomy.is_countable(d)]
    options.sort(key=lambda d: (_role(d) != _role(label), d not in mature, not d.startswith("segmented_"), d))
    return options[0] if options else None


def model_columns(
    counts: Mapping[str, float], columns: Sequence[str]
) -> tuple[dict[str, float], tuple[str, ...]]:
    """Counts re-keyed to a diagnosis model's input columns, and the labels it cannot take.

    A label that is not a column goes to the column of its nearest ancestor in the taxonomy, or else
    (a coarse label for a model of fine labels) to a countable descendant, preferring the same role in
    the differential (blast, immature or mature granulo- or erythropoiesis), then mature stages, then
    segmented forms. Labels with no such column are returned as unused (the model then sees them as 0
    cells). Without known columns the counts are passed as they are."""
    if not columns:
        return dict(counts), ()
    cols = set(columns)
    out: dict[str, float] = {}
    unused = []
    for label, k in counts.items():
        target = _column_for(label, cols)
        if target is None:
            unused.append(label)
        else:
            out[target] = out.get(target, 0.0) + k
    return out, tuple(sorted(unused))


def analyze_slide(
    slide: SlideReader,
    models: Models,
    cfg: AnalysisConfig,
    annotations: CellAnnotations | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> SlideResult:
    """Count cells on ``slide`` region by region until the differential is complete, then diagnose.

    ``annotations``: the slide's annotated ROIs (only ``regions`` are used); all of them are counted.
    Without ROIs, monolayer fields are counted best first until ``cfg.target_cells`` countable cells
    (more while the blast interval straddles a threshold, up to ``cfg.max_cells``).

    Raises :class:`InputError` for a slide without pixel size, without smear area, or without any
    detected cell in the regions analysed.
    """
    import torch

    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    started = datetime.now(UTC).isoformat(timespec="seconds")
    info = slide.info
    if info.mpp is None:
        raise InputError(info.path, "slide has no pixel size (µm/px); pass it with --mpp, e.g. --mpp 0.25")
    rois = annotations if (cfg.use_annotated_rois and annotations is not None) else None
    regions = select_regions(slide, rois, cfg.fields)
    t_regions = time.perf_counter() - t0
    cells: list[Cell] = []
    done: list[RegionResult] = []
    taken: list[Box] = []
    warnings: list[str] = []
    timings: dict[str, float] = {}
    annotated = bool(rois is not None and rois.regions)
    for i, fq in enumerate(regions):
        if not annotated and done and not _needs_more(_differential(cells), cfg):
            break
        new = _count_region(slide, fq, models, cfg, taken, next_id=len(cells), timings=timings)
        taken.append(fq.region.box)
        cells.extend(new)
        done.append(
            RegionResult(
                roi_id=fq.region.roi_id,
                box=fq.region.box.as_tuple(),
                source="annotated ROI" if annotated else "auto field",
                verdict=fq.verdict,
                coverage=None if np.isnan(fq.coverage) else fq.coverage,
                nuclear=None if np.isnan(fq.nuclear) else fq.nuclear,
                n_cells=len(new),
            )
        )
        if not new:
            warnings.append(f"region {fq.region.roi_id} ({done[-1].source}) has no cells")
        if progress is not None:
            progress(i + 1, len(regions))
    t_count = time.perf_counter() - t0 - t_regions
    if not cells:
        raise InputError(
            info.path,
            f"no cells were detected in the {len(done)} region(s) analysed; check that the slide is a "
            "stained smear at the stated pixel size (--mpp) and that the ROIs lie on the smear",
        )
    diff = _differential(cells)
    if diff.n_counted == 0:
        warnings.append("no countable cells were found in the regions analysed")
    elif diff.n_counted < cfg.target_cells:
        warnings.append(
            f"only {diff.n_counted} countable cells found (target {cfg.target_cells}); "
            "the intervals are wide"
        )
    for f in diff.flags:
        need = "" if f.cells_needed is None else f"; about {f.cells_needed} more cells would decide it"
        warnings.append(
            f"blast interval {100 * f.interval[0]:.1f}–{100 * f.interval[1]:.1f} % straddles the "
            f"{100 * f.threshold:.0f} % threshold ({f.name}){need}"
        )
    from marrowscope.engines.ood import slide_ood_from_cells

    t_ood = time.perf_counter()
    ood = slide_ood_from_cells(slide, cells, models.classifier, seed=cfg.seed)
    timings["ood"] = time.perf_counter() - t_ood
    if ood is not None and ood.flagged:
        warnings.append(ood.message())
    diagnosis = None
    t_diag = time.perf_counter()
    if models.diagnosis is not None and diff.n_counted > 0:
        diagnosis = diagnose(diff, models.diagnosis, cfg.diagnosis or "diagnosis")
    py, plat, pkgs = environment()
    seconds = time.perf_counter() - t0
    timings.update({"regions": t_regions, "count": t_count, "diagnose": time.perf_counter() - t_diag,
                    "total": seconds})
    return SlideResult(
        slide=SlideSummary(info.path, info.slide_id, info.format, info.width, info.height, info.mpp,
                           patient_id=info.properties.get("dicom.PatientID") or None),
        regions=tuple(done),
        cells=CellAnnotations(
            cells=tuple(cells), regions=tuple(f.region for f in regions[: len(done)]),
            slide_id=info.slide_id, width=info.width, height=info.height, mpp=info.mpp, source="marrowscope",
        ),
        differential=diff,
        diagnosis=diagnosis,
        run=RunRecord(
            marrowscope_version=__version__, python=py, platform=plat, packages=pkgs, models=models.refs,
            config=cfg.to_dict(), seed=cfg.seed, started=started, seconds=seconds, timings=timings,
        ),
        warnings=tuple(warnings),
        ood=None if ood is None else ood.to_dict(),
    )
