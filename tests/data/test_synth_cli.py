"""``marrowscope synth``: writes, recognises a complete rerun, refuses bad settings with one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from marrowscope.cli.main import main


def test_synth_cli_writes_and_recognises_rerun(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "D"
    args = ["synth", "--patients", "1", "--out", str(out), "--seed", "2", "--slide-size", "768",
            "--roi-size", "256", "--rois", "1", "--cells-per-roi", "6", "--workers", "1"]  # fmt: skip
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "wrote a synthetic cohort of 1 patient(s)" in text and "labelled" in text
    assert (out / "synth_record.json").is_file() and (out / "csv" / "cells_labelled.csv").is_file()
    assert not list(tmp_path.glob(".D.*"))  # no temporary folder left behind
    assert main(args) == 0
    assert "already holds this complete synthetic cohort" in capsys.readouterr().out


def test_synth_cli_look_is_recorded_and_part_of_the_settings(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    import json

    out = tmp_path / "T"
    args = ["synth", "--patients", "1", "--out", str(out), "--seed", "2", "--slide-size", "768",
            "--roi-size", "256", "--rois", "1", "--cells-per-roi", "6", "--workers", "1"]  # fmt: skip
    assert main([*args, "--look", "textured"]) == 0
    assert json.loads((out / "synth_record.json").read_text())["config"]["look"] == "textured"
    capsys.readouterr()
    assert main(args) != 0  # the same folder with another look is another cohort: refused, kept
    assert json.loads((out / "synth_record.json").read_text())["config"]["look"] == "textured"
    assert main([*args, "--look", "glossy"]) != 0
    err = capsys.readouterr().err
    assert "look" in err and "Traceback" not in err


def test_synth_cli_box_red_cells_is_recorded_and_refused_for_streamed_slides(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    out = tmp_path / "R"
    args = ["synth", "--patients", "1", "--out", str(out), "--seed", "2", "--slide-size", "1536",
            "--roi-size", "512", "--rois", "1", "--cells-per-roi", "6", "--workers", "1"]  # fmt: skip
    assert main([*args, "--box-red-cells"]) == 0
    rec = json.loads((out / "synth_record.json").read_text())
    assert rec["config"]["box_red_cells"] is True and rec["slides"][0]["counts"]["erythrocyte"] > 10
    capsys.readouterr()
    assert main(args) != 0  # the same folder without the flag is another cohort: refused, kept
    assert json.loads((out / "synth_record.json").read_text())["config"]["box_red_cells"] is True
    capsys.readouterr()
    rc = main(["synth", "--patients", "1", "--out", str(tmp_path / "big"), "--slide-size", "17000x17000",
               "--box-red-cells"])
    err = capsys.readouterr().err
    assert rc != 0 and "streamed" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "big").exists()


def test_synth_cli_bad_settings_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["synth", "--patients", "1", "--out", str(tmp_path / "x"), "--slide-size", "600"])
    err = capsys.readouterr().err
    assert rc != 0 and "ROIs fit" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()
    rc = main(["synth", "--patients", "0", "--out", str(tmp_path / "y")])
    err = capsys.readouterr().err
    assert rc != 0 and "--patients" in err and "Traceback" not in err


def test_figures_render_small(shared_data: Path) -> None:
    from marrowscope.data.synth.figures import comparison_image, gallery_image

    g = gallery_image(["lymphocyte", "segmented_neutrophil"], per_label=1, thumb=40, columns=2)
    assert g.size[0] > 80  # type: ignore[attr-defined]
    c = comparison_image(shared_data, n=1, thumb=32)
    arr = np.asarray(c)
    assert arr.shape[0] > 32 * 10 and arr.std() > 10  # rows of real and synthetic thumbnails
