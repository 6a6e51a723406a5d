"""The review app in a real headless Chromium (Debian's chromium + chromedriver, via Selenium).

Open a slide, reclassify a cell with the keyboard, see the tally change, undo/redo, add a missed cell by
drawing a box, reload and see the edits kept, validate, and find the correction in the exported GeoJSON
and DICOM ANN.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="the review app needs the 'review' extra (fastapi, uvicorn)")
pytest.importorskip("selenium", reason="the browser test needs selenium (dev extra)")

from conftest import require_program  # noqa: E402
from review_fixtures import DICOM_KEY, build_output  # noqa: E402


@pytest.fixture(scope="module")
def programs() -> tuple[str, str]:
    """Debian's chromium and chromedriver (make test installs them; locally missing ones skip)."""
    return require_program("chromium", "chromium"), require_program("chromedriver", "chromium-driver")


@pytest.fixture(scope="module")
def server(programs: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    import uvicorn

    from marrowscope.review.launch import open_review

    out = build_output(tmp_path_factory.mktemp("review-browser"))
    rs = open_review(out, port=0, reviewer="Dr Browser")
    srv = uvicorn.Server(uvicorn.Config(rs.app, log_level="warning"))
    t = threading.Thread(target=srv.run, kwargs={"sockets": [rs.sock]}, daemon=True)
    t.start()
    for _ in range(100):
        if srv.started:
            break
        time.sleep(0.05)
    yield rs.url, out
    srv.should_exit = True
    t.join(timeout=10)
    rs.service.close()


@pytest.fixture(scope="module")
def browser(programs: tuple[str, str]) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    o = Options()
    chromium, chromedriver = programs
    o.binary_location = chromium
    for a in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,950",
    ):
        o.add_argument(a)
    d = webdriver.Chrome(service=Service(chromedriver), options=o)
    yield d
    d.quit()


def _wait(what: Callable[[], Any], timeout: float = 30.0) -> Any:
    """Poll ``what`` until it is truthy.

    The page re-renders panels by replacing their nodes, so an element found in one
    poll can be gone before its text is read: that is a "not yet", not a failure.
    """
    from selenium.common.exceptions import StaleElementReferenceException

    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            v = what()
        except StaleElementReferenceException:
            v = None
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError("timed out waiting")


def _open_slide(d: Any) -> None:
    d.execute_script("document.body.dataset.ready = ''")
    d.refresh()
    _wait(lambda: d.execute_script("return document.body.dataset.ready") == "1")


def _text(d: Any, element_id: str) -> str:
    """The element's rendered text, read in the page so a re-render cannot make it stale."""
    return str(d.execute_script(f"return document.getElementById('{element_id}').innerText")).strip()


def _js(d: Any, expr: str) -> Any:
    return d.execute_script(f"return {expr}")


def test_review_a_slide_in_the_browser(server: tuple[str, Path], browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    from marrowscope.io.annotations.dicom_ann import read_dicom_ann
    from marrowscope.io.annotations.geojson import read_geojson

    url, out = server
    d = browser
    d.get(url)
    link = _wait(lambda: d.find_elements(By.CSS_SELECTOR, "#slides a"))
    assert "not reviewed" in _text(d, "slides")
    link[0].click()
    _wait(lambda: d.execute_script("return document.body.dataset.ready") == "1")
    body = d.find_element(By.TAG_NAME, "body")
    # the queue starts on a predicted blast; reclassify it as a lymphocyte with its key
    sel = _js(d, "window.__marrowscope.sel")
    cell = _js(d, f"window.__marrowscope.cells.get({sel})")
    assert cell["label"] == "myeloblast" and cell["state"] == "pending"
    key = _js(d, "window.__marrowscope.slide.classes.find(c => c.label === 'lymphocyte').key")
    blast_before = _text(d, "blast-pct")
    n_blasts = _js(d, "window.__marrowscope.tally.blast.count")
    body.send_keys(key)
    _wait(lambda: _text(d, "blast-pct") != blast_before)
    assert _js(d, "window.__marrowscope.tally.blast.count") == n_blasts - 1
    assert _js(d, f"window.__marrowscope.cells.get({sel}).label") == "lymphocyte"
    assert _js(d, "window.__marrowscope.sel") != sel  # went on to the next cell of the queue
    # undo and redo from the keyboard
    body.send_keys(Keys.CONTROL, "z")
    _wait(lambda: _js(d, f"window.__marrowscope.cells.get({sel}).label") == "myeloblast")
    _wait(lambda: _text(d, "blast-pct") == blast_before)
    body.send_keys(Keys.CONTROL, "y")
    _wait(lambda: _js(d, f"window.__marrowscope.cells.get({sel}).label") == "lymphocyte")
    # walk on (undo/redo selected the cell again) and accept the next cell with Enter
    assert _js(d, "window.__marrowscope.sel") == sel
    body.send_keys(Keys.ARROW_RIGHT)
    nxt = _js(d, "window.__marrowscope.sel")
    assert nxt != sel and _js(d, f"window.__marrowscope.cells.get({nxt}).state") == "pending"
    body.send_keys(Keys.ENTER)
    _wait(lambda: _js(d, f"window.__marrowscope.cells.get({nxt}).state") == "accepted")
    # add a missed cell: b, drag a box on the viewer, a class key
    n_cells = _js(d, "window.__marrowscope.cells.size")
    body.send_keys("b")
    canvas = d.find_element(By.ID, "overlay")
    ActionChains(d).move_to_element_with_offset(canvas, -40, -40).click_and_hold().move_by_offset(
        60, 60
    ).release().perform()
    _wait(lambda: _js(d, "window.__marrowscope.pendingBox !== null"))
    body.send_keys(
        _js(d, "window.__marrowscope.slide.classes.find(c => c.label === 'segmented_neutrophil').key")
    )
    _wait(lambda: _js(d, "window.__marrowscope.cells.size") == n_cells + 1)
    added = _js(d, "[...window.__marrowscope.cells.values()].find(c => c.added)")
    assert added["label"] == "segmented_neutrophil" and added["box"][2] > added["box"][0]
    shot = tmp_path / "slide.png"
    d.save_screenshot(str(shot))
    assert shot.stat().st_size > 20_000
    # reload: every edit is still there
    blast_after = _text(d, "blast-pct")
    _open_slide(d)
    body = d.find_element(By.TAG_NAME, "body")
    assert _js(d, f"window.__marrowscope.cells.get({sel}).label") == "lymphocyte"
    assert _js(d, f"window.__marrowscope.cells.get({sel}).state") == "reclassified"
    assert _js(d, f"window.__marrowscope.cells.get({nxt}).state") == "accepted"
    assert _js(d, f"window.__marrowscope.cells.get({added['id']}).label") == "segmented_neutrophil"
    assert _text(d, "blast-pct") == blast_after
    assert _text(d, "status") == "in review"
    # validate (confirm dialog), then the slide is locked
    d.find_element(By.ID, "validate").click()
    _wait(lambda: d.switch_to.alert).accept()
    _wait(lambda: _text(d, "status") == "validated", timeout=60)
    assert "Dr Browser" in _text(d, "message")
    body.send_keys(key)
    _wait(lambda: "locked" in _text(d, "message"))
    # the correction is in the exports
    folder = out / "marrowscope-review" / DICOM_KEY
    gj = {c.row_id: c for c in read_geojson(folder / "cells_reviewed.geojson").cells}
    assert gj[sel].label == "lymphocyte" and gj[added["id"]].label == "segmented_neutrophil"
    ann = read_dicom_ann(folder / "reviewed.dcm").annotations.cells
    box = tuple(round(v) for v in cell["box"])
    assert [c.label for c in ann if tuple(round(v) for v in c.box.as_tuple()) == box] == ["lymphocyte"]
    d.get(url)
    _wait(lambda: "validated" in _text(d, "slides"))
