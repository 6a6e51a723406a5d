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


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory, cohort: Path) -> Iterator[str]:
    """A throw-away Orthanc on a free loopback port, loaded with the cohort except the second patient's
    slide (its annotation series only): returns the DICOMweb root URL."""
    from conftest import require_program

    orthanc_bin = require_program("Orthanc", "orthanc")
    plugin = next((p for p in PLUGINS if Path(p).is_file()), None)
    if plugin is None:  # skips naming the package (fails under CI, where make test installs it)
        require_program("libOrthancDicomWeb.so", "orthanc-dicomweb")
    root = tmp_path_factory.mktemp("orthanc")
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
        patients = sorted(p.name for p in (cohort / "dicom").iterdir())
        for f in sorted((cohort / "dicom").rglob("*.dcm")):
            if patients[1] in f.parts and f.parent.name.startswith("SM_"):
                continue
            req = urllib.request.Request(f"{base}/instances", data=f.read_bytes(), method="POST")
            with urllib.request.urlopen(req, timeout=30) as r:
                assert r.status == 200, r.read()
        yield f"{base}/dicom-web"
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


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
