"""Whole-slide analysis: regions → detect → classify → count → diagnose, as one :class:`SlideResult`.

Counting follows the hematologist's procedure: regions are taken in order (annotated ROIs first, all of
them; otherwise monolayer fields best first) until ``target_cells`` countable cells are counted; when the
blast interval still straddles a diagnostic threshold, counting goes on (up to ``max_cells``) while fields
remain.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from marrowscope import __version__, alerts, taxonomy
from marrowscope.alerts import ResultWarning
from marrowscope.cells import Box, Cell, CellAnnotations
from marrowscope.counting import Differential, compute_differential
from marrowscope.data.regions import FieldQuality, FieldSelectionConfig, plan_overview, select_regions
from marrowscope.data.scale import MPP_ESTIMATED_PROPERTY
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


#: ``analyze``'s default models: the best bundled ones for real slides (trained on real cells with synthetic
#: marrow for what no real set here covers; the only diagnosis model is trained on synthetic counts, so the
#: report still warns ``synthetic_model`` for it).
REAL_SLIDE_MODELS: Mapping[str, str] = {"detector": "detector-marrow", "classifier": "classifier-marrow",
                                        "diagnosis": "diagnosis-synth"}
#: The models trained on the synthetic cohort only: for synthetic slides (the demo, the synthetic cohort's
#: study, tests), named explicitly there.
SYNTHETIC_MODELS: Mapping[str, str] = {"detector": "detector-synth", "classifier": "classifier-synth",
                                       "diagnosis": "diagnosis-synth"}


@dataclass(frozen=True)
class AnalysisConfig:
    """What ``analyze`` runs. The default models are :data:`REAL_SLIDE_MODELS`; for a synthetic slide use
    :meth:`synthetic` (the models of :data:`SYNTHETIC_MODELS`)."""

    detector: str = REAL_SLIDE_MODELS["detector"]
    classifier: str = REAL_SLIDE_MODELS["classifier"]
    diagnosis: str | None = REAL_SLIDE_MODELS["diagnosis"]
    target_cells: int = 500  # countable cells for the differential (ICSH: 500 on marrow)
    max_cells: int = 5000  # upper bound when extending for a straddled threshold
    extend_for_thresholds: bool = True
    score_threshold: float | None = None  # None: the detector's own operating point
    uncertain_threshold: float | None = None  # None: the classifier's own
    tta: int = 4
    batch_size: int = 4  # tiles per detector call
    seed: int = 0
    device: str | None = None  # "cpu", "cuda", "cuda:1", "mps"; None: cuda when available
    threads: int | None = None  # torch intra-op threads during the analysis (None: torch's default)
    precision: str = "auto"  # auto (models.inference.resolve_precision), fp32, bf16, int8 (the classifier)
    use_annotated_rois: bool = True
    context_um: float = 25.0  # detection looks this far beyond each region (cells on its edge seen whole)
    fields: FieldSelectionConfig = field(default_factory=FieldSelectionConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def synthetic(cls, **overrides: Any) -> AnalysisConfig:
        """A config with the synthetic-only models (:data:`SYNTHETIC_MODELS`) and ``overrides``."""
        return cls(**{**SYNTHETIC_MODELS, **overrides})


@dataclass(frozen=True)
class Models:
    detector: TileDetector
    classifier: CellClassifier
    diagnosis: Any | None  # marrowscope.models.diagnosis.DiagnosisModel
    refs: tuple[ModelRef, ...]
    device: str = "cpu"  # where the detector and classifier run (recorded in the run record)
    precision: str = "fp32"  # resolved precisions: "fp32", or "detector fp32, classifier int8"


def load_models(cfg: AnalysisConfig, device: str | None = None) -> Models:
    """Load the three models named in ``cfg`` (bundled names or paths), with their hashes, on ``device``
    (else ``cfg.device``, else cuda when available)."""
    from marrowscope.models.classifier import load_classifier
    from marrowscope.models.detector import load_detector
    from marrowscope.models.diagnosis import load_diagnosis_model
    from marrowscope.models.registry import resolve_model
    from marrowscope.runtime import resolve_device

    device = resolve_device(device or cfg.device)
    refs = []
    det = load_detector(cfg.detector, device=device, precision=cfg.precision)
    p, _ = resolve_model(cfg.detector, task="detector")
    refs.append(model_ref(str(cfg.detector), "detector", p))
    clf = load_classifier(cfg.classifier, device=device, precision=cfg.precision, optimise=True)
    p, _ = resolve_model(cfg.classifier, task="classifier")
    refs.append(model_ref(str(cfg.classifier), "classifier", p))
    diag = None
    if cfg.diagnosis:
        p, sha = resolve_model(cfg.diagnosis, task="diagnosis")
        diag = load_diagnosis_model(p, sha256=sha)
        refs.append(model_ref(str(cfg.diagnosis), "diagnosis", p))
    return Models(det, clf, diag, tuple(refs), device=device, precision=precision_label(det.precision,
                                                                                         clf.precision))


def precision_label(detector: str, classifier: str) -> str:
    """The run record's ``precision``: one name when both models run at it, else both."""
    return detector if detector == classifier else f"detector {detector}, classifier {classifier}"


def model_ref(name: str, task: str, path: str | Path) -> ModelRef:
    """A :class:`ModelRef` for the model file at ``path``: its hash and what it was trained on."""
    from marrowscope.models.provenance import training_data_of
    from marrowscope.models.weights import sha256_file

    td = training_data_of(path, task)
    return ModelRef(name, task, str(path), sha256_file(path), td.description, td.kind, td.datasets)


def model_warnings(refs: Sequence[ModelRef]) -> list[ResultWarning]:
    """A warning for every model trained only on synthetic data, and for every model that does not say."""
    out = []
    synth = [m for m in refs if m.training_data_kind == "synthetic"]
    if synth:
        names = ", ".join(f"{m.task} {m.name}" for m in synth)
        out.append(ResultWarning(alerts.SYNTHETIC_MODEL.code, (
            f"trained only on synthetic data: {names}. The differential and diagnosis are not meaningful "
            "for a real slide; use models trained on real marrow (marrowscope models lists them)")))
    unknown = [m for m in refs if m.training_data_kind == "unknown"]
    if unknown:
        names = ", ".join(f"{m.task} {m.name}" for m in unknown)
        out.append(ResultWarning(alerts.UNKNOWN_TRAINING_DATA.code, (
            f"no training-data description for: {names}; how far its output can be trusted is unknown")))
    return out


#: detector classes that are nucleated cells: a detector with such classes among others (``detector-blood``:
#: WBC, RBC, Platelet) has only these boxes classified and counted
NUCLEATED = ("cell", "wbc", "leukocyte", "nucleated_cell")


def nucleated_class_indices(classes: Sequence[str]) -> list[int]:
    """Indices of the nucleated-cell classes among a detector's ``classes``; all of them when none is
    (a one-class ``cell`` detector, a stub)."""
    low = [c.lower() for c in classes]
    return [i for i, c in enumerate(low) if c in NUCLEATED] or list(range(len(low)))


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
    keep = nucleated_class_indices(models.detector.classes)
    timings["detect"] = timings.get("detect", 0.0) + time.perf_counter() - t0
    cells: list[Cell] = []
    for b, s, lab in zip(det.boxes, det.scores, det.labels, strict=True):
        if int(lab) not in keep:  # red cells and platelets of a blood detector are not counted
            continue
        cb = _clip(b, slide.info.width, slide.info.height)
        if cb is None:
            continue
        cx, cy = cb.center
        # centre rule: a cell belongs to the region holding its centre, and to the first such region
        if not box.contains_point(cx, cy) or any(t.contains_point(cx, cy) for t in taken):
            continue
        cells.append(Cell(box=cb, score=float(s), roi_id=fq.region.roi_id, detection_id=next_id + len(cells)))
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


def _differential(cells: Sequence[Cell], max_cells: int = 5000) -> Differential:
    uncertain = sum(1 for c in cells if c.label is None)
    return compute_differential([c.label for c in cells if c.label is not None], uncertain=uncertain,
                                max_cells=max_cells)


def _needs_more(diff: Differential, cfg: AnalysisConfig) -> bool:
    if diff.n_counted < cfg.target_cells:
        return True
    if not cfg.extend_for_thresholds or diff.n_counted >= cfg.max_cells:
        return False
    # go on only for a threshold that more counting can decide within max_cells
    room = cfg.max_cells - diff.n_counted
    return any(f.cells_needed is not None and 0 < f.cells_needed <= room for f in diff.flags)


def diagnose(diff: Differential, model: Any, name: str, confidence: float | None = None) -> DiagnosisResult:
    """Diagnosis probabilities from the differential's counts, with the rule baseline beside them.

    The rules are applied as they are (they need no fitting) and explain their own decision. Below
    ``confidence`` (default :data:`~marrowscope.models.diagnosis.SUGGESTION_CONFIDENCE`) the suggestion
    is "uncertain between" the two most likely diagnoses."""
    import pandas as pd

    from marrowscope.models.diagnosis import SUGGESTION_CONFIDENCE, RuleBaseline, outcome_classes

    counts = {k: float(v) for k, v in diff.counts.items()}
    model_counts, unused = model_columns(counts, tuple(getattr(model, "input_columns", ()) or ()))
    probs = model.predict_proba_table(pd.DataFrame([model_counts]))[0]
    classes = tuple(str(c) for c in model.classes)
    suggestion = classes[int(np.argmax(probs))]
    decision = RuleBaseline().explain(counts)
    rule_class = str(outcome_classes(classes)[decision.outcome])
    threshold = SUGGESTION_CONFIDENCE if confidence is None else confidence
    top2 = [classes[i] for i in np.argsort(-probs, kind="stable")[:2]]
    between = (top2[0], top2[1]) if len(top2) == 2 and float(np.max(probs)) < threshold else None
    return DiagnosisResult(
        model=name,
        classes=classes,
        probabilities={c: float(p) for c, p in zip(classes, probs, strict=True)},
        suggestion=suggestion,
        rule_baseline=rule_class,
        rule_reason=decision.reason,
        unused_labels=unused,
        rule_outcome=decision.outcome,
        rule_values=dict(decision.values),
        confidence_threshold=threshold,
        uncertain_between=between,
    )


def diagnosis_warnings(dx: DiagnosisResult) -> list[ResultWarning]:
    """Warnings that stand beside the diagnosis: a weak suggestion, a rule that disagrees."""
    out = []
    if dx.uncertain_between is not None:
        a, b = dx.uncertain_between
        out.append(ResultWarning(alerts.UNCERTAIN_DIAGNOSIS.code, (
            f"uncertain between {a} ({100 * dx.probabilities[a]:.0f} %) and {b} "
            f"({100 * dx.probabilities[b]:.0f} %): no diagnosis reaches "
            f"{100 * dx.confidence_threshold:.0f} %")))
    if dx.rule_baseline != dx.suggestion:
        out.append(ResultWarning(alerts.RULE_DISAGREES.code, (
            f"the model suggests {dx.suggestion}, the rule baseline {dx.rule_baseline} "
            f"({dx.rule_reason})")))
    return out


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


def slide_frame(slide: SlideReader) -> tuple[str, tuple[float, float] | None]:
    """The frame of the slide's level-0 pixels and the (dx, dy) that takes them to the dataset CSV frame.

    DICOM slides of the dataset are the MRXS canvas shifted by the OpenSlide bounds (dataset.md §3.3):
    frame ``"dicom"``, offset = the bounds (None when the header does not carry them). An MRXS read with
    OpenSlide is the CSV frame itself (offset 0, 0). Any other slide: ``"level0"``, no dataset frame."""
    from marrowscope.io.annotations.bmdeep_csv import CSV_FRAME, DICOM_FRAME

    info = slide.info
    if info.format == "dicom":
        props = info.properties
        if props.get("openslide.bounds-x") is None and props.get("openslide.bounds-y") is None:
            return DICOM_FRAME, None
        from marrowscope.io.annotations.bmdeep_csv import csv_to_dicom_offset

        dx, dy = csv_to_dicom_offset(info)
        return DICOM_FRAME, (-dx + 0.0, -dy + 0.0)
    if info.format == "mrxs" or str(info.path).lower().endswith(".mrxs"):
        return CSV_FRAME, (0.0, 0.0)
    return "level0", None


def match_annotated_ids(cells: Sequence[Cell], annotated: Sequence[Cell], min_iou: float = 0.5) -> list[Cell]:
    """Give each detected cell the dataset ``cell_id`` of the annotated cell it overlaps one-to-one
    (Hungarian matching on IoU, torchvision ``box_iou`` + scipy ``linear_sum_assignment``; pairs below
    ``min_iou`` stay unmatched). Both in the same level-0 frame."""
    import torch
    from scipy.optimize import linear_sum_assignment
    from torchvision.ops import box_iou

    ann = [a for a in annotated if a.cell_id is not None]
    if not cells or not ann:
        return list(cells)
    iou = box_iou(torch.tensor([c.box.as_tuple() for c in cells], dtype=torch.float64),
                  torch.tensor([a.box.as_tuple() for a in ann], dtype=torch.float64)).numpy()
    rows, cols = linear_sum_assignment(-iou)
    out = list(cells)
    for r, c in zip(rows, cols, strict=True):
        if iou[r, c] >= min_iou:
            out[r] = replace(out[r], cell_id=ann[c].cell_id)
    return out


def analyze_slide(
    slide: SlideReader,
    models: Models,
    cfg: AnalysisConfig,
    annotations: CellAnnotations | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> SlideResult:
    """Count cells on ``slide`` region by region until the differential is complete, then diagnose.

    ``annotations``: the slide's annotated ROIs (all of them are counted) and, when it has cells, the
    annotated cells whose dataset ``cell_id`` the matching detections carry (:func:`match_annotated_ids`).
    Without ROIs, monolayer fields are counted best first until ``cfg.target_cells`` countable cells
    (more while the blast interval straddles a threshold, up to ``cfg.max_cells``).

    Raises :class:`InputError` for a slide without pixel size, without smear area, or without any
    detected cell in the regions analysed. Torch's global generator and thread count are the caller's
    again afterwards (the analysis runs seeded with ``cfg.seed`` and on ``cfg.threads`` threads).
    """
    from marrowscope.runtime import seeded, torch_threads

    with seeded(cfg.seed), torch_threads(cfg.threads):
        return _analyze_slide(slide, models, cfg, annotations, progress)


def _analyze_slide(
    slide: SlideReader,
    models: Models,
    cfg: AnalysisConfig,
    annotations: CellAnnotations | None,
    progress: Callable[[int, int], None] | None,
) -> SlideResult:
    t0 = time.perf_counter()
    started = datetime.now(UTC).isoformat(timespec="seconds")
    info = slide.info
    if info.mpp is None:
        why = info.properties.get("marrowscope.mpp_missing")
        raise InputError(info.path, "slide has no pixel size (µm/px)" + (f": {why}" if why else "")
                         + "; pass it with --mpp, e.g. --mpp 0.25")
    rois = annotations if (cfg.use_annotated_rois and annotations is not None) else None
    regions = select_regions(slide, rois, cfg.fields)
    t_regions = time.perf_counter() - t0
    cells: list[Cell] = []
    done: list[RegionResult] = []
    taken: list[Box] = []
    warnings: list[ResultWarning] = []
    if (estimated := info.properties.get(MPP_ESTIMATED_PROPERTY)) is not None:
        e = json.loads(estimated)
        warnings.append(ResultWarning(alerts.MPP_ESTIMATED.code, (
            f"no pixel size in the slide: {e['mpp']:.4f} µm/px was read from its red cells (modal stained "
            f"diameter {e['diameter_px']:.0f} px; its accuracy is in docs/benchmarks.md); give the real one "
            "with --mpp when it is known")))
    timings: dict[str, float] = {}
    annotated = bool(rois is not None and rois.regions)
    if not annotated and (note := plan_overview(slide, cfg.fields).note) is not None:
        warnings.append(ResultWarning(alerts.NO_LOW_RES_LEVEL.code, note))
    for i, fq in enumerate(regions):
        if not annotated and done and not _needs_more(_differential(cells, cfg.max_cells), cfg):
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
            warnings.append(ResultWarning(alerts.EMPTY_REGION.code,
                                          f"region {fq.region.roi_id} ({done[-1].source}) has no cells"))
        if progress is not None:
            progress(i + 1, len(regions))
    t_count = time.perf_counter() - t0 - t_regions
    if not cells:
        raise InputError(
            info.path,
            f"no cells were detected in the {len(done)} region(s) analysed; check that the slide is a "
            "stained smear at the stated pixel size (--mpp) and that the ROIs lie on the smear",
        )
    diff = _differential(cells, cfg.max_cells)
    warnings = model_warnings(models.refs) + warnings
    if diff.n_counted == 0:
        warnings.append(ResultWarning(alerts.NO_COUNTABLE_CELLS.code,
                                      "no countable cells were found in the regions analysed"))
    elif diff.n_counted < cfg.target_cells:
        warnings.append(ResultWarning(alerts.FEW_CELLS.code, (
            f"only {diff.n_counted} countable cells found (target {cfg.target_cells}); "
            "the intervals are wide")))
    for f in diff.flags:
        what = "lymphoid blast" if f.quantity == "lymphoid_blasts" else "blast"
        need = (f"; cannot be decided within the {f.max_cells}-cell cap" if f.cells_needed is None
                else f"; about {f.cells_needed} more cells would decide it")
        warnings.append(ResultWarning(alerts.THRESHOLD_UNDECIDED.code, (
            f"{what} interval {100 * f.interval[0]:.1f}–{100 * f.interval[1]:.1f} % straddles the "
            f"{100 * f.threshold:.0f} % threshold ({f.name}){need}")))
    from marrowscope.engines.ood import slide_ood_from_cells

    t_ood = time.perf_counter()
    ood = slide_ood_from_cells(slide, cells, models.classifier, seed=cfg.seed)
    timings["ood"] = time.perf_counter() - t_ood
    if ood is not None and ood.flagged:
        warnings.append(ResultWarning(alerts.OOD_SLIDE.code, ood.message()))
    diagnosis = None
    t_diag = time.perf_counter()
    if models.diagnosis is not None and diff.n_counted > 0:
        diagnosis = diagnose(diff, models.diagnosis, cfg.diagnosis or "diagnosis")
        warnings.extend(diagnosis_warnings(diagnosis))
    py, plat, pkgs = environment()
    seconds = time.perf_counter() - t0
    timings.update({"regions": t_regions, "count": t_count, "diagnose": time.perf_counter() - t_diag,
                    "total": seconds})
    if annotations is not None and annotations.cells:
        cells = match_annotated_ids(cells, annotations.cells)
    frame, offset = slide_frame(slide)
    extra = {"frame": frame}
    if offset is not None:
        extra["dataset_csv_offset"] = f"{offset[0]:g},{offset[1]:g}"
    return SlideResult(
        slide=SlideSummary(info.path, info.slide_id, info.format, info.width, info.height, info.mpp,
                           patient_id=info.properties.get("dicom.PatientID") or None, frame=frame,
                           dataset_csv_offset=offset),
        regions=tuple(done),
        cells=CellAnnotations(
            cells=tuple(cells), regions=tuple(f.region for f in regions[: len(done)]),
            slide_id=info.slide_id, width=info.width, height=info.height, mpp=info.mpp, source="marrowscope",
            extra=extra,
        ),
        differential=diff,
        diagnosis=diagnosis,
        run=RunRecord(
            marrowscope_version=__version__, python=py, platform=plat, packages=pkgs, models=models.refs,
            config=cfg.to_dict(), seed=cfg.seed, started=started, seconds=seconds, timings=timings,
            device=models.device, precision=models.precision,
        ),
        warnings=tuple(warnings),
        ood=None if ood is None else ood.to_dict(),
    )
