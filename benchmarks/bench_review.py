"""Speed of the review app on a ~700-cell DICOM slide: tiles, edit → tally, gallery, keyboard queue walk.

Serves an ``analyze`` output folder (default: ``marrowscope demo`` written into a temporary folder: an
8192 px DICOM slide with 695 objects) with the real uvicorn server on 127.0.0.1, then measures

* DeepZoom tile requests over HTTP, cold (each tile read from the DICOM slide for the first time) and
  warm (served from the cache), on the zoom levels a reviewer uses;
* edit → updated tally over HTTP (PATCH with a new label; the answer carries the recomputed tally with
  the diagnosis suggestion and rule baseline);
* in headless Chromium (Selenium): page ready (slide, cells, queue, tally), the gallery of every cell
  (click on the tab → all crops in view loaded), and the whole review queue walked with the keyboard alone
  (Enter = accept, one key per cell), with the browser-side time from key to tally shown for each edit.

Run: .venv/bin/python benchmarks/bench_review.py [--out OUT] [--cores 2] [--json results.json]
         [--screenshot docs/review-screenshot.png]
Prints one JSON object (also written to --json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def _pct(values: list[float], q: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, max(0, round(q * (len(v) - 1))))]


def _stats(ms: list[float]) -> dict[str, float]:
    return {
        "n": len(ms),
        "p50_ms": round(statistics.median(ms), 1),
        "p95_ms": round(_pct(ms, 0.95), 1),
        "max_ms": round(max(ms), 1),
    }


@dataclass
class Served:
    """``marrowscope review OUT`` running in its own process, and a service over the same folder here."""

    url: str
    token: str
    service: Any
    proc: subprocess.Popen[str]


def _serve(out: Path, cores: list[int]) -> Served:
    from marrowscope.review.service import ReviewService

    cmd = [
        sys.executable,
        "-m",
        "marrowscope.cli.main",
        "review",
        str(out),
        "--port",
        "0",
        "--reviewer",
        "bench",
    ]
    if shutil.which("taskset"):
        cmd = ["taskset", "-c", ",".join(map(str, cores)), *cmd]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("open http"):
            url = line.split()[1]
            break
    else:
        raise RuntimeError("the review server did not start")
    token = url.split("token=")[1]
    return Served(url, token, ReviewService(out, "bench-local"), proc)


def bench_http(rs: Any, key: str, n_tiles: int, n_edits: int, seed: int) -> dict[str, Any]:
    import httpx

    base = rs.url.split("/?")[0]
    c = httpx.Client(base_url=base, timeout=60)
    for _ in range(600):  # the server loads the cell table and the diagnosis model at start
        if c.get(f"/api/slides/{key}/differential").status_code == 200:
            break
        time.sleep(0.1)
    dzi = c.get(f"/slides/{key}/tiles/slide.dzi")
    assert dzi.status_code == 200
    src = rs.service.tiles(key)
    top = src.dz.level_count - 1
    rng = random.Random(seed)
    tiles = []
    for level in range(top - 4, top + 1):  # from the whole-slide view down to full resolution
        cols, rows = src.dz.level_tiles[level]
        for col in range(cols):
            for row in range(rows):
                tiles.append((level, col, row))
    rng.shuffle(tiles)
    tiles = tiles[:n_tiles]
    cold, warm = [], []
    for level, col, row in tiles:
        t0 = time.perf_counter()
        r = c.get(f"/slides/{key}/tiles/slide_files/{level}/{col}_{row}.jpeg")
        cold.append(1000 * (time.perf_counter() - t0))
        assert r.status_code == 200
    for level, col, row in tiles:
        t0 = time.perf_counter()
        c.get(f"/slides/{key}/tiles/slide_files/{level}/{col}_{row}.jpeg")
        warm.append(1000 * (time.perf_counter() - t0))
    cells = c.get(f"/api/slides/{key}/cells").json()["cells"]
    labels = [x["label"] for x in c.get(f"/api/slides/{key}").json()["classes"]]
    edits = []
    h = {"X-Token": rs.token}
    sample = rng.sample(cells, n_edits)
    for x in sample:
        new = rng.choice([lab for lab in labels if lab != x["label"]])
        t0 = time.perf_counter()
        r = c.patch(f"/api/slides/{key}/cells/{x['id']}", json={"label": new}, headers=h)
        edits.append(1000 * (time.perf_counter() - t0))
        assert r.status_code == 200 and r.json()["tally"]["n_counted"] > 0
    for x in sample:  # back to the model's labels for the browser part
        c.patch(f"/api/slides/{key}/cells/{x['id']}", json={"action": "reset"}, headers=h)
    levels = sorted({t[0] for t in tiles})
    return {
        "tiles_cold": _stats(cold),
        "tiles_warm": _stats(warm),
        "tile_levels": levels,
        "edit_to_tally_http": _stats(edits),
        "n_cells": len(cells),
    }


def bench_in_process(rs: Any, key: str, n_tiles: int, n_edits: int, seed: int) -> dict[str, Any]:
    """The same work without HTTP: a fresh tile source (cold cache) and service edits, timed in process."""
    from marrowscope.review.tiles import open_tile_source

    rs.service.warm_up()  # this process's own service: load the cell table and the diagnosis model first
    s = rs.service.catalog.get(key).summary["slide"]
    src = open_tile_source(s["path"], mpp=s.get("mpp"))
    top = src.dz.level_count - 1
    rng = random.Random(seed + 1)
    tiles = [
        (lv, c, r)
        for lv in range(top - 4, top + 1)
        for c in range(src.dz.level_tiles[lv][0])
        for r in range(src.dz.level_tiles[lv][1])
    ]
    rng.shuffle(tiles)
    cold = []
    for lv, c, r in tiles[:n_tiles]:
        t0 = time.perf_counter()
        src.tile(lv, c, r)
        cold.append(1000 * (time.perf_counter() - t0))
    src.close()
    svc = rs.service
    cells = svc.cells(key)["cells"]
    labels = [c["label"] for c in svc.slide(key)["classes"]]
    edits = []
    sample = rng.sample(cells, n_edits)
    for x in sample:
        new = rng.choice([lab for lab in labels if lab != x["label"]])
        t0 = time.perf_counter()
        svc.edit(key, x["id"], {"label": new})
        edits.append(1000 * (time.perf_counter() - t0))
    for x in sample:
        svc.edit(key, x["id"], {"action": "reset"})
    return {"tiles_cold": _stats(cold), "edit_to_tally": _stats(edits)}


def bench_browser(rs: Any, key: str, screenshot: Path | None, walk: int | None) -> dict[str, Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    o = Options()
    o.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for a in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1500,1000",
    ):
        o.add_argument(a)
    d = webdriver.Chrome(service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"), options=o)
    res: dict[str, Any] = {}
    try:
        url = rs.url.replace("/?", f"/slide/{key}?")
        d.get(url)
        t0 = time.monotonic()
        while d.execute_script("return document.body.dataset.ready") != "1":
            time.sleep(0.02)
        res["page_ready_ms"] = round(d.execute_script("return window.__marrowscope.timing.ready"), 1)
        time.sleep(2)  # let the first tiles arrive
        # overlay: one redraw of every box in view (whole slide in view: all of them), real and 10 000 boxes
        real, many = d.execute_script("""
            const S = window.__marrowscope;
            const t = (n) => { const t0 = performance.now(); for (let i = 0; i < n; i++) S.redraw();
                               return (performance.now() - t0) / n; };
            const real = t(50);
            const saved = S.cells, big = new Map(saved), W = S.slide.width, H = S.slide.height;
            for (let i = 0; i < 10000; i++) {
              const x = Math.random() * (W - 120), y = Math.random() * (H - 120), id = 1e7 + i;
              big.set(id, {id, box: [x, y, x + 120, y + 120], label: "lymphocyte", state: "pending"});
            }
            S.cells = big;
            const many = t(20);
            S.cells = saved;
            S.redraw();
            return [real, many];
        """)
        res["overlay_redraw_ms"] = {"cells": round(real, 2), "10000_boxes": round(many, 2)}
        # gallery: click the tab -> every crop in view loaded
        d.set_script_timeout(60)
        ms = d.execute_async_script("""
            const done = arguments[arguments.length - 1];
            const t0 = performance.now();
            document.querySelector('.tabs button[data-tab=gallery]').click();
            const g = document.getElementById('gallery');
            const box = g.getBoundingClientRect();
            function check() {
              const imgs = [...g.querySelectorAll('img')].filter((i) => {
                const r = i.getBoundingClientRect(); return r.bottom > box.top && r.top < box.bottom; });
              if (imgs.length && imgs.every((i) => i.complete && i.naturalWidth > 0)) {
                done([performance.now() - t0, window.__marrowscope.timing.galleryMs, imgs.length,
                      g.querySelectorAll('figure').length]);
              } else setTimeout(check, 10);
            }
            check();
        """)
        res["gallery"] = {
            "click_to_crops_in_view_loaded_ms": round(ms[0], 1),
            "dom_build_ms": round(ms[1], 1),
            "crops_in_view": ms[2],
            "cells_in_gallery": ms[3],
        }
        d.find_element(By.CSS_SELECTOR, ".tabs button[data-tab=queue]").click()
        # keyboard-only walk of the whole queue: Enter accepts and moves on; a cell the classifier abstained
        # on gets the first class key instead (the page refuses to accept a missing label)
        print(json.dumps(res), file=sys.stderr, flush=True)
        n_queue = d.execute_script("return window.__marrowscope.queue.length")
        n_queue = n_queue if walk is None else min(walk, n_queue)
        first_key = d.execute_script("return window.__marrowscope.slide.classes[0].key")
        d.execute_script("window.__marrowscope.timing.edits = []")
        body = d.find_element(By.TAG_NAME, "body")
        t0 = time.monotonic()
        for _ in range(n_queue):
            done, label = d.execute_script(
                "const S = window.__marrowscope; return [S.timing.keysDone, S.cells.get(S.sel).label]"
            )
            body.send_keys(Keys.ENTER if label is not None else first_key)
            while d.execute_script("return window.__marrowscope.timing.keysDone") == done:
                time.sleep(0.005)
        walk_s = time.monotonic() - t0
        edits = d.execute_script("return window.__marrowscope.timing.edits")
        states = d.execute_script(
            "const S = window.__marrowscope; "
            f"return S.queue.slice(0, {n_queue}).map((id) => S.cells.get(id).state)"
        )
        res["queue_walk"] = {
            "cells": n_queue,
            "seconds": round(walk_s, 1),
            "accepted": sum(s in ("accepted", "reclassified") for s in states),
            "key_to_tally_shown": _stats(edits),
        }
        if screenshot is not None:
            _screenshot(d, rs, key, url, screenshot)
        res["browser_wall_s"] = round(time.monotonic() - t0, 1)
    finally:
        d.quit()
    return res


def _screenshot(d: Any, rs: Any, key: str, url: str, path: Path) -> None:
    """The slide page after a few edits, zoomed in on the selected cell, for docs/review.md."""
    import httpx
    from selenium.webdriver.common.by import By

    c = httpx.Client(base_url=rs.url.split("/?")[0], timeout=60)
    h = {"X-Token": rs.token}
    cells = c.get(f"/api/slides/{key}/cells").json()
    for x in cells["cells"]:
        if x["state"] != "pending":
            c.patch(f"/api/slides/{key}/cells/{x['id']}", json={"action": "reset"}, headers=h)
    q = [x["id"] for x in cells["queue"]]
    for cid in q[:6]:
        c.patch(f"/api/slides/{key}/cells/{cid}", json={"action": "accept"}, headers=h)
    c.patch(f"/api/slides/{key}/cells/{q[6]}", json={"label": "lymphocyte"}, headers=h)
    d.get(url)
    while d.execute_script("return document.body.dataset.ready") != "1":
        time.sleep(0.05)
    d.execute_script(f"document.querySelector('#queue [data-id=\"{q[7]}\"]').click()")
    time.sleep(4)
    d.find_element(By.CSS_SELECTOR, ".tabs button[data-tab=gallery]").click()
    time.sleep(3)
    d.find_element(By.CSS_SELECTOR, ".tabs button[data-tab=queue]").click()
    time.sleep(1)
    path.parent.mkdir(parents=True, exist_ok=True)
    d.save_screenshot(str(path))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None, help="an analyze output folder (default: run the demo)")
    ap.add_argument("--cores", type=int, default=2, help="CPU cores the server process may use")
    ap.add_argument("--tiles", type=int, default=300)
    ap.add_argument("--edits", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-browser", action="store_true")
    ap.add_argument(
        "--walk", type=int, default=None, help="queue cells to walk with the keyboard (default: all)"
    )
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--screenshot", type=Path, default=None)
    args = ap.parse_args()
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a timeout still closes the browser

    cpus = [0, 1]
    if hasattr(os, "sched_setaffinity"):
        cpus = sorted(os.sched_getaffinity(0))[: args.cores]
        os.sched_setaffinity(0, cpus)
    import torch

    torch.set_num_threads(args.cores)
    load0 = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="bench_review_"))
    try:
        out = args.out
        t_demo = None
        if out is None:
            from marrowscope.engines.demo import run_demo

            t0 = time.monotonic()
            run_demo(work / "demo", progress=False)
            t_demo = round(time.monotonic() - t0, 1)
            out = work / "demo"
        else:
            out = Path(
                shutil.copytree(out, work / "out", ignore=shutil.ignore_patterns("marrowscope-review"))
            )
        rs = _serve(out, cpus)
        dicom = [k for k, e in rs.service.catalog.entries.items() if e.summary["slide"]["format"] == "dicom"]
        key = dicom[0] if dicom else rs.service.catalog.keys[0]
        result: dict[str, Any] = {
            "slide": key,
            "format": rs.service.catalog.get(key).summary["slide"]["format"],
            "demo_seconds": t_demo,
        }
        try:
            result["in_process"] = bench_in_process(rs, key, args.tiles, args.edits, args.seed)
            result.update(bench_http(rs, key, args.tiles, args.edits, args.seed))
            print(json.dumps(result), file=sys.stderr, flush=True)  # partial results as they come
            if not args.no_browser:
                result["browser"] = bench_browser(rs, key, args.screenshot, args.walk)
        finally:
            rs.proc.terminate()
            rs.proc.wait(timeout=30)
        result["machine"] = {
            "cpus_used": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "loadavg_start": [round(x, 2) for x in load0],
            "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        }
        text = json.dumps(result, indent=2)
        print(text)
        if args.json is not None:
            args.json.write_text(text + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
