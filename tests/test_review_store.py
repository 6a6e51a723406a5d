"""Correction store (durability, audit log), reader of analyze outputs, reviewed dataset, the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from marrowscope.review.store import EditConflict, EditRejected, ReviewStore
from review_fixtures import DICOM_KEY, PNG_KEY, build_output, fresh_copy

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def analysed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_output(tmp_path_factory.mktemp("review-store-src"))


@pytest.fixture()
def out(analysed: Path, tmp_path: Path) -> Path:
    return fresh_copy(analysed, tmp_path / "out")


def test_a_killed_process_keeps_every_edit_it_returned_from(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(REPO / "src")!r})
        from marrowscope.review.store import ReviewStore
        s = ReviewStore({str(tmp_path)!r})
        for i in range(25):
            s.set_cell("s", i, state="reclassified", label="myeloblast", reviewer="r",
                       model_label="lymphocyte",
                       action="reclassify")
            print(i, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert p.returncode == -signal.SIGKILL, p.stderr
    assert p.stdout.split()[-1] == "24"
    s = ReviewStore(tmp_path)
    assert sorted(s.corrections("s")) == list(range(25))
    assert [e.cell_id for e in s.audit_log("s")] == list(range(25))
    assert s.review("s").status == "in review"


def test_a_failed_edit_changes_nothing(tmp_path: Path) -> None:
    s = ReviewStore(tmp_path)
    s.set_cell(
        "s", 1, state="accepted", label="lymphocyte", reviewer="r", model_label="lymphocyte", action="accept"
    )
    with pytest.raises(EditConflict):
        s.set_cell(
            "s",
            1,
            state="reclassified",
            label="myeloblast",
            reviewer="r",
            model_label="lymphocyte",
            action="reclassify",
            expected_version=0,
        )
    with pytest.raises(EditRejected):
        s.set_cell(
            "s",
            1,
            state="exploded",
            label="myeloblast",
            reviewer="r",
            model_label="lymphocyte",
            action="reclassify",
        )
    assert s.corrections("s")[1].label == "lymphocyte" and s.corrections("s")[1].version == 1
    assert len(s.audit_log("s")) == 1
    s.validate("s", "r2")
    with pytest.raises(EditConflict, match="locked"):
        s.add_cell("s", (1, 1, 9, 9), "lymphocyte", "r", first_free_id=10)
    assert s.review("s").status == "validated" and s.review("s").reviewer == "r2"
    assert [e.action for e in s.audit_log("s")] == ["accept", "validate"]


def test_load_slide_result_reads_back_what_analyze_wrote(out: Path) -> None:
    from marrowscope.report.load import load_slide_result
    from marrowscope.report.outputs import summary_dict

    for key in (DICOM_KEY, PNG_KEY):
        d = json.loads((out / key / "summary.json").read_text())
        r = load_slide_result(out / key)
        again = json.loads(json.dumps(summary_dict(r, d["outputs"]), allow_nan=False))
        assert again == d
        assert len(r.cells) == d["n_objects"] and r.cells.regions


def test_reviewed_dataset_takes_only_vouched_cells(out: Path) -> None:
    pytest.importorskip("fastapi", reason="needs the 'review' extra")
    from marrowscope.data.classification_datasets import load_slide_dataset, parse_dataset_arg
    from marrowscope.review.service import ReviewService

    svc = ReviewService(out, "dr a")
    cells = svc.cells(DICOM_KEY)["cells"]
    a, b, c = [x for x in cells if x["label"] == "lymphocyte"][:3]
    svc.edit(DICOM_KEY, a["id"], {"label": "plasma_cell"})
    svc.edit(DICOM_KEY, b["id"], {"action": "accept"})
    svc.edit(DICOM_KEY, c["id"], {"action": "not_identifiable"})
    added = svc.add(DICOM_KEY, [300, 100, 330, 130], "monocyte")["cell"]
    fmt, root = parse_dataset_arg(f"reviewed:{out}")
    classes = ["lymphocyte", "plasma_cell", "monocyte", "myeloblast", "segmented_neutrophil"]
    cs, skipped = load_slide_dataset(fmt, root, classes, mpp=0.5, size=32)
    assert sorted(cs.ids) == sorted(f"{DICOM_KEY}/{i}" for i in (a["id"], b["id"], added["id"]))
    assert dict(zip(cs.ids, cs.labels, strict=True)) == {
        f"{DICOM_KEY}/{a['id']}": "plasma_cell",
        f"{DICOM_KEY}/{b['id']}": "lymphocyte",
        f"{DICOM_KEY}/{added['id']}": "monocyte",
    }
    assert cs.images.shape == (3, 32, 32, 3) and cs.targets.sum(axis=1).tolist() == [1.0, 1.0, 1.0]
    svc.validate(DICOM_KEY)  # a validated slide vouches for all its counted cells
    cs, _ = load_slide_dataset(fmt, root, classes, mpp=0.5, size=32)
    labelled = [x for x in cells if x["label"] is not None and x["id"] != c["id"]]
    assert len(cs) == len(labelled) + 1
    assert f"{DICOM_KEY}/{c['id']}" not in cs.ids  # not identifiable: never a training label


def test_reviewed_dataset_without_a_review_is_a_clear_error(out: Path) -> None:
    from marrowscope.data.classification_datasets import load_slide_dataset
    from marrowscope.errors import InputError

    with pytest.raises(InputError, match="review the slides first"):
        load_slide_dataset("reviewed", out, ["lymphocyte"], mpp=0.5, size=32)


def test_cli_prints_the_url_with_token_and_warns_for_another_host(
    out: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("fastapi", reason="needs the 'review' extra")
    from marrowscope.cli.main import main
    from marrowscope.review import launch

    seen: list[tuple[int, str]] = []

    def fake_run(self: launch.ReviewServer) -> None:
        seen.append((self.port, self.token))
        self.sock.close()

    monkeypatch.setattr(launch.ReviewServer, "run", fake_run)
    assert main(["review", str(out), "--port", "0", "--reviewer", "Dr X"]) == 0
    o = capsys.readouterr()
    assert f"http://127.0.0.1:{seen[0][0]}/?token={seen[0][1]}" in o.out and "WARNING" not in o.err
    assert len(seen[0][1]) >= 24
    assert main(["review", str(out), "--port", "0", "--host", "0.0.0.0"]) == 0
    o = capsys.readouterr()
    assert "WARNING: listening on 0.0.0.0" in o.err and seen[1][1] != seen[0][1]
    assert main(["review", str(out / DICOM_KEY)]) == 2
    assert "pass its parent" in capsys.readouterr().err
    assert main(["review", str(out / "nothing")]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_cli_port_in_use_is_a_clear_error(out: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("fastapi", reason="needs the 'review' extra")
    import socket

    from marrowscope.cli.main import main

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    try:
        assert main(["review", str(out), "--port", str(s.getsockname()[1])]) == 2
        assert "pick another --port" in capsys.readouterr().err
    finally:
        s.close()


def test_no_review_folder_in_the_model_slide_folders(out: Path) -> None:
    pytest.importorskip("fastapi", reason="needs the 'review' extra")
    from marrowscope.review.service import ReviewService

    before = {p: p.stat().st_mtime_ns for p in (out / DICOM_KEY).iterdir()}
    svc = ReviewService(out, "r")
    c = svc.cells(DICOM_KEY)["cells"][0]
    svc.edit(DICOM_KEY, c["id"], {"label": "myeloblast"})
    svc.export(DICOM_KEY)
    assert {p: p.stat().st_mtime_ns for p in (out / DICOM_KEY).iterdir()} == before
    assert set(os.listdir(out / "marrowscope-review")) >= {"review.sqlite", DICOM_KEY}
