"""TXL-PBC leave-one-source-out: does the default detector's recipe find white cells in a lab it never saw?

For each of TXL-PBC's four sources (``bccd``, ``bcd``, ``pbc``, ``raabin``) one detector is trained with that
source held out (:func:`marrowscope.data.detection_datasets.leave_one_source_out`: BCCD ``train`` x3 and the
TXL-PBC ``train`` images of the three other sources; validation BCCD ``val``, or the other sources' TXL-PBC
``val`` when BCCD is the one held out) and scored on **every** TXL-PBC image of the held-out source (its
``train`` and ``val``), WBC AP@0.5 by :func:`marrowscope.eval.detection.evaluate_detections` (pycocotools),
each source at its own scale (PBC fields 0.1 µm/px, the others 0.075 µm/px).

Each source is scored twice: at the scale the recipe assumes for it (PBC 0.1 µm/px, the others 0.075 µm/px,
as the recipe trains on them), and at the scale of its own red cells (``estimate_mpp``: median red-cell box
side = 7.5 µm, over all of the source's images, the rule that gave BCCD's 0.075 µm/px). The second says
how much of a miss is the pixel size, which a real slide's metadata gives and these fields lack.

The recipe is ``detector-marrow``'s (``marrow_recipe_config``: MobileNetV3-FPN Faster R-CNN at 0.25 µm/px,
one class ``cell``, fine-tuned from the bundled ``detector-synth``, the bundled test-time RPN setting) on the
blood fields only, for a fixed wall-clock budget per source (``--budget-min``, epochs fitted to it by a
timed calibration, as ``benchmarks/peers.py`` trains its side): the bundled model's synthetic cohort and
38-minute schedule are not repeated four times. The held-out source's ``val`` images alone are reported
too, to compare with ``peers.py``'s run of the same recipe and budget that trained on every source.

Run (CPU-heavy, idle machine; ~10 min per source with the default budget):

    .venv/bin/python benchmarks/txl_loso.py --data-root ../shared/data --budget-min 8 --threads 2 \\
        --work runs/loso --out benchmarks/results/txl_loso.json

``--augment romanowsky`` trains with the classifier's Romanowsky domain randomisation instead of the
recipe's colour and blur jitter (results in ``txl_loso_romanowsky.json``, its own generated block).

``--scale-range LO HI`` trains with that scale jitter instead of the recipe's (0.8, 1.25) (results in
``txl_loso_scale_jitter.json``, its own generated block).

``--red-cell-class`` trains the RBC boxes as a second class ``red_cell`` (the initial weights' box
predictor starts fresh); only ``cell`` is scored (results in ``txl_loso_red_cell_class.json``).

``--scales red-cells`` trains and scores every TXL-PBC image at its source's red-cell scale
(``txl_source_scales``) instead of the assumed one: the recipe fix the first run pointed at, measured the
same way (results in ``txl_loso_red_cells.json``, its own generated block). Measured in session 9: it
is not a fix (Raabin 0.64 at the assumed scales, 0.44 trained and scored at the red-cell scales).

Prints a markdown table and writes every number to ``--out`` (after each source, so a failure keeps what
was measured); ``--doc docs/benchmarks.md`` rewrites its generated block there (``--render-only``: from
``--out`` without training).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

SOURCES = ("bccd", "bcd", "pbc", "raabin")


def block_name(meta: dict[str, Any]) -> str:
    """The doc block (and results file stem) of a run: ``txl_loso``, ``txl_loso_red_cells``,
    ``txl_loso_romanowsky``, ..."""
    return ("txl_loso" + ("_red_cells" if meta.get("scales") == "red-cells" else "")
            + ("_romanowsky" if meta.get("augment", "basic") == "romanowsky" else "")
            + ("_scale_jitter" if meta.get("scale_range") else "")
            + ("_red_cell_class" if meta.get("red_cell_class") else "")
            + ("_estimated" if meta.get("estimated") else "")
            + (f"_{meta['tag']}" if meta.get("tag") else ""))


def begin_marker(meta: dict[str, Any]) -> str:
    name = block_name(meta)
    return f"<!-- BEGIN GENERATED {name} from benchmarks/results/{name}.json by txl_loso.py -->"


def score(weights: Path, samples: list[Any]) -> dict[str, Any]:
    from marrowscope.engines.detect import detect_image
    from marrowscope.eval.detection import input_mpp
    from marrowscope.models.detector import load_detector
    from peers import score_detector

    det = load_detector(weights, device="cpu")

    def predict(image: Any, s: Any) -> Any:
        return detect_image(image, det, mpp=input_mpp(s.mpp, det.spec.params, det.mpp))

    m = score_detector(predict, samples, ("cell",))
    return {"wbc_ap50": m.ap50_per_class.get("cell"), "n_images": m.n_images,
            "mpp": samples[0].mpp if samples else None}


def score_at_red_cell_scale(data_root: Path, source: str, weights: Path, test: list[Any]) -> dict[str, Any]:
    from marrowscope.data.detection_datasets import with_mpp
    from marrowscope.data.ood_datasets import txl_source_scales

    mpp = txl_source_scales(data_root / "txl_pbc").get(source)
    return {**score(weights, with_mpp(test, mpp)), "mpp": mpp}


def score_at_estimated_scales(fields_file: Path, source: str, weights: Path, test: list[Any]
                              ) -> dict[str, Any]:
    """The held-out source scored with each field at the scale read from its own red cells
    (``red_cell_scale.py``'s per-field estimates): calibrated on the other sources' train fields (the
    primary), uncalibrated, and one scale for the source (the median of its calibrated fields)."""
    from dataclasses import replace

    import numpy as np

    from red_cell_scale import calibrated_mpps

    fields = json.loads(fields_file.read_text())["fields"]
    cal = calibrated_mpps(fields, source)
    raw = {f["image_id"]: f["est_mpp"] for f in fields if f["source"] == source and f.get("est_mpp")}

    def at(m: dict[str, float]) -> list[Any]:
        return [replace(s, mpp=m.get(s.image_id, s.mpp)) for s in test]

    one = float(np.median(list(cal.values())))
    return {"calibrated": {**score(weights, at(cal)), "mpp": float(np.median(list(cal.values()))),
                           "fields_estimated": sum(1 for s in test if s.image_id in cal)},
            "raw": {**score(weights, at(raw)), "mpp": float(np.median(list(raw.values())))},
            "per_source": {**score(weights, at(dict.fromkeys(cal, one))), "mpp": one}}


def estimated_table(res: dict[str, Any]) -> str:
    rows = ["| held-out source | training entries | WBC AP@0.5, all its images (assumed scale) | **each "
            "field at its red cells' estimated scale, calibrated on the other sources** | the same, "
            "uncalibrated | one estimated scale for the source | the source's red-cell boxes' scale | "
            "epochs | train min |",
            "|---|---|---|---|---|---|---|---|---|"]
    for src, r in res["sources"].items():
        a, e, rb = r["test_all"], r["test_all_estimated"], r["test_all_red_cell_scale"]
        c, w, one = e["calibrated"], e["raw"], e["per_source"]
        rows.append(f"| {src} | {r['n_train']} | {a['wbc_ap50']:.3f} ({a['n_images']}, {a['mpp']:g} µm/px) | "
                    f"**{c['wbc_ap50']:.3f}** (median {c['mpp']:.3f} µm/px; {c['fields_estimated']} fields "
                    f"estimated) | {w['wbc_ap50']:.3f} ({w['mpp']:.3f}) | "
                    f"{one['wbc_ap50']:.3f} ({one['mpp']:.3f}) | "
                    f"{rb['wbc_ap50']:.3f} ({rb['mpp']:.3f}) | {r['train']['epochs']} | "
                    f"{r['train']['train_wall_s'] / 60:.1f} |")
    return "\n".join(rows) + "\n\n" + estimated_verdict(res) + "\n"


def estimated_verdict(res: dict[str, Any]) -> str:
    """The pre-registered rule (``results/txl_loso_estimated_rule.txt``) applied."""
    srcs = res["sources"].values()
    base = [r["test_all"]["wbc_ap50"] for r in srcs]
    est = [r["test_all_estimated"]["calibrated"]["wbc_ap50"] for r in srcs]
    worst = min(e - b for e, b in zip(est, base, strict=True))
    mb, me = sum(base) / len(base), sum(est) / len(est)
    ok = me > mb and worst >= -0.02
    return (f"Mean over the held-out sources: {mb:.3f} at the assumed scales, {me:.3f} at the calibrated "
            f"estimates; largest fall {max(0.0, -worst):.3f}. Rule (`txl_loso_estimated_rule.txt`): "
            f"{'**adopted**' if ok else '**not adopted**'}.")


def render(res: dict[str, Any]) -> str:
    m = res["meta"]
    head = (f"Command: `{m['command']}`; {m['cpu_count']} cores, {m['threads']} torch threads, torch "
            f"{m['torch']}, load average {m['load_avg_start'][0]:.2f} at the start and "
            f"{m.get('load_avg_end', [float('nan')])[0]:.2f} at the end; {m.get('seconds', 0) / 60:.0f} min; "
            f"training budget {m['budget_min']:g} min per source; photometric augmentation "
            f"`{m.get('augment', 'basic')}`"
            + (f"; scale jitter {m['scale_range'][0]:g}-{m['scale_range'][1]:g}"
               if m.get("scale_range") else "")
            + ("; red cells trained as a second class (only `cell` scored)"
               if m.get("red_cell_class") else "")
            + (f"; best epoch picked on `{'`, `'.join(m['best_epoch_on'])}` validation AP@0.5"
               if m.get("red_cell_class") and m.get("best_epoch_on") else "")
            + "."
            + (f" Red-cell-scale column: `{m['rescored']}` (the same weights)." if "rescored" in m else "")
            + (f" Note: {m['note']}." if "note" in m else ""))
    mean = ""
    if not m.get("estimated") and len(res["sources"]) > 1:
        aps = [r["test_all"]["wbc_ap50"] for r in res["sources"].values()]
        at = "their red cells'" if m.get("scales") == "red-cells" else "the assumed"
        mean = f"\nMean over the held-out sources at {at} scales: {sum(aps) / len(aps):.3f}.\n"
    return f"{head}\n\n{table(res)}{mean}"


def table(res: dict[str, Any]) -> str:
    if res["meta"].get("estimated"):
        return estimated_table(res)
    if res["meta"].get("scales") == "red-cells":
        rows = ["| held-out source | training entries | WBC AP@0.5, all its images (its red cells' scale) | "
                "its TXL `val` only | epochs | train min |", "|---|---|---|---|---|---|"]
        for src, r in res["sources"].items():
            a, v = r["test_all"], r["test_val"]
            rows.append(f"| {src} | {r['n_train']} | {a['wbc_ap50']:.3f} ({a['n_images']}, {a['mpp']:.3f} "
                        f"µm/px) | {v['wbc_ap50']:.3f} ({v['n_images']}) | {r['train']['epochs']} | "
                        f"{r['train']['train_wall_s'] / 60:.1f} |")
        return "\n".join(rows) + "\n"
    rows = ["| held-out source | training entries | WBC AP@0.5, all its images (assumed scale) | "
            "its TXL `val` only | all its images at its red cells' scale | epochs | train min |",
            "|---|---|---|---|---|---|---|"]
    for src, r in res["sources"].items():
        a, v, rb = r["test_all"], r["test_val"], r.get("test_all_red_cell_scale")
        at_rbc = "—" if rb is None else f"{rb['wbc_ap50']:.3f} ({rb['mpp']:.3f} µm/px)"
        rows.append(f"| {src} | {r['n_train']} | {a['wbc_ap50']:.3f} ({a['n_images']}, {a['mpp']:g} µm/px) | "
                    f"{v['wbc_ap50']:.3f} ({v['n_images']}) | {at_rbc} | {r['train']['epochs']} | "
                    f"{r['train']['train_wall_s'] / 60:.1f} |")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-root", type=Path, default=Path("../shared/data"))
    ap.add_argument("--budget-min", type=float, default=8.0, help="wall-clock training budget per source")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sources", nargs="+", choices=SOURCES, default=list(SOURCES))
    ap.add_argument("--subset", type=int, default=0, help="plumbing check: at most N images per set")
    ap.add_argument("--work", type=Path, default=Path("runs/loso"))
    ap.add_argument("--out", type=Path, default=HERE / "results" / "txl_loso.json")
    ap.add_argument("--doc", type=Path, default=None, help="rewrite this doc's generated block")
    ap.add_argument("--render-only", action="store_true", help="re-render --doc from --out")
    ap.add_argument("--scales", choices=("assumed", "red-cells"), default="assumed",
                    help="TXL-PBC fields at the assumed scales, or each source at its red cells' scale")
    ap.add_argument("--augment", choices=("basic", "romanowsky"), default="basic",
                    help="the recipe's colour/blur jitter, or the classifier's Romanowsky domain "
                         "randomisation")
    ap.add_argument("--tag", default="", help="a suffix for the results' doc block and file name (a rerun "
                                               "of a recipe beside an earlier one)")
    ap.add_argument("--red-cell-class", action="store_true",
                    help="train red cells as a second class (red_cell, from the RBC boxes); only `cell` "
                         "is scored")
    ap.add_argument("--scale-range", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                    help="the recipe's scale jitter instead of its own (0.8 1.25)")
    ap.add_argument("--estimated", type=Path, default=None, metavar="FIELDS_JSON",
                    help="also score each held-out source at the scales read from its fields' red cells "
                         "(red_cell_scale.py's results file)")
    ap.add_argument("--rescore", action="store_true",
                    help="score an earlier run's weights (--work, --out) again, adding the red-cell scale")
    a = ap.parse_args(argv)
    if a.render_only:
        write_doc(json.loads(a.out.read_text()), a.doc)
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    import torch

    from marrowscope.data.detection_datasets import RED_CELL_MAPPING, leave_one_source_out
    from marrowscope.data.ood_datasets import txl_source_scales
    from marrowscope.engines.train_detector import MARROW_CLASSES, marrow_recipe_config
    from peers import _git, train_ours_detector

    red = a.scales == "red-cells"
    if red and a.rescore:
        print("error: --rescore adds the red-cell scale to an --scales assumed run; drop one of them",
              file=sys.stderr)
        return 2
    scales = txl_source_scales(a.data_root / "txl_pbc") if red else None
    # --red-cell-class: the RBC boxes become a second class, which is trained and not scored
    classes: dict[str, Any] = ({"classes": MARROW_CLASSES, "mapping": RED_CELL_MAPPING}
                               if a.red_cell_class else {})

    torch.set_num_threads(a.threads)
    t0 = time.time()
    res: dict[str, Any] = {"meta": {
        "command": " ".join([Path(sys.executable).name, *sys.argv]), "machine": platform.platform(),
        "cpu_count": os.cpu_count(), "threads": a.threads, "torch": torch.__version__,
        "load_avg_start": os.getloadavg(), "commit": _git("rev-parse", "HEAD"), "budget_min": a.budget_min,
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "scales": a.scales,
        "txl_mpp": scales, "augment": a.augment, "scale_range": a.scale_range, "tag": a.tag,
        "red_cell_class": a.red_cell_class,
        "best_epoch_on": list(marrow_recipe_config().select_classes or []),
        "estimated": None if a.estimated is None else str(a.estimated)},
        "sources": {}}
    if a.estimated is not None and (red or not a.estimated.exists()):
        print(f"error: --estimated needs an --scales assumed run and {a.estimated} (run red_cell_scale.py)",
              file=sys.stderr)
        return 2
    a.out.parent.mkdir(parents=True, exist_ok=True)
    if a.rescore:
        res = json.loads(a.out.read_text())
        res["meta"]["rescored"] = " ".join([Path(sys.executable).name, *sys.argv])
    for src in a.sources:
        train, val, test = leave_one_source_out(a.data_root, src, txl_mpp=scales, **classes)
        if a.rescore:
            r = res["sources"][src]
            w = a.work / src / "det_ours" / r["train"]["weights"]
            r["test_all"].setdefault("mpp", test[0].mpp)  # the scores at the assumed scale stand
            r["test_all_red_cell_scale"] = score_at_red_cell_scale(a.data_root, src, w, test)
            print(src, r["test_all"], r["test_all_red_cell_scale"], flush=True)
            continue
        if a.subset:
            train, val, test = train[: a.subset], val[: max(2, a.subset // 8)], test[: max(2, a.subset // 8)]
        data = {"recipe": "marrow", "train": train, "val": val, "augment": a.augment,
                "scale_range": a.scale_range, "classes": classes.get("classes")}
        weights, rec = train_ours_detector(data, a.work / src, a.budget_min, a.threads, a.seed,
                                           quick=bool(a.subset))
        test_val = [s for s in test if "/val/" in str(s.annotations.image_path).replace(os.sep, "/")]
        res["sources"][src] = {"n_train": len(train), "n_val": len(val), "train": rec,
                               "test_all": score(weights, test), "test_val": score(weights, test_val),
                               "load_avg_after": os.getloadavg()}
        if not red:  # (at the red-cell scale already otherwise)
            res["sources"][src]["test_all_red_cell_scale"] = score_at_red_cell_scale(
                a.data_root, src, weights, test)
        if a.estimated is not None:
            res["sources"][src]["test_all_estimated"] = score_at_estimated_scales(
                a.estimated, src, weights, test)
        print(src, res["sources"][src]["test_all"], res["sources"][src]["test_val"], flush=True)
        a.out.write_text(json.dumps(res, indent=1, default=float) + "\n")
    if not a.rescore:
        res["meta"].update(seconds=time.time() - t0, load_avg_end=os.getloadavg())
    res["table"] = table(res)
    a.out.write_text(json.dumps(res, indent=1, default=float) + "\n")
    print(res["table"])
    print(f"{res['meta']['seconds'] / 60:.1f} min; results in {a.out}")
    write_doc(res, a.doc)
    return 0


def write_doc(res: dict[str, Any], doc: Path | None) -> None:
    from marrowscope.models.cards import write_generated_block

    if doc is not None:
        write_generated_block(doc, begin_marker(res["meta"]), render(res))


if __name__ == "__main__":
    raise SystemExit(main())
