"""A cohort over a Ray cluster: slides are the work unit, each worker keeps its models loaded.

:func:`run_on_ray` is what ``analyze_batch(..., ray=RayConfig(...))`` (``marrowscope analyze --ray``)
calls. Each worker is a Ray actor that loads the detector, classifier and diagnosis model once and then
analyses slide after slide with :func:`marrowscope.engines.batch.run_slide`, the very function of the
serial batch, so both write the same per-slide files (timings aside), isolate failures the same way and
skip the slides an earlier run finished. Where the cluster has GPUs, each worker takes one (or
``gpus_per_worker``) and runs its models there; otherwise each takes ``cpus_per_worker`` CPUs.

A worker process that dies while analysing a slide (killed, out of memory, a node lost) is replaced and
the slide is given to a worker once more (``retries``); if that worker dies too, the slide is reported
failed and the others go on. Finished slides are never redone.

Workers read the slides and write into ``out_dir`` themselves: on several machines both must be on a
shared file system at the same path (docs/scale.md).
"""

from __future__ import annotations

import logging
import os
import re
import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from marrowscope.cells import Region
from marrowscope.data.scale import PixelSize
from marrowscope.errors import InputError, MissingDependencyError

if TYPE_CHECKING:
    from marrowscope.engines.batch import RoiMap, SlideJob, SlideStatus
    from marrowscope.engines.pipeline import AnalysisConfig, Models

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'marrowscope[ray]'"


@dataclass(frozen=True)
class RayConfig:
    """Where and how to run. ``address``: ``auto`` (``RAY_ADDRESS`` if set, else a cluster started with
    ``ray start`` on this machine, else a new local instance), ``local`` (always a new local instance),
    or a cluster address (``HEAD:6379`` or ``ray://HEAD:10001``). ``num_cpus`` and
    ``object_store_memory`` apply only to a new local instance. ``cpus_per_worker`` None: on a cluster
    without GPUs, one worker per CPU, or fewer, wider workers (more torch threads each) where there are
    fewer slides (or ``max_workers``) than CPUs, so no core idles; with GPUs, 1. ``gpus_per_worker`` None
    takes one GPU per worker where the cluster has GPUs; ``retries``: how often a slide whose worker died
    is tried again."""

    address: str = "auto"
    num_cpus: int | None = None
    object_store_memory: int | None = None
    cpus_per_worker: float | None = None
    gpus_per_worker: float | None = None
    max_workers: int | None = None
    retries: int = 1
    connect_timeout_s: float = 5.0

    def __post_init__(self) -> None:
        if self.cpus_per_worker is not None and self.cpus_per_worker <= 0:
            raise InputError(self.cpus_per_worker, "cpus_per_worker must be positive")
        if self.retries < 0:
            raise InputError(self.retries, "retries must be 0 or more")
        if self.max_workers is not None and self.max_workers < 1:
            raise InputError(self.max_workers, "max_workers must be at least 1")


def import_ray() -> Any:
    """The ``ray`` module, or a one-line error that says how to install it."""
    try:
        import ray
    except ImportError:
        raise MissingDependencyError(
            f"--ray needs Ray, which is not installed; install it with {INSTALL_HINT}") from None
    return ray


def _host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of a ``HOST:PORT`` or ``ray://HOST:PORT`` address; None for ``auto``/``local``."""
    if address in ("auto", "local"):
        return None
    rest = address.split("://", 1)[1] if "://" in address else address
    host, sep, port = rest.rstrip("/").rpartition(":")
    if not sep or not host or not port.isdigit():
        raise InputError(address, "not a Ray cluster address; give HOST:PORT (e.g. 10.0.0.5:6379, what "
                                  "'ray start --head' prints), ray://HOST:10001, 'auto' or 'local'")
    return host.strip("[]"), int(port)


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail in seconds, with one line, where ``ray.init`` would wait minutes for an absent cluster."""
    hp = _host_port(address)
    if hp is None:
        return
    try:
        with socket.create_connection(hp, timeout=timeout_s):
            pass
    except OSError as e:
        raise InputError(address, f"no Ray cluster answers at this address ({e.strerror or e}); start "
                                  "one with 'ray start --head' on the head node, check the host and port, or "
                                  "use --ray auto for a local one") from None


@contextmanager
def ray_session(rc: RayConfig) -> Iterator[Any]:
    """One ``ray.init`` for the run (reusing a connection the caller already made), shut down at the end
    only if this call made it."""
    ray = import_ray()
    address: str | None = rc.address
    if address == "auto":
        address = os.environ.get("RAY_ADDRESS") or None
    if address is not None:
        check_reachable(address, rc.connect_timeout_s)
    if ray.is_initialized():
        yield ray
        return
    kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                          "logging_level": logging.WARNING}
    if address == "local":
        kw.update({k: v for k, v in (("num_cpus", rc.num_cpus),
                                     ("object_store_memory", rc.object_store_memory)) if v is not None})
    try:
        ray.init(address=address, **kw)
    except (ConnectionError, RuntimeError, ValueError) as e:
        hint = ""
        if address not in (None, "local") and os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
            hint = ("; if the cluster uses token authentication (Ray's default for clusters that ray.init "
                    "starts), set RAY_AUTH_MODE=token and its token (~/.ray/auth_token or RAY_AUTH_TOKEN)")
        why = f"could not connect to Ray ({type(e).__name__}: {e}){hint}"
        raise InputError(address or "auto", why) from None
    try:
        yield ray
    finally:
        ray.shutdown()


class SlideWorker:
    """A Ray actor's body: models loaded once, then :func:`run_slide` slide after slide."""

    def __init__(self, cfg: AnalysisConfig, models: Models | None, device: str | None,
                 threads: int | None) -> None:
        self._threads = threads  # torch threads per slide (set around each call, restored after)
        self._cfg = cfg
        self._models = models
        self._device = device

    def _get_models(self) -> Models:
        """The models, loaded on first use; as in the serial batch, a model that cannot be loaded stops
        the whole run (``_ModelsUnavailable``), whichever of ``load`` and ``run`` meets it first."""
        if self._models is None:
            from marrowscope.engines.batch import _ModelsUnavailable
            from marrowscope.engines.pipeline import load_models

            try:
                self._models = load_models(self._cfg, device=self._device)
            except InputError as e:
                raise _ModelsUnavailable(e) from e
        return self._models

    def load(self) -> tuple[tuple[str, str] | None, tuple[float, float]]:
        """Load the models: (what, why) when they cannot be (InputError does not survive pickling), else
        None; and when the load began and ended (``time.time()``)."""
        from marrowscope.engines.batch import _ModelsUnavailable

        t0 = time.time()
        try:
            self._get_models()
        except _ModelsUnavailable as e:
            return (e.error.path, e.error.problem), (t0, time.time())
        return None, (t0, time.time())

    def run(self, job: SlideJob, out_dir: str, mpp: PixelSize, by_slide: RoiMap,
            for_all: tuple[Region, ...], model_ids: Mapping[str, str]) -> SlideStatus | tuple[str, str]:
        """The slide's status, or (what, why) of an error that stops the whole batch (a full disk)."""
        from marrowscope.engines.batch import _ModelsUnavailable, run_slide
        from marrowscope.runtime import torch_threads

        try:
            with torch_threads(self._threads):
                return run_slide(job, Path(out_dir), self._cfg, self._get_models, mpp, by_slide, for_all,
                                 model_ids=model_ids)
        except _ModelsUnavailable as e:
            return e.error.path, e.error.problem

    def pid(self) -> int:
        return os.getpid()


def _node_cpus(ray: Any, total: float) -> list[int]:
    """Whole CPUs of each live node (one node of ``total`` where the cluster does not say)."""
    try:
        nodes = ray.nodes()
    except AttributeError:
        nodes = []
    cpus = [int(n.get("Resources", {}).get("CPU", 0)) for n in nodes if n.get("Alive", True)]
    return cpus if sum(cpus) > 0 else [int(total)]


def _plan(ray: Any, rc: RayConfig, n_jobs: int) -> tuple[int, float, float]:
    """(workers, CPUs per worker, GPUs per worker) for this cluster."""
    res = ray.cluster_resources()
    gpus = float(res.get("GPU", 0.0))
    per_gpu = rc.gpus_per_worker if rc.gpus_per_worker is not None else (1.0 if gpus >= 1 else 0.0)
    cpus = float(res.get("CPU", 1.0))
    if rc.cpus_per_worker is None and per_gpu == 0:  # CPU workers that share out every node's cores
        nodes = _node_cpus(ray, cpus)
        want = max(1, min(n_jobs, rc.max_workers or n_jobs, sum(nodes)))
        # the widest workers of which ``want`` still fit on the nodes (a worker lives on one node)
        per = max((c for c in range(1, max(nodes) + 1) if sum(k // c for k in nodes) >= want), default=1)
        return max(1, min(want, sum(k // per for k in nodes))), float(per), 0.0
    per_cpu = rc.cpus_per_worker if rc.cpus_per_worker is not None else 1.0
    by_cpu = max(1, int(cpus // per_cpu))
    n = min(by_cpu, int(gpus // per_gpu)) if per_gpu > 0 else by_cpu
    if n < 1:
        raise InputError(rc.address, f"the Ray cluster has {gpus:g} GPU(s), fewer than one worker's "
                                     f"{per_gpu:g}; lower gpus_per_worker or add GPU nodes")
    if rc.max_workers is not None:
        n = min(n, rc.max_workers)
    return max(1, min(n, n_jobs)), per_cpu, per_gpu


def run_on_ray(
    jobs: Sequence[SlideJob],
    out_dir: Path,
    cfg: AnalysisConfig,
    mpp: PixelSize,
    by_slide: RoiMap,
    for_all: tuple[Region, ...],
    rc: RayConfig,
    *,
    models: Models | None = None,
    model_ids: Mapping[str, str] | None = None,
    progress: bool = True,
    on_progress: Callable[[Sequence[SlideStatus]], None] | None = None,
) -> list[SlideStatus]:
    """Analyse ``jobs`` on Ray workers; their statuses in job order.

    ``models``: already loaded models, sent to every worker (else each worker loads the ones named in
    ``cfg``); ``model_ids``: their identities for the slides' fingerprints. ``on_progress`` gets the
    statuses finished so far (in job order) after each slide."""
    from marrowscope.engines.batch import SlideStatus

    if not jobs:
        return []
    t_start, wall_start = time.perf_counter(), time.time()
    with ray_session(rc) as ray:
        from ray.exceptions import RayError, RayTaskError

        t_connected = time.perf_counter()
        n, cpus, gpus = _plan(ray, rc, len(jobs))
        device = "cuda" if gpus > 0 else None
        threads = max(1, int(cpus))
        actor_cls = ray.remote(SlideWorker).options(num_cpus=cpus, num_gpus=gpus, max_restarts=0,
                                                    max_task_retries=0)
        models_ref = ray.put(models) if models is not None else None
        jobs_ref = [ray.put(j) for j in jobs]
        shared = (str(out_dir), mpp, ray.put(by_slide), for_all, dict(model_ids or {}))
        log.info("Ray: %d worker(s), %g CPU (%d torch thread(s)) and %g GPU each, for %d slide(s)",
                 n, cpus, threads, gpus, len(jobs))

        live: list[Any] = []
        loading: dict[Any, float] = {}  # a new worker's model load -> when it was asked for
        ready_s: list[float] = []  # seconds from the call until each first worker had its models
        loads: list[tuple[float, float]] = []  # when each of them began and ended loading (same clock)
        todo = list(reversed(range(len(jobs))))
        attempts = [0] * len(jobs)
        done: dict[int, SlideStatus] = {}
        running: dict[Any, tuple[int, Any]] = {}

        def submit(w: Any) -> None:
            if todo:
                i = todo.pop()
                attempts[i] += 1
                running[w.run.remote(jobs_ref[i], *shared)] = (i, w)

        def start_worker(check: bool) -> None:
            """A new worker with its first slide queued behind its model load, so it starts at once
            when its models are in (no round trip through this driver, no waiting for other workers).
            ``check``: watch the load, so a missing model stops the run before any slide is written."""
            w = actor_cls.remote(cfg, models_ref, device, threads)
            live.append(w)
            if check:
                loading[w.load.remote()] = time.perf_counter()
            submit(w)

        from tqdm import tqdm

        bar = tqdm(total=len(jobs), desc="slides (Ray)", unit="slide", disable=not progress)
        try:
            for _ in range(n):
                start_worker(check=True)
            while running:
                ready, _ = ray.wait([*loading, *running], num_returns=1)
                if ready[0] in loading:
                    loading.pop(ready[0])
                    try:
                        failed, (began, ended) = ray.get(ready[0])
                    except RayError:  # the worker died while loading: its slide's task reports it
                        continue
                    if failed is not None:
                        raise InputError(*failed)
                    ready_s.append(time.perf_counter() - t_start)
                    loads.append((began - wall_start, ended - wall_start))
                    continue
                i, w = running.pop(ready[0])
                job = jobs[i]
                st: SlideStatus | None = None
                try:
                    got = ray.get(ready[0])
                    if isinstance(got, tuple):  # the output disk is full or read-only: stop the batch
                        raise InputError(*got)
                    st = got
                    submit(w)  # its next slide before the bookkeeping below
                except RayTaskError as e:  # an error run_slide did not turn into a status
                    why = f"{type(e.cause).__name__}: {e.cause}"
                    st = SlideStatus(job.source, job.slide_id, "failed", why)
                    submit(w)
                except RayError as e:  # the worker process is gone (killed, out of memory, node lost)
                    log.warning("Ray worker died analysing %s (attempt %d): %s", job.source, attempts[i],
                                type(e).__name__)
                    ray.kill(w, no_restart=True)
                    live.remove(w)
                    if attempts[i] <= rc.retries:
                        todo.append(i)
                    else:
                        st = SlideStatus(job.source, job.slide_id, "failed",
                                         f"{job.source}: the Ray worker analysing this slide died "
                                         f"{attempts[i]} times ({type(e).__name__}); it may need more memory "
                                         "than a worker has, or a node was lost")
                    if todo:  # a replacement; its models loaded fine in the others already
                        start_worker(check=False)
                if st is not None:
                    done[i] = st
                    bar.update(1)
                    bar.set_postfix_str(st.slide_id or Path(job.source).name)
                    if on_progress is not None:
                        on_progress([done[k] for k in sorted(done)])
        finally:
            bar.close()
            for w in live:
                ray.kill(w, no_restart=True)
        wall = time.perf_counter() - t_start
        timings = {"connect_s": t_connected - t_start, "first_worker_ready_s": min(ready_s, default=None),
                   "workers_ready_s": max(ready_s, default=None), "model_loads_s": loads, "workers": n,
                   "cpus_per_worker": cpus, "slides": len(jobs), "wall_s": wall}
        log.info("Ray: %d slide(s) in %.1f s (Ray ready after %.1f s, the workers' models after %s s)",
                 len(jobs), wall, timings["connect_s"], ", ".join(f"{x:.1f}" for x in ready_s) or "-",
                 extra={"ray_timings": timings})
    return [done[k] for k in range(len(jobs))]


_STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:[+-]\d\d:\d\d|Z)?")
_SECONDS = re.compile(r"\b\d+(?:\.\d+)? s\b")


def comparable_outputs(out_dir: str | Path) -> dict[str, Any]:
    """Every per-slide file under ``out_dir`` with its timings and timestamps taken out: what a serial
    and a Ray run of the same cohort must agree on exactly (``summary.json`` without ``run.started``,
    ``run.seconds`` and ``run.timings``; ``report.html`` without its times; a DICOM file's elements
    without its own new UIDs and its dates and times; other files byte for byte)."""
    import json

    out = Path(out_dir)
    found: dict[str, Any] = {}
    for p in sorted(out.rglob("*")):
        if not p.is_file() or p.parent == out:
            continue  # the batch's own files name the output folder and carry times
        rel = str(p.relative_to(out))
        if p.name == "summary.json":
            d = json.loads(p.read_text(encoding="utf-8"))
            for k in ("started", "seconds", "timings"):
                d.get("run", {}).pop(k, None)
            found[rel] = d
        elif p.suffix == ".dcm":
            found[rel] = _dicom_view(p)
        elif p.suffix == ".html":
            found[rel] = _SECONDS.sub("<t>", _STAMP.sub("<stamp>", p.read_text(encoding="utf-8")))
        else:
            found[rel] = p.read_bytes()
    return found


_NEW_UIDS = ("SOPInstanceUID", "SeriesInstanceUID", "AnnotationGroupUID")


def _dicom_view(path: Path) -> list[tuple[str, Any]]:
    """A DICOM file's elements as (path, value), leaving out what every write makes anew."""
    import pydicom

    def walk(ds: Any, pre: str) -> list[tuple[str, Any]]:
        out: list[tuple[str, Any]] = []
        for el in ds:
            key = f"{pre}{el.keyword or el.tag}"
            if el.VR == "SQ":
                for i, item in enumerate(el.value):
                    out.extend(walk(item, f"{key}[{i}]."))
            elif el.VR not in ("DA", "TM", "DT") and el.keyword not in _NEW_UIDS:
                out.append((key, el.value if el.VR not in ("OB", "OW", "OF", "OD", "OL", "UN")
                            else bytes(el.value)))
        return out

    return walk(pydicom.dcmread(path), "")
