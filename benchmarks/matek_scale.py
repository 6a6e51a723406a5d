"""The Matek bone-marrow crops' pixel size, from their red cells' edges (no labels, no model).

``MATEK_MPP`` was a guess. The rule that sets it from this measurement was written before any model was
scored at a new value (``benchmarks/results/matek_scale_rule.txt``). ``marrowscope.data.scale`` cannot read
these crops: a 250 px crop's red cells are ~100 px across, larger than the largest opening it tries (a
sixth of the short side). So each red-cell object's **edge** is fitted with a circle instead:

1. red-cell mask: redder than blue (Matek's background and nucleated cells' cytoplasm are bluer), darker
   than the background in green; opened by 2 px, holes filled; objects of at least ``MIN_AREA`` px;
2. its edge pixels, less those on the crop's border (a cell cut by the border keeps its arc);
3. a least-squares circle (Kåsa) through them, kept when the RMS residual is at most 5 % of the radius,
   the arc spans at least 120° and the radius is 20-80 px.

``MATEK_MPP = 7.5 µm / median diameter`` over the kept objects, rounded to 0.005, if at least 8 objects
from 4 crops are kept.

    .venv/bin/python benchmarks/matek_scale.py --data-root ../shared/data \\
        --out benchmarks/results/matek_scale.json --doc docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
BEGIN = "<!-- BEGIN GENERATED matek_scale from benchmarks/results/matek_scale.json by matek_scale.py -->"
MIN_AREA, MAX_RMS, MIN_ARC_DEG, RADIUS_PX = 400, 0.05, 120.0, (20.0, 80.0)
MIN_OBJECTS, MIN_CROPS = 8, 4


def red_cell_mask(rgb: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    a = rgb.astype(np.int32)
    background = float(np.percentile(a[..., 1], 95))
    m = (a[..., 0] - a[..., 2] > 4) & (a[..., 1] < background - 10)
    m = ndimage.binary_opening(m, iterations=2)
    return np.asarray(ndimage.binary_fill_holes(m), dtype=bool)


def fit_circle(ys: np.ndarray, xs: np.ndarray) -> tuple[float, float, float, float, float]:
    """(cy, cx, r, RMS residual / r, arc in degrees) of the least-squares (Kåsa) circle through points."""
    a = np.column_stack([xs, ys, np.ones_like(xs)])
    b = xs**2 + ys**2
    (p, q, c), *_ = np.linalg.lstsq(a, b, rcond=None)
    cx, cy = p / 2, q / 2
    r = float(np.sqrt(max(c + cx**2 + cy**2, 0.0)))
    rms = float(np.sqrt(np.mean((np.hypot(xs - cx, ys - cy) - r) ** 2))) / max(r, 1e-9)
    ang = np.sort(np.arctan2(ys - cy, xs - cx))
    gaps = np.diff(np.concatenate([ang, ang[:1] + 2 * np.pi]))
    return float(cy), float(cx), r, rms, float(np.degrees(2 * np.pi - gaps.max()))


def measure_crop(rgb: np.ndarray) -> list[dict[str, float]]:
    from scipy import ndimage

    m = red_cell_mask(rgb)
    lab, n = ndimage.label(m)
    h, w = m.shape
    out = []
    for i in range(1, n + 1):
        obj = lab == i
        if obj.sum() < MIN_AREA:
            continue
        edge = obj & ~ndimage.binary_erosion(obj)
        edge[0, :] = edge[-1, :] = edge[:, 0] = edge[:, -1] = False
        ys, xs = np.nonzero(edge)
        if len(ys) < 20:
            continue
        _, _, r, rms, arc = fit_circle(ys.astype(float), xs.astype(float))
        kept = rms <= MAX_RMS and arc >= MIN_ARC_DEG and RADIUS_PX[0] <= r <= RADIUS_PX[1]
        out.append({"diameter_px": 2 * r, "rms": rms, "arc_deg": arc, "kept": bool(kept)})
    return out


def measure(folder: Path) -> dict[str, Any]:
    from marrowscope.data.crops import load_image_rgb

    crops = {}
    for p in sorted(folder.rglob("*.jpg")):
        crops[p.name] = measure_crop(load_image_rgb(p))
    kept = [o["diameter_px"] for objs in crops.values() for o in objs if o["kept"]]
    n_crops = sum(any(o["kept"] for o in objs) for objs in crops.values())
    res: dict[str, Any] = {"crops": crops, "kept_objects": len(kept), "kept_crops": n_crops,
                           "n_crops": len(crops)}
    if kept:
        d = float(np.median(kept))
        res.update(median_diameter_px=d, q25=float(np.percentile(kept, 25)),
                   q75=float(np.percentile(kept, 75)), mpp=7.5 / d,
                   mpp_rounded=round(round(7.5 / d / 0.005) * 0.005, 3),
                   rule_met=len(kept) >= MIN_OBJECTS and n_crops >= MIN_CROPS)
    return res


def render(res: dict[str, Any]) -> str:
    m, s = res["meta"], res["summary"]
    rows = ["| crop | red-cell objects fitted (kept) | each fit: diameter px (RMS residual / radius, arc) |",
            "|---|---|---|"]
    for name, objs in s["crops"].items():
        if objs:
            fits = ", ".join(f"{'**' if o['kept'] else ''}{o['diameter_px']:.0f}{'**' if o['kept'] else ''} "
                             f"({100 * o['rms']:.0f} %, {o['arc_deg']:.0f}°)" for o in objs)
            rows.append(f"| {name} | {len(objs)} ({sum(o['kept'] for o in objs)}) | {fits} |")
    head = (f"Command: `{m['command']}`; {m['cpu_count']} cores, {m['seconds']:.1f} s. "
            f"{s['n_crops']} crops; {s['kept_objects']} red-cell objects kept from {s['kept_crops']} crops "
            "(crops with no red-cell object are not listed; kept fits in bold).")
    if "mpp" not in s:
        return head + "\n\n" + "\n".join(rows) + "\n\nNo red cell was kept: the pixel size stays as it was."
    verdict = ("the rule's minimum is met, so `MATEK_MPP` = " if s["rule_met"]
               else "too few objects for the rule, so `MATEK_MPP` stays; the measurement would give ")
    return (head + "\n\n" + "\n".join(rows) + "\n\n"
            f"Median diameter {s['median_diameter_px']:.1f} px (quartiles {s['q25']:.1f}-{s['q75']:.1f}): "
            f"7.5 µm / {s['median_diameter_px']:.1f} px = {s['mpp']:.4f} µm/px; {verdict}"
            f"**{s['mpp_rounded']:.3f} µm/px**.")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-root", type=Path, default=Path("../shared/data"))
    ap.add_argument("--out", type=Path, default=HERE / "results" / "matek_scale.json")
    ap.add_argument("--doc", type=Path, default=None, help="rewrite this doc's generated block")
    a = ap.parse_args(argv)
    folder = a.data_root / "matek_bm_samples"
    if not folder.exists():
        print(f"error: {folder} not found; pass --data-root (the shared data folder)", file=sys.stderr)
        return 2
    t0 = time.time()
    summary = measure(folder)
    res = {"meta": {"command": " ".join([Path(sys.executable).name, *sys.argv]),
                    "cpu_count": os.cpu_count(), "seconds": time.time() - t0}, "summary": summary}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(res, indent=1) + "\n")
    print(render(res))
    if a.doc is not None:
        from marrowscope.models.cards import write_generated_block

        write_generated_block(a.doc, BEGIN, render(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
