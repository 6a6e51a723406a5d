"""``fetch --rois-only`` over DICOMweb against a real local Orthanc (+ DICOMweb plugin) started here.

Skips (with the reason) where Orthanc or its DICOMweb plugin is not installed
(Debian: ``apt-get install orthanc orthanc-dicomweb``).
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from marrowscope.errors import NetworkUnavailableError

PLUGINS = ("/usr/share/orthanc/plugins/libOrthancDicomWeb.so", "/usr/lib/orthanc/libOrthancDicomWeb.so")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from marrowscope.data.synth.cohort import SynthConfig, generate_cohort

    out = tmp_path_factory.mktemp("dicomweb") / "cohort"
    generate_cohort(
        SynthConfig(n_patients=2, seed=21, slide_size=1536, roi_size=384, n_rois=2, cells_per_roi=15), out
    )
    return out


@contextmanager
def _orthanc(root: Path, files: list[Path]) -> Iterator[str]:
    """A throw-away Orthanc on a free loopback port, loaded with ``files``: yields the DICOMweb root URL."""
    from conftest import require_program

    orthanc_bin = require_program("Orthanc", "orthanc")
    plugin = next((p for p in PLUGINS if Path(p).is_file()), None)
    if plugin is None:  # skips naming the package (fails under CI, where make test installs it)
        require_program("libOrthancDicomWeb.so", "orthanc-dicomweb")
    port = _free_port()
    cfg = {
        "Name": "marrowscope-test",
        "StorageDirectory": str(root / "db"),
        "IndexDirectory": str(root / "db"),
        "HttpPort": port,
        "DicomServerEnabled": False,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "Plugins": [plugin],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }
    (root / "orthanc.json").write_text(json.dumps(cfg))
    log = open(root / "orthanc.log", "wb")  # noqa: SIM115 - open for the server's lifetime
    proc = subprocess.Popen([orthanc_bin, str(root / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                with urllib.request.urlopen(f"{base}/system", timeout=1) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if proc.poll() is not None:
                pytest.skip(f"Orthanc did not start: {(root / 'orthanc.log').read_text()[-500:]}")
            time.sleep(0.2)
        for f in files:
            req = urllib.request.Request(f"{base}/instances", data=f.read_bytes(), method="POST")
            with urllib.request.urlopen(req, timeout=30) as r:
                assert r.status == 200, r.read()
        yield f"{base}/dicom-web"
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory, cohort: Path) -> Iterator[str]:
    """Orthanc loaded with the cohort except the second patient's slide (its annotation series only)."""
    patients = sorted(p.name for p in (cohort / "dicom").iterdir())
    files = [f for f in sorted((cohort / "dicom").rglob("*.dcm"))
             if not (patients[1] in f.parts and f.parent.name.startswith("SM_"))]
    with _orthanc(tmp_path_factory.mktemp("orthanc"), files) as url:
        yield url


def test_roi_pixels_over_dicomweb_equal_the_files(orthanc: str, cohort: Path, tmp_path: Path) -> None:
    from marrowscope.data.roi_fetch import fetch_rois
    from marrowscope.io.cohort import discover_cohort, load_patient_annotations
    from marrowscope.io.slides import open_slide

    res = fetch_rois(orthanc, tmp_path / "dl", mpps=(0.25,), context_um=5.0)
    local = discover_cohort(cohort)
    first, second = local.patients
    assert any(w.startswith(f"patient {second.patient_id}: no slide series") for w in res.warnings)
    n_ann = sum(1 for _ in (cohort / "dicom").rglob("ANN_*/*.dcm"))
    assert res.annotation_files == n_ann  # every annotation series, the slide-less patient's too
    got = sorted(p.relative_to(tmp_path / "dl") for p in (tmp_path / "dl" / "dicom").rglob("*.dcm"))
    assert got == sorted(p.relative_to(cohort) for p in (cohort / "dicom").rglob("ANN_*/*.dcm"))

    from marrowscope.data.patches import PatchStore

    store = PatchStore(tmp_path / "dl" / "rois")
    rois = load_patient_annotations(first, "roi").regions
    level0 = store.find(patient_id=first.patient_id, mpp=first.mpp)
    assert len(level0) == len(rois) and len(store.find(mpp=0.25)) == len(rois)
    with open_slide(list(map(Path, first.slide_files))) as slide:
        for e in level0:
            arr = store.read(e)
            ref = slide.read_region(int(e.origin[0]), int(e.origin[1]), e.width, e.height, level=0)
            assert np.array_equal(arr, ref)  # the same pixels through DICOMweb as from the files
    # the download as a cohort: the first patient's slide is its header over the ROI patches
    dl = discover_cohort(tmp_path / "dl", read_csvs=False)
    assert [e.patient_id for e in dl.patients] == [first.patient_id]
    entry = dl.patients[0]
    assert entry.slide_id == first.slide_id and entry.slide_files[0].endswith(f"{first.series_uid}.json")
    with open_slide(list(map(Path, first.slide_files))) as slide, open_slide(entry.slide_files[0]) as only:
        assert (only.info.width, only.info.height, only.info.mpp) == (slide.info.width, slide.info.height,
                                                                      slide.info.mpp)
        r = rois[0].box
        x, y, w, h = int(r.x1) - 4, int(r.y1) - 4, int(r.x2 - r.x1) + 8, int(r.y2 - r.y1) + 8
        assert np.array_equal(only.read_region(x, y, w, h), slide.read_region(x, y, w, h))
        far = only.read_region(0, 0, 8, 8) if r.x1 > 100 and r.y1 > 100 else None  # outside every ROI
        assert far is None or (far == 255).all()
    total = sum(Path(f).stat().st_size for f in first.slide_files)
    assert res.patch_bytes < 40 * total  # sanity: patches, not the pyramid decoded whole

    again = fetch_rois(orthanc, tmp_path / "dl", mpps=(0.25,), context_um=5.0)  # resumes: nothing new
    assert again.patches == res.patches


def test_unreachable_server_is_a_clear_error(tmp_path: Path) -> None:
    from marrowscope.data.roi_fetch import fetch_rois

    t0 = time.perf_counter()
    with pytest.raises(
        NetworkUnavailableError, match=r"127\.0\.0\.1:\d+/dicom-web: the DICOMweb server did not"
    ):
        fetch_rois(f"http://127.0.0.1:{_free_port()}/dicom-web", tmp_path / "x", timeout=5)
    assert time.perf_counter() - t0 < 30


def test_reproduce_runs_on_an_roi_only_download(tmp_path: Path) -> None:
    """``fetch --rois-only`` of an 8-patient cohort (no slide files, only the ROI patches and headers),
    plus the clinical table, is enough for ``reproduce --quick``: every stage runs, from the ROIs alone."""
    import shutil

    from marrowscope.cli.main import main
    from marrowscope.data.synth.cohort import SynthConfig, generate_cohort

    cohort = tmp_path / "cohort"
    generate_cohort(SynthConfig(n_patients=8, seed=3, slide_size=1536, roi_size=768, n_rois=1,
                                cells_per_roi=50), cohort)
    dl = tmp_path / "dl"
    with _orthanc(tmp_path, sorted((cohort / "dicom").rglob("*.dcm"))) as url:
        assert main(["fetch", "--rois-only", "--dicomweb", url, "--out", str(dl)]) == 0
    assert not any(p.parent.name.startswith("SM_") for p in dl.rglob("*.dcm"))  # no slide was downloaded
    (dl / "csv").mkdir()
    shutil.copy(cohort / "csv" / "clinical.csv", dl / "csv")  # the clinical table comes from elsewhere
    out = tmp_path / "study"
    assert main(["reproduce", "--data", str(dl), "--out", str(out), "--quick"]) == 0
    doc = json.loads((out / "reproduction.json").read_text())
    assert sum(doc["n_patients"].values()) == 8
    assert doc["detection_ap50"] is not None and doc["classification_macro_f1"] is not None
    assert doc["diagnosis_macro_f1_predicted"] is not None  # the models ran on every patient's ROIs
    # every patient's ROIs were analysed from the patches: counted, or (a 1-epoch detector) found no cell
    stage = json.loads(next((out / "diagnosis").glob("*/stage.json")).read_text())
    failed = stage["result"]["failed_slides"]
    assert all("no cells were detected" in f for f in failed), failed
    assert len(list((out / "diagnosis").rglob("summary.json"))) + len(failed) == 8
