"""Issue 15: never delete or overwrite what marrowscope did not write, never run a planted checkpoint."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from marrowscope.errors import InputError
from marrowscope.io import atomic
from pipeline_stubs import smear_image, stub_models


class _Planted:
    """Unpickling this runs ``Path(marker).touch()``: what a planted checkpoint could do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (Path.touch, (self.marker,))


def _plant(path: Path, marker: Path, **state: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({**state, "payload": _Planted(marker)}, path)
    assert not marker.exists()


# ------------------------------------------------------------------------------------------------ point 1


def test_analyze_never_replaces_a_folder_it_did_not_write(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """--out is the folder of an MRXS slide: its data folder (same name as the slide id) survives, and the
    slide is refused before it is analysed."""
    from PIL import Image

    import marrowscope.engines.batch as batch_mod
    from marrowscope.engines.batch import analyze_batch
    from marrowscope.engines.pipeline import AnalysisConfig

    calls: list[int] = []
    real = batch_mod.analyze_slide
    monkeypatch.setattr(batch_mod, "analyze_slide", lambda *a, **k: calls.append(1) or real(*a, **k))

    out = tmp_path / "scans"
    out.mkdir()
    Image.fromarray(smear_image()).save(out / "slide.png")
    data = out / "slide"  # what the scanner wrote beside slide.mrxs: Data0000.dat, Slidedat.ini
    data.mkdir()
    (data / "Slidedat.ini").write_text("[GENERAL]\n")
    (data / "Data0000.dat").write_bytes(b"\x00" * 100)
    s = analyze_batch([out / "slide.png"], out, AnalysisConfig(target_cells=20, tta=1), mpp=0.5,
                      models=stub_models(), progress=False)
    assert s.slides[0].status == "failed"
    assert "was not written by marrowscope" in (s.slides[0].reason or "")
    assert "move it away or choose another output path" in (s.slides[0].reason or "")
    assert sorted(p.name for p in data.iterdir()) == ["Data0000.dat", "Slidedat.ini"]
    assert calls == []
    assert (data / "Data0000.dat").read_bytes() == b"\x00" * 100


def test_an_owned_slide_folder_is_replaced(tmp_path: Path) -> None:
    target = tmp_path / "out" / "s"
    with atomic.atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("1")
    assert (target / atomic.MARKER).is_file()
    with atomic.atomic_dir(target) as tmp:
        (tmp / "b.txt").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == [atomic.MARKER, "b.txt"]
    assert not [p for p in target.parent.iterdir() if p.name.endswith(".part")]


def test_train_diagnosis_refuses_to_overwrite_its_input(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    from marrowscope.cli.main import main

    table = tmp_path / "counts.csv"
    rows = ["patient_id,diagnosis,myeloblast,lymphocyte,segmented_neutrophil"]
    rows += [f"P{i},{'AML' if i % 2 else 'control'},{60 if i % 2 else 2},20,{20 if i % 2 else 78}"
             for i in range(12)]
    table.write_text("\n".join(rows) + "\n")
    before = table.read_bytes()
    code = main(["train", "diagnosis", "--cohort", str(table), "--out", str(table)])
    err = capsys.readouterr().err
    assert code == 2 and "was not written by marrowscope" in err and "Traceback" not in err
    assert table.read_bytes() == before
    model = tmp_path / "model.skops"
    assert main(["train", "diagnosis", "--cohort", str(table), "--out", str(model)]) == 0
    assert main(["train", "diagnosis", "--cohort", str(table), "--out", str(model)]) == 0  # its own file


def test_writers_refuse_a_foreign_file_and_keep_their_own(tmp_path: Path) -> None:
    mine = tmp_path / "user" / "notes.json"
    mine.parent.mkdir()
    mine.write_text("precious")
    with pytest.raises(InputError, match="not written by marrowscope"):
        atomic.write_text_atomic(mine, "{}")
    assert mine.read_text() == "precious"
    ours = tmp_path / "user" / "result.json"
    atomic.write_text_atomic(ours, "1")
    atomic.write_text_atomic(ours, "2")  # listed in the folder's marker: ours to replace
    assert ours.read_text() == "2" and atomic.owns_file(ours) and not atomic.owns_file(mine)
    new = tmp_path / "fresh" / "deep" / "x.txt"
    atomic.write_text_atomic(new, "a")
    assert atomic.owns_folder(new.parent) and (tmp_path / "fresh" / atomic.MARKER).is_file()



def test_a_file_renamed_into_place_just_before_a_kill_is_still_ours(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """A process killed right after renaming its file into place (e.g. a checkpoint) leaves a file that
    its rerun may replace (found by a SIGKILL of ``reproduce`` under torchrun after the first checkpoint)."""
    target = tmp_path / "user" / "checkpoint.pt"
    target.parent.mkdir()
    real_replace = os.replace

    def replace_then_die(src: str, dst: str) -> None:
        real_replace(src, dst)
        if Path(dst) == target:
            raise SystemExit("killed")  # stands for SIGKILL: nothing after the rename runs

    monkeypatch.setattr(atomic.os, "replace", replace_then_die)
    with pytest.raises(SystemExit):
        atomic.write_text_atomic(target, "epoch 1")
    monkeypatch.undo()
    assert target.read_text() == "epoch 1"
    atomic.write_text_atomic(target, "epoch 2")  # the rerun replaces its own checkpoint
    assert target.read_text() == "epoch 2"



def test_two_processes_preparing_one_folder_do_not_trip_each_other(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """torchrun ranks prepare the same training folder at once: one's stale-temporary sweep must not
    remove the other's live write probe (found by ``torchrun ... reproduce``: "cannot write to this
    output folder (No such file or directory)")."""
    out = tmp_path / "train"
    real_fsync = os.fsync

    def other_rank_sweeps(fd: int) -> None:
        real_fsync(fd)
        atomic.remove_stale_parts(out)  # the other rank's prepare_output_dir, while the probe exists

    monkeypatch.setattr(atomic.os, "fsync", other_rank_sweeps)
    assert atomic.prepare_output_dir(out) == out
    assert not list(out.glob(".write-test.*"))


# ------------------------------------------------------------------------------------------------ point 2


def test_classifier_resume_refuses_a_planted_checkpoint(tmp_path: Path) -> None:
    from marrowscope.engines.train_classifier import TrainConfig, train_classifier
    from marrowscope.models.classifier import make_spec
    from test_classifier_train import CLASSES, _tiny_set

    out, marker = tmp_path / "run", tmp_path / "pwned"
    _plant(out / "checkpoint.pt", marker, epoch=1)
    spec = make_spec(CLASSES, input_size=16, mpp=0.5, scheme=None)
    with pytest.raises(InputError, match="refusing to load this checkpoint"):
        train_classifier(spec, _tiny_set(), None, out, TrainConfig(epochs=1, batch_size=16), progress=False)
    assert not marker.exists()


def test_detector_resume_refuses_a_planted_checkpoint(tmp_path: Path) -> None:
    from marrowscope.engines.train_detector import train_detector
    from test_detector_train import _config, _samples

    out, marker = tmp_path / "run", tmp_path / "pwned"
    _plant(out / "last.pt", marker, epoch=0)
    with pytest.raises(InputError, match="refusing to load this checkpoint"):
        train_detector(_samples(2), [], _config(), out, progress=False)
    assert not marker.exists()


def test_cli_train_classifier_planted_checkpoint_is_one_line(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    from marrowscope.cli.main import main
    from test_classifier_data import _write_pbc_folder

    _write_pbc_folder(tmp_path / "pbc", n_per=2)
    out, marker = tmp_path / "run", tmp_path / "pwned"
    _plant(out / "checkpoint.pt", marker)
    code = main(["train", "classifier", "--dataset", f"pbc:{tmp_path / 'pbc'}", "--out", str(out),
                 "--epochs", "1", "--input-size", "16", "--batch-size", "8"])
    err = capsys.readouterr().err
    assert code == 2 and "refusing to load this checkpoint" in err and "Traceback" not in err
    assert not marker.exists()


def test_checkpoints_hold_only_tensors_and_plain_values(tmp_path: Path) -> None:
    """What the loops save loads under weights_only=True and restores the RNG exactly."""
    from marrowscope.engines.checkpoints import load_checkpoint, rng_state, save_checkpoint, set_rng_state

    net = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(net.parameters())
    net(torch.ones(1, 3)).sum().backward()
    opt.step()
    torch.manual_seed(5)
    save_checkpoint(tmp_path / "c.pt", {"opt": opt.state_dict(), "rng": rng_state(), "history": [{"a": 1.0}]})
    expected = torch.rand(3)
    torch.manual_seed(99)
    ck = load_checkpoint(tmp_path / "c.pt")
    set_rng_state(ck["rng"])
    assert torch.equal(torch.rand(3), expected)
    torch.optim.AdamW(net.parameters()).load_state_dict(ck["opt"])


# ------------------------------------------------------------------------------------------------ point 7


def test_stale_part_folders_of_a_killed_run_are_removed_live_ones_kept(tmp_path: Path) -> None:
    import subprocess
    import sys

    out = tmp_path / "out"
    atomic.make_dirs(out)
    code = ("import os, sys\nfrom marrowscope.io.atomic import atomic_dir\n"
            "with atomic_dir(sys.argv[1]) as t:\n    (t / 'half').write_text('x')\n"
            "    print(t, flush=True)\n    os.kill(os.getpid(), 9)\n")
    env = {**os.environ, "PYTHONPATH": str(Path(atomic.__file__).parents[2])}
    r = subprocess.run([sys.executable, "-c", code, str(out / "slideA")], env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == -9
    stale = Path(r.stdout.strip())
    assert stale.is_dir() and stale.name.startswith(".slideA.") and stale.name.endswith(".part")
    foreign = out / ".user.part"  # not ours: no marker
    foreign.mkdir()
    with atomic.atomic_dir(out / "slideB") as live:  # a live run's temporary: locked
        removed = atomic.remove_stale_parts(out)
        assert live.is_dir()
    assert removed == [stale] and not stale.exists() and foreign.is_dir()


def test_a_killed_analyze_leaves_nothing_after_the_rerun(tmp_path: Path) -> None:
    """SIGKILL while a slide's outputs are written (inside its .part folder); the rerun removes it."""
    import subprocess
    import sys

    from PIL import Image

    from marrowscope.engines.batch import analyze_batch
    from marrowscope.engines.pipeline import AnalysisConfig

    img = tmp_path / "s.png"
    Image.fromarray(smear_image()).save(img)
    out = tmp_path / "out"
    code = ("import os, sys\nimport marrowscope.report.html as h\n"
            "from marrowscope.engines.batch import analyze_batch\n"
            "from marrowscope.engines.pipeline import AnalysisConfig\n"
            "from pipeline_stubs import stub_models\n"
            "h.write_report = lambda *a, **k: os.kill(os.getpid(), 9)\n"
            "analyze_batch([sys.argv[1]], sys.argv[2], AnalysisConfig(target_cells=20, tta=1), mpp=0.5,\n"
            "              models=stub_models(), progress=False)\n")
    tests = Path(__file__).resolve().parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(atomic.__file__).parents[2]), str(tests)])}
    r = subprocess.run([sys.executable, "-c", code, str(img), str(out)], env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == -9, r.stderr[-2000:]
    assert [p for p in out.iterdir() if p.name.endswith(".part")]  # the kill left its temporary
    s = analyze_batch([img], out, AnalysisConfig(target_cells=20, tta=1), mpp=0.5, models=stub_models(),
                      progress=False)
    assert s.slides[0].status == "done"
    assert not [p for p in out.rglob("*") if p.name.endswith(".part")]


# -------------------------------------------------------------------------------------------- point 7: CSV


_NASTY = ["=HYPERLINK(\"http://x\",\"y\")", "+1+1", "-2+3", "@SUM(A1)", "\tx", "\rx", "'=already", "'", "''",
          "plain", "-1.5", "+3", "1e5"]


def test_csv_escaping_round_trips_and_leaves_numbers() -> None:
    from marrowscope.io.csvsafe import escape_cell, unescape_cell

    for v in _NASTY:
        e = escape_cell(v)
        assert unescape_cell(e) == v
        assert not (isinstance(e, str) and e[:1] in "=+-@\t\r") or e in ("-1.5", "+3")
    assert escape_cell("-1.5") == "-1.5" and escape_cell(3) == 3


def test_cohort_and_cell_csvs_hold_no_live_formula(tmp_path: Path) -> None:
    import csv

    from PIL import Image

    from marrowscope.engines.batch import analyze_batch
    from marrowscope.engines.pipeline import AnalysisConfig
    from marrowscope.io.annotations.table import read_cell_table

    name = "=HYPERLINK(1)"
    img = tmp_path / f"{name}.png"
    Image.fromarray(smear_image()).save(img)
    s = analyze_batch([img], tmp_path / "out", AnalysisConfig(target_cells=20, tta=1), mpp=0.5,
                      models=stub_models(), progress=False)
    assert s.slides[0].status == "done" and s.slides[0].slide_id == name
    for f in (tmp_path / "out" / "cohort.csv", Path(s.slides[0].folder or "") / "cells.csv"):
        for row in csv.reader(f.open(newline="")):
            assert not any(c[:1] in ("=", "+", "@", "\t", "\r") for c in row), (f, row)
            assert not any(c[:1] == "-" and not c.lstrip("-").replace(".", "").replace("e", "").isdigit()
                           for c in row), (f, row)
    cells = read_cell_table(Path(s.slides[0].folder or "") / "cells.csv")  # our reader undoes it
    assert cells.slide_id == name


def test_dataset_csv_writers_round_trip_a_formula_slide_id(tmp_path: Path) -> None:
    from marrowscope.cells import Box, Region
    from marrowscope.io.annotations.bmdeep_csv import read_rois_csv, write_rois_csv

    sid = "@evil"
    write_rois_csv({sid: (Region(Box(0, 0, 10, 10), 1),)}, tmp_path / "r.csv")
    assert "'@evil" in (tmp_path / "r.csv").read_text()
    assert list(read_rois_csv(tmp_path / "r.csv")) == [sid]
