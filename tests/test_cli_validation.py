"""Issue 15, points 3 and 5: nonsensical numbers and choices stop a command at parse time, in one line,
before any work; an unwritable --out is found before the first slide."""

from __future__ import annotations

from pathlib import Path

import pytest

from marrowscope.cli.main import main


def _err_line(capsys) -> str:  # noqa: ANN001
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize(("args", "needle"), [
    (["train", "classifier", "--dataset", "pbc:x", "--out", "o", "--epochs", "0"], "--epochs"),
    (["train", "classifier", "--dataset", "pbc:x", "--out", "o", "--epochs", "-3"], "--epochs"),
    (["train", "classifier", "--dataset", "pbc:x", "--out", "o", "--batch-size", "0"], "--batch-size"),
    (["train", "classifier", "--dataset", "pbc:x", "--out", "o", "--lr", "-1"], "--lr"),
    (["train", "classifier", "--dataset", "pbc:x", "--out", "o", "--val-fraction", "1.5"], "--val-fraction"),
    (["train", "classifier", "--dataset", "pbc:x", "--out", "o", "--balance", "maybe"], "--balance"),
    (["train", "classifier", "--dataset", "pbc:x", "--out", "o", "--device", "tpu"], "--device"),
    (["train", "detector", "--out", "o", "--device", "tpu"], "--device"),
    (["train", "detector", "--out", "o", "--batch-size", "0"], "--batch-size"),
    (["train", "detector", "--out", "o", "--recipe", "nope"], "--recipe"),
    (["evaluate", "classifier", "--weights", "w", "--dataset", "pbc:x", "--out", "o", "--tta", "3"], "--tta"),
    (["evaluate", "detector", "--weights", "w", "--dataset", "voc:x", "--out", "o", "--threshold", "2"],
     "--threshold"),
    (["analyze", "s.png", "--out", "o", "--target-cells", "0"], "--target-cells"),
    (["analyze", "s.png", "--out", "o", "--mpp", "0"], "--mpp"),
    (["analyze", "s.png", "--out", "o", "--mpp", "-0.5"], "--mpp"),
    (["analyze", "s.png", "--out", "o", "--mpp", "abc"], "--mpp"),
    (["analyze", "s.png", "--out", "o", "--mpp", "inf"], "--mpp"),
    (["analyze", "s.png", "--out", "o", "--mpp", "nan"], "--mpp"),
    (["analyze", "s.png", "--out", "o", "--seed", "-1"], "--seed"),
    (["train", "diagnosis", "--cohort", "c", "--out", "m.skops", "--estimator", "svm"], "--estimator"),
    (["evaluate", "diagnosis", "--cohort", "c", "--out", "o", "--train-on", "both"], "--train-on"),
    (["fetch", "--list", "--limit", "0"], "--limit"),
])
def test_bad_numbers_and_choices_stop_at_parse_time(args: list[str], needle: str, tmp_path: Path,
                                                    monkeypatch, capsys) -> None:  # noqa: ANN001
    monkeypatch.chdir(tmp_path)
    code = main(args)
    err = _err_line(capsys)
    assert code == 2 and needle in err
    assert not (tmp_path / "o").exists()  # nothing was done


def test_cuda_is_refused_where_there_is_none(tmp_path: Path, monkeypatch, capsys) -> None:  # noqa: ANN001
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.chdir(tmp_path)
    code = main(["train", "detector", "--out", "o", "--device", "cuda"])
    assert code == 2 and "CUDA is not available" in _err_line(capsys)


def test_read_only_out_is_found_before_the_first_slide(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    import os

    from PIL import Image

    import marrowscope.engines.batch as batch_mod
    from marrowscope.engines.batch import analyze_batch
    from marrowscope.engines.pipeline import AnalysisConfig
    from marrowscope.errors import InputError
    from pipeline_stubs import smear_image, stub_models

    img = tmp_path / "s.png"
    Image.fromarray(smear_image()).save(img)
    out = tmp_path / "out"
    out.mkdir()
    calls: list[str] = []
    monkeypatch.setattr(batch_mod, "analyze_slide", lambda *a, **k: calls.append("x"))
    real = os.open

    def read_only(path, flags, *a, **k):  # noqa: ANN001, ANN002, ANN003, ANN202
        if str(path).startswith(str(out)) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(30, "Read-only file system", str(path))
        return real(path, flags, *a, **k)

    monkeypatch.setattr(os, "open", read_only)  # as root, chmod does not stop writes: EROFS simulated
    with pytest.raises(InputError, match="cannot write to this output folder.*Read-only"):
        analyze_batch([img], out, AnalysisConfig(target_cells=20, tta=1), mpp=0.5, models=stub_models(),
                      progress=False)
    assert calls == []


def test_train_diagnosis_needs_the_label_column(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    import pandas as pd

    from marrowscope.cells import Box, Cell, CellAnnotations
    from marrowscope.io.annotations.bmdeep_csv import write_cells_csv
    from marrowscope.io.annotations.clinical import ClinicalRecord, write_clinical_csv

    anns, records = [], []
    for i, dx in enumerate(["AML", "ALL", "control", "AML", "ALL", "control"]):
        cells = tuple(Cell(Box(j, 0, j + 9, 9), label="myeloblast" if j % 3 else "lymphocyte",
                           cell_id=i * 10 + j, roi_id=1) for j in range(10))
        anns.append(CellAnnotations(cells=cells, slide_id=f"P{i}_1_bm"))
        records.append(ClinicalRecord(f"P{i}", "F", "060M", dx, None, {}))
    csv_dir = tmp_path / "cohort" / "csv"
    csv_dir.mkdir(parents=True)
    write_cells_csv(anns, csv_dir / "cells_labelled.csv")
    write_clinical_csv(records, csv_dir / "clinical.csv")
    df = pd.read_csv(csv_dir / "cells_labelled.csv")
    df.drop(columns=["original_consensus_label"]).to_csv(csv_dir / "cells_labelled.csv", index=False)
    model = tmp_path / "m.skops"
    code = main(["train", "diagnosis", "--cohort", str(tmp_path / "cohort"), "--out", str(model)])
    err = _err_line(capsys)
    assert code == 2 and "original_consensus_label" in err
    assert not model.exists()


def test_train_classifier_rejects_zero_epochs_before_reading_data(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    from test_classifier_data import _write_pbc_folder

    _write_pbc_folder(tmp_path / "pbc", n_per=2)
    code = main(["train", "classifier", "--dataset", f"pbc:{tmp_path / 'pbc'}", "--out", str(tmp_path / "r"),
                 "--epochs", "0"])
    assert code == 2 and "--epochs" in _err_line(capsys)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("given, passed", [("auto", "auto"), ("AUTO", "auto"), ("0.25", 0.25)])
def test_mpp_takes_a_number_or_auto(given: str, passed: object, tmp_path: Path,
                                    monkeypatch) -> None:  # noqa: ANN001
    from types import SimpleNamespace

    import marrowscope.engines.batch as batch_mod

    seen: list[object] = []

    def fake(slides, out, cfg, *, mpp, **kw):  # noqa: ANN001, ANN202, ARG001
        seen.append(mpp)
        return SimpleNamespace(slides=[], failures=[], n_done=0, n_skipped=0, index="i", summary_path="s")

    monkeypatch.setattr(batch_mod, "analyze_batch", fake)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.png").write_bytes(b"")
    assert main(["analyze", "s.png", "--out", "o", "--mpp", given]) == 0
    assert seen == [passed]
