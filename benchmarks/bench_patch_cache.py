"""Bytes read (and seconds) per training epoch: ROI patch cache vs reading the ROIs from the slides.

An "epoch" is what a training stage reads when its data does not stay in memory:
- detector: every ROI once at the detector's scale (0.25 µm/px);
- classifier: an 80 px crop at 0.45 µm/px around every labelled cell (the cache: every labelled cell
  inside an ROI, as ``reproduce`` trains; the slide loader also crops the few labelled cells outside).

Slide side, counted as the bytes of the JPEG frames the DICOM reader fetches from the files (every
``WsiDicomReader.read_frame``: the tiles' byte ranges, whatever the page cache holds), for
- the loaders the stages use without a cache (``cohort_samples``: each ROI at level 0;
  ``crops_from_slide``: each crop from the finest level not finer than needed, here level 1 at
  0.44 µm/px, with wsidicom's frame cache per open slide), and
- the alternative the cache replaces: each ROI + ``--context-um`` read at level 0 (tile-aligned: the
  whole frames under it).
Cache side: the patch file bytes read (``PatchStore.bytes_read``), the cache built as ``reproduce``
builds it (detector ROIs at 0.25 µm/px without a margin, classifier ROIs at 0.45 µm/px with the
margin), once per codec in ``--codecs``. Both sides also report ``rchar`` of ``/proc/self/io`` (every
byte read through read(), headers, CSVs and page-cache hits included). Fidelity: PSNR and the largest
channel difference of every patch against the direct read it encodes, and the classifier crops from the
cache against those from the slides (two resampling paths: level 1 vs the 0.45 µm/px patch).

Run: nice -n 10 .venv/bin/python benchmarks/bench_patch_cache.py [--patients 4] [--json-out FILE]
Without --cohort it writes a synthetic cohort like the real data (2048 px ROIs at 0.11 µm/px, JPEG q90
4:2:2 frames of 1024 px, pyramid downsample 4).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def rchar() -> int:
    with open("/proc/self/io") as f:
        for line in f:
            if line.startswith("rchar"):
                return int(line.split()[1])
    raise RuntimeError("no rchar in /proc/self/io")


class FrameTally:
    """Counts the bytes of the frames wsidicom reads from DICOM files (patches its reader's method)."""

    def __init__(self) -> None:
        from wsidicom.file.io.wsidicom_reader import WsiDicomReader

        self.bytes = 0
        self.frames = 0
        orig = WsiDicomReader.read_frame

        def read_frame(reader: Any, index: int) -> bytes:
            data = orig(reader, index)
            self.bytes += len(data)
            self.frames += 1
            return data

        WsiDicomReader.read_frame = read_frame  # type: ignore[method-assign]

    def reset(self) -> None:
        self.bytes = self.frames = 0


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--cohort", type=Path, default=None)
    ap.add_argument("--patients", type=int, default=4)
    ap.add_argument("--slide-size", type=int, default=6144)
    ap.add_argument("--tile-size", type=int, default=1024)
    ap.add_argument("--cells-per-roi", type=int, default=120)
    ap.add_argument("--context-um", type=float, default=25.0)
    ap.add_argument("--codecs", default="webp90,jpeg90,jpeg95,png")
    ap.add_argument("--json-out", type=Path, default=None)
    args = ap.parse_args()

    from marrowscope import taxonomy
    from marrowscope.data.classification_datasets import load_slide_dataset
    from marrowscope.data.detection_datasets import cohort_samples
    from marrowscope.data.patches import _rois_of, build_roi_cache, cache_summary
    from marrowscope.io.cohort import discover_cohort
    from marrowscope.io.slides import open_slide

    det_mpp, clf_mpp, ctx = 0.25, 0.45, args.context_um
    tmp = Path(tempfile.mkdtemp(prefix="bench_patch_"))
    cohort = args.cohort
    if cohort is None:
        from marrowscope.data.synth.cohort import SynthConfig, generate_cohort

        cohort = tmp / "cohort"
        generate_cohort(
            SynthConfig(
                n_patients=args.patients,
                seed=11,
                slide_size=args.slide_size,
                roi_size=2048,
                n_rois=2,
                cells_per_roi=args.cells_per_roi,
                tile_size=args.tile_size,
            ),
            cohort,
        )
    sch = taxonomy.load_scheme("bmdeep33")
    entries = discover_cohort(cohort).patients
    tally = FrameTally()

    def measure(fn: Any) -> dict[str, Any]:
        tally.reset()
        r0, t0 = rchar(), time.perf_counter()
        n = fn()
        return {"frame_bytes": tally.bytes, "frames": tally.frames, "rchar": rchar() - r0,
                "seconds": round(time.perf_counter() - t0, 3), "items": n}

    def det_epoch(cache: Any) -> int:
        kw: dict[str, Any] = {"cache": cache, "cache_mpp": det_mpp, "cache_context_um": 0.0} if cache else {}
        samples = cohort_samples(cohort, ("cell",), **kw)
        for s in samples:
            s.load()
        return len(samples)

    def clf_epoch(cache: Any) -> Any:
        data, _ = load_slide_dataset("cohort", cohort, sch.classes, mpp=clf_mpp, size=80, scheme=sch,
                                     cache=cache, rois_only=cache is not None)
        return data

    def level0_with_margin() -> int:
        n = 0
        for e in entries:
            with open_slide([Path(f) for f in e.slide_files]) as slide:
                m0 = ctx / float(slide.info.mpp or 0.11)
                for r in _rois_of(e):
                    b = r.box
                    x0, y0 = max(0, int(b.x1 - m0)), max(0, int(b.y1 - m0))
                    x1 = min(slide.info.width, int(np.ceil(b.x2 + m0)))
                    y1 = min(slide.info.height, int(np.ceil(b.y2 + m0)))
                    slide.read_region(x0, y0, x1 - x0, y1 - y0, level=0)
                    n += 1
        return n

    det_epoch(None)  # warm imports and the page cache, so both sides are measured warm
    slides = {"detector_loader": measure(lambda: det_epoch(None))}
    kept: dict[str, Any] = {}

    def clf_epoch_kept(cache: Any, name: str) -> int:
        kept[name] = clf_epoch(cache)
        return len(kept[name])

    slides["classifier_loader"] = measure(lambda: clf_epoch_kept(None, "slides"))
    slides["roi_plus_margin_level0"] = measure(level0_with_margin)

    caches: dict[str, Any] = {}
    for codec in [c for c in args.codecs.split(",") if c]:
        root = tmp / f"patches_{codec}"
        r0, t0 = rchar(), time.perf_counter()
        build_roi_cache(entries, root, mpps=(det_mpp,), context_um=0.0, codec=codec)
        store = build_roi_cache(entries, root, mpps=(clf_mpp,), context_um=ctx, codec=codec)
        build = {"seconds": round(time.perf_counter() - t0, 2), "rchar": rchar() - r0}
        # fidelity: each patch against the direct read it encodes
        worst_psnr, worst_diff = float("inf"), 0
        raw_bytes = 0
        for e in entries:
            with open_slide([Path(f) for f in e.slide_files]) as slide:
                for pe in store.find(slide_id=e.slide_id):
                    x0, y0 = pe.origin
                    w0, h0 = pe.width * pe.scale, pe.height * pe.scale
                    direct = np.asarray(slide.read_region_mpp(x0, y0, w0, h0, pe.mpp))[..., :3]
                    got = store.read(pe)
                    h, w = min(direct.shape[0], got.shape[0]), min(direct.shape[1], got.shape[1])
                    worst_psnr = min(worst_psnr, psnr(direct[:h, :w], got[:h, :w]))
                    worst_diff = max(worst_diff, int(np.abs(direct[:h, :w].astype(int) - got[:h, :w]).max()))
                    raw_bytes += direct.nbytes
        store.bytes_read = 0
        det = measure(lambda: det_epoch(store))  # noqa: B023 (called at once)
        det["patch_bytes"], store.bytes_read = store.bytes_read, 0
        clf = measure(lambda: clf_epoch_kept(store, codec))  # noqa: B023
        clf["patch_bytes"] = store.bytes_read
        common = {k: i for i, k in enumerate(kept["slides"].ids)}
        a = kept["slides"].images[[common[k] for k in kept[codec].ids]]
        b = kept[codec].images
        caches[codec] = {
            "build": build,
            "summary": dict(cache_summary(store)),
            "raw_bytes": raw_bytes,
            "fidelity": {"min_psnr_db": round(worst_psnr, 2), "max_abs_diff": worst_diff},
            "crops_vs_slide": {"psnr_db": round(psnr(a, b), 2),
                               "mean_abs_diff": round(float(np.abs(a.astype(int) - b).mean()), 2)},
            "detector_epoch": det,
            "classifier_epoch": clf,
        }
        caches[codec]["ratios"] = {
            "detector_vs_loader": round(slides["detector_loader"]["frame_bytes"] / det["patch_bytes"], 2),
            "detector_vs_level0_margin": round(
                slides["roi_plus_margin_level0"]["frame_bytes"] / det["patch_bytes"], 2),
            "classifier_vs_loader": round(slides["classifier_loader"]["frame_bytes"] / clf["patch_bytes"], 2),
            "classifier_vs_level0_margin": round(
                slides["roi_plus_margin_level0"]["frame_bytes"] / clf["patch_bytes"], 2),
            "both_vs_loaders": round(
                (slides["detector_loader"]["frame_bytes"] + slides["classifier_loader"]["frame_bytes"])
                / (det["patch_bytes"] + clf["patch_bytes"]), 2),
            "both_vs_level0_margin": round(
                2 * slides["roi_plus_margin_level0"]["frame_bytes"]
                / (det["patch_bytes"] + clf["patch_bytes"]), 2),
            "detector_time_vs_loader": round(slides["detector_loader"]["seconds"] / det["seconds"], 2),
            "classifier_time_vs_loader": round(slides["classifier_loader"]["seconds"] / clf["seconds"], 2),
        }
    out = {
        "command": "benchmarks/bench_patch_cache.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v is not None),
        "cohort": str(cohort),
        "slides": len(entries),
        "rois": sum(len(_rois_of(e)) for e in entries),
        "slide_file_bytes": sum(os.path.getsize(f) for e in entries for f in e.slide_files),
        "tile_size": args.tile_size,
        "context_um": ctx,
        "slides_epoch": slides,
        "cache": caches,
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "load_1min": round(os.getloadavg()[0], 2),
    }
    text = json.dumps(out, indent=1)
    print(text)
    if args.json_out is not None:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(text + "\n")


if __name__ == "__main__":
    main()
