"""Recipe sweep for ``detector-blood``: several training variants side by side on one (GPU) machine.

Each variant trains in its own process for the same wall-clock budget (the number of epochs is set from
a timed calibration of 14 steps, so every cosine schedule ends inside the budget), validates on BCCD's
``val`` split every 2 epochs, and its best weights are then scored on BCCD's ``test`` split. Variants
differ in the data (``v1``: BCCD train + every TXL-PBC image that is not a copy of a BCCD val/test field;
``v2``: BCCD train + TXL-PBC images that are copies of no BCCD field, the bundled recipe), BCCD repeats,
model scale (µm/px), learning rate and crop.

Two steps, because a lent GPU machine takes at most 64 MiB of files:

    # here: BCCD + TXL-PBC resampled to 0.1 µm/px, JPEG q85, one manifest (~25 MB)
    .venv/bin/python benchmarks/sweep_detector_blood.py pack --data-root ../shared/data --out .gpu/data
    # there (src/ on PYTHONPATH, pycocotools importable): prints a ranking, writes OUT/results.json and
    # the fp16 weights of the best --keep variants
    python3 benchmarks/sweep_detector_blood.py run --pack .gpu/data --budget-min 6.4 --out $OUT

The test numbers it prints are on the re-encoded copies; score a weights file on the original images
with ``marrowscope evaluate detector --weights W --dataset voc:../shared/data/bccd:test``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

PACK_MPP = 0.1  # the packed images' scale (fields are 0.075 µm/px: resampled by 0.75)

#: name -> (data variant, model µm/px, peak learning rate, BCCD train repeats, crop side)
VARIANTS: dict[str, tuple[str, float, float, int, int]] = {
    "v1_m15": ("v1", 0.15, 1e-3, 1, 384),
    "v1_m10": ("v1", 0.10, 1e-3, 1, 384),
    "v2_m10": ("v2", 0.10, 1e-3, 1, 384),
    "v1b3_m10": ("v1", 0.10, 1e-3, 3, 384),
    "v2b3_m10": ("v2", 0.10, 1e-3, 3, 384),
    "v1_m10_lr2": ("v1", 0.10, 2e-3, 1, 384),
    "v1_m075": ("v1", 0.075, 1e-3, 1, 384),
    "v1_m075_c512": ("v1", 0.075, 1e-3, 1, 512),
    "v2b3_m10_lr2": ("v2", 0.10, 2e-3, 3, 384),
    "v2b3_m075_c512_lr2": ("v2", 0.075, 2e-3, 3, 512),
}


def pack(data_root: Path, out: Path, quality: int = 85) -> None:
    from PIL import Image

    from marrowscope.data import detection_datasets as dd

    (out / "img").mkdir(parents=True, exist_ok=True)
    factor = dd.BLOOD_FIELD_MPP / PACK_MPP
    copies: dict[str, str] = {}
    with open(data_root / "txl_pbc" / "bccd_duplicates.csv", newline="") as f:
        for row in csv.DictReader(f):
            copies[Path(row["txl_path"]).stem] = row["bccd_voc_split"]
    items: list[dict[str, Any]] = []

    def add(s: dd.DetectionSample, source: str, split: str, copy_of: str | None) -> None:
        img = s.load()
        h, w = img.shape[:2]
        nw, nh = max(1, round(w * factor)), max(1, round(h * factor))
        Image.fromarray(img).resize((nw, nh), Image.Resampling.BILINEAR).save(
            out / "img" / f"{s.image_id}.jpg", quality=quality)
        boxes = s.annotations.boxes_array().reshape(-1, 4) * np.array([nw / w, nh / h, nw / w, nh / h])
        items.append({"id": s.image_id, "source": source, "split": split, "copy_of": copy_of,
                      "boxes": np.round(boxes, 2).tolist(), "labels": [c.label for c in s.annotations]})

    for split in ("train", "val", "test"):
        for s in dd.voc_samples(data_root / "bccd" / "BCCD", dd.BLOOD_CLASSES, split):
            add(s, "bccd", split, None)
    for split in ("train", "val"):
        for s in dd.yolo_samples(data_root / "txl_pbc" / "TXL_PBC", dd.BLOOD_CLASSES, split):
            if copies.get(s.image_id) != "test":  # never needed: keep the pack small
                add(s, "txl", split, copies.get(s.image_id))
    (out / "manifest.json").write_text(json.dumps(items))
    size = sum(f.stat().st_size for f in (out / "img").iterdir())
    print(f"{len(items)} images, {size / 1e6:.1f} MB -> {out}")


def _samples(pack_dir: Path, variant: str, repeats: int) -> tuple[list[Any], list[Any], list[Any]]:
    from marrowscope.cells import Box, Cell, CellAnnotations
    from marrowscope.data.detection_datasets import DetectionSample

    train: list[Any] = []
    val: list[Any] = []
    test: list[Any] = []
    for it in json.loads((pack_dir / "manifest.json").read_text()):
        cells = tuple(Cell(Box(*b), lab) for b, lab in zip(it["boxes"], it["labels"], strict=True))
        ann = CellAnnotations(cells, image_path=str(pack_dir / "img" / f"{it['id']}.jpg"))
        s = DetectionSample(it["id"], ann, it["id"], mpp=PACK_MPP)
        if it["source"] == "bccd":
            {"train": train, "val": val, "test": test}[it["split"]].extend(
                [s] * (repeats if it["split"] == "train" else 1))
        elif it["copy_of"] is None or (variant == "v1" and it["copy_of"] == "train"):
            train.append(s)
    return train, val, test


def _step_seconds(cfg: Any, prepared: list[Any], device: str, n: int = 14,
                  state: dict[str, Any] | None = None) -> float:
    """Median seconds of a training step (augmentation included) on a throw-away model (starting from
    ``state`` when the recipe fine-tunes: a random detector's proposals cost another amount of work)."""
    import torch

    from marrowscope.data.augment import Augmenter
    from marrowscope.engines.train_detector import training_batch
    from marrowscope.models.detector import build_detector

    model = build_detector(cfg.spec())
    if state is not None:
        model.load_state_dict(state, strict=False)  # without the box predictor when the classes differ
    model = model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    aug, rng, times = Augmenter(cfg.augment), np.random.default_rng(0), []
    for _ in range(n):
        t = time.monotonic()
        picked = [prepared[int(i)] for i in rng.integers(0, len(prepared), cfg.batch_size)]
        images, targets = training_batch(picked, [rng] * len(picked), aug, cfg, device)
        loss = sum(model(images, targets).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.monotonic() - t)
    return float(np.median(times[4:]))


def run_variant(name: str, pack_dir: Path, budget_min: float, work: Path, threads: int) -> None:
    import torch

    from marrowscope.engines.train_detector import (
        blood_recipe_config,
        prepare_samples,
        train_detector,
        validate,
    )
    from marrowscope.models.detector import build_detector
    from marrowscope.models.weights import load_weights, save_weights

    t0 = time.monotonic()
    variant, mpp, lr, repeats, crop = VARIANTS[name]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    train, val, test = _samples(pack_dir, variant, repeats)
    if os.environ.get("SWEEP_DRY"):  # a quick check of the whole path on a CPU
        train, val, test = train[:48], val[:6], test[:6]
    cfg = replace(blood_recipe_config(num_threads=threads), mpp=mpp, lr=lr, crop_size=crop, device=device)
    t_step = _step_seconds(cfg, prepare_samples(train[:64], cfg.classes, mpp), device)
    steps = len(train) // cfg.batch_size
    left = budget_min * 60 - (time.monotonic() - t0) - 40  # loading the data, scoring the test split
    epochs = max(1, int(left / (steps * t_step * 1.1 + 20.0 / cfg.eval_every)))
    cfg = replace(cfg, epochs=epochs, max_minutes=(budget_min * 60 - (time.monotonic() - t0) - 25) / 60)
    print(f"{name}: {len(train)} train / {len(val)} val, {t_step:.3f} s/step, {steps} steps/epoch, "
          f"{epochs} epochs", flush=True)
    res = train_detector(train, val, cfg, work / name, resume=False, progress=False)
    out: dict[str, Any] = {"name": name, "variant": variant, "mpp": mpp, "lr": lr, "bccd_repeats": repeats,
                           "crop": crop, "epochs": epochs, "step_seconds": t_step, "finished": res.finished,
                           "train_seconds": res.train_seconds, "n_train": len(train),
                           "history": [asdict(h) for h in res.history]}
    if res.best_weights is not None:
        sd, spec, extra = load_weights(res.best_weights, task="detector")
        model = build_detector(spec)
        model.load_state_dict(sd)
        m = validate(model.to(device).eval(), spec, prepare_samples(test, spec.classes, mpp), device)
        scores = {"ap50": m.ap50, "ap": m.ap, "ap50_per_class": m.ap50_per_class,
                "precision_per_class": m.precision_per_class, "recall_per_class": m.recall_per_class}
        out.update(best_epoch=extra.get("epoch"), val_ap50=extra.get("val_ap50"), test=scores)
        save_weights(work / name / f"{name}.pt", sd, spec, half=True, extra=extra)
    (work / name / "result.json").write_text(json.dumps(out, indent=1, default=float))


def run_all(pack_dir: Path, names: list[str], budget_min: float, out: Path, keep: int, threads: int) -> None:
    work = Path(os.environ.get("SWEEP_WORK", "/tmp/sweep"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": str(threads)}
    procs = {}
    for n in names:
        with open(work / f"{n}.log", "w") as log:
            procs[n] = subprocess.Popen(
                [sys.executable, __file__, "variant", n, "--pack", str(pack_dir), "--budget-min",
                 str(budget_min), "--work", str(work), "--threads", str(threads)],
                env=env, stdout=log, stderr=subprocess.STDOUT)
    results = []
    for n, p in procs.items():
        p.wait()
        lines = [ln for ln in (work / f"{n}.log").read_text().splitlines() if ln.startswith(n)]
        print(f"{n}: exit {p.returncode}; " + " | ".join(lines), flush=True)
        if (work / n / "result.json").exists():
            results.append(json.loads((work / n / "result.json").read_text()))
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    ranked = sorted((r for r in results if r.get("val_ap50") is not None), key=lambda r: -r["val_ap50"])
    for r in ranked[:keep]:
        shutil.copy(work / r["name"] / f"{r['name']}.pt", out / f"{r['name']}.pt")
    for r in ranked:
        per = {k: round(v, 3) for k, v in r["test"]["ap50_per_class"].items()}
        print(f"{r['name']}: val AP@0.5 {r['val_ap50']:.4f}, test AP@0.5 {r['test']['ap50']:.4f} {per}, "
              f"{r['epochs']} epochs (best {r['best_epoch']})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack")
    p.add_argument("--data-root", type=Path, default=Path("../shared/data"))
    p.add_argument("--out", type=Path, required=True)
    r = sub.add_parser("run")
    r.add_argument("--pack", type=Path, required=True)
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--variants", default=",".join(VARIANTS))
    r.add_argument("--budget-min", type=float, default=6.0)
    r.add_argument("--keep", type=int, default=4, help="weights files copied to --out (best first)")
    r.add_argument("--threads", type=int, default=2, help="CPU threads per variant")
    v = sub.add_parser("variant")
    v.add_argument("name", choices=sorted(VARIANTS))
    v.add_argument("--pack", type=Path, required=True)
    v.add_argument("--work", type=Path, required=True)
    v.add_argument("--budget-min", type=float, default=6.0)
    v.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    if a.cmd == "pack":
        pack(a.data_root, a.out)
    elif a.cmd == "run":
        run_all(a.pack, a.variants.split(","), a.budget_min, a.out, a.keep, a.threads)
    else:
        run_variant(a.name, a.pack, a.budget_min, a.work, a.threads)


if __name__ == "__main__":
    main()
