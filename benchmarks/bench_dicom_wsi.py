"""Time write_dicom_wsi and DicomSlide.read_region on a synthetic texture.

Usage: nice -n 10 .venv/bin/python benchmarks/bench_dicom_wsi.py SIDE N_LEVELS [OUT_DIR]
Prints write time (imports excluded by a warm-up write), peak RSS before/after the write, series size
and the mean time of 20 random 512x512 level-0 reads. Wrap in /usr/bin/time -v for the process peak.
"""

from __future__ import annotations

import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from marrowscope.io.slides import open_slide
from marrowscope.io.slides.dicom_writer import write_dicom_wsi


def main() -> None:
    n, levels = int(sys.argv[1]), int(sys.argv[2])
    out = Path(sys.argv[3]) if len(sys.argv) > 3 else Path(tempfile.mkdtemp(prefix="bench_wsi_"))
    rng = np.random.default_rng(0)
    tile = (rng.integers(0, 255, (512, 512, 3), dtype=np.uint8) // 32 * 32 + 100).astype(np.uint8)
    img = np.empty((n, n, 3), np.uint8)  # filled in place: no temporary copies of the input
    for y in range(0, n, 512):
        for x in range(0, n, 512):
            view = img[y : y + 512, x : x + 512]
            view[:] = tile[: view.shape[0], : view.shape[1]]
    write_dicom_wsi(img[:256, :256].copy(), out / "warm" / "SM", mpp=0.11, slide_id="w", patient_id="w")
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = time.perf_counter()
    ref = write_dicom_wsi(img, out / "SM", mpp=0.11, slide_id="b", patient_id="p", n_levels=levels)
    dt = time.perf_counter() - t
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = time.perf_counter()
    with open_slide(ref.folder) as s:
        for _ in range(20):
            x, y = rng.integers(0, max(1, n - 512), 2)
            s.read_region(int(x), int(y), 512, 512)
    dr = (time.perf_counter() - t) / 20
    size = sum(f.stat().st_size for f in ref.files) / 1e6
    print(
        f"{n}x{n} levels={levels}: write {dt:.2f} s, input {img.nbytes / 1e6:.0f} MB, peak RSS before "
        f"{rss0:.0f} MB after {rss1:.0f} MB, files {size:.0f} MB, read_region 512^2 {dr * 1000:.0f} ms"
    )


if __name__ == "__main__":
    main()
