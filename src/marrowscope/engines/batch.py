"""Many slides in one call: resumable, one failure never stops the others, a batch summary at the end.

Each source may be a slide file (MRXS/SVS/TIFF/image), a DICOM file or a DICOM folder: a folder is
searched for DICOM slides with :func:`marrowscope.io.cohort.discover_cohort` (an IDC download or a
``marrowscope synth`` cohort holds many), and each slide's DICOM ANN ROI series (or the cohort's ROI
CSV) gives its annotated regions. A DICOM file in a folder that cannot be read (empty, truncated) is
reported as failed by name; the other slides go on. A slide whose ``out_dir/<slide_id>/`` holds a
finished result is reused on a rerun only when the fingerprints of the slide and of the settings match
(:mod:`marrowscope.engines.fingerprint`); otherwise it is redone and its status says why. Outputs appear
only when complete (:func:`write_slide_outputs`), and only folders marrowscope wrote are ever replaced
(:mod:`marrowscope.io.atomic`).

Written into ``out_dir``: one folder per slide, ``batch_summary.json`` (every slide's status and every
failure with its reason; rewritten after each slide), ``cohort.csv`` and ``index.html``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from marrowscope.alerts import warning_codes
from marrowscope.cells import CellAnnotations, Region
from marrowscope.data.scale import MPP_AUTO, MPP_ESTIMATED_PROPERTY, PixelSize
from marrowscope.engines import fingerprint as fp
from marrowscope.engines.pipeline import AnalysisConfig, Models, analyze_slide, load_models
from marrowscope.errors import InputError
from marrowscope.io.atomic import (
    check_replaceable_dir,
    check_writable_target,
    prepare_output_dir,
    write_probe,
    write_text_atomic,
)
from marrowscope.io.csvsafe import escape_row
from marrowscope.io.slides.base import SlideReader
from marrowscope.report.outputs import SUMMARY, slide_folder, write_slide_outputs
from marrowscope.report.status import SlideStatus

if TYPE_CHECKING:
    from marrowscope.engines.ray_runner import RayConfig

log = logging.getLogger(__name__)

BATCH_SUMMARY = "batch_summary.json"
_AUTOMATIC = "automatic monolayer fields"
COHORT_CSV = "cohort.csv"
INDEX = "index.html"


@dataclass(frozen=True)
class SlideJob:
    """One slide to analyse: how to open it and where its ROIs come from."""

    source: str  # what the user gave (file or folder)
    slide_files: tuple[str, ...] = ()  # DICOM instance files of this slide (empty: open ``source``)
    series_uid: str | None = None
    slide_id: str | None = None  # known before opening for DICOM cohorts
    rois: CellAnnotations | None = None  # ROIs in the slide's level-0 frame
    rois_from: str | None = None
    csv_rois: tuple[Region, ...] = ()  # ROIs in the dataset CSV (MRXS) frame, shifted once opened
    roi_error: str | None = None  # the slide's ROI annotations could not be read: the slide fails


@dataclass(frozen=True)
class BatchSummary:
    out_dir: Path
    slides: tuple[SlideStatus, ...]
    summary_path: Path
    cohort_csv: Path
    index: Path

    @property
    def failures(self) -> tuple[SlideStatus, ...]:
        return tuple(s for s in self.slides if s.status == "failed")

    @property
    def n_done(self) -> int:
        return sum(s.status == "done" for s in self.slides)

    @property
    def n_skipped(self) -> int:
        return sum(s.status == "skipped" for s in self.slides)


# ------------------------------------------------------------------------------------------------ sources


RoiMap = Mapping[str, CellAnnotations]


def _rois_from_file(path: Path) -> tuple[RoiMap, tuple[Region, ...]]:
    """(ROIs by slide id, ROIs for a lone slide) from a ROI CSV (dataset frame) or a GeoJSON (level 0).

    CSV regions are marked ``extra['frame'] == 'csv'`` and shifted into a DICOM slide's frame later."""
    if not path.is_file():
        raise InputError(path, "ROI file not found")
    if path.suffix.lower() == ".csv":
        from marrowscope.io.annotations.bmdeep_csv import read_rois_csv

        by_slide = {sid: CellAnnotations(cells=(), regions=regs, slide_id=sid, extra={"frame": "csv"})
                    for sid, regs in read_rois_csv(path).items() if regs}
        if not by_slide:
            raise InputError(path, "no ROIs in this ROI CSV (empty or truncated file?); fix it or leave out "
                                   "--rois")
        return by_slide, ()
    if path.suffix.lower() in (".geojson", ".json"):
        from marrowscope.io.annotations.geojson import read_geojson

        ann = read_geojson(path)
        if not ann.regions:
            raise InputError(path, "no regions (QuPath annotation objects) in this GeoJSON file")
        # the file's slide id (or its name) picks the slide; a one-slide batch takes the regions anyway
        only = CellAnnotations(cells=(), regions=ann.regions, slide_id=ann.slide_id)
        return ({ann.slide_id: only} if ann.slide_id else {}), ann.regions
    raise InputError(path, "ROI file must be a dataset ROI CSV (.csv) or a QuPath GeoJSON (.geojson)")


def _unreadable_status(u: Any) -> SlideStatus:
    """A DICOM file of a cohort folder whose header cannot be read: reported by name, the rest goes on."""
    return SlideStatus(u.path, None, "failed", u.problem)


def _dicom_jobs(folder: Path) -> tuple[list[SlideJob], list[SlideStatus]]:
    """Every DICOM slide under ``folder`` with its ROI series (looking one level up for a lone series),
    and a failed status for each DICOM file in it that cannot be read."""
    from marrowscope.io.cohort import PatientEntry, discover_cohort, load_patient_annotations

    cohort = discover_cohort(folder)
    entries: list[PatientEntry] = list(cohort.patients)
    lone = entries[0] if len(entries) == 1 else None
    if (lone is not None and not lone.series("roi") and lone.csv_annotations is None
            and {Path(f).parent.resolve() for f in lone.slide_files} == {folder.resolve()}):
        # a single SM series folder (the slide's files directly in it): its ANN series are siblings in
        # the study folder. Only their annotation series are taken from there; the slide stays the
        # folder's own files (another copy of the same series beside it is not merged in)
        try:
            parent = discover_cohort(folder.parent, read_csvs=False)
            ann = [e.ann_series for e in parent.patients if e.series_uid == lone.series_uid]
            if ann and ann[0]:
                entries = [replace(lone, ann_series=ann[0])]
        except InputError:
            pass
    jobs = []
    for e in entries:
        rois: CellAnnotations | None = None
        src: str | None = None
        error: str | None = None
        try:  # an ROI file that cannot be read fails its slide only, never reads as "no ROIs"
            if e.series("roi"):
                src = f"DICOM ANN ROI series {e.series('roi')[0].series_uid}"
                rois = load_patient_annotations(e, "roi")
                if not rois.regions:
                    error = (f"{src} holds no regions (empty or truncated file?); repair or remove it to "
                             "count automatic fields")
            elif e.csv_annotations is not None and e.csv_annotations.regions:
                src = "dataset ROI CSV"
                rois = load_patient_annotations(e, "csv")
        except InputError as exc:
            error = f"cannot read the slide's ROIs ({src}): {exc}"
        if error is not None:
            rois, src = None, None
        jobs.append(SlideJob(str(folder), tuple(e.slide_files), e.series_uid, e.slide_id, rois, src,
                             roi_error=error))
    return jobs, [_unreadable_status(u) for u in cohort.unreadable]


def _dicom_file_jobs(path: Path) -> list[SlideJob]:
    """The slide of one DICOM file the user named, with its sibling instances and ROI series.

    The file's own header decides: an unreadable file or a non-slide object is an error naming it;
    unreadable files beside it are skipped (logged), never blamed on it."""
    from marrowscope.io.slides.dicom import read_header

    header = read_header(path)
    if not header.is_slide:
        what = header.modality or "?"
        raise InputError(path, f"this DICOM file is not a whole-slide image (Modality {what}); "
                               "give the slide's own files or folder")
    folder_jobs, unreadable = _dicom_jobs(path.parent)
    for st in unreadable:
        log.warning("%s; skipped (beside %s)", st.reason, path.name)
    mine = [j for j in folder_jobs if j.series_uid == header.series_uid]
    if not mine:
        raise InputError(path, "no slide found for this file (no VOLUME instance in its series)")
    return mine


def _folder_jobs(folder: Path) -> tuple[list[SlideJob], list[SlideStatus]]:
    """DICOM slides under ``folder``; without any, the slide files and images directly in it."""
    try:
        return _dicom_jobs(folder)
    except InputError:
        from marrowscope.io.formats import SLIDE_FILE_SUFFIXES

        files = sorted(f for f in folder.iterdir()
                       if f.is_file() and f.suffix.lower() in SLIDE_FILE_SUFFIXES)
        if not files:
            raise
        return [SlideJob(str(f)) for f in files], []


def collect_jobs(sources: Sequence[str | Path]) -> tuple[list[SlideJob], list[SlideStatus]]:
    """Slides to analyse, and sources (or DICOM files in a source folder) that could not be read, each
    with the reason naming the file."""
    from marrowscope.io.formats import DICOM_SUFFIXES
    from marrowscope.io.slides.dicom import _has_dicm_magic
    from marrowscope.io.slides.roi_patches import is_roi_header

    jobs: list[SlideJob] = []
    bad: list[SlideStatus] = []
    downloads: dict[Path, list[SlideJob]] = {}  # ROI-only downloads, discovered once each
    for s in sources:
        p = Path(s)
        try:
            if p.is_file() and is_roi_header(p):  # a slide of an ROI-only download: rois/slides/<uid>.json
                root = p.parent.parent.parent
                if root not in downloads:
                    found, unreadable = _dicom_jobs(root)
                    downloads[root] = found
                    bad.extend(unreadable)
                mine = [j for j in downloads[root] if j.slide_files == (str(p),)]
                if not mine:
                    raise InputError(p, "this slide of the ROI-only download was not found in its folder")
                jobs.extend(mine)
            elif p.is_dir():
                found, unreadable = _folder_jobs(p)
                jobs.extend(found)
                bad.extend(unreadable)
            elif p.is_file() and (p.suffix.lower() in DICOM_SUFFIXES or _has_dicm_magic(p)):
                jobs.extend(_dicom_file_jobs(p))
            elif not p.exists():
                raise InputError(p, "no such file or folder")
            else:
                jobs.append(SlideJob(str(p)))
        except InputError as e:
            bad.append(SlideStatus(str(p), None, "failed", e.problem if e.path == str(p) else str(e)))
    seen: set[tuple[str, ...]] = set()
    unique = []
    for j in jobs:
        key = j.slide_files or (str(Path(j.source).resolve()),)
        if key not in seen:
            seen.add(key)
            unique.append(j)
    return unique, bad


def _open_at(job: SlideJob, mpp: float | None) -> SlideReader:
    from marrowscope.io.slides import open_slide

    if job.slide_files:
        return open_slide([Path(f) for f in job.slide_files], mpp=mpp, series_uid=job.series_uid)
    return open_slide(job.source, mpp=mpp)


def _open(job: SlideJob, mpp: PixelSize) -> SlideReader:
    """The slide at ``mpp``; with ``auto``, a slide without a pixel size gets the one its red cells give
    (:func:`marrowscope.data.scale.estimate_slide_scale`), recorded in its properties for the report."""
    if mpp != MPP_AUTO:
        return _open_at(job, None if mpp is None else float(mpp))
    slide = _open_at(job, None)
    if slide.info.mpp is not None:
        return slide
    from marrowscope.data.scale import estimate_slide_scale

    with slide:
        est = estimate_slide_scale(slide)
    if est is None:
        raise InputError(job.source, "the slide has no pixel size and too little stained area to read one "
                                     "from its red cells; pass it with --mpp, e.g. --mpp 0.25")
    log.info("%s: no pixel size; %.4f µm/px read from its red cells", job.source, est.mpp)
    slide = _open_at(job, est.mpp)
    slide.info = replace(slide.info, properties={**slide.info.properties,
                                                 MPP_ESTIMATED_PROPERTY: json.dumps(est.to_dict())})
    return slide


def _pick_rois(job: SlideJob, sid: str, by_slide: RoiMap,
               for_all: tuple[Region, ...]) -> tuple[CellAnnotations | None, str | None]:
    """ROIs from ``--rois`` (by slide id or file name, or for a lone slide) win over the slide's own;
    in the frame of their file (see :func:`_in_slide_frame`)."""
    if job.roi_error is not None:
        raise InputError(job.slide_id or job.source, job.roi_error)
    ann = by_slide.get(sid)
    if ann is None:  # ``is None``, not ``or``: an ROI-only CellAnnotations has no cells and is falsy
        ann = by_slide.get(Path(job.source).stem)
    if ann is not None and ann.regions:
        return ann, "--rois file"
    if for_all:
        return CellAnnotations(cells=(), regions=for_all, slide_id=sid), "--rois file"
    return job.rois, job.rois_from


def _in_slide_frame(ann: CellAnnotations | None, slide: SlideReader) -> CellAnnotations | None:
    """Dataset-CSV ROIs (MRXS frame) shifted into a DICOM slide's level-0 frame."""
    if ann is not None and ann.extra.get("frame") == "csv" and slide.info.format == "dicom":
        from marrowscope.io.annotations.bmdeep_csv import csv_to_dicom

        return csv_to_dicom(ann, slide.info)
    return ann


# ------------------------------------------------------------------------------------------------ one slide


def _status_from_summary(job: SlideJob, d: Mapping[str, Any], status: str, folder: Path,
                         rois_from: str | None = None) -> SlideStatus:
    diff = d.get("differential") or {}
    dx = d.get("diagnosis") or None
    iv = diff.get("blast_interval")
    return SlideStatus(
        source=job.source, slide_id=d.get("slide", {}).get("slide_id"), status=status, folder=str(folder),
        n_counted=diff.get("n_counted"), blast_fraction=diff.get("blast_fraction"),
        blast_ci=None if iv is None else (float(iv[0]), float(iv[1])),
        suggestion=None if dx is None else dx.get("suggestion"),
        suggestion_p=None if dx is None else dx.get("probabilities", {}).get(dx.get("suggestion")),
        rule_baseline=None if dx is None else dx.get("rule_baseline"),
        flags=tuple(f.get("name", "") for f in diff.get("flags", [])),
        rois_from=rois_from, seconds=(d.get("run") or {}).get("seconds"),
        uncertain_between=None if dx is None or not dx.get("uncertain_between") else
        (str(dx["uncertain_between"][0]), str(dx["uncertain_between"][1])),
        warnings=warning_codes(w for w in d.get("warnings", []) if isinstance(w, Mapping)),
        models=tuple(f"{m.get('task')} {m.get('name')} ({m.get('training_data_kind', 'unknown')})"
                     for m in (d.get("run") or {}).get("models", [])),
    )


def _done_summary(folder: Path) -> dict[str, Any] | None:
    p = folder / SUMMARY
    if not p.is_file():
        return None
    try:
        data: dict[str, Any] = json.loads(p.read_text(encoding="utf-8"))
        return data
    except (OSError, json.JSONDecodeError):
        return None


def _slide_fingerprint(job: SlideJob, slide: SlideReader | None) -> dict[str, Any]:
    if job.slide_files:
        return fp.dicom_fingerprint(job.series_uid, job.slide_files)
    return fp.file_fingerprint(slide.info.path if slide is not None else job.source)


@dataclass(frozen=True)
class _Verdict:
    folder: Path
    reuse: dict[str, Any] | None = None  # the finished summary to reuse
    redo: str | None = None  # why a finished folder there is redone
    rois_from: str | None = None  # where the reused result's regions came from


def _decide(out_dir: Path, sid: str, slide_fp: Mapping[str, Any], settings: Mapping[str, Any],
            *, alternative: bool = True) -> _Verdict:
    """Reuse ``out_dir/<sid>/`` when its slide and settings fingerprints match; else say why it is redone.

    A DICOM folder holding another series (two slides sharing a ContainerIdentifier) is never taken:
    this slide goes to ``<sid>_<hash of its series UID>``. A slide file whose name another file's
    results already hold is refused."""
    folder = slide_folder(out_dir, sid)
    done = _done_summary(folder)
    if done is None:
        return _Verdict(folder)
    before = fp.read_fingerprint(folder)
    if before is None:
        return _Verdict(folder, redo="the earlier results carry no fingerprint (older marrowscope)")
    if not fp.same_slide_content(before.slide, slide_fp):
        if slide_fp.get("format") == "dicom":
            if before.slide.get("series_uid") != slide_fp.get("series_uid"):
                if not alternative:
                    raise InputError(folder, "holds the results of another slide with the same id")
                tag = hashlib.sha256(str(slide_fp.get("series_uid")).encode()).hexdigest()[:10]
                return _decide(out_dir, f"{sid}_{tag}", slide_fp, settings, alternative=False)
        elif before.slide.get("path") != slide_fp.get("path"):
            raise InputError(
                str(slide_fp.get("path")),
                f"{folder} already holds the results of another slide with the same name "
                f"({before.slide.get('path')}); rename one of them or use another --out",
            )
        return _Verdict(folder, redo="the slide's files changed since the earlier run")
    change = fp.settings_change(before.settings, settings)
    if change is not None:
        return _Verdict(folder, redo=change)
    rois = before.settings.get("rois")
    return _Verdict(folder, reuse=done, rois_from=rois.get("from") if rois else _AUTOMATIC)


def _chosen_rois(job: SlideJob, sid: str, by_slide: RoiMap, for_all: tuple[Region, ...],
                 cfg: AnalysisConfig) -> tuple[CellAnnotations | None, str | None]:
    """:func:`_pick_rois`, or none with ``--regions auto`` (automatic fields even where ROIs exist)."""
    return _pick_rois(job, sid, by_slide, for_all) if cfg.use_annotated_rois else (None, None)


def analyze_one(job: SlideJob, out_dir: Path, cfg: AnalysisConfig, get_models: Callable[[], Models],
                mpp: PixelSize, by_slide: RoiMap,
                for_all: tuple[Region, ...], progress: bool = False,
                model_ids: Mapping[str, str] | None = None) -> SlideStatus:
    """Analyse one slide and write its outputs; a finished slide is reused when its fingerprints match
    (:mod:`marrowscope.engines.fingerprint`), else redone with the reason in its status."""
    ids = dict(model_ids or {})

    def settings(sid: str) -> dict[str, Any]:
        rois, src = _chosen_rois(job, sid, by_slide, for_all, cfg)
        return fp.settings_fingerprint(cfg.to_dict(), mpp, fp.rois_signature(rois, src), ids)

    if job.slide_id is not None and job.slide_files:  # DICOM: decided before opening the slide
        v = _decide(out_dir, job.slide_id, _slide_fingerprint(job, None), settings(job.slide_id))
        if v.reuse is not None:
            return _status_from_summary(job, v.reuse, "skipped", v.folder, v.rois_from)
    with _open(job, mpp) as slide:
        sid = slide.info.slide_id
        slide_fp = _slide_fingerprint(job, slide)
        now = settings(sid)
        v = _decide(out_dir, sid, slide_fp, now)
        if v.reuse is not None:
            return _status_from_summary(job, v.reuse, "skipped", v.folder, v.rois_from)
        check_replaceable_dir(v.folder)  # e.g. an MRXS data folder named like the slide: before the work
        raw, rois_from = _chosen_rois(job, sid, by_slide, for_all, cfg)
        rois = _in_slide_frame(raw, slide)
        from tqdm import tqdm

        with tqdm(desc="regions", unit="region", leave=False, disable=not progress) as bar:

            def step(done: int, total: int) -> None:
                bar.total = total
                bar.update(done - bar.n)

            result = analyze_slide(slide, get_models(), cfg, annotations=rois, progress=step)
        fingerprint = fp.Fingerprint(slide_fp, now).to_dict()
        outputs = write_slide_outputs(result, slide, out_dir, folder=v.folder, fingerprint=fingerprint)
    d = json.loads(outputs.summary.read_text(encoding="utf-8"))
    st = _status_from_summary(job, d, "done", outputs.folder, rois_from or _AUTOMATIC)
    if v.redo is not None:
        log.info("%s: redone: %s", sid, v.redo)
    return replace(st, redone_because=v.redo)


class _ModelsUnavailable(Exception):
    """Stops the whole batch with ``error``: no models, or outputs that cannot be written."""

    def __init__(self, error: InputError) -> None:
        super().__init__(str(error))
        self.error = error


def run_slide(job: SlideJob, out_dir: Path, cfg: AnalysisConfig, get_models: Callable[[], Models],
              mpp: PixelSize, by_slide: RoiMap, for_all: tuple[Region, ...],
              progress: bool = False, model_ids: Mapping[str, str] | None = None) -> SlideStatus:
    """:func:`analyze_one` with the batch's failure isolation: any error of this slide becomes a
    ``failed`` status with its reason (and time). ``_ModelsUnavailable`` (no models, or an output disk
    that is full or read-only: no batch) propagates. The one per-slide function of the serial batch and
    of the Ray workers."""
    t0 = time.perf_counter()
    try:
        st = analyze_one(job, out_dir, cfg, get_models, mpp, by_slide, for_all, progress=progress,
                         model_ids=model_ids)
    except _ModelsUnavailable:
        raise
    except InputError as e:
        st = SlideStatus(job.source, job.slide_id, "failed", str(e))
    except Exception as e:  # noqa: BLE001 - one bad slide must not stop the batch
        log.debug("slide %s failed", job.source, exc_info=True)
        if (full := write_probe(out_dir)) is not None:  # the output disk, not the slide: stop here
            raise _ModelsUnavailable(_cannot_write(out_dir, full)) from e
        st = SlideStatus(job.source, job.slide_id, "failed", f"{type(e).__name__}: {e}")
    if st.status == "failed":
        log.warning("%s", st.reason)
        st = replace(st, seconds=time.perf_counter() - t0)
    return st


# ------------------------------------------------------------------------------------------------ the batch


def analyze_batch(
    sources: Sequence[str | Path],
    out_dir: str | Path,
    cfg: AnalysisConfig | None = None,
    mpp: PixelSize = None,
    rois: str | Path | None = None,
    *,
    models: Models | None = None,
    progress: bool = True,
    ray: RayConfig | None = None,
) -> BatchSummary:
    """Analyse every slide in ``sources`` into ``out_dir`` (see the module docstring).

    ``mpp`` overrides every slide's pixel size; ``rois`` is a ROI CSV (by slide id) or a GeoJSON file
    whose regions are counted instead of the slide's own. ``models``: already loaded models (else the
    ones named in ``cfg`` are loaded once, when the first slide needs them). ``ray``: run the slides on
    a Ray cluster (:mod:`marrowscope.engines.ray_runner`) instead of one after another here.
    """
    cfg = cfg or AnalysisConfig()
    out = prepare_output_dir(out_dir)  # a read-only or foreign --out is found before any slide
    for name in (BATCH_SUMMARY, COHORT_CSV, INDEX):
        check_writable_target(out / name)
    by_slide, for_all = _rois_from_file(Path(rois)) if rois is not None else ({}, ())
    jobs, statuses = collect_jobs(sources)
    if len(jobs) != 1:
        for_all = ()
    loaded: list[Models] = [models] if models is not None else []
    ids = model_identities(cfg, models)

    def get_models() -> Models:
        if not loaded:
            try:
                loaded.append(load_models(cfg))
            except InputError as e:  # no model, no batch: stop at once rather than fail every slide
                raise _ModelsUnavailable(e) from e
        return loaded[0]

    if ray is not None:  # the same run_slide on Ray workers; statuses in job order, as below
        from marrowscope.engines.ray_runner import run_on_ray

        listed = list(statuses)

        def record(done: Sequence[SlideStatus]) -> None:
            _write_batch_level(out, listed + list(done), cfg, final=False)

        statuses = listed + run_on_ray(jobs, out, cfg, mpp, by_slide, for_all, ray, models=models,
                                       model_ids=ids, progress=progress, on_progress=record)
        jobs = []
    from tqdm import tqdm

    bar = tqdm(jobs, desc="slides", unit="slide", disable=not progress or not jobs)
    for job in bar:
        bar.set_postfix_str(job.slide_id or Path(job.source).name)
        try:
            st = run_slide(job, out, cfg, get_models, mpp, by_slide, for_all, progress=progress,
                           model_ids=ids)
        except _ModelsUnavailable as e:
            raise e.error from None
        statuses.append(st)
        _write_batch_level(out, statuses, cfg, final=False)
    _write_batch_level(out, statuses, cfg, final=True)
    return BatchSummary(out, tuple(statuses), out / BATCH_SUMMARY, out / COHORT_CSV, out / INDEX)


def _cannot_write(out: Path, e: OSError) -> InputError:
    return InputError(out, f"cannot write the outputs ({e.strerror or e}); finished slides are kept: free "
                           "space (or make the folder writable) and rerun the same command")


def _write_batch_level(out: Path, statuses: Sequence[SlideStatus], cfg: AnalysisConfig, *,
                       final: bool) -> None:
    """batch_summary.json (after every slide); cohort.csv and index.html at the end. A full or read-only
    disk stops the batch with one message; every finished slide folder stays."""
    try:
        _write_batch_summary(out, statuses, cfg)
        if final:
            write_cohort_csv(out / COHORT_CSV, statuses)
            from marrowscope.report.index import write_index

            write_index(out / INDEX, statuses, out)
    except OSError as e:
        raise _cannot_write(out, e) from e


def model_identities(cfg: AnalysisConfig, models: Models | None = None) -> dict[str, str]:
    """SHA-256 of each model (the loaded ones' records, else the files ``cfg`` names), by task."""
    if models is not None:
        return {r.task: r.sha256 for r in models.refs}
    from marrowscope.models.registry import resolve_model
    from marrowscope.models.weights import sha256_file

    ids = {}
    for task, name in (("detector", cfg.detector), ("classifier", cfg.classifier),
                       ("diagnosis", cfg.diagnosis)):
        if name:
            path, sha = resolve_model(name, task=task)
            ids[task] = sha or sha256_file(path)
    return ids


def _write_batch_summary(out: Path, statuses: Sequence[SlideStatus], cfg: AnalysisConfig) -> None:
    d = {
        "n_slides": len(statuses),
        "n_done": sum(s.status == "done" for s in statuses),
        "n_skipped": sum(s.status == "skipped" for s in statuses),
        "n_failed": sum(s.status == "failed" for s in statuses),
        "slides": [asdict(s) for s in statuses],
        "failures": [{"source": s.source, "slide_id": s.slide_id, "reason": s.reason}
                     for s in statuses if s.status == "failed"],
        "config": cfg.to_dict(),
    }
    write_text_atomic(out / BATCH_SUMMARY, json.dumps(d, indent=2, default=list) + "\n")


COHORT_COLUMNS: tuple[str, ...] = (
    "slide_id", "status", "n_counted", "blast_percent", "blast_ci_low_percent", "blast_ci_high_percent",
    "flags", "suggestion", "suggestion_probability", "headline", "rule_baseline", "warnings", "models",
    "regions", "report", "reason", "source",
)


def write_cohort_csv(path: Path, statuses: Sequence[SlideStatus]) -> Path:
    """One row per slide: counts, blast percent with its interval (percents: ``*_percent`` columns), the
    suggestion and its headline, the rule baseline, the warning codes and the models with their
    training data."""
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(COHORT_COLUMNS)
    for s in statuses:
        w.writerow(escape_row([  # a slide id like =HYPERLINK(...) must not become a live formula
            s.slide_id or "", s.status, "" if s.n_counted is None else s.n_counted,
            "" if s.blast_fraction is None else f"{100 * s.blast_fraction:.2f}",
            "" if s.blast_ci is None else f"{100 * s.blast_ci[0]:.2f}",
            "" if s.blast_ci is None else f"{100 * s.blast_ci[1]:.2f}",
            ";".join(s.flags), s.suggestion or "",
            "" if s.suggestion_p is None else f"{s.suggestion_p:.3f}", s.headline, s.rule_baseline or "",
            ";".join(s.warnings), ";".join(s.models),
            s.rois_from or "", "" if s.folder is None else f"{Path(s.folder).name}/report.html",
            s.reason or "", s.source,
        ]))
    return write_text_atomic(path, buf.getvalue())
