"""ROI patch cache: built once, read instead of the slides, same pixels and boxes as the slide path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from marrowscope import taxonomy
from marrowscope.data.augment import rescale
from marrowscope.data.classification_datasets import load_slide_dataset
from marrowscope.data.detection_datasets import cohort_samples
from marrowscope.data.patches import INDEX, PatchStore, build_roi_cache
from marrowscope.errors import InputError
from marrowscope.io.cohort import discover_cohort


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from marrowscope.data.synth.cohort import SynthConfig, generate_cohort

    out = tmp_path_factory.mktemp("patches") / "cohort"
    generate_cohort(
        SynthConfig(n_patients=2, seed=9, slide_size=1024, roi_size=384, n_rois=2, cells_per_roi=20), out
    )
    return out


def test_cache_is_built_once_and_matches_the_slides(cohort: Path, tmp_path: Path) -> None:
    entries = discover_cohort(cohort).patients
    store = build_roi_cache(entries, tmp_path / "p", mpps=(0.25, 0.45), context_um=10.0)
    assert len(store) == 2 * 2 * 2  # patients x ROIs x scales
    files = sorted(p.name for p in (tmp_path / "p").iterdir())
    again = build_roi_cache(entries, tmp_path / "p", mpps=(0.25, 0.45), context_um=10.0)
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == files and len(again) == len(store)
    for e in store.entries.values():
        arr = store.read(e)
        assert arr.shape == (e.height, e.width, 3) and arr.dtype == np.uint8
        assert e.origin[0] <= e.roi[0] and e.origin[1] <= e.roi[1]  # the margin lies around the ROI

    slide = cohort_samples(cohort, ("cell",))
    cached = cohort_samples(cohort, ("cell",), cache=store, cache_mpp=0.25, cache_context_um=10.0)
    assert [s.image_id for s in slide] == [s.image_id for s in cached]
    for a, b in zip(slide, cached, strict=True):
        assert b.mpp == 0.25 and b.loader is not None
        img_a, boxes_a = rescale(a.load(), a.annotations.boxes_array().reshape(-1, 4), a.mpp / 0.25)
        img_b = b.load()
        assert abs(img_a.shape[0] - img_b.shape[0]) <= 1 and abs(img_a.shape[1] - img_b.shape[1]) <= 1
        h, w = min(img_a.shape[0], img_b.shape[0]), min(img_a.shape[1], img_b.shape[1])
        assert np.abs(img_a[:h, :w].astype(int) - img_b[:h, :w]).mean() < 4  # two resampling paths
        assert np.abs(boxes_a - b.annotations.boxes_array().reshape(-1, 4)).max() < 1.0

    sch = taxonomy.load_scheme("bmdeep33")
    before = store.bytes_read
    d_slide, _ = load_slide_dataset("cohort", cohort, sch.classes, mpp=0.45, size=48, scheme=sch)
    d_cache, _ = load_slide_dataset("cohort", cohort, sch.classes, mpp=0.45, size=48, scheme=sch, cache=store)
    assert d_slide.ids == d_cache.ids and store.bytes_read > before
    # both crop paths resample (the slide's: from its 0.44 µm/px level; the cache's: from the 0.45 µm/px
    # patch); against crops resampled straight from level 0, the cache's are no further off
    ref = _level0_crops(entries, d_cache.ids, mpp=0.45, size=48)
    err_cache = np.abs(d_cache.images.astype(int) - ref)[:, 8:40, 8:40].mean()
    err_slide = np.abs(d_slide.images.astype(int) - ref)[:, 8:40, 8:40].mean()
    assert err_cache < 12 and err_cache <= err_slide + 0.5, (err_cache, err_slide)
    for e in store.find(mpp=0.45):  # resampled patches start on the pixel grid of the level read
        assert e.origin[0] % 4 == 0 and e.origin[1] % 4 == 0


def _level0_crops(entries: list, ids: tuple[str, ...], *, mpp: float, size: int) -> np.ndarray:
    from marrowscope.data.crops import crop_box
    from marrowscope.io.cohort import load_patient_annotations
    from marrowscope.io.slides import open_slide
    from marrowscope.io.slides.array import ArraySlide

    out = {}
    for e in entries:
        with open_slide([Path(f) for f in e.slide_files]) as s:
            level0 = ArraySlide(s.read_region(0, 0, s.info.width, s.info.height, level=0), mpp=s.info.mpp,
                                levels=1)
        for c in load_patient_annotations(e, "consensus").cells:
            out[f"{e.patient_id}/{c.cell_id}"] = crop_box(level0, c.box, mpp=mpp, size=size)
    return np.stack([out[k] for k in ids]).astype(int)


def test_cache_lists_only_complete_patches(cohort: Path, tmp_path: Path) -> None:
    entries = discover_cohort(cohort).patients[:1]
    store = build_roi_cache(entries, tmp_path / "p", mpps=(0.45,))
    victim = next(iter(store.entries.values()))
    (tmp_path / "p" / victim.file).unlink()  # e.g. a build killed before the patch was renamed into place
    (tmp_path / "p" / ".half.npy.part").write_bytes(b"\x93NUMPY")
    assert victim.key not in PatchStore(tmp_path / "p")
    rebuilt = build_roi_cache(entries, tmp_path / "p", mpps=(0.45,))
    assert victim.key in rebuilt and len(rebuilt) == len(store)
    index = json.loads((tmp_path / "p" / INDEX).read_text())
    assert {r["key"] for r in index["patches"]} == set(rebuilt.entries)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * float(np.log10(255.0**2 / mse))


def test_codecs_are_compressed_and_keep_the_pixels(cohort: Path, tmp_path: Path) -> None:
    from marrowscope.io.slides import open_slide

    entries = discover_cohort(cohort).patients[:1]
    lossy = build_roi_cache(entries, tmp_path / "w", mpps=(0.25,), context_um=10.0)  # default: webp90
    exact = build_roi_cache(entries, tmp_path / "p", mpps=(0.25,), context_um=10.0, codec="png")
    assert {e.codec for e in lossy.entries.values()} == {"webp90"}
    with open_slide([Path(f) for f in entries[0].slide_files]) as slide:
        for store, min_psnr in ((lossy, 35.0), (exact, float("inf"))):
            for e in store.entries.values():
                direct = slide.read_region_mpp(*e.origin, e.width * e.scale, e.height * e.scale, e.mpp)
                got = store.read(e)
                assert got.shape == direct.shape and got.dtype == np.uint8
                assert _psnr(direct, got) >= min_psnr
                assert e.nbytes == (tmp_path / store.root.name / e.file).stat().st_size
                if store is lossy:  # compressed well below the raw array
                    assert e.nbytes * 5 < got.nbytes
    # the same ROI in another codec is another patch; lookup finds either
    e = next(iter(exact.entries.values()))
    assert e.key not in lossy and exact.lookup(e.source, e.roi, e.mpp, 10.0) == e
    with pytest.raises(InputError, match="codec"):
        build_roi_cache(entries, tmp_path / "x", mpps=(0.25,), codec="gif")


def test_version_1_caches_of_raw_arrays_are_still_read(tmp_path: Path) -> None:
    arr = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    np.save(tmp_path / "k1.npy", arr)
    row = {"key": "k1", "patient_id": "P", "slide_id": "S", "roi": [0, 0, 5, 4], "origin": [0, 0],
           "mpp": 0.25, "level0_mpp": 0.25, "width": 5, "height": 4, "file": "k1.npy", "nbytes": 188,
           "source": "x"}
    (tmp_path / INDEX).write_text(json.dumps({"version": 1, "patches": [row]}))
    store = PatchStore(tmp_path)
    assert store.entries["k1"].codec == "npy"
    assert np.array_equal(store.read("k1"), arr) and store.bytes_read == (tmp_path / "k1.npy").stat().st_size
    (tmp_path / INDEX).write_text(json.dumps({"version": 99, "patches": []}))
    with pytest.raises(InputError, match="version 99"):
        PatchStore(tmp_path)


def test_rois_only_reads_no_slide_and_counts_the_cells_outside(
    cohort: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from marrowscope.io.cohort import load_patient_annotations

    entries = discover_cohort(cohort).patients
    store = build_roi_cache(entries, tmp_path / "p", mpps=(0.45,), context_um=10.0)
    sch = taxonomy.load_scheme("bmdeep33")
    full, _ = load_slide_dataset("cohort", cohort, sch.classes, mpp=0.45, size=48, scheme=sch, cache=store)

    def no_slide(*_a: object, **_k: object) -> None:
        raise AssertionError("a slide was opened")

    monkeypatch.setattr("marrowscope.io.slides.open_slide", no_slide)
    roi, skipped = load_slide_dataset("cohort", cohort, sch.classes, mpp=0.45, size=48, scheme=sch,
                                      cache=store, rois_only=True)
    outside = 0
    for e in entries:
        ann = load_patient_annotations(e, "consensus")
        regions = load_patient_annotations(e, "roi").regions
        for c in ann.cells:
            cx, cy = c.box.center
            inside = any(r.box.x1 <= cx < r.box.x2 and r.box.y1 <= cy < r.box.y2 for r in regions)
            outside += c.label not in (None, "no_consensus_found") and not inside
    assert outside > 0  # the synthetic cohort has labelled cells outside its ROIs
    assert skipped.get("(outside the cached ROIs)", 0) == outside == len(full) - len(roi)
    pos = {k: i for i, k in enumerate(full.ids)}
    assert np.array_equal(full.images[[pos[k] for k in roi.ids]], roi.images)
