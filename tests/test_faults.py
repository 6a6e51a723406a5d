"""Fault injection (issue 15): SIGKILL at seeded random points, a full disk, a read-only output folder
and an unreadable tile, for ``analyze`` and the training commands. After each fault a rerun finishes
and its outputs equal an uninterrupted run's (apart from timings and dates).

The full disk and the read-only folder are real where the tests run as root and may mount a tmpfs (a
64 MiB RAM disk, remounted read-only); elsewhere they are simulated by making ``os.open`` /
``os.mkdir`` under the output folder fail with ENOSPC / EROFS (the errors a real disk gives). Each test
prints which (``disk: tmpfs`` or ``disk: simulated``, shown with ``-rP``).
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from marrowscope.cells import Box, CellAnnotations, Region
from marrowscope.engines.batch import analyze_batch
from marrowscope.engines.pipeline import AnalysisConfig
from marrowscope.errors import InputError
from pipeline_stubs import smear_image, stub_models, write_dicom_slide

CFG = AnalysisConfig(target_cells=20, tta=1)
CLASSIFIER_ARGS = ["--epochs", "2", "--input-size", "16", "--batch-size", "8", "--eval-every", "1"]
DETECTOR_KW: dict[str, Any] = {"epochs": 2, "checkpoint_every_s": 0.0}  # a checkpoint at every step
TESTS = Path(__file__).resolve().parent
SRC = TESTS.parent / "src"
SEED = 15


# ------------------------------------------------------------------------------------------------ helpers


def _child(mode: str, out: Path, kill_at: int, data: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), str(TESTS)])}
    return subprocess.run([sys.executable, str(TESTS / "fault_child.py"), mode, str(out), str(kill_at),
                           str(data)], env=env, capture_output=True, text=True, timeout=600)


def _events(mode: str, out: Path, data: Path) -> int:
    """An uninterrupted reference run into ``out`` (in this process), and the number of its events."""
    import fault_child

    with pytest.MonkeyPatch.context() as mp:
        return fault_child.count_events(mode, out, data, mp.setattr)


def _kill_points(n: int, k: int) -> list[int]:
    picks = np.random.default_rng(SEED).choice(np.arange(1, n + 1), size=k, replace=False)
    return sorted(int(x) for x in picks)


_VOLATILE = {"started", "seconds", "timings", "minutes"}
_STATUS = {"status", "redone_because", "n_done", "n_skipped"}


def _norm(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _norm(v) for k, v in x.items() if k not in _VOLATILE | _STATUS}
    if isinstance(x, list):
        return [_norm(v) for v in x]
    return x


def _norm_html(text: str) -> str:
    text = re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[^<\s]*", "DATE", text)
    text = re.sub(r"\d+(\.\d+)? s\b", "T s", text)
    return re.sub(r"\b(done|skipped)\b", "STATUS", text)


def _files(root: Path) -> dict[str, Path]:
    return {str(p.relative_to(root)): p for p in sorted(root.rglob("*")) if p.is_file()}


def assert_same_outputs(ref: Path, out: Path) -> None:
    """Every output of ``out`` equals ``ref``'s, apart from timings, dates and done/skipped."""
    a, b = _files(ref), _files(out)
    assert sorted(a) == sorted(b)
    assert not [p for p in b if p.endswith(".part") or ".part" in Path(p).parts[0]]
    def text(p: Path, root: Path) -> str:  # the output folder's own path differs, nothing else may
        return p.read_text().replace(str(root), "OUT")

    for rel, pa in a.items():
        pb = b[rel]
        if pa.suffix == ".json":
            assert _norm(json.loads(text(pa, ref))) == _norm(json.loads(text(pb, out))), rel
        elif pa.suffix == ".html":
            assert _norm_html(text(pa, ref)) == _norm_html(text(pb, out)), rel
        elif pa.name == "cohort.csv":
            da, db = pd.read_csv(io.StringIO(text(pa, ref))), pd.read_csv(io.StringIO(text(pb, out)))
            pd.testing.assert_frame_equal(da.drop(columns="status"), db.drop(columns="status"))
        elif pa.suffix == ".dcm":
            assert _dicom_content(pa) == _dicom_content(pb), rel
        elif pa.suffix == ".parquet":
            pd.testing.assert_frame_equal(pd.read_parquet(pa), pd.read_parquet(pb))
        elif pa.name.endswith(".sha256"):  # a weights sidecar: right for its own run's file
            from marrowscope.models.weights import read_sidecar, sha256_file

            for side in (pa, pb):
                weights = side.with_name(side.name[: -len(".sha256")])
                assert read_sidecar(weights) == sha256_file(weights), rel
        elif pa.suffix == ".pt":
            sa, sb = torch.load(pa, weights_only=True), torch.load(pb, weights_only=True)
            assert sa.get("spec") == sb.get("spec"), rel
            for key in ("state_dict", "net", "ema", "model"):  # weights files and resume checkpoints
                if key in sa:
                    assert all(torch.allclose(sa[key][k].float(), sb[key][k].float()) for k in sa[key]), rel
        else:
            assert pa.read_bytes() == pb.read_bytes(), rel


def _dicom_content(path: Path) -> list[Any]:
    """A DICOM file's elements without the ones made new at each write (UIDs, dates and times)."""
    import pydicom

    def walk(ds: Any) -> list[Any]:
        out: list[Any] = []
        for el in ds:
            if el.VR in ("UI", "DA", "TM", "DT"):
                continue
            if el.VR == "SQ":
                out.append((el.tag, [walk(item) for item in el.value]))
            else:
                out.append((el.tag, el.value))
        return out

    return walk(pydicom.dcmread(path))


def _no_half_written_slide(out: Path) -> None:
    """After a kill: every slide folder there is complete; temporaries are hidden .part names only."""
    for d in out.iterdir():
        if d.is_dir() and not d.name.startswith("."):
            assert (d / "summary.json").is_file() and (d / "fingerprint.json").is_file(), d


@pytest.fixture(scope="module")
def slides(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("slides")
    for i in range(3):
        Image.fromarray(smear_image(width=768, height=512, seed=i, blast_share=0.15 * (i + 1))).save(
            d / f"slide{i}.png")
    return d


@pytest.fixture(scope="module")
def reference(slides: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """An uninterrupted run in a child process, and the number of its side-effecting events."""
    ref = tmp_path_factory.mktemp("ref") / "out"
    return ref, _events("analyze", ref, slides)


def _analyze(slides: Path, out: Path) -> Any:
    return analyze_batch([slides], out, CFG, mpp=0.5, models=stub_models(), progress=False)


# ------------------------------------------------------------------------------------------------ disks


class Disk:
    """A small output disk: a real tmpfs where the tests may mount one (root), else a simulated one."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root = root
        self.mp = monkeypatch
        root.mkdir(parents=True, exist_ok=True)
        self.kind = "simulated"
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(root)],
                               capture_output=True)
            if r.returncode == 0:
                self.kind = "tmpfs"
        self._failing: int | None = None
        self._filler = root / "filler.bin"
        if self.kind == "simulated":
            real_open, real_mkdir = os.open, os.mkdir

            def guarded_open(path: Any, flags: int, *a: Any, **k: Any) -> int:
                writes = flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
                if self._failing is not None and writes and str(path).startswith(str(root)):
                    raise OSError(self._failing, os.strerror(self._failing), str(path))
                return real_open(path, flags, *a, **k)

            def guarded_mkdir(path: Any, *a: Any, **k: Any) -> None:
                if self._failing is not None and str(path).startswith(str(root)):
                    raise OSError(self._failing, os.strerror(self._failing), str(path))
                real_mkdir(path, *a, **k)

            monkeypatch.setattr(os, "open", guarded_open)
            monkeypatch.setattr(os, "mkdir", guarded_mkdir)

    def fill(self) -> None:
        if self.kind == "simulated":
            self._failing = errno.ENOSPC
            return
        with open(self._filler, "wb") as f:
            block = b"\0" * (1 << 20)
            try:
                while True:
                    f.write(block)
                    f.flush()
            except OSError as e:
                assert e.errno == errno.ENOSPC
        assert _write_fails(self.root)

    def free(self) -> None:
        self._failing = None
        self._filler.unlink(missing_ok=True)

    def read_only(self) -> None:
        if self.kind == "simulated":
            self._failing = errno.EROFS
        else:
            subprocess.run(["mount", "-o", "remount,ro", str(self.root)], check=True)

    def writable(self) -> None:
        self._failing = None
        if self.kind == "tmpfs":
            subprocess.run(["mount", "-o", "remount,rw", str(self.root)], check=True)

    def close(self) -> None:
        if self.kind == "tmpfs":
            subprocess.run(["umount", str(self.root)], check=False)


def _write_fails(folder: Path) -> bool:
    from marrowscope.io.atomic import write_probe

    return write_probe(folder) is not None


@contextmanager
def small_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Disk]:
    disk = Disk(tmp_path / "disk", monkeypatch)
    print(f"disk: {disk.kind}")
    try:
        yield disk
    finally:
        disk.writable()
        disk.close()


# ------------------------------------------------------------------------------------------------ analyze


@pytest.mark.slow
def test_analyze_sigkill_at_seeded_points_then_rerun_equals_uninterrupted(
        slides: Path, reference: tuple[Path, int], tmp_path: Path) -> None:
    ref, n_events = reference
    out = tmp_path / "out"
    for k in _kill_points(n_events, 2):
        r = _child("analyze", out, k, slides)
        assert r.returncode in (-9, 0), r.stderr[-3000:]  # a resumed run may end before event k
        if out.exists():
            _no_half_written_slide(out)
    s = _analyze(slides, out)
    assert not s.failures
    assert_same_outputs(ref, out)


def test_analyze_full_disk_stops_keeps_finished_slides_and_resumes(
        slides: Path, reference: tuple[Path, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import marrowscope.engines.batch as batch_mod

    ref, _ = reference
    with small_disk(tmp_path, monkeypatch) as disk:
        out = disk.root / "out"
        real = batch_mod.analyze_one
        calls: list[int] = []

        def then_fill(*a: Any, **k: Any) -> Any:
            calls.append(1)
            st = real(*a, **k)
            if len(calls) == 1:
                disk.fill()  # the disk is full from the second slide on
            return st

        monkeypatch.setattr(batch_mod, "analyze_one", then_fill)
        with pytest.raises(InputError, match="cannot write the outputs.*free space.*rerun"):
            _analyze(slides, out)
        assert len(calls) <= 2  # stopped at the first write that failed
        disk.free()
        assert (out / "slide0" / "summary.json").is_file() and not (out / "slide1").exists()
        assert not [p for p in out.iterdir() if p.name.endswith(".part")]
        monkeypatch.setattr(batch_mod, "analyze_one", real)
        s = _analyze(slides, out)
        assert [x.status for x in s.slides] == ["skipped", "done", "done"]
        (disk.root / "filler.bin").unlink(missing_ok=True)
        assert_same_outputs(ref, out)


def test_analyze_read_only_out_is_refused_at_once_then_resumes(
        slides: Path, reference: tuple[Path, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import marrowscope.engines.batch as batch_mod

    ref, _ = reference
    with small_disk(tmp_path, monkeypatch) as disk:
        out = disk.root / "out"
        analyze_batch([slides / "slide0.png"], out, CFG, mpp=0.5, models=stub_models(), progress=False)
        before = {k: p.read_bytes() for k, p in _files(out).items()}
        disk.read_only()
        calls: list[int] = []
        real = batch_mod.analyze_slide
        monkeypatch.setattr(batch_mod, "analyze_slide", lambda *a, **k: calls.append(1) or real(*a, **k))
        with pytest.raises(InputError, match="cannot write to this output folder"):
            _analyze(slides, out)
        assert calls == []  # found before any slide was analysed
        assert {k: p.read_bytes() for k, p in _files(out).items()} == before
        disk.writable()
        s = _analyze(slides, out)
        assert [x.status for x in s.slides] == ["skipped", "done", "done"]
        assert_same_outputs(ref, out)


def test_analyze_unreadable_tile_fails_its_slide_only_and_a_rerun_after_repair_matches(
        tmp_path: Path) -> None:
    root = tmp_path / "cohort"
    whole = CellAnnotations(cells=(), regions=(Region(Box(0, 0, 1024, 512), 1),))  # every tile is read
    refs = [write_dicom_slide(root, smear_image(seed=i, blast_share=0.2 + 0.3 * i), slide_id=f"d{i}",
                              patient_id=f"P{i}", rois=whole) for i in range(2)]
    ref = tmp_path / "ref"
    r = analyze_batch([root], ref, CFG, models=stub_models(), progress=False)
    assert [x.status for x in r.slides] == ["done", "done"]
    f = Path(refs[0].base_file)
    good = f.read_bytes()
    frames = [m.start() for m in re.finditer(b"\xff\xd8\xff", good)]
    k = frames[len(frames) // 2]  # a tile in the middle of the slide
    f.write_bytes(good[:k] + b"\0\0\0" + good[k + 3:])
    out = tmp_path / "out"
    s = analyze_batch([root], out, CFG, models=stub_models(), progress=False)
    st = {x.slide_id: x for x in s.slides}
    assert st["d0"].status == "failed" and "cannot read pixels" in (st["d0"].reason or "")
    assert st["d1"].status == "done"
    assert not (out / "d0").exists()
    f.write_bytes(good)  # repaired (e.g. downloaded again)
    s2 = analyze_batch([root], out, CFG, models=stub_models(), progress=False)
    assert {x.slide_id: x.status for x in s2.slides} == {"d0": "done", "d1": "skipped"}
    assert_same_outputs(ref, out)


# ------------------------------------------------------------------------------------------------ training


@pytest.fixture(scope="module")
def pbc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from test_classifier_data import _write_pbc_folder

    d = tmp_path_factory.mktemp("pbc") / "pbc"
    _write_pbc_folder(d, n_per=3)
    return d


def _train_classifier_cli(pbc: Path, out: Path) -> int:
    from marrowscope.cli.main import main

    return main(["train", "classifier", "--dataset", f"pbc:{pbc}", "--out", str(out), *CLASSIFIER_ARGS])


@pytest.mark.slow
def test_train_classifier_sigkill_then_resume_equals_uninterrupted(pbc: Path, tmp_path: Path) -> None:
    ref = tmp_path / "ref"
    n = _events("classifier", ref, pbc)
    out = tmp_path / "out"
    (k,) = _kill_points(n, 1)
    r = _child("classifier", out, k, pbc)
    assert r.returncode == -9, r.stderr[-3000:]
    assert _train_classifier_cli(pbc, out) == 0
    assert_same_outputs(ref, out)


@pytest.mark.slow
def test_train_detector_sigkill_then_resume_equals_uninterrupted(tmp_path: Path) -> None:
    ref = tmp_path / "ref"
    n = _events("detector", ref, tmp_path)
    out = tmp_path / "out"
    (k,) = _kill_points(n, 1)
    r = _child("detector", out, k, tmp_path)
    assert r.returncode == -9, r.stderr[-3000:]
    from marrowscope.engines.train_detector import train_detector
    from test_detector_train import _config, _samples

    assert train_detector(_samples(4), [], _config(**DETECTOR_KW), out, progress=False).finished
    assert_same_outputs(ref, out)


def _tiny_training() -> tuple[Any, Any, Any]:
    from marrowscope.engines.train_classifier import TrainConfig
    from marrowscope.models.classifier import make_spec
    from test_classifier_train import CLASSES, _tiny_set

    spec = make_spec(CLASSES, input_size=16, mpp=0.5, scheme=None)
    cfg = TrainConfig(epochs=3, batch_size=16, lr=5e-3, warmup_epochs=0, seed=7, eval_every=1)
    return spec, _tiny_set(), cfg


def test_train_classifier_full_disk_then_resume_equals_uninterrupted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import marrowscope.engines.train_classifier as tc

    spec, data, cfg = _tiny_training()
    ref = tmp_path / "ref"
    tc.train_classifier(spec, data, data, ref, cfg, progress=False)
    with small_disk(tmp_path, monkeypatch) as disk:
        out = disk.root / "run"
        real = tc.save_checkpoint
        saved: list[int] = []

        def then_fill(*a: Any, **k: Any) -> Any:
            p = real(*a, **k)
            saved.append(1)
            if len(saved) == 1:
                disk.fill()
            return p

        monkeypatch.setattr(tc, "save_checkpoint", then_fill)
        with pytest.raises(OSError) as e:
            tc.train_classifier(spec, data, data, out, cfg, progress=False)
        assert e.value.errno == errno.ENOSPC
        disk.free()
        assert not [p for p in out.iterdir() if p.name.endswith(".part")]
        monkeypatch.setattr(tc, "save_checkpoint", real)
        res = tc.train_classifier(spec, data, data, out, cfg, progress=False)
        assert res.finished and res.epochs_done == 3
        (disk.root / "filler.bin").unlink(missing_ok=True)
        assert_same_outputs(ref, out)


def test_train_classifier_read_only_out_is_refused_at_once_then_resumes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import replace

    import marrowscope.engines.train_classifier as tc

    spec, data, cfg = _tiny_training()
    ref = tmp_path / "ref"
    tc.train_classifier(spec, data, data, ref, cfg, progress=False)
    with small_disk(tmp_path, monkeypatch) as disk:
        out = disk.root / "run"
        part = tc.train_classifier(spec, data, data, out, replace(cfg, max_minutes=0.0), progress=False)
        assert not part.finished
        ck = (out / "checkpoint.pt").read_bytes()
        disk.read_only()
        with pytest.raises(InputError, match="cannot write to this output folder"):
            tc.train_classifier(spec, data, data, out, cfg, progress=False)
        assert (out / "checkpoint.pt").read_bytes() == ck
        disk.writable()
        res = tc.train_classifier(spec, data, data, out, cfg, progress=False)
        assert res.finished
        assert_same_outputs(ref, out)
