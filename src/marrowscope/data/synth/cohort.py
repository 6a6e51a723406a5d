"""Generate a synthetic cohort laid out like an IDC download plus the Zenodo CSVs (INTERFACES.md).

DIR/
  dicom/<PatientID>/<StudyInstanceUID>/SM_<SeriesInstanceUID>/*.dcm   pyramidal DICOM WSI (JPEG tiles)
  dicom/<PatientID>/<StudyInstanceUID>/ANN_<SeriesInstanceUID>/*.dcm  ROI, Session k, Consensus, Unlabeled
  csv/cells_labelled.csv, csv/cells_detection_only.csv, csv/rois.csv  (MRXS frame = DICOM + bounds offset)
  csv/clinical.csv
  synth_record.json                                                   the generator's truth

Slide kinds: ``labelled`` (ROIs, sessions, consensus), ``detection_only`` (ROIs, unlabeled boxes),
``roi_only`` (ROIs only). The folder is built beside DIR and moved into place when complete.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from marrowscope.cells import Cell, CellAnnotations, Region
from marrowscope.data.synth.composition import DIAGNOSES, SynthPatient, assign_diagnoses, sample_patient
from marrowscope.data.synth.experts import annotate, sample_experts
from marrowscope.data.synth.field import FieldConfig, SmearField, render_field
from marrowscope.data.synth.styles import LOOKS
from marrowscope.errors import InputError
from marrowscope.io.atomic import atomic_dir, write_text_atomic

log = logging.getLogger(__name__)

SLIDE_KINDS: tuple[str, ...] = ("labelled", "detection_only", "roi_only")
RECORD_NAME = "synth_record.json"
RECORD_FORMAT = "marrowscope-synth-record/1"
STREAM_ABOVE_PX = 16384 * 16384  # larger slides are never held in memory (the real ones: ~180k x 60k px)


@dataclass(frozen=True)
class SynthConfig:
    """Everything that determines a synthetic cohort (same config, same cohort)."""

    n_patients: int = 6
    seed: int = 0
    slide_size: int = 6144
    roi_size: int = 2048
    n_rois: int = 2
    cells_per_roi: int = 120
    mpp: float = 0.11
    kind_weights: Mapping[str, float] = field(default_factory=lambda: {"labelled": 1.0})
    diagnosis_weights: Mapping[str, float] | None = None  # None: balanced round-robin over DIAGNOSES
    outside_fraction: float = 0.03  # annotated boxes outside ROIs, relative to those inside
    hard_case_rate: float | None = None  # None: the documented prevalences (composition.HARD_CASES)
    expert_accuracy: tuple[float, float] = (0.78, 0.95)
    tile_size: int = 256
    n_levels: int = 3
    jpeg_quality: int = 90
    first_cell_id: int = 1
    raw_token_rate: float = 0.5  # share of eligible session labels written as raw "other:..." CSV tokens
    slide_height: int | None = None  # None: square slides of slide_size
    stream: bool | None = None  # compose and write tile by tile; None: for slides over STREAM_ABOVE_PX
    look: str = "basic"  # how cells are drawn (styles.LOOKS); "basic": the bundled synthetic models' world
    box_red_cells: bool = False  # also box the ROIs' background red cells (erythrocyte); same pixels

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of each slide in px."""
        return self.slide_size, self.slide_height or self.slide_size

    @property
    def streamed(self) -> bool:
        """Slides this large are composed and written tile by tile (:mod:`marrowscope.data.synth.big`)."""
        w, h = self.size
        return self.stream if self.stream is not None else w * h > STREAM_ABOVE_PX

    def __post_init__(self) -> None:
        if self.n_patients < 1:
            raise ValueError("n_patients must be >= 1")
        bad = set(self.kind_weights) - set(SLIDE_KINDS)
        if bad or not any(v > 0 for v in self.kind_weights.values()):
            raise ValueError(
                f"kind_weights: use positive weights over {SLIDE_KINDS}, got {dict(self.kind_weights)}"
            )
        if self.look not in LOOKS:
            raise ValueError(f"look: use one of {', '.join(LOOKS)}, got {self.look!r}")
        if self.box_red_cells and self.streamed:
            raise ValueError("box_red_cells: slides over 16384 x 16384 px are streamed, and their red cells "
                             "are never boxed; use a smaller slide size")
        if self.diagnosis_weights is not None and set(self.diagnosis_weights) - set(DIAGNOSES):
            raise ValueError(f"diagnosis_weights: use keys from {DIAGNOSES}")
        self.field_config()  # validates the slide geometry

    def field_config(self) -> FieldConfig:
        return FieldConfig(
            width=self.size[0],
            height=self.size[1],
            roi_size=self.roi_size,
            n_rois=self.n_rois,
            cells_per_roi=self.cells_per_roi,
            mpp=self.mpp,
            look=self.look,
            box_red_cells=self.box_red_cells,
        )

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("slide_height", "stream"):
            if d[k] is None:
                del d[k]  # records of earlier cohorts read as before
        if d["look"] == "basic":
            del d["look"]
        if not d["box_red_cells"]:
            del d["box_red_cells"]
        d["kind_weights"] = dict(self.kind_weights)
        d["diagnosis_weights"] = None if self.diagnosis_weights is None else dict(self.diagnosis_weights)
        d["expert_accuracy"] = list(self.expert_accuracy)
        return d


@dataclass(frozen=True)
class SynthSlideRecord:
    """What was written for one patient (paths relative to the cohort folder)."""

    patient_id: str
    slide_id: str
    diagnosis: str
    kind: str
    sm_folder: str
    ann_files: tuple[str, ...]
    n_rois: int
    n_annotated: int
    counts: Mapping[str, int]  # consensus label counts (``haematological_structure`` for unlabeled boxes)


@dataclass(frozen=True)
class SynthRecord:
    """The cohort written by :func:`generate_cohort`."""

    out_dir: Path
    config: SynthConfig
    slides: tuple[SynthSlideRecord, ...]
    already_complete: bool = False
    seconds: float = 0.0

    @property
    def n_annotated(self) -> int:
        return sum(s.n_annotated for s in self.slides)


def _kinds(cfg: SynthConfig, rng: np.random.Generator) -> list[str]:
    """Slide kinds by largest remainder over the weights (so 1.0/0.0 weights are exact), shuffled."""
    names = [k for k in SLIDE_KINDS if cfg.kind_weights.get(k, 0.0) > 0]
    w = np.array([cfg.kind_weights[k] for k in names], dtype=float)
    quota = w / w.sum() * cfg.n_patients
    n = np.floor(quota).astype(int)
    for i in np.argsort(-(quota - n))[: cfg.n_patients - int(n.sum())]:
        n[i] += 1
    out = [k for k, c in zip(names, n, strict=True) for _ in range(int(c))]
    rng.shuffle(out)
    return out


def _uid(*parts: object) -> str:
    from marrowscope.io.slides.dicom_writer import deterministic_uid

    return deterministic_uid("marrowscope-synth", *parts)


@dataclass(frozen=True)
class _SlideTruth:
    """One rendered slide whose SM series is written (the image itself is dropped after writing)."""

    index: int
    patient: SynthPatient
    kind: str
    field: SmearField
    offset: tuple[int, int]
    cells: tuple[Cell, ...]  # annotated cells, DICOM frame, no cell_id yet
    true_labels: tuple[str, ...]
    n_sessions: int
    study_uid: str
    sm_uid: str
    sm_folder: Path
    base_file: Path
    width: int
    height: int


def _annotated_cells(
    cfg: SynthConfig, fld: SmearField, kind: str, rng: np.random.Generator
) -> tuple[list[Cell], list[str], int]:
    """Choose the boxes annotators drew and simulate their sessions (labelled slides)."""
    if kind == "roi_only":
        return [], [], 0
    inside = [c for c in fld.cells if c.roi_id >= 0]
    outside_pool = [c for c in fld.cells if c.roi_id < 0 and c.zone == "monolayer"]
    n_inside = sum(1 for c in inside if not c.scenery)  # boxed red cells do not draw more boxes outside
    n_out = min(len(outside_pool), int(round(cfg.outside_fraction * n_inside)))
    chosen = list(inside)
    if n_out:
        idx = rng.choice(len(outside_pool), size=n_out, replace=False)
        chosen += [outside_pool[int(i)] for i in sorted(idx)]
    chosen.sort(key=lambda c: (c.roi_id if c.roi_id >= 0 else 10**9, c.box.y1, c.box.x1))
    experts = sample_experts(rng, cfg.expert_accuracy) if kind == "labelled" else []
    cells: list[Cell] = []
    for pc in chosen:
        if kind == "labelled" and pc.scenery:  # a class-level red-cell box: two sessions agree, no vote
            cells.append(Cell(box=pc.box, label=pc.label, roi_id=pc.roi_id, session_labels=(pc.label,) * 2))
        elif kind == "labelled":
            sessions, consensus = annotate(pc.label, experts, rng)
            cells.append(Cell(box=pc.box, label=consensus, roi_id=pc.roi_id, session_labels=sessions))
        else:
            cells.append(Cell(box=pc.box, label=None, roi_id=pc.roi_id))
    return cells, [pc.label for pc in chosen], len(experts)


def _make_slide(cfg: SynthConfig, index: int, diagnosis: str, kind: str, root: Path) -> _SlideTruth:
    """Draw the patient, render the smear, choose the annotated boxes and write the SM series."""
    from marrowscope.io.slides.dicom_writer import write_dicom_wsi

    prng = np.random.default_rng([cfg.seed, 1, index])
    p = sample_patient(diagnosis, prng, hard_case_rate=cfg.hard_case_rate)
    if cfg.streamed:
        from marrowscope.data.synth.big import StreamedSmear
        from marrowscope.io.slides.dicom_writer import write_dicom_wsi_tiles

        w, h = cfg.size
        smear = StreamedSmear(p.composition, w, h, prng, field_size=cfg.roi_size,
                              cells_per_field=cfg.cells_per_roi, mpp=cfg.mpp, n_rois=cfg.n_rois,
                              look=cfg.look)
        fld = SmearField(image=np.zeros((0, 0, 3), np.uint8), cells=smear.roi_cells, rois=smear.rois,
                         stain=smear.stain, mpp=cfg.mpp)
        n_levels = cfg.n_levels
        while max(w, h) / 4 ** (n_levels - 1) > 4096:  # a coarsest level small enough for an overview
            n_levels += 1

        def write(folder: Path, **kw: Any) -> Any:
            return write_dicom_wsi_tiles(smear.read, w, h, folder, **{**kw, "n_levels": n_levels})
    else:
        fld = render_field(p.composition, cfg.field_config(), prng)

        def write(folder: Path, **kw: Any) -> Any:
            return write_dicom_wsi(fld.image, folder, **kw)
    bx = int(prng.integers(1, 40)) * 1024 + int(prng.integers(0, 1024))
    by = int(prng.integers(1, 120)) * 1024 + int(prng.integers(0, 1024))
    cells, true_labels, n_sessions = _annotated_cells(
        cfg, fld, kind, np.random.default_rng([cfg.seed, 2, index])
    )
    study_uid = _uid("study", cfg.seed, p.patient_id)
    sm_uid = _uid("sm", cfg.seed, p.patient_id)
    props = {
        "openslide.vendor": "mirax",
        "openslide.bounds-x": str(bx),
        "openslide.bounds-y": str(by),
        "openslide.mpp-x": repr(cfg.mpp),
        "openslide.mpp-y": repr(cfg.mpp),
        "openslide.objective-power": "40",
        "marrowscope.synthetic": "true",
    }
    ref = write(
        root / "dicom" / p.patient_id / study_uid / f"SM_{sm_uid}",
        mpp=cfg.mpp,
        slide_id=p.slide_id,
        patient_id=p.patient_id,
        study_uid=study_uid,
        series_uid=sm_uid,
        tile_size=cfg.tile_size,
        n_levels=cfg.n_levels,
        jpeg_quality=cfg.jpeg_quality,
        openslide_properties=props,
        patient_age=p.age,
        patient_sex=p.sex,
    )
    log.info("slide %d: %s (%s, %s), %d boxes", index + 1, p.patient_id, diagnosis, kind, len(cells))
    return _SlideTruth(
        index=index,
        patient=p,
        kind=kind,
        field=replace(fld, image=np.zeros((0, 0, 3), np.uint8)),
        offset=(bx, by),
        cells=tuple(cells),
        true_labels=tuple(true_labels),
        n_sessions=n_sessions,
        study_uid=study_uid,
        sm_uid=sm_uid,
        sm_folder=ref.folder,
        base_file=ref.base_file,
        width=ref.width,
        height=ref.height,
    )


def _write_annotations(
    cfg: SynthConfig, truth: _SlideTruth, root: Path, first_id: int
) -> tuple[SynthSlideRecord, CellAnnotations, dict[str, Any]]:
    """Write the ANN series of one slide; return its record, CSV-frame annotations and JSON truth."""
    import pydicom

    from marrowscope.io.annotations.dicom_ann_writer import write_dicom_ann

    p, fld = truth.patient, truth.field
    study_uid, sm_uid = truth.study_uid, truth.sm_uid
    study_dir = truth.sm_folder.parent
    bx, by = truth.offset
    source = pydicom.dcmread(truth.base_file, stop_before_pixels=True)

    cells = tuple(replace(c, cell_id=first_id + i) for i, c in enumerate(truth.cells))
    ann = CellAnnotations(
        cells=cells,
        regions=fld.rois,
        slide_id=p.slide_id,
        width=truth.width,
        height=truth.height,
        mpp=cfg.mpp,
        source="synthetic",
    )
    series: list[tuple[str, int | None]] = [("roi", None)] if fld.rois else []
    if truth.kind == "labelled" and cells:
        series += [("session", k) for k in range(max(len(c.session_labels) for c in cells))]
        series.append(("consensus", None))
    elif truth.kind == "detection_only" and cells:
        series.append(("unlabeled", None))
    ann_files: list[str] = []
    for kind, session in series:
        s_uid = _uid("ann", cfg.seed, p.patient_id, kind, session)
        out = study_dir / f"ANN_{s_uid}" / f"{_uid('ann-sop', cfg.seed, p.patient_id, kind, session)}.dcm"
        out.parent.mkdir(parents=True, exist_ok=True)
        write_dicom_ann(
            ann,
            out,
            source_image=source,
            kind=kind,
            session=session,
            series_uid=s_uid,
            sop_uid=_uid("ann-sop", cfg.seed, p.patient_id, kind, session),
            manufacturer="marrowscope",
            manufacturer_model_name="marrowscope synthetic cohort",
        )
        ann_files.append(str(out.relative_to(root)))

    if truth.kind == "labelled":
        counts = Counter(c.label or "" for c in cells)
    else:
        counts = Counter("haematological_structure" for _ in cells)
    record = SynthSlideRecord(
        patient_id=p.patient_id,
        slide_id=p.slide_id,
        diagnosis=p.diagnosis,
        kind=truth.kind,
        sm_folder=str(truth.sm_folder.relative_to(root)),
        ann_files=tuple(ann_files),
        n_rois=len(fld.rois),
        n_annotated=len(cells),
        counts=dict(sorted(counts.items())),
    )
    csv_ann = _with_raw_tokens(
        ann.shifted(bx, by), cfg.raw_token_rate, np.random.default_rng([cfg.seed, 3, truth.index])
    )
    js: dict[str, Any] = {
        "patient_id": p.patient_id,
        "slide_id": p.slide_id,
        "diagnosis": p.diagnosis,
        "ncit_code": p.ncit_code,
        "ncit_meaning": p.ncit_meaning,
        "age": p.age,
        "sex": p.sex,
        "labs": dict(p.labs),
        "hard_case": p.hard_case,
        "case_kind": p.case_kind,
        "blast_fraction": p.blast_fraction,
        "composition": dict(p.composition),
        "slide_kind": truth.kind,
        "n_sessions": truth.n_sessions,
        "study_uid": study_uid,
        "sm_series_uid": sm_uid,
        "sm_folder": record.sm_folder,
        "ann_files": ann_files,
        "width": truth.width,
        "height": truth.height,
        "mpp": cfg.mpp,
        "csv_offset": [bx, by],
        "stain": asdict(fld.stain),
        "rois": [{"roi_id": r.roi_id, "box": list(r.box.as_tuple())} for r in fld.rois],
        "counts": record.counts,
        "true_counts": dict(sorted(Counter(truth.true_labels).items())),
        "placed_counts": dict(sorted(Counter(c.label for c in fld.cells).items())),
        "cells": [
            {
                "cell_id": c.cell_id,
                "true_label": t,
                "label": c.label,
                "session_labels": list(c.session_labels),
                "roi_id": c.roi_id,
                "box": [int(v) for v in c.box.as_tuple()],
            }
            for c, t in zip(cells, truth.true_labels, strict=True)
        ],
        "placed": [
            {"label": c.label, "roi_id": c.roi_id, "zone": c.zone, "box": [int(v) for v in c.box.as_tuple()]}
            for c in fld.cells
        ],
    }
    return record, csv_ann, js


# Raw session tokens of the original CSV and the labels they normalise to (dataset.md §2.1).
RAW_TOKENS: Mapping[str, tuple[str, ...]] = {
    "giant_platelet": ("other:Riesenthrombozyt", "other:Makrothrombozyt"),
    "technically_unfit": ("other:Zellhaufen", "other:Dichter Zellhaufen", "annotation_error"),
    "damaged_cell": ("other:Kernreste", "other:Plasma eines Megakaryozyten"),
    "phagocytosis": ("other:Hämophagozytose",),
    "thrombocyte_aggregate": ("other:Mikrogerinsel",),
    "basophilic_erythroblast": ("other:basophiler Erythroblast",),
    "degranulated_neutrophilic_myelocyte": ("other:degranulierter Promyelozyt",),
}


def _with_raw_tokens(ann: CellAnnotations, rate: float, rng: np.random.Generator) -> CellAnnotations:
    """Session labels for the CSV: some written as the raw free-text tokens annotators used."""
    if rate <= 0:
        return ann
    cells = []
    for c in ann.cells:
        tokens = tuple(
            str(RAW_TOKENS[t][int(rng.integers(len(RAW_TOKENS[t])))])
            if t in RAW_TOKENS and rng.random() < rate
            else t
            for t in c.session_labels
        )
        cells.append(replace(c, session_labels=tokens))
    return ann.with_cells(cells)


def _clinical(p: SynthPatient) -> Any:
    from marrowscope.io.annotations.clinical import ClinicalRecord

    return ClinicalRecord(
        patient_id=p.patient_id,
        sex=p.sex,
        age=p.age,
        diagnosis=p.diagnosis,
        ncit_code=p.ncit_code,
        labs=dict(p.labs),
    )


def read_synth_record(path: str | Path) -> dict[str, Any]:
    """The JSON truth record of a cohort folder (or the record file itself)."""
    p = Path(path)
    if p.is_dir():
        p = p / RECORD_NAME
    try:
        data: dict[str, Any] = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(p, f"cannot read the synthetic cohort record ({exc})") from exc
    if data.get("format") != RECORD_FORMAT:
        raise InputError(p, f"not a marrowscope synthetic cohort record (format {data.get('format')!r})")
    return data


def _existing(out: Path, cfg: SynthConfig) -> SynthRecord | None:
    """A complete cohort made with ``cfg`` already in ``out`` (None if ``out`` is absent or empty)."""
    if not out.exists():
        return None
    if out.is_dir() and not any(out.iterdir()):
        return None
    rec_path = out / RECORD_NAME
    if not rec_path.is_file():
        raise InputError(out, "exists and is not a synthetic cohort folder: choose another output folder")
    data = read_synth_record(rec_path)
    if data.get("config") != json.loads(json.dumps(cfg.to_json())):
        raise InputError(
            out, "holds a synthetic cohort made with other settings: remove it or choose another folder"
        )
    slides = tuple(SynthSlideRecord(**{**s, "ann_files": tuple(s["ann_files"])}) for s in data["slides"])
    return SynthRecord(out_dir=out, config=cfg, slides=slides, already_complete=True)


def generate_cohort(config: SynthConfig, out_dir: str | Path, *, workers: int = 1) -> SynthRecord:
    """Write the cohort to ``out_dir`` (atomically); a complete cohort with the same config is reused.

    ``workers`` > 1 renders and writes slides in that many processes; the result does not depend on it.
    """
    from marrowscope.io.annotations.bmdeep_csv import write_cells_csv, write_rois_csv
    from marrowscope.io.annotations.clinical import write_clinical_csv

    out = Path(out_dir)
    done = _existing(out, config)
    if done is not None:
        log.info("%s already holds this cohort", out)
        return done
    t0 = time.perf_counter()
    cfg = config
    rng = np.random.default_rng([cfg.seed, 0])
    diagnoses = assign_diagnoses(cfg.n_patients, rng, cfg.diagnosis_weights)
    kinds = _kinds(cfg, rng)
    records: list[SynthSlideRecord] = []
    patients_js: list[dict[str, Any]] = []
    labelled: list[CellAnnotations] = []
    detection: list[CellAnnotations] = []
    rois: dict[str, tuple[Region, ...]] = {}
    clinical = []
    next_id = cfg.first_cell_id
    with atomic_dir(out) as root:
        jobs = list(enumerate(zip(diagnoses, kinds, strict=True)))
        n_workers = max(1, min(workers, len(jobs)))
        if n_workers > 1:
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(max_workers=n_workers) as pool:
                futures = [pool.submit(_make_slide, cfg, i, dx, kind, root) for i, (dx, kind) in jobs]
                truths = [f.result() for f in futures]
        else:
            truths = [_make_slide(cfg, i, dx, kind, root) for i, (dx, kind) in jobs]
        for truth in truths:
            rec, csv_ann, js = _write_annotations(cfg, truth, root, next_id)
            next_id += len(truth.cells)
            records.append(rec)
            patients_js.append(js)
            if truth.kind == "labelled" and csv_ann.cells:
                labelled.append(csv_ann)
            elif truth.kind == "detection_only" and csv_ann.cells:
                detection.append(csv_ann)
            rois[truth.patient.slide_id] = csv_ann.regions
            clinical.append(_clinical(truth.patient))
        csv_dir = root / "csv"
        csv_dir.mkdir()
        write_cells_csv(labelled, csv_dir / "cells_labelled.csv", labelled=True)
        write_cells_csv(detection, csv_dir / "cells_detection_only.csv", labelled=False)
        write_rois_csv(rois, csv_dir / "rois.csv")
        write_clinical_csv(clinical, csv_dir / "clinical.csv")
        seconds = time.perf_counter() - t0
        doc = {
            "format": RECORD_FORMAT,
            "config": cfg.to_json(),
            "frames": "cells[].box and rois[].box are DICOM (level-0 pixel) coordinates; "
            "CSV = DICOM + csv_offset (openslide.bounds-x/-y)",
            "slides": [{**asdict(r), "ann_files": list(r.ann_files)} for r in records],
            "patients": patients_js,
        }
        write_text_atomic(root / RECORD_NAME, json.dumps(doc, indent=1, sort_keys=False) + "\n")
    return SynthRecord(out_dir=out, config=cfg, slides=tuple(records), seconds=seconds)


__all__ = [
    "SLIDE_KINDS",
    "SynthConfig",
    "SynthRecord",
    "SynthSlideRecord",
    "generate_cohort",
    "read_synth_record",
]
