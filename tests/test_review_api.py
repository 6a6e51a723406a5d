"""The review app's JSON API through FastAPI's TestClient: reading, editing, safety, concurrency, exports."""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the review app needs the 'review' extra (fastapi, uvicorn)")

from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402

from marrowscope import taxonomy  # noqa: E402
from marrowscope.counting import compute_differential  # noqa: E402
from review_fixtures import DICOM_KEY, PNG_KEY, build_output, fresh_copy  # noqa: E402

TOKEN = "test-token"
H = {"X-Token": TOKEN}


@pytest.fixture(scope="session")
def analysed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_output(tmp_path_factory.mktemp("review-src"))


@pytest.fixture()
def out(analysed: Path, tmp_path: Path) -> Path:
    return fresh_copy(analysed, tmp_path / "out")


def _client(out: Path, reviewer: str = "dr a") -> TestClient:
    from marrowscope.review.server import create_app
    from marrowscope.review.service import ReviewService

    return TestClient(create_app(ReviewService(out, reviewer), TOKEN))


@pytest.fixture()
def client(out: Path) -> TestClient:
    return _client(out)


def _cells(c: TestClient, key: str = DICOM_KEY) -> list[dict]:
    r = c.get(f"/api/slides/{key}/cells")
    assert r.status_code == 200
    return r.json()["cells"]


def _summary(out: Path, key: str) -> dict:
    return json.loads((out / key / "summary.json").read_text())


def _cell(cells: list[dict], label: str | None = None, not_label: str | None = None) -> dict:
    return next(
        c
        for c in cells
        if (label is None or c["label"] == label) and c["label"] != not_label and c["label"] is not None
    )


def test_cohort_lists_every_slide_with_the_model_values(client: TestClient, out: Path) -> None:
    rows = {r["id"]: r for r in client.get("/api/slides").json()}
    assert set(rows) == {DICOM_KEY, PNG_KEY}
    for key, r in rows.items():
        d = _summary(out, key)["differential"]
        assert r["status"] == "not reviewed" and r["reviewer"] is None
        assert r["n_counted"] == d["n_counted"] and r["blast_pct"] == round(100 * d["blast_fraction"], 2)
        assert r["suggestion"] == _summary(out, key)["diagnosis"]["suggestion"]


def test_cells_and_tally_match_the_model_before_any_edit(client: TestClient, out: Path) -> None:
    s = _summary(out, DICOM_KEY)
    cells = _cells(client)
    assert len(cells) == s["n_objects"] and all(c["state"] == "pending" for c in cells)
    t = client.get(f"/api/slides/{DICOM_KEY}/differential").json()
    d = s["differential"]
    assert t["n_counted"] == d["n_counted"] and {r["label"]: r["count"] for r in t["rows"]} == d["counts"]
    assert t["blast"]["ci"] == [round(100 * v, 2) for v in d["blast_interval"]]
    assert t["diagnosis"]["suggestion"] == s["diagnosis"]["suggestion"]
    assert t["diagnosis"]["rule_baseline"] == s["diagnosis"]["rule_baseline"]


def test_queue_holds_every_predicted_blast_first(client: TestClient) -> None:
    data = client.get(f"/api/slides/{DICOM_KEY}/cells").json()
    blasts = {c["id"] for c in data["cells"] if c["label"] == "myeloblast"}
    queued = [q["id"] for q in data["queue"]]
    assert blasts and blasts <= set(queued)
    assert set(queued[: len(blasts)]) == blasts  # blasts come first
    assert all(q["reasons"] for q in data["queue"]) and len(set(queued)) == len(queued)


def test_reclassify_updates_tally_audit_and_survives_a_restart(client: TestClient, out: Path) -> None:
    cells = _cells(client)
    c = _cell(cells, "segmented_neutrophil")
    r = client.patch(
        f"/api/slides/{DICOM_KEY}/cells/{c['id']}", json={"label": "myeloblast", "version": 0}, headers=H
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["cell"]["label"] == "myeloblast" and body["cell"]["state"] == "reclassified"
    assert body["status"] == "in review"
    labels = [("myeloblast" if x["id"] == c["id"] else x["label"]) for x in cells]
    want = compute_differential([x for x in labels if x is not None], uncertain=labels.count(None))
    assert body["tally"]["n_counted"] == want.n_counted
    assert (
        body["tally"]["blast"]["count"]
        == want.blast_count
        == _summary(out, DICOM_KEY)["differential"]["blast_count"] + 1
    )
    log = client.get(f"/api/slides/{DICOM_KEY}/audit").json()
    assert [(e["cell_id"], e["old_label"], e["new_label"], e["reviewer"]) for e in log] == [
        (c["id"], "segmented_neutrophil", "myeloblast", "dr a")
    ]
    assert log[0]["at"].endswith("+00:00")
    again = _client(out, "dr b")  # a new server over the same folder
    kept = next(x for x in _cells(again) if x["id"] == c["id"])
    assert kept["label"] == "myeloblast" and kept["version"] == 1
    assert again.get("/api/slides").json()[0]["status"] in ("in review", "not reviewed")
    assert {r["id"]: r["status"] for r in again.get("/api/slides").json()}[DICOM_KEY] == "in review"
    # the model's own outputs are untouched
    assert (out / DICOM_KEY / "cells.csv").read_text().count("myeloblast") > 0
    assert _summary(out, DICOM_KEY)["differential"]["blast_count"] == want.blast_count - 1


def test_accept_reset_delete_add_and_set_aside(client: TestClient) -> None:
    cells = _cells(client)
    a, b, d, e = [x for x in cells if x["label"] == "lymphocyte"][:4]
    url = f"/api/slides/{DICOM_KEY}/cells"
    assert (
        client.patch(f"{url}/{a['id']}", json={"action": "accept"}, headers=H).json()["cell"]["state"]
        == "accepted"
    )
    r = client.patch(f"{url}/{a['id']}", json={"action": "reset"}, headers=H).json()
    assert r["cell"]["state"] == "pending" and r["cell"]["version"] == 2
    n0 = client.get(f"/api/slides/{DICOM_KEY}/differential").json()["n_counted"]
    r = client.delete(f"{url}/{b['id']}", headers=H).json()
    assert r["cell"]["state"] == "deleted" and r["tally"]["n_counted"] == n0 - 1
    r = client.patch(f"{url}/{d['id']}", json={"action": "not_identifiable"}, headers=H).json()
    assert r["tally"]["n_counted"] == n0 - 2 and r["tally"]["not_counted"]["not_identifiable (reviewer)"] == 1
    r = client.patch(f"{url}/{e['id']}", json={"action": "not_counted"}, headers=H).json()
    assert r["tally"]["not_counted"]["not_counted (reviewer)"] == 1
    r = client.post(url, json={"box": [100, 100, 130, 128], "label": "lymphocyte"}, headers=H)
    assert r.status_code == 201
    added = r.json()["cell"]
    assert added["added"] and added["id"] == max(x["id"] for x in cells) + 1 and added["state"] == "added"
    assert r.json()["tally"]["n_counted"] == n0 - 2
    r = client.delete(f"{url}/{added['id']}", headers=H).json()  # undo of the add
    assert r["tally"]["n_counted"] == n0 - 3
    r = client.patch(f"{url}/{added['id']}", json={"action": "restore"}, headers=H).json()  # redo
    assert r["cell"]["state"] == "added" and r["tally"]["n_counted"] == n0 - 2
    assert r["tally"]["review"]["added"] == 1 and r["tally"]["review"]["deleted"] == 1


def test_every_mutating_request_needs_the_token(client: TestClient) -> None:
    c = _cells(client)[0]
    base = f"/api/slides/{DICOM_KEY}"
    calls = [
        ("PATCH", f"{base}/cells/{c['id']}", {"label": "lymphocyte"}),
        ("DELETE", f"{base}/cells/{c['id']}", None),
        ("POST", f"{base}/cells", {"box": [10, 10, 40, 40], "label": "lymphocyte"}),
        ("POST", f"{base}/validate", None),
        ("POST", f"{base}/export", None),
    ]
    for method, url, body in calls:
        for headers in ({}, {"X-Token": "wrong"}):
            r = client.request(method, url, json=body, headers=headers)
            assert r.status_code == 403, (method, url)
            assert "X-Token" in r.json()["detail"]
    assert all(x["state"] == "pending" for x in _cells(client))
    assert client.get(f"{base}/audit").json() == []


def test_bad_input_gets_a_4xx_with_a_message(client: TestClient) -> None:
    c = _cells(client)[0]
    url = f"/api/slides/{DICOM_KEY}/cells"
    cases = [
        ("PATCH", f"{url}/{c['id']}", {"label": "not_a_cell"}, 422, "unknown label"),
        ("PATCH", f"{url}/{c['id']}", {"label": 7}, 422, "unknown label"),
        ("PATCH", f"{url}/{c['id']}", {"action": "explode"}, 422, "action"),
        ("PATCH", f"{url}/{c['id']}", {"label": "lymphocyte", "version": "x"}, 422, "version"),
        ("PATCH", f"{url}/999999", {"label": "lymphocyte"}, 404, "no such cell"),
        ("POST", url, {"box": [10, 10, 5000, 40], "label": "lymphocyte"}, 422, "outside the slide"),
        ("POST", url, {"box": [-5, 10, 40, 40], "label": "lymphocyte"}, 422, "outside the slide"),
        ("POST", url, {"box": [40, 10, 10, 40], "label": "lymphocyte"}, 422, "empty"),
        ("POST", url, {"box": [10, 10, 11, 11], "label": "lymphocyte"}, 422, "smaller"),
        ("POST", url, {"box": "10,10,40,40", "label": "lymphocyte"}, 422, "box must be"),
        ("POST", url, {"box": [10, 10, 40, 40], "label": "unicorn"}, 422, "unknown label"),
        ("PATCH", f"/api/slides/nope/cells/{c['id']}", {"label": "lymphocyte"}, 404, "no such slide"),
    ]
    for method, u, body, code, text in cases:
        r = client.request(method, u, json=body, headers=H)
        assert r.status_code == code, (u, body, r.text)
        assert text in r.json()["detail"], (u, body, r.json())
    assert client.request("PATCH", f"{url}/{c['id']}", content=b"{not json", headers=H).status_code == 422
    assert client.get(f"/api/slides/{DICOM_KEY}/audit").json() == []


@pytest.mark.parametrize(
    "path",
    [
        f"/files/{DICOM_KEY}/../../../../etc/passwd",
        f"/files/{DICOM_KEY}/%2e%2e/%2e%2e/etc/passwd",
        f"/files/{DICOM_KEY}/..%2F..%2Fbatch_summary.json",
        f"/files/{DICOM_KEY}/%2Fetc%2Fpasswd",
        "/files/..%2F/summary.json",
        "/files/marrowscope-review/x",
        "/files/%2E%2E/batch_summary.json",
        f"/review-files/{DICOM_KEY}/../../{DICOM_KEY}/summary.json",
        "/api/slides/..%2F..%2Fetc",
        "/slide/..%2F..%2Fetc%2Fpasswd",
        f"/files/{DICOM_KEY}/nothing.txt",
        "/static/../server.py",
        f"/slides/{DICOM_KEY}/tiles/slide_files/0/../../../summary.json",
    ],
)
def test_path_traversal_is_404(client: TestClient, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 404, (path, r.status_code, r.text[:200])


def test_model_files_are_served(client: TestClient, out: Path) -> None:
    r = client.get(f"/files/{DICOM_KEY}/report.html")
    assert r.status_code == 200 and r.content == (out / DICOM_KEY / "report.html").read_bytes()


def test_stale_version_is_refused_and_other_cells_never_conflict(out: Path) -> None:
    tab1, tab2 = _client(out, "dr a"), _client(out, "dr b")
    cells = _cells(tab1)
    c = cells[0]
    url = f"/api/slides/{DICOM_KEY}/cells/{c['id']}"
    assert tab1.patch(url, json={"label": "lymphocyte", "version": 0}, headers=H).status_code == 200
    r = tab2.patch(url, json={"label": "myeloblast", "version": 0}, headers=H)  # tab 2 saw version 0
    assert r.status_code == 409 and "changed meanwhile" in r.json()["detail"]
    assert next(x for x in _cells(tab2) if x["id"] == c["id"])["label"] == "lymphocyte"
    # many edits of different cells from two tabs at once: none is lost
    targets = [x for x in cells[1:41]]
    errors: list[str] = []

    def work(client: TestClient, part: list[dict], label: str) -> None:
        for x in part:
            r = client.patch(
                f"/api/slides/{DICOM_KEY}/cells/{x['id']}", json={"label": label, "version": 0}, headers=H
            )
            if r.status_code != 200:
                errors.append(r.text)

    threads = [
        threading.Thread(target=work, args=(tab1, targets[0::2], "plasma_cell")),
        threading.Thread(target=work, args=(tab2, targets[1::2], "monocyte")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    now = {x["id"]: x["label"] for x in _cells(_client(out))}
    assert all(now[x["id"]] == "plasma_cell" for x in targets[0::2])
    assert all(now[x["id"]] == "monocyte" for x in targets[1::2])
    assert len(_client(out).get(f"/api/slides/{DICOM_KEY}/audit").json()) == 1 + len(targets)


def test_validate_locks_and_exports_carry_the_correction(client: TestClient, out: Path) -> None:
    from marrowscope.io.annotations.dicom_ann import read_dicom_ann
    from marrowscope.io.annotations.geojson import read_geojson
    from marrowscope.io.annotations.table import read_cell_table

    cells = _cells(client)
    c = _cell(cells, "segmented_neutrophil")
    gone = _cell(cells, "lymphocyte")
    url = f"/api/slides/{DICOM_KEY}/cells"
    client.patch(f"{url}/{c['id']}", json={"label": "promyelocyte"}, headers=H)
    client.delete(f"{url}/{gone['id']}", headers=H)
    r = client.post(f"/api/slides/{DICOM_KEY}/validate", headers=H)
    assert r.status_code == 200, r.text
    v = r.json()
    assert (
        v["status"] == "validated" and v["reviewer"] == "dr a" and v["exports"]["dicom_ann_skipped"] is None
    )
    # locked
    r = client.patch(f"{url}/{c['id']}", json={"label": "myeloblast"}, headers=H)
    assert r.status_code == 409 and "locked" in r.json()["detail"]
    assert client.post(f"/api/slides/{DICOM_KEY}/validate", headers=H).status_code == 409
    row = {x["id"]: x for x in client.get("/api/slides").json()}[DICOM_KEY]
    assert row["status"] == "validated" and row["reviewer"] == "dr a" and row["at"]
    folder = Path(v["exports"]["folder"])
    assert folder == out / "marrowscope-review" / DICOM_KEY
    gj = read_geojson(folder / "cells_reviewed.geojson")
    by_id = {x.row_id: x for x in gj.cells}
    assert by_id[c["id"]].label == "promyelocyte" and gone["id"] not in by_id
    table = read_cell_table(folder / "cells_reviewed.parquet")
    assert {x.row_id: x.label for x in table.cells}[c["id"]] == "promyelocyte"
    ann = read_dicom_ann(folder / "reviewed.dcm")
    model_ann = read_dicom_ann(out / DICOM_KEY / "predictions.dcm")
    assert ann.referenced_sop_uid == model_ann.referenced_sop_uid and ann.referenced_sop_uid
    box = tuple(round(v) for v in c["box"])
    hits = [x for x in ann.annotations.cells if tuple(round(v) for v in x.box.as_tuple()) == box]
    assert [x.label for x in hits] == ["promyelocyte"]
    assert len(ann.annotations.cells) == len(cells) - 1 - sum(x["label"] is None for x in cells)
    import pydicom

    ds = pydicom.dcmread(folder / "reviewed.dcm")
    assert {g.AnnotationGroupGenerationType for g in ds.AnnotationGroupSequence} == {"MANUAL"}
    html = (folder / "report.html").read_text()
    assert "Reviewed by dr a on" in html and str(out / DICOM_KEY / "report.html") in html
    audit = (folder / "audit_log.csv").read_text()
    assert "promyelocyte" in audit and "validate" in audit
    # the exports are served; the model report stays as it was
    assert client.get(f"/review-files/{DICOM_KEY}/report.html").status_code == 200
    assert "Reviewed by" not in (out / DICOM_KEY / "report.html").read_text()


def test_non_dicom_slide_exports_without_an_ann(client: TestClient) -> None:
    r = client.post(f"/api/slides/{PNG_KEY}/export", headers=H)
    assert r.status_code == 200
    assert r.json()["dicom_ann"] is None and "not DICOM" in r.json()["dicom_ann_skipped"]


@pytest.mark.parametrize("key", [DICOM_KEY, PNG_KEY])
def test_deepzoom_tiles_come_from_the_slide(client: TestClient, out: Path, key: str) -> None:
    import numpy as np

    from marrowscope.io.slides import open_slide

    s = _summary(out, key)["slide"]
    r = client.get(f"/slides/{key}/tiles/slide.dzi")
    assert r.status_code == 200
    assert (
        f'Width="{s["width"]}"' in r.text
        and f'Height="{s["height"]}"' in r.text
        and 'TileSize="254"' in r.text
    )
    top = int(np.ceil(np.log2(max(s["width"], s["height"]))))
    r = client.get(f"/slides/{key}/tiles/slide_files/{top}/0_0.jpeg")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    img = np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB")).astype(float)
    assert img.shape == (255, 255, 3)  # 254 + 1 px overlap on the inner edges
    with open_slide(s["path"], mpp=s["mpp"]) as slide:
        ref = slide.read_region(0, 0, 255, 255).astype(float)
    assert np.abs(img - ref).mean() < 6  # the slide's own pixels (JPEG-compressed)
    for bad in (
        f"{top + 1}/0_0.jpeg",
        f"{top}/99_0.jpeg",
        f"{top}/0_0.png",
        f"{top}/a_b.jpeg",
        "-1/0_0.jpeg",
    ):
        assert client.get(f"/slides/{key}/tiles/slide_files/{bad}").status_code == 404, bad


def test_gallery_crop_is_a_fixed_scale_jpeg(client: TestClient) -> None:
    from marrowscope.review.tiles import GALLERY_SIZE

    c = _cells(client)[0]
    r = client.get(f"/api/slides/{DICOM_KEY}/cells/{c['id']}/crop.jpg")
    assert r.status_code == 200
    assert Image.open(io.BytesIO(r.content)).size == (GALLERY_SIZE, GALLERY_SIZE)
    assert client.get(f"/api/slides/{DICOM_KEY}/cells/999999/crop.jpg").status_code == 404


def test_slide_meta_gives_a_key_per_class(client: TestClient) -> None:
    m = client.get(f"/api/slides/{DICOM_KEY}").json()
    keys = [c["key"] for c in m["classes"] if c["key"]]
    assert len(keys) == len(set(keys)) == len(m["classes"])
    assert not {"j", "k", "x", "b", "n", "-"} & set(keys)  # command keys
    assert all(c["label"] in taxonomy.LABELS for c in m["classes"])
    assert client.get(f"/slide/{DICOM_KEY}").status_code == 200 and client.get("/").status_code == 200
    assert client.get("/static/vendor/openseadragon/openseadragon.min.js").status_code == 200
