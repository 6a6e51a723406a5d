"""Time the general annotation readers/writers on the real BCCD and TXL-PBC data (best of 3).

Run: .venv/bin/python benchmarks/bench_annotation_formats.py [SHARED_DATA]
"""

from __future__ import annotations

import logging
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from marrowscope.cells import CellAnnotations
from marrowscope.io.annotations.coco import read_coco, write_coco
from marrowscope.io.annotations.geojson import read_geojson, write_geojson
from marrowscope.io.annotations.table import read_cell_table, write_cell_table
from marrowscope.io.annotations.voc import read_voc_folder
from marrowscope.io.annotations.yolo import read_yolo_folder


def best_of(f: Callable[[], Any], n: int = 3) -> float:
    best = float("inf")
    for _ in range(n):
        start = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    logging.disable(logging.WARNING)
    data = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / "shared" / "data"
    voc = read_voc_folder(data / "bccd")
    yolo = read_yolo_folder(data / "txl_pbc" / "TXL_PBC")
    big = CellAnnotations(cells=tuple(c for a in yolo for c in a.cells), slide_id="all")
    out = Path(tempfile.mkdtemp())
    rows = [
        (f"read_voc_folder BCCD ({len(voc)} images, {sum(map(len, voc))} boxes)",
         best_of(lambda: read_voc_folder(data / "bccd"))),
        (f"read_yolo_folder TXL-PBC ({len(yolo)} images, {len(big)} boxes)",
         best_of(lambda: read_yolo_folder(data / "txl_pbc" / "TXL_PBC"))),
        ("write_coco TXL-PBC", best_of(lambda: write_coco(yolo, out / "c.json"))),
        ("read_coco TXL-PBC", best_of(lambda: read_coco(out / "c.json"))),
        (f"write_geojson {len(big)} boxes", best_of(lambda: write_geojson(big, out / "g.geojson"))),
        (f"read_geojson {len(big)} boxes", best_of(lambda: read_geojson(out / "g.geojson"))),
        (f"write_cell_table {len(big)} boxes (parquet+csv)",
         best_of(lambda: write_cell_table(big, out / "t"))),
        (f"read_cell_table parquet {len(big)} boxes", best_of(lambda: read_cell_table(out / "t.parquet"))),
        (f"read_cell_table csv {len(big)} boxes", best_of(lambda: read_cell_table(out / "t.csv"))),
    ]
    for name, seconds in rows:
        print(f"| {name} | {seconds:.2f} s |")


if __name__ == "__main__":
    main()
