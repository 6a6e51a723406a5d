"""Domain shift table: every model on its in-domain held-out set and on each out-of-domain set.

Run (from the repository root; CPU-heavy, so under the shared lock):

    flock /work/cpu.lock nice -n 10 .venv/bin/python benchmarks/domain_shift.py \
        --classifiers classifier-pbc classifier-synth --detectors detector-blood detector-synth \
        --out runs/domain_shift

Classifier columns (macro F1 at the dataset's granularity, 8-view TTA):

- ``PBC held-out``: the 465-image validation split of ``pbc_acevedo2020`` (label-stratified, seed 0,
  the split ``train classifier`` makes), scored at PBC's 8 groups (scheme ``pbc8``);
- ``BCCD WBC``: ``bccd-wbc:`` crops (another lab), macro F1 over the types with >= 10 cells;
- ``TXL-PBC (PBC src)``: ``txl-pbc:`` crops of the PBC-derived fields re-cropped around their WBC
  box (the framing shifts, the lab does not; 81 of these images are also in ``pbc_acevedo2020``);
- ``Matek``: ``matek:`` bone-marrow crops, cells correct of all (labels the model cannot express count
  as wrong);
- ``OOD AUROC``: per-crop OOD distance (:mod:`marrowscope.engines.ood`), PBC held-out vs BCCD WBC and
  vs Matek (only for weights that carry OOD statistics).

Detector columns: WBC AP@0.5 on BCCD's VOC ``test`` split and on TXL-PBC ``val`` per source; central-cell
recall on the PBC held-out crops (0.1 µm/px) and the Matek crops.

Writes ``OUT/results.json`` (every number) and ``OUT/table.md`` (the table for docs and cards), and
prints the table.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from marrowscope.data.classification_datasets import (
    PBC_CLASSES,
    grouped_split,
    load_image_dataset,
    pbc_to_taxonomy,
    scheme_for_classes,
)
from marrowscope.data.crops import MATEK_MPP, PBC_MPP, images_to_contract, load_image_rgb
from marrowscope.data.ood_datasets import EvalCrops, load_eval_crops
from marrowscope.engines.domain_shift import central_cell_recall, score_crops
from marrowscope.io.annotations.imagefolder import LabelledImage, read_image_folder

log = logging.getLogger("domain_shift")


def pbc_split_items(root: Path, cache_dir: Path | None) -> tuple[list[LabelledImage], list[LabelledImage]]:
    """(training, validation) parts of ``train classifier``'s split of PBC (same loader, same split
    function, seed 0)."""
    sch = scheme_for_classes(PBC_CLASSES, "pbc_fine")
    data, _ = load_image_dataset("pbc", root, PBC_CLASSES, mpp=0.45, size=80, fit_size=64,
                                 cache_dir=cache_dir, scheme=sch)
    _, va = grouped_split(data.labels, data.groups, 0.2, 0)
    val_ids = {data.ids[i] for i in va}
    items = read_image_folder(root)
    return ([it for it in items if str(it.path) not in val_ids],
            [it for it in items if str(it.path) in val_ids])


def pbc_heldout_items(root: Path, cache_dir: Path | None) -> list[LabelledImage]:
    """The validation split of ``train classifier`` on PBC (same loader, same split function, seed 0)."""
    return pbc_split_items(root, cache_dir)[1]


def pbc_crops(items: list[LabelledImage], mpp: float, size: int) -> EvalCrops:
    truth = [pbc_to_taxonomy(LabelledImage(it.path, it.label, None)) for it in items]
    images = images_to_contract([it.path for it in items], src_mpp=PBC_MPP, mpp=mpp, size=size)
    return EvalCrops(images=images, labels=tuple(truth), source_labels=tuple(it.label for it in items),
                     ids=tuple(str(it.path) for it in items), src_mpp=PBC_MPP)


def standardised(crops: EvalCrops, clf: Any) -> EvalCrops:
    """The set's crops with their stain statistics mapped onto the weights' reference (per set, as a
    slide would be standardised per slide)."""
    from dataclasses import replace

    from marrowscope.data.stain import ColourStats, colour_stats, standardise

    basis = np.asarray(clf.spec.params["stain_basis"])
    ref = ColourStats.from_dict(clf.spec.params["colour_reference"])
    return replace(crops, images=standardise(crops.images, basis, colour_stats(crops.images, basis), ref))


def classifier_row(name: str, data: Path, pbc_items: list[LabelledImage], tta: int,
                   colour_standardise: bool = False, precision: str = "fp32") -> dict[str, Any]:
    from sklearn.metrics import roc_auc_score

    from marrowscope.engines.ood import score_crops as ood_scores
    from marrowscope.models.classifier import load_classifier

    clf = load_classifier(name, device="cpu", precision=precision, optimise=precision != "fp32")
    label = name + (" + colour standardisation" if colour_standardise else "")
    row: dict[str, Any] = {"model": label + (f" ({clf.precision})" if precision != "fp32" else ""),
                           "kind": "classifier", "sha256": clf.sha256, "contract": [clf.input_size, clf.mpp],
                           "precision": clf.precision}
    sets = {
        "pbc_heldout": (pbc_crops(pbc_items, clf.mpp, clf.input_size), "pbc8"),
        "bccd_wbc": (load_eval_crops(f"bccd-wbc:{data / 'bccd'}", mpp=clf.mpp, size=clf.input_size), None),
        "txl_pbc": (load_eval_crops(f"txl-pbc:{data / 'txl_pbc'}", mpp=clf.mpp, size=clf.input_size), None),
        "matek": (load_eval_crops(f"matek:{data / 'matek_bm_samples'}", mpp=clf.mpp, size=clf.input_size),
                  None),
    }
    dists: dict[str, np.ndarray | None] = {}
    for key, (crops, scheme) in sets.items():
        if colour_standardise:
            crops = standardised(crops, clf)
        rep = score_crops(clf, crops, tta=tta, eval_scheme=scheme)
        row[key] = {"macro_f1": rep.macro_f1, "macro_f1_min10": rep.extra["macro_f1_min_support"],
                    "n": len(crops), "n_scored": rep.n_images, "n_correct": rep.extra["n_correct"],
                    "accuracy": rep.accuracy, "balanced_accuracy": rep.balanced_accuracy,
                    "per_class": {k: {"f1": v.f1, "support": v.support} for k, v in rep.per_class.items()},
                    "excluded": rep.extra.get("excluded", {}), "skipped": dict(crops.skipped)}
        dists[key] = ood_scores(clf, crops.images)
    if dists["pbc_heldout"] is not None:
        din = dists["pbc_heldout"]
        for key in ("bccd_wbc", "matek"):
            d = dists[key]
            assert d is not None
            y = np.r_[np.zeros(len(din)), np.ones(len(d))]
            row[key]["ood_auroc"] = float(roc_auc_score(y, np.r_[din, d]))
            row[key]["ood_median"] = float(np.median(d))
        row["pbc_heldout"]["ood_median"] = float(np.median(din))
    return row


def detector_row(name: str, data: Path, pbc_items: list[LabelledImage]) -> dict[str, Any]:
    from marrowscope.data.detection_datasets import BLOOD_FIELD_MPP, RED_CELL, voc_samples
    from marrowscope.data.ood_datasets import txl_detection_by_source
    from marrowscope.engines.evaluate import evaluate_detector
    from marrowscope.models.detector import load_detector

    det = load_detector(name, device="cpu")
    classes = tuple(det.classes)
    # a nucleated-cell detector (one class, or cell + red_cell) is scored on the WBC boxes as its cell class;
    # its red cells, when it has the class, are the RBC boxes (trained, not scored)
    cell = classes[0] if len(classes) == 1 else ("cell" if set(classes) == {"cell", RED_CELL} else None)
    mapping = ({"WBC": cell, "RBC": RED_CELL if RED_CELL in classes else None, "Platelets": None,
                "Platelet": None} if cell else None)
    wbc = cell or "WBC"
    row: dict[str, Any] = {"model": name, "kind": "detector", "classes": list(classes)}
    bccd = voc_samples(data / "bccd" / "BCCD", classes, "test", mpp=BLOOD_FIELD_MPP, mapping=mapping)
    m = evaluate_detector(det, bccd)
    row["bccd_test"] = {"wbc_ap50": m.ap50_per_class.get(wbc), "n": m.n_images}
    mpps = {"bccd": BLOOD_FIELD_MPP, "bcd": BLOOD_FIELD_MPP, "raabin": BLOOD_FIELD_MPP, "pbc": PBC_MPP}
    by_source = txl_detection_by_source(data / "txl_pbc", classes, splits=("val",), mpp=mpps, mapping=mapping)
    for src, samples in by_source.items():
        m = evaluate_detector(det, samples)
        row[f"txl_{src}"] = {"wbc_ap50": m.ap50_per_class.get(wbc), "n": m.n_images, "mpp": mpps[src]}
    pbc_imgs = [load_image_rgb(it.path) for it in pbc_items]
    row["pbc_heldout"] = central_cell_recall(det, pbc_imgs, mpp=PBC_MPP)
    matek = sorted((data / "matek_bm_samples").rglob("*.jpg"))
    row["matek"] = central_cell_recall(det, [load_image_rgb(p) for p in matek], mpp=MATEK_MPP)
    return row


def _f(v: Any, digits: int = 3) -> str:
    return "—" if v is None else f"{float(v):.{digits}f}"


def render(rows: list[dict[str, Any]]) -> str:
    out = []
    cls = [r for r in rows if r["kind"] == "classifier"]
    if cls:
        out += ["| classifier | PBC held-out (pbc8 macro F1) | BCCD WBC (macro F1, types ≥ 10) | "
                "TXL-PBC PBC-source re-crops (macro F1) | Matek (correct) | OOD AUROC PBC vs BCCD / Matek |",
                "|---|---|---|---|---|---|"]
        for r in cls:
            mk = r["matek"]
            auc = (f"{_f(r['bccd_wbc'].get('ood_auroc'))} / {_f(mk.get('ood_auroc'))}"
                   if "ood_auroc" in r["bccd_wbc"] else "—")
            out.append(f"| `{r['model']}` | {_f(r['pbc_heldout']['macro_f1'])} (n {r['pbc_heldout']['n']}) | "
                       f"{_f(r['bccd_wbc']['macro_f1_min10'])} (n {r['bccd_wbc']['n']}) | "
                       f"{_f(r['txl_pbc']['macro_f1'])} (n {r['txl_pbc']['n']}) | "
                       f"{mk['n_correct']} of {mk['n']} | {auc} |")
    dets = [r for r in rows if r["kind"] == "detector"]
    if dets:
        srcs = sorted({k for r in dets for k in r if k.startswith("txl_")})
        out += ["", "| detector | BCCD test WBC AP@0.5 | " + " | ".join(
            f"TXL-PBC val {s[4:]} WBC AP@0.5" for s in srcs) + " | central-cell recall PBC | "
            "central-cell recall Matek |", "|---|---|" + "---|" * len(srcs) + "---|---|"]
        for r in dets:
            cells = " | ".join(_f(r.get(s, {}).get("wbc_ap50")) for s in srcs)
            out.append(f"| `{r['model']}` | {_f(r['bccd_test']['wbc_ap50'])} | {cells} | "
                       f"{_f(r['pbc_heldout']['central_cell_recall'])} | "
                       f"{_f(r['matek']['central_cell_recall'])} |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--classifiers", nargs="*", default=["classifier-pbc", "classifier-synth"])
    ap.add_argument("--detectors", nargs="*", default=[])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--out", type=Path, default=Path("runs/domain_shift"))
    ap.add_argument("--tta", type=int, default=8)
    ap.add_argument("--precisions", nargs="+", default=["fp32"],
                    help="score each classifier at each of these (fp32, bf16, int8, auto)")
    ap.add_argument("--standardise", nargs="*", default=[], help="classifiers (with a stain basis in their "
                    "weights) to score again with per-set colour standardisation")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache-dir", type=Path, default=Path("runs/cache"))
    ap.add_argument("--doc", type=Path, default=None,
                    help="also write the table into this doc's generated block named --block")
    ap.add_argument("--block", default=None, help="the doc block's name (with --doc)")
    ap.add_argument("--render-only", action="store_true", help="write --doc from --out/results.json")
    a = ap.parse_args(argv)
    if a.doc is not None and not a.block:
        ap.error("--doc needs --block NAME (which generated block of the doc to write)")
    if a.render_only:
        if a.doc is None:
            ap.error("--render-only needs --doc and --block")
        write_doc(json.loads((a.out / "results.json").read_text()), a.out, a.doc, a.block)
        return 0
    logging.basicConfig(level=logging.WARNING)
    import torch

    torch.set_num_threads(a.threads)
    t0 = time.time()
    items = pbc_heldout_items(a.data / "pbc_acevedo2020", a.cache_dir)
    rows = [classifier_row(n, a.data, items, a.tta, precision=p) for n in a.classifiers for p in a.precisions]
    rows += [classifier_row(n, a.data, items, a.tta, colour_standardise=True) for n in a.standardise]
    rows += [detector_row(n, a.data, items) for n in a.detectors]
    a.out.mkdir(parents=True, exist_ok=True)
    meta = {"command": " ".join(sys.argv), "machine": platform.platform(), "seconds": time.time() - t0,
            "threads": a.threads}
    text = json.dumps({"meta": meta, "rows": rows}, indent=1, default=float)
    (a.out / "results.json").write_text(text + "\n")
    table = render(rows)
    (a.out / "table.md").write_text(table)
    print(table)
    print(f"{meta['seconds']:.0f} s; results in {a.out / 'results.json'}")
    if a.doc is not None:
        write_doc({"meta": meta, "rows": rows}, a.out, a.doc, a.block)
    return 0


def write_doc(res: dict[str, Any], out: Path, doc: Path, block: str) -> None:
    """The table of ``res`` with its command, machine and wall time, as ``doc``'s generated block."""
    from marrowscope.models.cards import write_generated_block

    m = res["meta"]
    begin = f"<!-- BEGIN GENERATED domain_shift {block} from {out / 'results.json'} by domain_shift.py -->"
    body = (f"Command: `{m['command']}`; {m['machine']}, {m['threads']} torch threads, "
            f"{m['seconds']:.0f} s.\n\n{render(res['rows'])}")
    write_generated_block(doc, begin, body)


if __name__ == "__main__":
    raise SystemExit(main())
