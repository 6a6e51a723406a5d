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
    assert np.abs(d_slide.images.astype(int) - d_cache.images).mean() < 4


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
