"""NCI Imaging Data Commons (IDC) access for the BoneMarrowWSI-PediatricLeukemia collection.

The only module that talks to ``idc_index`` / ``idc_index_data``.

* :func:`load_catalog` lists the collection OFFLINE from the main index bundled with ``idc-index-data``
  (patients, the SM slide series, the ANN series with their kind derived from SeriesDescription, sizes).
* :func:`select_series` filters by patient, kind and "labelled only"; :func:`plan_download` compares
  a selection with what is already on disk (instance counts and bytes), so downloads resume.
* :func:`download` checks the network first (bounded), runs idc-index in a child process with a hard
  time limit, and verifies afterwards what actually arrived. idc-index itself does not raise offline:
  it logs failures and returns after about 90 s.

Layout on disk (matches an IDC download and the cohort layout read by ``io.cohort``)::

    ROOT/dicom/<PatientID>/<StudyInstanceUID>/<Modality>_<SeriesInstanceUID>/*.dcm
    ROOT/idc_manifest.json
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from marrowscope.errors import InputError, MarrowscopeError, MissingDependencyError, NetworkUnavailableError
from marrowscope.io.atomic import write_text_atomic

log = logging.getLogger(__name__)

COLLECTION_ID = "bonemarrowwsi_pediatricleukemia"
#: idc-index folder template below ``ROOT/dicom`` (the default minus the collection level).
DIR_TEMPLATE = "%PatientID/%StudyInstanceUID/%Modality_%SeriesInstanceUID"
#: Series kinds: the slide (SM) and the four annotation kinds (ANN).
SERIES_KINDS: tuple[str, ...] = ("slide", "roi", "session", "consensus", "unlabeled")
ANN_KINDS: tuple[str, ...] = SERIES_KINDS[1:]
#: Host and port of the public buckets, per idc-index source (``aws`` is idc-index's default).
ENDPOINTS: Mapping[str, tuple[str, int]] = {
    "aws": ("s3.amazonaws.com", 443),
    "gcs": ("storage.googleapis.com", 443),
}

_INDEX_COLUMNS = (
    "collection_id", "PatientID", "PatientAge", "PatientSex", "StudyInstanceUID", "SeriesInstanceUID",
    "Modality", "SeriesDescription", "SeriesNumber", "instanceCount", "series_size_MB", "series_aws_url",
)
_SESSION_RE = re.compile(r"^\s*session\s+(\d+)\s*:", re.IGNORECASE)


class IncompleteDownloadError(MarrowscopeError):
    """Some requested series did not arrive completely."""


@dataclass(frozen=True)
class IdcSeries:
    """One DICOM series of the collection as the IDC index describes it."""

    patient_id: str
    study_uid: str
    series_uid: str
    modality: str
    kind: str
    session: int | None
    description: str
    series_number: int | None
    instance_count: int
    size_mb: float
    crdc_series_uuid: str
    aws_url: str
    patient_age: str = ""
    patient_sex: str = ""

    def folder(self, root: str | os.PathLike[str]) -> Path:
        """Where this series lives below ``root`` (``root/dicom/<patient>/<study>/<MOD>_<series>``)."""
        return Path(root) / "dicom" / self.patient_id / self.study_uid / f"{self.modality}_{self.series_uid}"


def series_kind(modality: str, description: str) -> tuple[str, int | None]:
    """Kind (and zero-based session) of a series from its Modality and SeriesDescription (dataset.md §3.2)."""
    if modality.upper() == "SM":
        return "slide", None
    text = description.strip().casefold()
    m = _SESSION_RE.match(text)
    if m:
        return "session", int(m.group(1))
    if text.startswith("consensus"):
        return "consensus", None
    if text.startswith("unlabeled") or text.startswith("unlabelled"):
        return "unlabeled", None
    if "region" in text and "interest" in text:
        return "roi", None
    return "other", None


@dataclass(frozen=True)
class PatientSummary:
    patient_id: str
    study_uid: str
    age: str
    sex: str
    slide_series_uid: str | None
    slide_size_mb: float
    slide_instances: int
    annotation_series: int
    annotations_size_mb: float
    kinds: Mapping[str, int]
    labelled: bool


@dataclass(frozen=True)
class IdcCatalog:
    """The collection's series (or a selection of them)."""

    collection_id: str
    series: tuple[IdcSeries, ...]
    index_version: str = ""

    def __len__(self) -> int:
        return len(self.series)

    @property
    def slides(self) -> tuple[IdcSeries, ...]:
        return tuple(s for s in self.series if s.kind == "slide")

    @property
    def annotations(self) -> tuple[IdcSeries, ...]:
        return tuple(s for s in self.series if s.modality == "ANN")

    @property
    def patients(self) -> tuple[str, ...]:
        return tuple(sorted({s.patient_id for s in self.series}))

    def kind_counts(self) -> dict[str, int]:
        """Series per kind (``slide``, ``roi``, ``session``, ``consensus``, ``unlabeled``)."""
        counts = Counter(s.kind for s in self.series)
        return {k: counts[k] for k in (*SERIES_KINDS, "other") if counts[k]}

    def session_counts(self) -> dict[int, int]:
        counts = Counter(s.session for s in self.series if s.kind == "session" and s.session is not None)
        return dict(sorted(counts.items()))

    def labelled_patients(self) -> tuple[str, ...]:
        """Patients with a consensus (labelled cells) series."""
        return tuple(sorted({s.patient_id for s in self.series if s.kind == "consensus"}))

    def patient_summaries(self) -> tuple[PatientSummary, ...]:
        by_patient: dict[str, list[IdcSeries]] = {}
        for s in self.series:
            by_patient.setdefault(s.patient_id, []).append(s)
        out = []
        for pid in sorted(by_patient):
            group = by_patient[pid]
            slide = next((s for s in group if s.kind == "slide"), None)
            anns = [s for s in group if s.modality == "ANN"]
            kinds = Counter(s.kind for s in anns)
            out.append(PatientSummary(
                patient_id=pid, study_uid=group[0].study_uid,
                age=next((s.patient_age for s in group if s.patient_age), ""),
                sex=next((s.patient_sex for s in group if s.patient_sex), ""),
                slide_series_uid=slide.series_uid if slide else None,
                slide_size_mb=slide.size_mb if slide else 0.0,
                slide_instances=slide.instance_count if slide else 0,
                annotation_series=len(anns), annotations_size_mb=sum(s.size_mb for s in anns),
                kinds={k: kinds[k] for k in ANN_KINDS if kinds[k]}, labelled=kinds["consensus"] > 0,
            ))
        return tuple(out)

    def summary(self) -> dict[str, Any]:
        """Counts and sizes as a JSON-ready dict."""
        anns = self.annotations
        slides = self.slides
        return {
            "collection_id": self.collection_id,
            "index_version": self.index_version,
            "n_patients": len(self.patients),
            "n_slides": len(slides),
            "n_annotation_series": len(anns),
            "annotation_kinds": {k: v for k, v in self.kind_counts().items() if k != "slide"},
            "sessions": {str(k): v for k, v in self.session_counts().items()},
            "n_labelled_patients": len(self.labelled_patients()),
            "slides_size_mb": round(sum(s.size_mb for s in slides), 3),
            "slides_instances": sum(s.instance_count for s in slides),
            "annotations_size_mb": round(sum(s.size_mb for s in anns), 3),
        }

    def to_dict(self, with_series: bool = False) -> dict[str, Any]:
        d = self.summary()
        d["patients"] = [asdict(p) for p in self.patient_summaries()]
        if with_series:
            d["series"] = [asdict(s) for s in self.series]
        return d


def _bundled_index_path() -> tuple[Path, str]:
    try:
        import idc_index_data
    except ImportError as e:  # pragma: no cover - a dependency
        raise MissingDependencyError("idc-index is not installed: pip install idc-index") from e
    path = idc_index_data.IDC_INDEX_PARQUET_FILEPATH
    if path is None or not Path(path).is_file():
        raise MissingDependencyError("idc-index-data ships no main index parquet: reinstall idc-index-data")
    return Path(path), str(idc_index_data.__version__)


@lru_cache(maxsize=4)
def _read_index(path: str, collection_id: str) -> tuple[tuple[IdcSeries, ...], int]:
    import pyarrow.parquet as pq

    columns = list(_INDEX_COLUMNS)
    available = set(pq.read_schema(path).names)
    required = ("collection_id", "PatientID", "SeriesInstanceUID", "Modality")
    missing = [c for c in required if c not in available]
    if missing:
        raise InputError(path, f"not an IDC index: columns {missing} are missing")
    table = pq.read_table(path, columns=[c for c in columns if c in available],
                          filters=[("collection_id", "=", collection_id)])
    rows = table.to_pylist()
    out = []
    for r in rows:
        modality = str(r.get("Modality") or "")
        description = str(r.get("SeriesDescription") or "")
        kind, session = series_kind(modality, description)
        url = str(r.get("series_aws_url") or "")
        parts = url.split("/")
        number = r.get("SeriesNumber")
        out.append(IdcSeries(
            patient_id=str(r["PatientID"]), study_uid=str(r.get("StudyInstanceUID") or ""),
            series_uid=str(r["SeriesInstanceUID"]), modality=modality, kind=kind, session=session,
            description=description, series_number=int(number) if number not in (None, "") else None,
            instance_count=int(r.get("instanceCount") or 0), size_mb=float(r.get("series_size_MB") or 0.0),
            crdc_series_uuid=parts[3] if len(parts) > 3 else "", aws_url=url,
            patient_age=str(r.get("PatientAge") or ""), patient_sex=str(r.get("PatientSex") or ""),
        ))
    out.sort(key=lambda s: (s.patient_id, s.modality != "SM", s.series_number or 0, s.session or 0,
                            s.series_uid))
    return tuple(out), len(rows)


def load_catalog(
    collection_id: str = COLLECTION_ID, index_path: str | os.PathLike[str] | None = None
) -> IdcCatalog:
    """The collection from the bundled IDC main index (offline; about 3 s on first call, then cached).

    ``index_path``: another parquet file with the same columns (e.g. a newer index or a test fixture).
    """
    path: Path
    if index_path is None:
        path, version = _bundled_index_path()
    else:
        path, version = Path(index_path), "custom"
        if not path.is_file():
            raise InputError(path, "IDC index parquet file not found")
    series, n = _read_index(str(path), collection_id)
    if n == 0:
        raise InputError(path, f"collection {collection_id!r} is not in this IDC index (version {version})")
    others = sum(1 for s in series if s.kind == "other")
    if others:
        log.warning("%d series with an unrecognised SeriesDescription (kind 'other')", others)
    return IdcCatalog(collection_id=collection_id, series=series, index_version=version)


def parse_kinds(kinds: str | Iterable[str] | None) -> frozenset[str] | None:
    """``'consensus,roi'`` or an iterable -> set of kinds (``session3`` selects one session)."""
    if kinds is None:
        return None
    items = kinds.split(",") if isinstance(kinds, str) else [x for k in kinds for x in str(k).split(",")]
    out = set()
    for raw in items:
        k = raw.strip().lower()
        if not k:
            continue
        if k in ("slides", "sm"):
            k = "slide"
        if k in ("unlabelled", "detection", "detection-only"):
            k = "unlabeled"
        if k in ("rois",):
            k = "roi"
        if k in SERIES_KINDS or re.fullmatch(r"session\d+", k):
            out.add(k)
        else:
            raise InputError(raw, f"unknown series kind; use {', '.join(SERIES_KINDS)} or session0..session5")
    return frozenset(out)


def select_series(
    catalog: IdcCatalog,
    *,
    patients: Sequence[str] | None = None,
    kinds: str | Iterable[str] | None = None,
    labelled_only: bool = False,
    slides: bool = False,
    annotations: bool = True,
    limit_patients: int | None = None,
) -> IdcCatalog:
    """A sub-catalog: by patient, kind (``roi``, ``session``, ``session2``, ``consensus``, ``unlabeled``,
    ``slide``), patients with a consensus series only, with or without slides / annotations.

    With ``kinds`` given, it decides alone; otherwise ``annotations`` adds every ANN series and ``slides``
    the SM series.
    """
    wanted = parse_kinds(kinds)
    chosen = set(catalog.patients)
    if patients:
        want = {p.strip() for p in patients if p.strip()}
        unknown = sorted(want - chosen)
        if unknown:
            raise InputError(", ".join(unknown[:3]), f"patient(s) not in collection {catalog.collection_id}")
        chosen &= want
    if labelled_only:
        chosen &= set(catalog.labelled_patients())
    if limit_patients is not None:
        chosen = set(sorted(chosen)[: max(0, limit_patients)])

    def keep(s: IdcSeries) -> bool:
        if s.patient_id not in chosen:
            return False
        if wanted is not None:
            return s.kind in wanted or (s.kind == "session" and f"session{s.session}" in wanted)
        return (annotations and s.modality == "ANN") or (slides and s.kind == "slide")

    kept = tuple(s for s in catalog.series if keep(s))
    return IdcCatalog(catalog.collection_id, kept, catalog.index_version)


# --- what is on disk ---------------------------------------------------------------------------------------
def _dicom_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return [p for p in folder.iterdir()
            if p.is_file() and p.suffix.lower() == ".dcm" and not p.name.startswith(".")]


def series_state(series: IdcSeries, root: str | os.PathLike[str]) -> tuple[int, int]:
    """(files, bytes) of ``series`` present below ``root``."""
    files = _dicom_files(series.folder(root))
    return len(files), sum(p.stat().st_size for p in files)


def is_complete(series: IdcSeries, root: str | os.PathLike[str]) -> bool:
    """All instances present and at least 99 % of the indexed bytes (catches truncated files)."""
    n, nbytes = series_state(series, root)
    return n >= series.instance_count > 0 and nbytes >= 0.99 * series.size_mb * 1e6


@dataclass(frozen=True)
class DownloadPlan:
    root: Path
    todo: tuple[IdcSeries, ...]
    done: tuple[IdcSeries, ...]
    partial: tuple[IdcSeries, ...] = ()

    @property
    def todo_mb(self) -> float:
        return sum(s.size_mb for s in self.todo)

    def describe(self) -> str:
        return (f"{len(self.todo)} series to fetch ({self.todo_mb:,.2f} MB; "
                f"{len(self.partial)} partly present), "
                f"{len(self.done)} already complete in {self.root}")


def plan_download(selection: IdcCatalog | Iterable[IdcSeries], root: str | os.PathLike[str]) -> DownloadPlan:
    """Split ``selection`` into series still to fetch and series already complete below ``root``."""
    series = selection.series if isinstance(selection, IdcCatalog) else tuple(selection)
    todo, done, partial = [], [], []
    for s in series:
        if is_complete(s, root):
            done.append(s)
        else:
            todo.append(s)
            if series_state(s, root)[0] > 0:
                partial.append(s)
    return DownloadPlan(Path(root), tuple(todo), tuple(done), tuple(partial))


# --- network ---------------------------------------------------------------------------------------------
def check_network(host: str = ENDPOINTS["aws"][0], port: int = 443, timeout_s: float = 4.0) -> bool:
    """True if a TCP connection to ``host:port`` opens within ``timeout_s`` (DNS included)."""
    result: list[bool] = []

    def attempt() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout_s):
                result.append(True)
        except OSError:
            result.append(False)

    worker = threading.Thread(target=attempt, daemon=True, name="marrowscope-netcheck")
    worker.start()
    worker.join(timeout_s + 0.5)  # getaddrinfo ignores socket timeouts: bound it here
    return bool(result and result[0])


def _proxy_address() -> tuple[str, int] | None:
    from urllib.parse import urlsplit

    raw = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    if not raw:
        return None
    parts = urlsplit(raw if "://" in raw else f"http://{raw}")
    if not parts.hostname:
        return None
    return parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)


def require_network(source: str = "aws", timeout_s: float = 4.0,
                    check: Callable[[str, int, float], bool] | None = None) -> None:
    """Raise :class:`NetworkUnavailableError` unless the IDC bucket endpoint is reachable."""
    if source not in ENDPOINTS:
        raise InputError(source, f"unknown IDC source; use one of {', '.join(ENDPOINTS)}")
    host, port = ENDPOINTS[source]
    proxy = _proxy_address()
    what = f"the IDC bucket endpoint {host}:{port}"
    if proxy is not None:  # s5cmd goes through the proxy: check that one instead
        host, port = proxy
        what = f"the HTTPS proxy {host}:{port}"
    if not (check or check_network)(host, port, timeout_s):
        raise NetworkUnavailableError(
            f"cannot reach {what} within {timeout_s:g} s; "
            "connect to the internet (or set a proxy) and rerun: finished series are kept and skipped. "
            "'marrowscope fetch --list' works offline."
        )


# --- download --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DownloadReport:
    root: Path
    requested: int
    already_complete: int
    fetched: tuple[str, ...]
    missing: tuple[str, ...]
    seconds: float
    timed_out: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.missing


Runner = Callable[[Sequence[IdcSeries], Path, str, float | None], bool]


def _worker_main() -> None:  # pragma: no cover - runs in the child process
    """Child process: download the series named on stdin with idc-index."""
    job = json.loads(sys.stdin.read())
    from idc_index import IDCClient

    client = IDCClient()
    client.download_from_selection(
        downloadDir=job["download_dir"], seriesInstanceUID=job["series"], dirTemplate=DIR_TEMPLATE,
        quiet=True, show_progress_bar=False, use_s5cmd_sync=True, source_bucket_location=job["source"],
    )


def run_bounded(cmd: Sequence[str], stdin_text: str, timeout_s: float | None,
                on_tick: Callable[[], None] | None = None) -> tuple[int | None, bool]:
    """Run ``cmd`` in its own process group; kill the whole group after ``timeout_s``.

    Returns (exit code or None, timed_out).
    """
    proc = subprocess.Popen(list(cmd), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stdin is not None
    proc.stdin.write(stdin_text)
    proc.stdin.close()
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    try:
        while proc.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                _kill_group(proc)
                return None, True
            if on_tick is not None:
                on_tick()
            time.sleep(0.2)
    except BaseException:
        _kill_group(proc)
        raise
    err = proc.stderr.read() if proc.stderr else ""
    if proc.returncode:
        log.warning("idc-index worker exited with %s: %s", proc.returncode, err.strip()[-2000:])
    return proc.returncode, False


def _kill_group(proc: subprocess.Popen[str]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=5)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


def _idc_runner(series: Sequence[IdcSeries], root: Path, source: str, timeout_s: float | None) -> bool:
    download_dir = root / "dicom"
    download_dir.mkdir(parents=True, exist_ok=True)
    job = json.dumps({"download_dir": str(download_dir), "series": [s.series_uid for s in series],
                      "source": source})
    cmd = [sys.executable, "-c", "from marrowscope.io.idc import _worker_main; _worker_main()"]
    total = sum(s.size_mb for s in series) * 1e6
    bar = None
    try:
        from tqdm import tqdm

        bar = tqdm(total=int(total), unit="B", unit_scale=True, desc="IDC download", leave=False,
                   disable=not sys.stderr.isatty())
    except ImportError:  # pragma: no cover
        pass
    last = [0.0]

    def tick() -> None:
        now = time.monotonic()
        if bar is None or now - last[0] < 1.0:
            return
        last[0] = now
        got = sum(series_state(s, root)[1] for s in series)
        bar.update(max(0, got - bar.n))

    try:
        _, timed_out = run_bounded(cmd, job, timeout_s, tick)
    finally:
        if bar is not None:
            bar.close()
    return timed_out


def download(
    plan: DownloadPlan,
    *,
    source: str = "aws",
    timeout_s: float | None = 900.0,
    network_timeout_s: float = 4.0,
    runner: Runner | None = None,
    check: Callable[[str, int, float], bool] | None = None,
) -> DownloadReport:
    """Fetch ``plan.todo`` into ``plan.root`` and verify what arrived.

    Checks the endpoint first (:class:`NetworkUnavailableError` within ``network_timeout_s``), then runs
    idc-index (s5cmd sync, so partial series resume) in a child process killed after ``timeout_s``.
    Writes ``ROOT/idc_manifest.json``. The report lists series that are still incomplete.
    """
    t0 = time.monotonic()
    requested = len(plan.todo) + len(plan.done)
    timed_out = False
    if plan.todo:
        require_network(source, network_timeout_s, check)
        log.info("fetching %s", plan.describe())
        deadline = None if timeout_s is None else t0 + timeout_s
        # annotations first (small), then slides
        batches = [b for b in (tuple(s for s in plan.todo if s.modality != "SM"),
                               tuple(s for s in plan.todo if s.modality == "SM")) if b]
        for batch in batches:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                timed_out = True
                break
            timed_out = (runner or _idc_runner)(batch, plan.root, source, left)
            if timed_out:
                break
    arrived = plan_download(plan.todo, plan.root)
    report = DownloadReport(
        root=plan.root, requested=requested, already_complete=len(plan.done),
        fetched=tuple(s.series_uid for s in arrived.done), missing=tuple(s.series_uid for s in arrived.todo),
        seconds=time.monotonic() - t0, timed_out=timed_out,
    )
    _write_manifest(plan, report)
    return report


def _write_manifest(plan: DownloadPlan, report: DownloadReport) -> None:
    path = plan.root / "idc_manifest.json"
    old: dict[str, Any] = {}
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8")).get("series", {})
        except (OSError, ValueError):
            old = {}
    missing = set(report.missing)
    for s in (*plan.done, *plan.todo):
        entry = asdict(s)
        entry["complete"] = s.series_uid not in missing
        entry["folder"] = str(s.folder(plan.root).relative_to(plan.root))
        old[s.series_uid] = entry
    doc = {"collection_id": COLLECTION_ID, "layout": "dicom/" + DIR_TEMPLATE, "series": old}
    plan.root.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(doc, indent=1, sort_keys=True))
