"""Cohorts on Ray (a local 2-CPU instance, started once for the module): the same outputs as the serial
batch, the same failure isolation and resume, a slide whose worker dies retried once, clear errors."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from marrowscope.engines.batch import analyze_batch
from marrowscope.engines.pipeline import AnalysisConfig
from marrowscope.engines.ray_runner import RayConfig, comparable_outputs
from marrowscope.errors import InputError, MissingDependencyError
from pipeline_stubs import BlobDetector, smear_image, stub_models, two_rois, write_dicom_slide

CFG = AnalysisConfig(target_cells=20, tta=1)
TESTS = Path(__file__).resolve().parent
CRASH = (255, 255, 0)  # a slide marked with this colour kills the worker process that reads it
FLAKY = (0, 255, 255)  # ... this one only the first time (a marker file remembers)


@pytest.fixture(scope="module")
def local_ray():  # noqa: ANN201
    ray = pytest.importorskip("ray")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(TESTS), *sys.path])  # workers import pipeline_stubs
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             object_store_memory=200 * 2**20)  # never an instance someone else started on this machine
    yield ray
    ray.shutdown()


def _marked(seed: int, colour: tuple[int, int, int] | None) -> np.ndarray:
    img = smear_image(seed=seed, blast_share=0.1 * seed)
    if colour is not None:  # small marks everywhere, so every field's tiles hold one
        for y in range(0, img.shape[0], 64):
            for x in range(0, img.shape[1], 64):
                img[y:y + 3, x:x + 3] = colour
    return img


def _png(folder: Path, name: str, image: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / f"{name}.png"
    Image.fromarray(image).save(p)
    return p


class KillingDetector(BlobDetector):
    """Exits the worker process (as a kill or an out-of-memory would) on marked tiles."""

    def __init__(self, marker: str) -> None:
        super().__init__()
        self.marker = marker

    def __call__(self, tiles):  # noqa: ANN001, ANN204
        for t in tiles:
            if np.all(t == CRASH, axis=-1).any():
                os._exit(3)
            if np.all(t == FLAKY, axis=-1).any() and not Path(self.marker).exists():
                Path(self.marker).touch()
                os._exit(3)
        return super().__call__(tiles)


def test_ray_writes_what_the_serial_batch_writes_and_resumes(tmp_path, local_ray) -> None:  # noqa: ANN001
    src = tmp_path / "in"
    for i in range(3):
        _png(src, f"slide{i}", _marked(i, None))
    (src / "broken.png").write_bytes(b"not a png")  # one bad slide: reported, the others go on
    write_dicom_slide(tmp_path / "dcm", _marked(4, None), rois=two_rois())  # and a DICOM slide (ANN out)
    sources = [src, tmp_path / "dcm"]
    serial = analyze_batch(sources, tmp_path / "serial", CFG, mpp=0.5, models=stub_models(), progress=False)
    on_ray = analyze_batch(sources, tmp_path / "ray", CFG, mpp=0.5, models=stub_models(), progress=False,
                           ray=RayConfig())
    assert [s.status for s in serial.slides] == ["failed", "done", "done", "done", "done"]
    strip = [("folder", "seconds")]

    def view(summary):  # noqa: ANN001, ANN202
        return [{k: v for k, v in vars(s).items() if k not in strip[0]} for s in summary.slides]

    assert view(on_ray) == view(serial)  # same statuses, same order (job order, not finishing order)
    a, b = comparable_outputs(tmp_path / "serial"), comparable_outputs(tmp_path / "ray")
    outputs = {"summary.json", "cells.csv", "cells.parquet", "cells.geojson", "report.html"}
    for folder in ("slide0", "slide1", "slide2", "dcm1"):
        assert outputs <= {k.split("/")[1] for k in a if k.startswith(f"{folder}/")}
    assert "dcm1/predictions.dcm" in a and a.keys() == b.keys()
    assert a == b
    batch = json.loads((tmp_path / "ray" / "batch_summary.json").read_text())
    assert batch["n_done"] == 4 and batch["n_failed"] == 1 and "broken.png" in batch["failures"][0]["source"]
    # a rerun on Ray skips the finished slides and leaves their files alone
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "ray").rglob("*") if p.parent != tmp_path / "ray"}
    again = analyze_batch(sources, tmp_path / "ray", CFG, mpp=0.5, models=stub_models(), progress=False,
                          ray=RayConfig(max_workers=1))
    assert [s.status for s in again.slides] == ["failed", "skipped", "skipped", "skipped", "skipped"]
    assert {p: p.stat().st_mtime_ns for p in before} == before


def test_a_slide_whose_worker_dies_is_retried_once_then_failed(tmp_path, local_ray) -> None:  # noqa: ANN001
    src = tmp_path / "in"
    _png(src, "a_crash", _marked(1, CRASH))
    _png(src, "b_flaky", _marked(2, FLAKY))
    _png(src, "c_fine", _marked(3, None))
    models = stub_models()
    from dataclasses import replace

    models = replace(models, detector=KillingDetector(str(tmp_path / "flaky-died-once")))
    s = analyze_batch([src], tmp_path / "out", CFG, mpp=0.5, models=models, progress=False,
                      ray=RayConfig(max_workers=1))  # one worker: fewer (slow) process starts
    by = {Path(x.source).stem: x for x in s.slides}
    assert by["a_crash"].status == "failed" and "died 2 times" in (by["a_crash"].reason or "")
    assert by["b_flaky"].status == "done" and (tmp_path / "flaky-died-once").exists()  # done at the retry
    assert by["c_fine"].status == "done"
    assert (tmp_path / "out" / "b_flaky" / "summary.json").is_file()
    assert not (tmp_path / "out" / "a_crash").exists()
    batch = json.loads((tmp_path / "out" / "batch_summary.json").read_text())
    assert batch["n_done"] == 2 and batch["n_failed"] == 1


def test_unreachable_address_fails_fast_with_one_line(tmp_path) -> None:  # noqa: ANN001
    import socket
    import time

    pytest.importorskip("ray")
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _png(tmp_path / "in", "s", _marked(0, None))
    t0 = time.perf_counter()
    with pytest.raises(InputError, match="no Ray cluster answers at this address"):
        analyze_batch([tmp_path / "in"], tmp_path / "out", CFG, mpp=0.5, models=stub_models(),
                      progress=False, ray=RayConfig(address=f"127.0.0.1:{port}"))
    assert time.perf_counter() - t0 < 10
    with pytest.raises(InputError, match="not a Ray cluster address"):
        analyze_batch([tmp_path / "in"], tmp_path / "out", CFG, mpp=0.5, models=stub_models(),
                      progress=False, ray=RayConfig(address="no-port-here"))


def test_missing_ray_says_how_to_install(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    _png(tmp_path / "in", "s", _marked(0, None))
    with pytest.raises(MissingDependencyError, match=r"pip install 'marrowscope\[ray\]'"):
        analyze_batch([tmp_path / "in"], tmp_path / "out", CFG, mpp=0.5, models=stub_models(),
                      progress=False, ray=RayConfig())


def test_cli_ray_errors_are_one_line(tmp_path, capsys) -> None:  # noqa: ANN001
    from marrowscope.cli.main import main

    pytest.importorskip("ray")
    slide = _png(tmp_path / "in", "s", _marked(0, None))
    code = main(["analyze", str(slide), "--out", str(tmp_path / "out"), "--ray", "127.0.0.1:1"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "no Ray cluster answers" in err
    code = main(["analyze", str(slide), "--out", str(tmp_path / "out"), "--ray", str(slide)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "takes the cluster address" in err
    assert not (tmp_path / "out" / "s").exists()


def test_workers_take_gpus_where_the_cluster_has_them() -> None:
    from marrowscope.engines.ray_runner import _plan

    class FakeRay:
        def __init__(self, res: dict[str, float], nodes: tuple[float, ...] | None = None) -> None:
            self.res = res
            self.node_cpus = nodes or (res.get("CPU", 0.0),)

        def cluster_resources(self) -> dict[str, float]:
            return self.res

        def nodes(self) -> list[dict[str, object]]:
            return [{"Alive": True, "Resources": {"CPU": c}} for c in self.node_cpus]

    gpu = FakeRay({"CPU": 32.0, "GPU": 4.0})
    assert _plan(gpu, RayConfig(), 10) == (4, 1.0, 1.0)  # one worker per GPU
    assert _plan(gpu, RayConfig(gpus_per_worker=0.5), 10) == (8, 1.0, 0.5)
    assert _plan(gpu, RayConfig(), 3) == (3, 1.0, 1.0)  # never more workers than slides
    cpu = FakeRay({"CPU": 16.0})
    assert _plan(cpu, RayConfig(cpus_per_worker=4), 10) == (4, 4, 0.0)
    assert _plan(cpu, RayConfig(max_workers=2), 10) == (2, 8.0, 0.0)  # fewer workers: wider ones
    assert _plan(cpu, RayConfig(), 10) == (10, 1.0, 0.0)
    assert _plan(cpu, RayConfig(), 40) == (16, 1.0, 0.0)  # one per CPU
    assert _plan(cpu, RayConfig(), 3) == (3, 5.0, 0.0)  # no CPU idles with fewer slides than CPUs
    assert _plan(cpu, RayConfig(cpus_per_worker=1), 3) == (3, 1.0, 0.0)  # unless told otherwise
    two = FakeRay({"CPU": 16.0}, nodes=(8.0, 8.0))  # a worker's CPUs must all be on one node
    assert _plan(two, RayConfig(), 1) == (1, 8.0, 0.0)
    assert _plan(two, RayConfig(), 3) == (3, 4.0, 0.0)
    assert _plan(FakeRay({"CPU": 2.0}), RayConfig(), 8) == (2, 1.0, 0.0)
    assert _plan(FakeRay({"CPU": 2.0}), RayConfig(), 1) == (1, 2.0, 0.0)
    with pytest.raises(InputError, match="fewer than one worker"):
        _plan(cpu, RayConfig(gpus_per_worker=1), 10)


def test_a_missing_model_stops_the_ray_run_with_one_message(tmp_path, local_ray) -> None:  # noqa: ANN001
    from dataclasses import replace

    src = tmp_path / "in"
    _png(src, "s", _marked(0, None))
    with pytest.raises(InputError, match="nope: no such file or bundled model"):
        analyze_batch([src], tmp_path / "out", replace(CFG, detector="nope"), mpp=0.5, progress=False,
                      ray=RayConfig(max_workers=1))  # the workers load the models named in the config
    assert not (tmp_path / "out" / "s").exists()


def test_workers_load_their_models_side_by_side(tmp_path, local_ray, caplog) -> None:  # noqa: ANN001
    import logging

    src = tmp_path / "in"
    for i in range(2):
        _png(src, f"s{i}", _marked(i, None))
    with caplog.at_level(logging.INFO, logger="marrowscope.engines.ray_runner"):
        s = analyze_batch([src], tmp_path / "out", CFG, mpp=0.5, progress=False, ray=RayConfig())
    assert [x.status for x in s.slides] == ["done", "done"]  # the bundled models, loaded by each worker
    timings = [r.ray_timings for r in caplog.records if hasattr(r, "ray_timings")]
    assert len(timings) == 1 and timings[0]["workers"] == 2 and timings[0]["cpus_per_worker"] == 1
    (_, first_end), (second_start, _) = sorted(timings[0]["model_loads_s"])
    assert second_start < first_end  # one worker's load does not wait for the other's
