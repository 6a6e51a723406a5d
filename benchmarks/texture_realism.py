"""Texture realism of the renderer: rendered cells against real ones at the classifier's scale.

For each PBC cell type (``figures.PBC_PAIRS``: PBC code -> the taxonomy label rendered for it) the mean
absolute Laplacian of the optical density (OD summed over RGB) inside a 4.5 µm disk at the centre of a
28.8 µm field resampled to 64 px (0.45 µm/px, the classifiers' contract), and the mean OD there:

- real: up to ``--per-class`` images of the **PBC training part** (``domain_shift.pbc_split_items``; the
  held-out split is never read), the central 288 px (28.8 µm at 0.1 µm/px) box-filtered to 64 px;
- rendered: ``--per-class`` context crops (``figures.context_crop``, 262 px at 0.11 µm/px among red cells,
  a drawn stain per crop) per look (``marrowscope synth --look``), box-filtered the same way.

The summary is the mean |ln(rendered / real)| of the texture over the types (0 = the same texture). It
measured why ``benchmarks/sim_to_real.py`` found real neutrophils called basophils (docs/synth.md) and is
how the ``textured`` look was set (``styles.TEXTURE``): on the training part only.

Run: .venv/bin/python benchmarks/texture_realism.py --out benchmarks/results/texture_realism.json \
         --doc docs/synth.md
(``--doc``: rewrite the doc's generated block; ``--render-only``: from ``--out``, measuring nothing).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

_YY, _XX = np.mgrid[:64, :64]
BEGIN = ("<!-- BEGIN GENERATED texture_realism from benchmarks/results/texture_realism.json "
         "by texture_realism.py -->")
DISK = np.hypot(_YY - 31.5, _XX - 31.5) < 10  # 4.5 µm at 0.45 µm/px


def texture(rgb: np.ndarray) -> tuple[float, float]:
    """(mean |Laplacian| of OD, mean OD) inside the central disk of a 64 px crop."""
    from scipy import ndimage as ndi

    od = -np.log(np.clip(rgb.astype(np.float32), 1, 255) / 255.0).sum(axis=2)
    return float(np.abs(ndi.laplace(od))[DISK].mean()), float(od[DISK].mean())


def _to64(im: Any) -> np.ndarray:
    from PIL import Image

    return np.asarray(im.resize((64, 64), Image.Resampling.BOX))


def real_stats(pbc: Path, per_class: int) -> dict[str, dict[str, float]]:
    from PIL import Image

    from domain_shift import pbc_split_items
    from marrowscope.data.synth.figures import PBC_PAIRS

    train, _ = pbc_split_items(pbc, None)
    out = {}
    for code, _label in PBC_PAIRS:
        items = [it for it in train if Path(it.path).name.split("_")[0].upper() == code]
        step = max(1, len(items) // per_class)
        vals = []
        for it in items[::step][:per_class]:
            with Image.open(it.path) as im:
                w, h = im.size
                c = 144  # 28.8 µm at 0.1 µm/px
                box = (w // 2 - c, h // 2 - c, w // 2 + c, h // 2 + c)
                vals.append(texture(_to64(im.convert("RGB").crop(box))))
        out[code] = _mean(vals)
    return out


def _mean(vals: list[tuple[float, float]]) -> dict[str, float]:
    return {"texture": float(np.mean([v[0] for v in vals])), "od": float(np.mean([v[1] for v in vals])),
            "n": len(vals)}


def rendered_stats(look: str, per_class: int, seed: int) -> dict[str, dict[str, float]]:
    from PIL import Image

    from marrowscope.data.synth.figures import PBC_PAIRS, context_crop
    from marrowscope.data.synth.render import sample_stain

    out = {}
    for code, label in PBC_PAIRS:
        rng = np.random.default_rng(seed)
        crops = [context_crop(label, rng, size=262, stain=sample_stain(rng, look), look=look)
                 for _ in range(per_class)]
        out[code] = _mean([texture(_to64(Image.fromarray(c))) for c in crops])
    return out


def main(argv: list[str] | None = None) -> int:
    from marrowscope.data.synth.styles import LOOKS

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--looks", nargs="+", choices=LOOKS, default=list(LOOKS))
    ap.add_argument("--per-class", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "texture_realism.json")
    ap.add_argument("--doc", type=Path, default=None, help="rewrite this doc's generated block")
    ap.add_argument("--render-only", action="store_true", help="re-render --doc from --out")
    a = ap.parse_args(argv)
    if a.render_only:
        write_doc(json.loads(a.out.read_text()), a.doc)
        return 0
    pbc = a.data / "pbc_acevedo2020"
    if not pbc.is_dir():
        print(f"{pbc}: the PBC data is missing (see ../shared/data/README)", file=sys.stderr)
        return 2
    t0 = time.time()
    real = real_stats(pbc, a.per_class)
    looks = {look: rendered_stats(look, a.per_class, a.seed) for look in a.looks}
    summary = {look: float(np.mean([abs(np.log(s[c]["texture"] / real[c]["texture"])) for c in real]))
               for look, s in looks.items()}
    head = "| PBC type | real texture / OD | " + " | ".join(f"{k} texture / OD" for k in looks) + " |"
    rows = [head, "|" + "---|" * (2 + len(looks))]
    for c, r in real.items():
        rows.append(f"| {c} | {r['texture']:.2f} / {r['od']:.2f} | " +
                    " | ".join(f"{s[c]['texture']:.2f} / {s[c]['od']:.2f}" for s in looks.values()) + " |")
    rows.append("| mean abs log texture ratio | 0 | " + " | ".join(f"{v:.3f}" for v in summary.values())
                + " |")
    table = "\n".join(rows) + "\n"
    res = {"meta": {"command": " ".join([Path(sys.executable).name, *sys.argv]),
                    "machine": platform.platform(), "seconds": time.time() - t0, "per_class": a.per_class,
                    "seed": a.seed},
           "real_pbc_train_part": real, "rendered": looks, "summary": summary, "table": table}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(res, indent=1) + "\n")
    print(table)
    write_doc(res, a.doc)
    return 0


def write_doc(res: dict[str, Any], doc: Path | None) -> None:
    from marrowscope.models.cards import write_generated_block

    if doc is not None:
        m = res["meta"]
        write_generated_block(doc, BEGIN, f"Command: `{m['command']}`; {m['per_class']} cells per type and "
                                          f"look, seed {m['seed']}.\n\n{res['table']}")


if __name__ == "__main__":
    raise SystemExit(main())
