"""Real-size synthetic slides: the streamed DICOM writer, the tile-by-tile smear, --regions auto|annotated."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from marrowscope.data.synth.cohort import SynthConfig, generate_cohort
from marrowscope.io.slides import open_slide
from marrowscope.io.slides.dicom_writer import write_dicom_wsi, write_dicom_wsi_tiles


def test_streamed_writer_asks_each_tile_once_and_equals_the_array_writer(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    img = (rng.integers(0, 256, (700, 1100, 3)) // 32 * 32).astype(np.uint8)  # 6 x 9 tiles of 128
    asked: list[tuple[int, int, int, int]] = []

    def read(x: int, y: int, w: int, h: int) -> np.ndarray:
        asked.append((x, y, w, h))
        return img[y : y + h, x : x + w]

    kw = dict(mpp=0.25, slide_id="s", patient_id="p", tile_size=128, n_levels=3)
    a = write_dicom_wsi(img, tmp_path / "a", **kw)  # type: ignore[arg-type]
    b = write_dicom_wsi_tiles(read, 1100, 700, tmp_path / "b", **kw)  # type: ignore[arg-type]
    assert len(asked) == len(set(asked)) and all(w <= 128 and h <= 128 for _, _, w, h in asked)
    grid = {(x, y) for x in range(0, 1100, 128) for y in range(0, 700, 128)}
    assert {(x, y) for x, y, _, _ in asked} == grid
    assert (a.width, a.height) == (b.width, b.height) == (1104, 704)  # padded to a multiple of 4 ** 2
    with open_slide(a.folder) as sa, open_slide(b.folder) as sb:
        dims = [(lv.width, lv.height) for lv in sa.info.levels]
        assert dims == [(lv.width, lv.height) for lv in sb.info.levels] and len(dims) == 3
        for level, (w, h) in enumerate(dims):
            ra = sa.read_region(0, 0, w, h, level)
            rb = sb.read_region(0, 0, w, h, level)
            assert np.array_equal(ra, rb), f"level {level} differs"


@pytest.fixture(scope="module")
def big_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("big") / "cohort"
    cfg = SynthConfig(n_patients=1, seed=4, slide_size=4096, slide_height=2048, roi_size=256, n_rois=2,
                      cells_per_roi=25, stream=True, kind_weights={"roi_only": 1.0})
    generate_cohort(cfg, out)
    return out


def test_streamed_smear_has_band_zones_glass_and_rois(big_cohort: Path) -> None:
    from marrowscope.io.cohort import discover_cohort, load_patient_annotations

    (entry,) = discover_cohort(big_cohort).patients
    rois = load_patient_annotations(entry, "roi").regions
    assert len(rois) == 2 and all(r.box.width == r.box.height == 256 for r in rois)
    with open_slide([Path(f) for f in entry.slide_files]) as s:
        assert (s.info.width, s.info.height) == (4096, 2048)
        assert len(s.info.levels) >= 3
        glass = s.read_region(0, 0, 256, 256).astype(float)  # corner: bare glass
        band = s.read_region(2048, 1024 - 128, 256, 256).astype(float)  # band middle: monolayer
        thick = s.read_region(int(4096 * 0.1), 1024 - 128, 256, 256).astype(float)
        thin = s.read_region(int(4096 * 0.9), 1024 - 128, 256, 256).astype(float)
    assert glass.mean() > 225 and glass.std() < 6
    assert thick.mean() < band.mean() < thin.mean() < glass.mean()  # denser to the thick end
    for r in rois:  # ROIs lie in the monolayer part of the band
        assert r.box.x1 > 0.22 * 4096 and r.box.x2 < 0.8 * 4096 and 0.3 * 2048 < r.box.y1 < 0.7 * 2048


def test_regions_auto_ignores_rois_annotated_uses_them(big_cohort: Path, tmp_path: Path) -> None:
    import sys
    from dataclasses import replace

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from marrowscope.engines.batch import analyze_batch
    from marrowscope.engines.pipeline import AnalysisConfig
    from pipeline_stubs import stub_models

    cfg = AnalysisConfig(target_cells=15, tta=1)
    a = analyze_batch([big_cohort], tmp_path / "a", cfg, models=stub_models(), progress=False)
    auto = analyze_batch([big_cohort], tmp_path / "b", replace(cfg, use_annotated_rois=False),
                         models=stub_models(), progress=False)
    assert a.slides[0].status == auto.slides[0].status == "done"
    assert (a.slides[0].rois_from or "").startswith("DICOM ANN ROI series")
    assert auto.slides[0].rois_from == "automatic monolayer fields"
    import json

    regs = json.loads((Path(auto.slides[0].folder or "") / "summary.json").read_text())["regions"]
    assert regs and all(r["source"] == "auto field" for r in regs)


def test_cli_size_and_regions_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from marrowscope.cli.main import main

    assert main(["synth", "--out", str(tmp_path / "c"), "--slide-size", "10x"]) == 2
    assert "WIDTHxHEIGHT" in capsys.readouterr().err
    assert main(["analyze", str(tmp_path), "--out", str(tmp_path / "o"), "--regions", "some"]) == 2
    assert "must be 'annotated' or 'auto'" in capsys.readouterr().err
    assert not (tmp_path / "c").exists() and not (tmp_path / "o").exists()
