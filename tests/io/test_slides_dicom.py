"""DICOM WSI: write with write_dicom_wsi, read back with open_slide; bad folders and files."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from marrowscope.errors import InputError
from marrowscope.io.slides import open_slide
from marrowscope.io.slides.dicom import DicomSlide, find_slide_files
from marrowscope.io.slides.dicom_writer import (
    SERIES_DESCRIPTION,
    STUDY_DESCRIPTION,
    padded_size,
    reduce_by,
    write_dicom_wsi,
)


def _smooth_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth colour image with a few sharp blobs (JPEG-friendly but not trivial)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack(
        [128 + 100 * np.sin(xx / 37.0), 128 + 100 * np.cos(yy / 53.0), 128 + 60 * np.sin((xx + yy) / 71.0)],
        axis=2,
    )
    for _ in range(6):
        cx, cy, r = rng.integers(0, w), rng.integers(0, h), rng.integers(20, 60)
        img[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = rng.integers(0, 255, 3)
    return img.clip(0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, object]:
    root = tmp_path_factory.mktemp("wsi")
    img = _smooth_image(600, 1000)
    ref = write_dicom_wsi(
        img,
        root / "P1" / "SM_a",
        mpp=0.11,
        slide_id="ABCDEF_1_bm",
        patient_id="ABCDEF",
        patient_age="012Y",
        patient_sex="F",
        tile_size=256,
        n_levels=3,
        openslide_properties={"openslide.bounds-x": "1234", "openslide.bounds-y": "567", "mirax.X": "y"},
    )
    return img, ref


def test_writer_metadata(written) -> None:
    img, ref = written
    assert (ref.width, ref.height) == padded_size(1000, 600, 3) == (1008, 608)
    assert len(ref.files) == 3
    ds = pydicom.dcmread(ref.files[0], stop_before_pixels=True)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.77.1.6"
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.50"
    assert ds.PhotometricInterpretation == "YBR_FULL_422"
    assert ds.ContainerIdentifier == "ABCDEF_1_bm" and ds.PatientID == "ABCDEF"
    assert ds.PatientAge == "012Y" and ds.PatientSex == "F"
    assert ds.SeriesDescription == SERIES_DESCRIPTION and ds.StudyDescription == STUDY_DESCRIPTION
    assert int(ds.SeriesNumber) == 1
    assert ds.SeriesInstanceUID == ref.series_uid and ds.StudyInstanceUID == ref.study_uid
    assert ds.SOPInstanceUID == ref.base_sop_uid and ref.base_file == ref.files[0]
    assert [float(v) for v in ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing] == [
        pytest.approx(0.00011),
        pytest.approx(0.00011),
    ]


def test_round_trip_every_level(written) -> None:
    img, ref = written
    with open_slide(ref.folder) as s:
        assert isinstance(s, DicomSlide)
        info = s.info
        assert info.format == "dicom" and info.slide_id == "ABCDEF_1_bm"
        assert (info.width, info.height) == (1008, 608)
        assert info.mpp == pytest.approx(0.11)
        assert [lv.downsample for lv in info.levels] == [1, 4, 16]
        assert [(lv.width, lv.height) for lv in info.levels] == [(1008, 608), (252, 152), (63, 38)]
        assert [lv.mpp for lv in info.levels] == [pytest.approx(0.11 * 4**i) for i in range(3)]
        full = s.read_region(0, 0, 1008, 608)
        assert np.abs(full[:600, :1000].astype(int) - img).mean() < 3.0
        assert full[:, 1000:].mean() > 250 and full[600:].mean() > 250  # white padding
        expected = np.pad(img, ((0, 8), (0, 8), (0, 0)), constant_values=255)
        for lv in info.levels[1:]:
            f = int(lv.downsample)
            want = reduce_by(expected, f)
            got = s.read_region(0, 0, lv.width, lv.height, level=lv.index)
            assert got.shape == want.shape
            # JPEG 4:2:0 chroma on a 63 px level blurs colour edges: judge luminance tightly
            assert np.abs(got.mean(axis=2) - want.mean(axis=2)).mean() < 4.0, lv
            assert np.abs(got.astype(int) - want).mean() < 10.0, lv
            err = np.abs(got.astype(int) - want).mean()
            for shift in ((1, 0), (0, 1), (-1, 0), (0, -1)):  # not misaligned by a pixel
                assert np.abs(got.astype(int) - np.roll(want, shift, axis=(0, 1))).mean() > err + 1.0
        # a window at level 1 addressed in level-0 pixels
        np.testing.assert_array_equal(
            s.read_region(400, 200, 20, 10, level=1), s.read_region(0, 0, 252, 152, level=1)[50:60, 100:120]
        )


def test_region_outside_is_white(written) -> None:
    _, ref = written
    with open_slide(ref.folder) as s:
        out = s.read_region(-50, -20, 100, 40)
        assert out.shape == (40, 100, 3)
        assert (out[:20] == 255).all() and (out[:, :50] == 255).all()
        assert not (out[20:, 50:] == 255).all()
        assert (s.read_region(5000, 5000, 16, 16, level=2) == 255).all()


def test_properties_and_base_dataset(written) -> None:
    _, ref = written
    with open_slide(ref.folder) as s:
        p = s.info.properties
        assert p["openslide.bounds-x"] == "1234" and p["openslide.bounds-y"] == "567"
        assert float(p["openslide.mpp-x"]) == pytest.approx(0.11)
        assert p["mirax.X"] == "y"
        assert p["dicom.SeriesInstanceUID"] == ref.series_uid
        assert p["dicom.StudyInstanceUID"] == ref.study_uid
        assert p["dicom.SOPInstanceUID"] == ref.base_sop_uid
        assert p["dicom.ContainerIdentifier"] == "ABCDEF_1_bm"
        assert p["dicom.PatientID"] == "ABCDEF"
        ds = s.base_dataset()
        assert ds.SOPInstanceUID == ref.base_sop_uid and "PixelData" not in ds


def test_read_region_mpp(written) -> None:
    _, ref = written
    with open_slide(ref.folder) as s:
        assert s.read_region_mpp(100, 100, 440, 220, mpp=0.44).shape == (55, 110, 3)
        assert s.read_region_mpp(100, 100, 440, 220, mpp=0.22).shape == (110, 220, 3)
        assert s.read_region_mpp(100, 100, 400, 200, mpp=1.0).shape == (22, 44, 3)


def test_mpp_override_file_list_and_single_file(written) -> None:
    _, ref = written
    with open_slide(list(ref.files), mpp=0.25) as s:
        assert s.info.mpp == 0.25 and s.info.levels[2].mpp == pytest.approx(4.0)
        assert s.info.properties["marrowscope.dicom_mpp"] == repr(0.11)
    with open_slide(ref.files[1]) as s:  # one instance: the slide's other levels come from its folder
        assert len(s.info.levels) == 3 and s.info.width == 1008


def test_ann_and_other_files_beside_slide_are_ignored(written, tmp_path: Path) -> None:
    """An ANN object (and a README) in the same folder must not reach wsidicom (stack.md)."""
    import highdicom as hd

    _, ref = written
    folder = tmp_path / "study"
    shutil.copytree(ref.folder, folder / "SM")
    (folder / "README.txt").write_text("not dicom")
    src = pydicom.dcmread(ref.files[0])
    group = hd.ann.AnnotationGroup(
        number=1,
        uid=hd.UID(),
        label="lymphocyte",
        annotated_property_category=hd.sr.CodedConcept("91723000", "SCT", "Anatomical Structure"),
        annotated_property_type=hd.sr.CodedConcept("56972008", "SCT", "Lymphocyte"),
        graphic_type=hd.ann.GraphicTypeValues.RECTANGLE,
        graphic_data=[np.array([[10, 10], [50, 10], [50, 50], [10, 50]], dtype=np.float32)],
        algorithm_type=hd.ann.AnnotationGroupGenerationTypeValues.MANUAL,
    )
    ann = hd.ann.MicroscopyBulkSimpleAnnotations(
        source_images=[src],
        annotation_coordinate_type=hd.ann.AnnotationCoordinateTypeValues.SCOORD,
        annotation_groups=[group],
        series_instance_uid=hd.UID(),
        series_number=33,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="test",
        manufacturer_model_name="test",
        software_versions="0",
        device_serial_number="0",
    )
    (folder / "ANN").mkdir()
    ann.save_as(folder / "ANN" / "ann.dcm")
    with open_slide(folder) as s:
        assert s.info.slide_id == "ABCDEF_1_bm" and len(s.info.levels) == 3
    with pytest.raises(InputError, match="not a whole-slide image"):
        open_slide(folder / "ANN" / "ann.dcm")


def test_folder_with_two_slides_is_an_error(written, tmp_path: Path) -> None:
    _, ref = written
    other = write_dicom_wsi(
        _smooth_image(256, 256, seed=3), tmp_path / "mix" / "B", mpp=0.11, slide_id="B_1_bm", patient_id="B"
    )
    shutil.copytree(ref.folder, tmp_path / "mix" / "A")
    with pytest.raises(InputError) as e:
        open_slide(tmp_path / "mix")
    msg = str(e.value)
    assert "2 slides" in msg and ref.series_uid in msg and other.series_uid in msg
    assert "ABCDEF_1_bm" in msg and "B_1_bm" in msg
    with open_slide(tmp_path / "mix", series_uid=other.series_uid) as s:
        assert s.info.slide_id == "B_1_bm"


def test_empty_folder_and_no_slide(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty"):
        open_slide(tmp_path / "empty")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match="no DICOM whole-slide image"):
        open_slide(tmp_path / "other")
    with pytest.raises(InputError, match="no such file"):
        open_slide(tmp_path / "missing")


def test_corrupt_and_truncated_files(written, tmp_path: Path) -> None:
    _, ref = written
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00garbage")
    with pytest.raises(InputError) as e:
        open_slide(bad)
    assert "x.dcm" in str(e.value)
    # a slide whose base level is cut in half: the error names the folder or file, never a traceback
    trunc = tmp_path / "trunc"
    shutil.copytree(ref.folder, trunc)
    base = sorted(trunc.glob("level0_*.dcm"))[0]
    data = base.read_bytes()
    base.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError), open_slide(trunc) as s:
        s.read_region(0, 0, s.info.width, s.info.height)
    # a file cut inside its header
    head = tmp_path / "head"
    head.mkdir()
    (head / "a.dcm").write_bytes(data[:300])
    with pytest.raises(InputError, match="a.dcm"):
        open_slide(head)


def test_unsupported_file(tmp_path: Path) -> None:
    p = tmp_path / "slide.xyz"
    p.write_text("hi")
    with pytest.raises(InputError, match="unsupported"):
        open_slide(p)


def test_find_slide_files_ignores_non_slide(written) -> None:
    _, ref = written
    headers = find_slide_files(ref.folder)
    assert {h.path for h in headers} == set(ref.files)


def test_pitfall6_regions_read_only_the_tiles_they_touch(
    written, monkeypatch: pytest.MonkeyPatch
) -> None:
    """dataset.md §9.6: slides are huge, so a region read must fetch only the frames it overlaps."""
    from wsidicom.file.wsidicom_file_image_data import WsiDicomFileImageData

    _, ref = written
    calls: list[int] = []
    original = WsiDicomFileImageData._get_tile_frame

    def counting(self: WsiDicomFileImageData, frame_index: int) -> bytes:
        calls.append(frame_index)
        return original(self, frame_index)

    monkeypatch.setattr(WsiDicomFileImageData, "_get_tile_frame", counting)
    with open_slide(ref.folder) as s:
        assert isinstance(s, DicomSlide)
        calls.clear()
        s.read_region(300, 300, 64, 64)  # inside one 256 px tile of a 4 x 3 tile level
        assert len(set(calls)) == 1
        calls.clear()
        s._wsi.clear_cache()
        s.read_region(240, 240, 32, 32)  # across a tile corner: 4 tiles
        assert len(set(calls)) == 4
        calls.clear()
        s._wsi.clear_cache()
        s.thumbnail(64)  # from the smallest level: its single tile
        assert len(set(calls)) == 1


def _sof_sampling(frame: bytes) -> list[int]:
    """Sampling factors (h << 4 | v) of each component in a baseline JPEG's SOF0 segment."""
    i = frame.index(b"\xff\xc0")
    n = frame[i + 9]
    return [frame[i + 10 + 3 * k + 1] for k in range(n)]


def test_jpeg_quality_and_422_subsampling(tmp_path: Path) -> None:
    from pydicom.encaps import generate_frames

    img = _smooth_image(256, 256, seed=5)
    sizes = {}
    for q in (40, 95):
        ref = write_dicom_wsi(img, tmp_path / f"q{q}", mpp=0.5, slide_id="q", patient_id="q", jpeg_quality=q)
        ds = pydicom.dcmread(ref.base_file)
        frame = next(generate_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames)))
        assert frame[:2] == b"\xff\xd8" and b"\xff\xc0" in frame  # baseline JPEG
        assert _sof_sampling(frame) == [0x21, 0x11, 0x11]  # 4:2:2, as YBR_FULL_422 says
        sizes[q] = sum(f.stat().st_size for f in ref.files)
    assert sizes[40] < 0.7 * sizes[95]
    with pytest.raises(InputError, match="jpeg_quality"):
        write_dicom_wsi(img, tmp_path / "bad", mpp=0.5, slide_id="q", patient_id="q", jpeg_quality=0)


def _without_pixel_spacing(folder: Path, dest: Path) -> Path:
    shutil.copytree(folder, dest)
    for f in dest.glob("*.dcm"):
        ds = pydicom.dcmread(f)
        del ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
        ds.save_as(f)
    return dest


def test_slide_without_pixel_spacing_opens_with_mpp(written, tmp_path: Path) -> None:
    """No PixelSpacing in the header: --mpp gives the size; without it the slide opens with mpp None."""
    img, ref = written
    bare = _without_pixel_spacing(ref.folder, tmp_path / "bare")
    with open_slide(bare, mpp=0.25) as s, open_slide(ref.folder) as orig:
        assert [lv.downsample for lv in s.info.levels] == [lv.downsample for lv in orig.info.levels]
        assert s.info.mpp == 0.25 and [lv.mpp for lv in s.info.levels] == [0.25 * lv.downsample
                                                                           for lv in orig.info.levels]
        assert "marrowscope.dicom_mpp" not in s.info.properties
        for level in range(3):
            np.testing.assert_array_equal(s.read_region(0, 0, 200, 100, level),
                                          orig.read_region(0, 0, 200, 100, level))
        assert s.read_region_mpp(0, 0, 400, 200, mpp=0.5).shape == (100, 200, 3)
    with open_slide(bare) as s:
        assert s.info.mpp is None and all(lv.mpp is None for lv in s.info.levels)
        assert "PixelSpacing" in s.info.properties["marrowscope.mpp_missing"]
    for f in ref.folder.glob("*.dcm"):  # the files themselves are left as they were
        assert "PixelSpacing" in pydicom.dcmread(f, stop_before_pixels=True).SharedFunctionalGroupsSequence[
            0].PixelMeasuresSequence[0]


def test_level0_only_overview_is_decoded_at_reduced_scale_and_matches_the_full_decode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A DICOM slide with only level 0: a far-shrunk read (an overview) decodes each JPEG tile at 1/8
    scale (every tile once) and equals the full-decode result within a couple of grey levels."""
    import marrowscope.io.slides.base as base
    from marrowscope.io.slides.base import SlideReader

    img = _smooth_image(1000, 1300, seed=2)
    ref = write_dicom_wsi(img, tmp_path / "flat", mpp=0.25, slide_id="flat", patient_id="P", n_levels=1)
    monkeypatch.setattr(base, "WHOLE_READ_PX", 256 * 256)
    monkeypatch.setattr(base, "CHUNK_PX", 64)
    with open_slide(ref.folder) as s:
        assert isinstance(s, DicomSlide) and len(s.info.levels) == 1
        w, h = s.info.width, s.info.height
        assert s.reduced_read_factors(0, 8) and not s.reduced_read_factors(0, 3)
        tiles: list[tuple[int, int]] = []
        original = DicomSlide._encoded_tile

        def spy(self: DicomSlide, level: int, tx: int, ty: int) -> bytes:
            tiles.append((tx, ty))
            return original(self, level, tx, ty)

        monkeypatch.setattr(DicomSlide, "_encoded_tile", spy)
        fast = s.read_resampled(0, 0, w, h, (w // 20, h // 20), 0)  # 20x: decoded at 1/8, then 2.5x
        n_tiles = -(-w // 256) * -(-h // 256)
        assert len(tiles) >= n_tiles and set(tiles) >= {(x, y) for x in range(-(-w // 256))
                                                         for y in range(-(-h // 256))}
        monkeypatch.setattr(DicomSlide, "reduced_read_factors", lambda self, level, factor: False)
        full = s.read_resampled(0, 0, w, h, (w // 20, h // 20), 0)
        assert fast.shape == full.shape == (h // 20, w // 20, 3)
        # (the last row and column: there a reduced pixel straddles the level's edge and holds the tile's
        # white padding, where the full-scale resize repeats the edge pixel)
        diff = np.abs(fast.astype(int) - full)[:-1, :-1]
        assert diff.mean() < 1.5 and np.percentile(diff, 99) <= 6 and diff.max() <= 20  # sharp blob edges
        monkeypatch.undo()
        # the reduced read itself against a box filter of the full decode, with white outside the level
        red = s.read_level_reduced(w - 300, 40, w + 100, 340, 0, 4)
        box = SlideReader.read_level_reduced(s, w - 300, 40, w + 100, 340, 0, 4)
        assert red.shape == box.shape == (75, 100, 3)
        assert (red[:, 75:] == 255).all() and np.abs(red.astype(int) - box).mean() < 3


def test_tile_caches_of_a_file_slide_are_bounded(written, monkeypatch: pytest.MonkeyPatch) -> None:
    """wsidicom's decoded and encoded tile caches hold at most FRAME_CACHE_BYTES each (not its 100 MB)."""
    import marrowscope.io.slides.dicom as dicom

    _, ref = written
    # the tiles of a field with its context (3,072 px a side) whatever the tile size, within 32-100 MB
    assert dicom.frame_cache_bytes(1024, 1024) == 16 * 1024 * 1024 * 3
    assert dicom.frame_cache_bytes(256, 256) == 32 * 2**20
    assert dicom.frame_cache_bytes(4096, 4096) == 100 * 2**20
    monkeypatch.setattr(dicom, "FRAME_CACHE_BYTES", 200_000)  # fewer bytes than 4 decoded 256^2 tiles
    monkeypatch.setattr(dicom, "_FIELD_SPAN_PX", 0)
    with open_slide(ref.folder) as s:
        s.read_region(0, 0, 1000, 600)  # 12 tiles, 2.4 MB decoded
        source = s._wsi._source  # wsidicom internals: the only way to see its caches
        assert 0 < source._decoded_frame_cache._lru_cache._size <= 200_000
        for cache in (source._decoded_frame_cache, source._encoded_frame_cache):
            assert cache._lru_cache.maxsize == 200_000


def test_report_field_picture_decodes_at_reduced_scale_like_the_full_decode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The report's field picture of a field twice the picture's size decodes the JPEG tiles at 1/2 scale
    and shows what the full decode shows (same size, within a few grey levels)."""
    from marrowscope.cells import Box, Cell
    from marrowscope.report.figures import field_with_boxes

    img = _smooth_image(1100, 1100, seed=3)
    ref = write_dicom_wsi(img, tmp_path / "flat", mpp=0.25, slide_id="flat", patient_id="P", n_levels=1)
    field = Box(40, 60, 1064, 1084)  # 1024 px for a 400 px picture: decoded at 1/2
    cells = [Cell(box=Box(300, 300, 360, 370), label="neutrophil")]
    with open_slide(ref.folder) as s:
        factors: list[int] = []
        original = DicomSlide.read_level_reduced

        def spy(self: DicomSlide, x0: int, y0: int, x1: int, y1: int, level: int, factor: int) -> np.ndarray:
            factors.append(factor)
            return original(self, x0, y0, x1, y1, level, factor)

        monkeypatch.setattr(DicomSlide, "read_level_reduced", spy)
        fast = np.asarray(field_with_boxes(s, field, cells, lambda _: "#ff0000", max_size=400))
        assert factors == [2]
        monkeypatch.setattr(DicomSlide, "reduced_read_factors", lambda self, level, factor: False)
        full = np.asarray(field_with_boxes(s, field, cells, lambda _: "#ff0000", max_size=400))
    assert fast.shape == full.shape == (400, 400, 3)
    diff = np.abs(fast.astype(int) - full)
    assert diff.mean() < 2.0 and np.percentile(diff, 95) <= 8
