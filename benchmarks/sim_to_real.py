"""Sim-to-real transfer: classifiers trained on synthetic cells only, scored on real cells (issue 10 point 4).

The renderer's realism is measured as how well a classifier that has seen only rendered cells names
real ones. Sets (8-view TTA unless ``--tta``), each scored at the real set's granularity:

- ``pbc_train_part``: the PBC images outside the held-out split (the 1,857 images ``train classifier``
  trains on when given PBC). A synthetic-only model never sees them, so this is the **validation set
  for sim-to-real choices** (renderer settings, randomisation, recipes): choose on it;
- ``pbc_heldout``: the 465-image held-out split (``domain_shift.py``'s), pbc8 macro F1: the number
  reported, never used to choose;
- ``matek``: the 18 Matek bone-marrow crops, cells correct (evaluation only).

Run: .venv/bin/python benchmarks/sim_to_real.py --classifiers classifier-synth runs/s2r/X/classifier.pt \\
         --out runs/sim_to_real
Writes OUT/results.json and OUT/table.md and prints the table; ``--json FILE`` writes the results there
too and ``--doc DOC`` rewrites DOC's generated block for that file (``--render-only``: from ``--json``).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

from domain_shift import pbc_crops, pbc_split_items
from marrowscope.data.ood_datasets import load_eval_crops
from marrowscope.engines.domain_shift import score_crops


def row(name: str, data: Path, parts: tuple[list[Any], list[Any]], tta: int) -> dict[str, Any]:
    from marrowscope.models.classifier import load_classifier

    clf = load_classifier(name, device="cpu")
    out: dict[str, Any] = {"model": name, "sha256": clf.sha256, "training_data": clf.spec.training_data}
    sets = {"pbc_train_part": (pbc_crops(parts[0], clf.mpp, clf.input_size), "pbc8"),
            "pbc_heldout": (pbc_crops(parts[1], clf.mpp, clf.input_size), "pbc8"),
            "matek": (load_eval_crops(f"matek:{data / 'matek_bm_samples'}", mpp=clf.mpp,
                                      size=clf.input_size), None)}
    for key, (crops, scheme) in sets.items():
        rep = score_crops(clf, crops, tta=tta, eval_scheme=scheme)
        out[key] = {"macro_f1": rep.macro_f1, "accuracy": rep.accuracy, "n": len(crops),
                    "n_correct": rep.extra["n_correct"],
                    "per_class_f1": {k: v.f1 for k, v in rep.per_class.items()}}
    return out


def render(rows: list[dict[str, Any]]) -> str:
    lines = ["| classifier (synthetic only) | PBC training part, pbc8 macro F1 (validation) | "
             "PBC held-out, pbc8 macro F1 (reported) | Matek (correct) |", "|---|---|---|---|"]
    for r in rows:
        tr = r["pbc_train_part"]
        lines.append(f"| `{r['model']}` | {tr['macro_f1']:.3f} (n {tr['n']}) "
                     f"| {r['pbc_heldout']['macro_f1']:.3f} (n {r['pbc_heldout']['n']}) | "
                     f"{r['matek']['n_correct']} of {r['matek']['n']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--classifiers", nargs="+", default=["classifier-synth"])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--out", type=Path, default=Path("runs/sim_to_real"))
    ap.add_argument("--tta", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache-dir", type=Path, default=Path("runs/cache"))
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument("--doc", type=Path, default=None, help="rewrite its generated block (needs --json)")
    ap.add_argument("--render-only", action="store_true", help="re-render --doc from --json")
    a = ap.parse_args(argv)
    if a.render_only:
        write_doc(json.loads(a.json.read_text()), a.json, a.doc)
        return 0
    pbc = a.data / "pbc_acevedo2020"
    if not pbc.is_dir():
        raise SystemExit(f"{pbc}: not found (the shared PBC data lives in ../shared/data; see its README)")
    import torch

    torch.set_num_threads(a.threads)
    t0 = time.time()
    parts = pbc_split_items(pbc, a.cache_dir)
    rows = [row(n, a.data, parts, a.tta) for n in a.classifiers]
    a.out.mkdir(parents=True, exist_ok=True)
    meta = {"command": " ".join(sys.argv), "machine": platform.platform(), "seconds": time.time() - t0}
    res = {"meta": meta, "rows": rows}
    for path in (a.out / "results.json", a.json):
        if path is not None:
            path.write_text(json.dumps(res, indent=1) + "\n")
    table = render(rows)
    (a.out / "table.md").write_text(table)
    print(table)
    write_doc(res, a.json, a.doc)
    return 0


def write_doc(res: dict[str, Any], json_path: Path | None, doc: Path | None) -> None:
    from marrowscope.models.cards import write_generated_block

    if doc is None:
        return
    if json_path is None:
        raise SystemExit("--doc needs --json (the block names its results file)")
    begin = f"<!-- BEGIN GENERATED sim_to_real from {json_path.as_posix()} by sim_to_real.py -->"
    m = res["meta"]
    write_generated_block(doc, begin, f"Command: `{m['command']}`; {m['seconds'] / 60:.1f} min.\n\n"
                                      f"{render(res['rows'])}")


if __name__ == "__main__":
    raise SystemExit(main())
