"""The command line's own conventions: --version, -h everywhere, -v/--debug before or after the
subcommand, analyze --device/--threads/--batch-size checked at parse time and recorded, --mpp meaning
the slide's pixel size everywhere (the models' scale is --model-mpp), info reading our own outputs."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from marrowscope import __version__
from marrowscope.cli.main import main
from pipeline_stubs import smear_image


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = main(args)
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = _run(["--version"], capsys)
    assert rc == 0 and out.strip() == f"marrowscope {__version__}"


@pytest.mark.parametrize("cmd", [[], ["analyze"], ["info"], ["synth"], ["train", "detector"],
                                 ["train", "classifier"], ["evaluate", "diagnosis"], ["models"]])
def test_short_help_everywhere(cmd: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = _run([*cmd, "-h"], capsys)
    assert rc == 0 and "Usage: marrowscope" in out and not err


def test_verbose_after_the_subcommand(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "s.png"
    Image.fromarray(np.full((32, 48, 3), 200, np.uint8)).save(p)
    root = logging.getLogger()
    level = root.level
    try:
        rc, out, _ = _run(["info", str(p), "-v"], capsys)
        assert rc == 0 and "48 x 32" in out
        rc, out, _ = _run(["info", str(p), "--debug", "--json"], capsys)
        assert rc == 0 and json.loads(out)["width"] == 48
    finally:
        root.setLevel(level)


@pytest.mark.parametrize("bad, what", [(["--device", "gpu"], "--device"), (["--threads", "0"], "--threads"),
                                       (["--batch-size", "0"], "--batch-size")])
def test_analyze_runtime_options_are_checked_at_parse_time(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], bad: list[str], what: str) -> None:
    rc, _, err = _run(["analyze", str(tmp_path / "none.png"), "--out", str(tmp_path / "o"), *bad], capsys)
    assert rc == 2 and what in err and "Invalid value" in err  # the option exists and checks its value
    assert not (tmp_path / "o").exists()  # refused before anything ran


def test_analyze_device_threads_batch_size_reach_the_run_record(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    from marrowscope.models.detector import build_detector, detector_spec, save_detector

    dspec = detector_spec(["cell"], mpp=0.5, tile_size=256, fpn_channels=16, representation_size=32,
                          detections_per_img=15, operating_threshold=0.0)
    save_detector(tmp_path / "det.pt", build_detector(dspec), dspec)
    img = tmp_path / "in" / "s.png"
    img.parent.mkdir()
    Image.fromarray(smear_image(width=512, height=256)).save(img)
    threads = torch.get_num_threads()
    rc, _, err = _run(["analyze", str(img), "--out", str(tmp_path / "out"), "--mpp", "0.5", "--detector",
                       str(tmp_path / "det.pt"), "--diagnosis", "none", "--device", "cpu", "--threads", "1",
                       "--batch-size", "2", "--target-cells", "5"], capsys)
    assert torch.get_num_threads() == threads  # the analysis gave the thread count back
    summary = json.loads((tmp_path / "out" / "s" / "summary.json").read_text())
    run = summary["run"]
    assert run["device"] == "cpu"
    assert run["config"]["device"] == "cpu" and run["config"]["threads"] == 1
    assert run["config"]["batch_size"] == 2


def test_cuda_without_a_gpu_is_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    img = tmp_path / "s.png"
    Image.fromarray(smear_image(width=256, height=256)).save(img)
    rc, _, err = _run(["analyze", str(img), "--out", str(tmp_path / "o"), "--mpp", "0.5", "--device", "cuda"],
                      capsys)
    assert rc == 2 and "CUDA is not available" in err and "Traceback" not in err and "--device" in err
    assert not (tmp_path / "o").exists()


def test_model_mpp_and_the_deprecated_train_mpp(capsys: pytest.CaptureFixture[str]) -> None:
    from marrowscope.cli.app import renamed_option
    from marrowscope.errors import InputError

    assert renamed_option(None, 0.3, "--mpp", "--model-mpp") == 0.3
    assert renamed_option(0.2, None, "--mpp", "--model-mpp") == 0.2
    assert "--mpp is deprecated here, use --model-mpp" in capsys.readouterr().err
    with pytest.raises(InputError, match="conflicts with --model-mpp"):
        renamed_option(0.2, 0.3, "--mpp", "--model-mpp")
    for cmd in (["train", "detector"], ["train", "classifier"]):
        rc, out, _ = _run([*cmd, "-h"], capsys)
        assert "--model-mpp" in out and "--mpp " not in out  # the old spelling is hidden


def test_info_reads_our_own_cell_table_and_webp(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from marrowscope.cells import Box, Cell, CellAnnotations, Region
    from marrowscope.io.annotations.table import write_cell_table

    cells = CellAnnotations(
        cells=(Cell(Box(1, 1, 9, 9), "myeloblast", 0, 1, score=0.9, probabilities={"myeloblast": 0.8,
                                                                                  "lymphocyte": 0.2}),
               Cell(Box(20, 1, 29, 9), "lymphocyte", 1, 1, score=0.8, probabilities={"myeloblast": 0.1,
                                                                                    "lymphocyte": 0.9})),
        regions=(Region(Box(0, 0, 40, 40), 1),), slide_id="s1", width=64, height=64, mpp=0.5)
    write_cell_table(cells, tmp_path / "cells")
    for name in ("cells.parquet", "cells.csv"):
        rc, out, err = _run(["info", str(tmp_path / name), "--json"], capsys)
        assert rc == 0, err
        d = json.loads(out)
        assert d["format"] == "cell-table" and d["label_counts"] == {"lymphocyte": 1, "myeloblast": 1}
    webp = tmp_path / "s.webp"
    Image.fromarray(np.full((16, 24, 3), 200, np.uint8)).save(webp)
    rc, out, err = _run(["info", str(webp), "--json"], capsys)
    assert rc == 0 and json.loads(out)["width"] == 24, err


def test_analyze_runs_the_real_slide_classifier_by_default_and_records_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No --classifier: classifier-marrow (for real slides) runs and summary.json says so; the
    ``synthetic_model`` warning appears only when a synthetic-only model ran."""
    from marrowscope.engines.pipeline import REAL_SLIDE_MODELS
    from marrowscope.models.detector import build_detector, detector_spec, save_detector

    dspec = detector_spec(["cell"], mpp=0.5, tile_size=256, fpn_channels=16, representation_size=32,
                          detections_per_img=15, operating_threshold=0.0)
    save_detector(tmp_path / "det.pt", build_detector(dspec), dspec)
    img = tmp_path / "in" / "s.png"
    img.parent.mkdir()
    Image.fromarray(smear_image(width=512, height=256)).save(img)
    common = ["--mpp", "0.5", "--detector", str(tmp_path / "det.pt"), "--device", "cpu", "--threads", "1",
              "--target-cells", "5"]
    for out, extra in (("a", ["--diagnosis", "none"]), ("b", ["--diagnosis", "none", "--classifier",
                                                              "classifier-synth"])):
        rc, _, err = _run(["analyze", str(img), "--out", str(tmp_path / out), *common, *extra], capsys)
        assert rc == 0, err
    a = json.loads((tmp_path / "a" / "s" / "summary.json").read_text())
    models = {m["task"]: m for m in a["run"]["models"]}
    assert models["classifier"]["name"] == REAL_SLIDE_MODELS["classifier"] == "classifier-marrow"
    assert models["classifier"]["training_data_kind"] == "mixed" and "diagnosis" not in models
    assert a["run"]["config"]["classifier"] == "classifier-marrow"
    assert "synthetic_model" not in {w["code"] for w in a["warnings"]}
    b = json.loads((tmp_path / "b" / "s" / "summary.json").read_text())
    assert {m["task"]: m["name"] for m in b["run"]["models"]}["classifier"] == "classifier-synth"
    syn = [w for w in b["warnings"] if w["code"] == "synthetic_model"]
    assert len(syn) == 1 and "classifier classifier-synth" in syn[0]["message"]
