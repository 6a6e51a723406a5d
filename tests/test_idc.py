"""IDC access: offline catalog of the bundled index, selection, resumable plan, bounded offline failure.

No test touches the network: the connectivity check is either monkeypatched or aimed at localhost.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from marrowscope.errors import InputError, NetworkUnavailableError
from marrowscope.io import idc


@pytest.fixture(scope="module")
def catalog() -> idc.IdcCatalog:
    return idc.load_catalog()


def test_offline_listing_counts(catalog: idc.IdcCatalog) -> None:
    assert catalog.collection_id == "bonemarrowwsi_pediatricleukemia"
    assert len(catalog.patients) == 246
    assert len(catalog.slides) == 246
    assert len(catalog.annotations) == 1033
    assert catalog.kind_counts() == {"slide": 246, "roi": 246, "session": 576, "consensus": 114,
                                     "unlabeled": 97}
    assert catalog.session_counts() == {0: 114, 1: 114, 2: 114, 3: 112, 4: 108, 5: 14}
    assert len(catalog.labelled_patients()) == 114
    s = catalog.summary()
    assert s["n_annotation_series"] == 1033 and s["n_slides"] == 246
    assert 17.0 < s["annotations_size_mb"] < 18.0
    assert 2.3e6 < s["slides_size_mb"] < 2.4e6
    assert s["slides_instances"] == 1477
    # one slide and one study per patient; ANN series share the slide's study
    for p in catalog.patient_summaries():
        assert p.slide_series_uid is not None and p.kinds.get("roi") == 1
    studies = {(x.patient_id, x.study_uid) for x in catalog.series}
    assert len(studies) == 246
    assert all(x.crdc_series_uuid and x.instance_count > 0 for x in catalog.series)


def test_series_kind_from_description() -> None:
    assert idc.series_kind("SM", "Bone marrow aspirate smear, May-Gruenwald-Giemsa stain") == ("slide", None)
    assert idc.series_kind("ANN", "Monolayer regions of interest for cell classification") == ("roi", None)
    assert idc.series_kind("ANN", "Session 3: Cell bounding boxes with cell type labels") == ("session", 3)
    cons = "Consensus: cell bounding boxes with cell type labels"
    assert idc.series_kind("ANN", cons) == ("consensus", None)
    assert idc.series_kind("ANN", "Unlabeled cell bounding boxes") == ("unlabeled", None)
    assert idc.series_kind("ANN", "something else") == ("other", None)


def test_selection_filters(catalog: idc.IdcCatalog) -> None:
    default = idc.select_series(catalog)
    assert len(default.series) == 1033 and not default.slides
    labelled = idc.select_series(catalog, labelled_only=True)
    assert len(labelled.patients) == 114
    assert labelled.kind_counts() == {"roi": 114, "session": 576, "consensus": 114}
    cons_roi = idc.select_series(catalog, kinds="consensus,roi")
    assert cons_roi.kind_counts() == {"roi": 246, "consensus": 114}
    s3 = idc.select_series(catalog, kinds=["session3"])
    assert s3.kind_counts() == {"session": 112}
    with_slides = idc.select_series(catalog, slides=True, labelled_only=True)
    assert len(with_slides.slides) == 114 and len(with_slides.series) == 114 + 804
    only_slides = idc.select_series(catalog, kinds="slide", limit_patients=3)
    assert len(only_slides.series) == 3 and all(x.modality == "SM" for x in only_slides.series)
    pid = catalog.labelled_patients()[0]
    one = idc.select_series(catalog, patients=[pid], kinds="consensus")
    assert len(one.series) == 1 and one.series[0].patient_id == pid
    assert idc.select_series(catalog, limit_patients=2).patients == catalog.patients[:2]
    with pytest.raises(InputError, match="not in collection"):
        idc.select_series(catalog, patients=["NOT_A_PATIENT"])
    with pytest.raises(InputError, match="unknown series kind"):
        idc.select_series(catalog, kinds="consensus,segmentation")


def _fake(uid: str, n: int, size_mb: float, patient: str = "P1", modality: str = "ANN") -> idc.IdcSeries:
    return idc.IdcSeries(
        patient_id=patient, study_uid="1.2.3", series_uid=uid, modality=modality, kind="roi", session=None,
        description="Monolayer regions of interest for cell classification", series_number=33,
        instance_count=n, size_mb=size_mb, crdc_series_uuid=f"uuid-{uid}", aws_url=f"s3://idc-open-data/uuid-{uid}/*",
    )


def _put(root: Path, s: idc.IdcSeries, sizes: Sequence[int]) -> None:
    folder = s.folder(root)
    folder.mkdir(parents=True, exist_ok=True)
    for i, size in enumerate(sizes):
        (folder / f"inst{i}.dcm").write_bytes(b"\0" * size)


def test_plan_resumption(tmp_path: Path) -> None:
    complete = _fake("1.1", 1, 0.002)
    partial = _fake("1.2", 2, 0.004)
    truncated = _fake("1.3", 1, 0.010)
    absent = _fake("1.4", 1, 0.001)
    _put(tmp_path, complete, [2000])
    _put(tmp_path, partial, [2000])
    _put(tmp_path, truncated, [3000])  # one file, but 30 % of the indexed bytes
    (partial.folder(tmp_path) / ".inst1.dcm.part").write_bytes(b"\0" * 2000)  # temp file does not count
    plan = idc.plan_download([complete, partial, truncated, absent], tmp_path)
    assert [s.series_uid for s in plan.done] == ["1.1"]
    assert [s.series_uid for s in plan.todo] == ["1.2", "1.3", "1.4"]
    assert {s.series_uid for s in plan.partial} == {"1.2", "1.3"}
    assert plan.todo_mb == pytest.approx(0.015)
    assert complete.folder(tmp_path) == tmp_path / "dicom" / "P1" / "1.2.3" / "ANN_1.1"


def test_plan_on_real_selection(catalog: idc.IdcCatalog, tmp_path: Path) -> None:
    sel = idc.select_series(catalog, limit_patients=1)
    first = sel.series[0]
    _put(tmp_path, first, [int(first.size_mb * 1e6) + 1] * first.instance_count)
    plan = idc.plan_download(sel, tmp_path)
    assert plan.done == (first,)
    assert len(plan.todo) == len(sel.series) - 1


def test_offline_error_is_fast_and_clear(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("HTTPS_PROXY", raising=False)
    monkeypatch.delenv("https_proxy", raising=False)
    monkeypatch.setattr(idc, "check_network", lambda host, port, timeout_s: False)
    calls: list[int] = []

    def runner(series: Sequence[idc.IdcSeries], root: Path, source: str, timeout_s: float | None) -> bool:
        calls.append(len(series))
        return False

    plan = idc.plan_download([_fake("9.1", 1, 0.001)], tmp_path)
    t0 = time.monotonic()
    with pytest.raises(NetworkUnavailableError, match="s3.amazonaws.com"):
        idc.download(plan, runner=runner)
    assert time.monotonic() - t0 < 3.0
    assert calls == []  # idc-index is never started offline


def test_check_network_bounded() -> None:
    t0 = time.monotonic()
    assert idc.check_network("name-that-does-not-resolve.invalid", 443, 1.0) is False
    assert time.monotonic() - t0 < 3.0
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        assert idc.check_network("127.0.0.1", server.getsockname()[1], 2.0) is True
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    assert idc.check_network("127.0.0.1", port, 1.0) is False


def test_proxy_is_checked_instead(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, int]] = []
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    idc.require_network(check=lambda h, p, t: seen.append((h, p)) is None)
    assert seen == [("proxy.example", 3128)]


def test_download_verifies_what_arrived(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    a, b, c = _fake("2.1", 1, 0.001), _fake("2.2", 2, 0.002), _fake("2.3", 1, 0.001)
    _put(tmp_path, c, [1000])  # already there

    def runner(series: Sequence[idc.IdcSeries], root: Path, source: str, timeout_s: float | None) -> bool:
        assert [s.series_uid for s in series] == ["2.1", "2.2"]
        _put(root, a, [1000])
        _put(root, b, [1000])  # only one of two instances arrives
        return False

    plan = idc.plan_download([a, b, c], tmp_path)
    report = idc.download(plan, runner=runner, check=lambda h, p, t: True)
    assert report.fetched == ("2.1",)
    assert report.missing == ("2.2",)
    assert report.already_complete == 1 and report.requested == 3 and not report.ok
    manifest = json.loads((tmp_path / "idc_manifest.json").read_text())
    assert manifest["series"]["2.1"]["complete"] is True
    assert manifest["series"]["2.2"]["complete"] is False
    assert manifest["series"]["2.3"]["folder"] == "dicom/P1/1.2.3/ANN_2.3"
    # resuming: only the incomplete series is fetched again
    plan2 = idc.plan_download([a, b, c], tmp_path)
    assert [s.series_uid for s in plan2.todo] == ["2.2"]


def test_annotations_before_slides(tmp_path: Path) -> None:
    ann, sm = _fake("3.1", 1, 0.001), _fake("3.2", 1, 0.001, modality="SM")
    order: list[list[str]] = []

    def runner(series: Sequence[idc.IdcSeries], root: Path, source: str, timeout_s: float | None) -> bool:
        order.append([s.modality for s in series])
        assert timeout_s is not None and 0 < timeout_s <= 60
        return False

    idc.download(idc.plan_download([sm, ann], tmp_path), runner=runner, check=lambda h, p, t: True,
                 timeout_s=60)
    assert order == [["ANN"], ["SM"]]


def test_run_bounded_kills_on_timeout() -> None:
    t0 = time.monotonic()
    code, timed_out = idc.run_bounded([sys.executable, "-c", "import time; time.sleep(60)"], "", 1.0)
    assert timed_out and code is None
    assert time.monotonic() - t0 < 10.0
    code, timed_out = idc.run_bounded([sys.executable, "-c", "import sys; sys.stdin.read()"], "x", 30.0)
    assert code == 0 and not timed_out


def test_custom_index(tmp_path: Path, catalog: idc.IdcCatalog) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [replace(s) for s in catalog.series[:3]]
    table = pa.table({
        "collection_id": [idc.COLLECTION_ID] * 3, "PatientID": [r.patient_id for r in rows],
        "StudyInstanceUID": [r.study_uid for r in rows], "SeriesInstanceUID": [r.series_uid for r in rows],
        "Modality": [r.modality for r in rows], "SeriesDescription": [r.description for r in rows],
        "instanceCount": [r.instance_count for r in rows], "series_size_MB": [r.size_mb for r in rows],
        "series_aws_url": [r.aws_url for r in rows],
    })
    path = tmp_path / "index.parquet"
    pq.write_table(table, path)
    small = idc.load_catalog(index_path=path)
    assert {s.series_uid for s in small.series} == {r.series_uid for r in rows}
    with pytest.raises(InputError, match="not in this IDC index"):
        idc.load_catalog("no_such_collection", index_path=path)


def test_cli_list_json_and_offline(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                   tmp_path: Path) -> None:
    from marrowscope.cli.main import main

    assert main(["fetch", "--list", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["n_slides"] == 246 and data["n_annotation_series"] == 1033
    assert data["annotation_kinds"] == {"roi": 246, "session": 576, "consensus": 114, "unlabeled": 97}
    assert len(data["patients"]) == 246
    assert main(["fetch", "--list", "--labelled-only"]) == 0
    assert "patients 114" in capsys.readouterr().out

    monkeypatch.delenv("HTTPS_PROXY", raising=False)
    monkeypatch.delenv("https_proxy", raising=False)
    monkeypatch.setattr(idc, "check_network", lambda host, port, timeout_s: False)
    t0 = time.monotonic()
    code = main(["fetch", "--limit", "1", "--out", str(tmp_path / "dl")])
    assert code != 0 and time.monotonic() - t0 < 5.0
    err = capsys.readouterr().err
    assert "cannot reach" in err and "Traceback" not in err
    assert main(["fetch", "--limit", "1", "--dry-run", "--out", str(tmp_path / "dl")]) == 0
    assert "series to fetch" in capsys.readouterr().out
