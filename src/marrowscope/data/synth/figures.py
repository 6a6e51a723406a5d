"""Figures that let anyone judge the synthetic cells: per-class gallery, an ROI, real vs synthetic.

Real crops (Matek et al. bone marrow, Acevedo et al. PBC; CC BY 4.0) appear only as small thumbnails
read from the shared data folder; nothing of them is stored in the package.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from marrowscope.data.synth.field import FieldConfig, render_field
from marrowscope.data.synth.render import DEFAULT_MPP, Stain, od_to_rgb, paste_od, render_cell, sample_stain

# Gallery order: by lineage, neighbouring maturation stages next to each other.
GALLERY_LABELS: tuple[str, ...] = (
    "myeloblast", "myelocytic_blast", "unknown_blast", "lymphocytic_blast", "lymphoblast", "monocytic_blast",
    "promyelocyte", "neutrophilic_myelocyte", "neutrophilic_metamyelocyte", "neutrophilic_band",
    "segmented_neutrophil", "degranulated_neutrophilic_myelocyte", "degranulated_neutrophilic_metamyelocyte",
    "eosinophilic_myelocyte", "eosinophilic_metamyelocyte", "eosinophilic_band", "segmented_eosinophil",
    "basophilic_myelocyte", "basophilic_metamyelocyte", "basophilic_band", "segmented_basophil",
    "promonocyte", "monocyte", "macrophage",
    "proerythroblast", "basophilic_erythroblast", "polychromatic_erythroblast", "orthochromatic_erythroblast",
    "prolymphocyte", "lymphocyte", "lymphoidocyte", "plasma_cell",
    "promegakaryocyte", "megakaryocyte", "micromegakaryocyte",
    "mitosis", "pseudo_gaucher_cell", "phagocytosis",
    "erythrocyte", "thrombocyte", "giant_platelet", "thrombocyte_aggregate",
    "smudge_cell", "damaged_cell", "artifact", "technically_unfit", "neutrophil_extracellular_trap",
)  # fmt: skip

# Real reference crops -> synthetic labels shown beside them.
MATEK_PAIRS: tuple[tuple[str, str], ...] = (
    ("BLA", "myelocytic_blast"), ("EBO", "polychromatic_erythroblast"), ("EOS", "segmented_eosinophil"),
    ("LYT", "lymphocyte"), ("MON", "monocyte"), ("NGB", "neutrophilic_band"), ("PLM", "plasma_cell"),
)  # fmt: skip
PBC_PAIRS: tuple[tuple[str, str], ...] = (
    ("BA", "segmented_basophil"), ("EO", "segmented_eosinophil"), ("ERB", "orthochromatic_erythroblast"),
    ("PMY", "promyelocyte"), ("MY", "neutrophilic_myelocyte"), ("MMY", "neutrophilic_metamyelocyte"),
    ("BNE", "neutrophilic_band"), ("SNE", "segmented_neutrophil"), ("LY", "lymphocyte"), ("MO", "monocyte"),
    ("PLATELET", "thrombocyte"),
)  # fmt: skip


# Synthetic crop sizes (px at 0.11 µm/px) covering about the field of view of the real crops, judged from
# red-cell diameters (~7.5 µm): Matek 250 px crops show red cells ~95 px wide, PBC 360 px crops ~78 px.
_MATEK_CROP = 190
_PBC_CROP = 320


def context_crop(
    label: str,
    rng: np.random.Generator,
    *,
    size: int = 250,
    stain: Stain | None = None,
    mpp: float = DEFAULT_MPP,
    n_rbc: int = 9,
    look: str = "basic",
) -> np.ndarray:
    """A ``size`` px RGB crop with one ``label`` object at the centre among red cells and platelets, drawn in
    ``look`` (:data:`marrowscope.data.synth.styles.LOOKS`)."""
    stain = stain or Stain()
    canvas = np.zeros((size, size, 3), np.float32)
    cell = render_cell(label, rng, mpp=mpp, blur=stain.blur, look=look)
    h, w = cell.shape
    cx0, cy0 = size // 2 - w // 2, size // 2 - h // 2
    bx1, by1, bx2, by2 = cell.box
    r_cell = 0.5 * max(bx2 - bx1, by2 - by1)
    for _ in range(n_rbc * 6):
        if n_rbc <= 0:
            break
        rb = render_cell("erythrocyte", rng, mpp=mpp, blur=stain.blur, look=look)
        x, y = rng.uniform(-20, size + 20, 2)
        if np.hypot(x - size / 2, y - size / 2) < r_cell + 0.42 * rb.shape[0]:
            continue
        paste_od(canvas, rb, int(x - rb.shape[1] / 2), int(y - rb.shape[0] / 2))
        n_rbc -= 1
    paste_od(canvas, cell, cx0, cy0)
    return od_to_rgb(canvas, stain)


def _font(size: int = 13) -> object:
    from PIL import ImageFont

    try:
        return ImageFont.truetype("DejaVuSans.ttf", size)
    except OSError:
        return ImageFont.load_default()


def gallery_image(
    labels: Sequence[str] = GALLERY_LABELS,
    *,
    per_label: int = 2,
    thumb: int = 100,
    columns: int = 6,
    seed: int = 0,
) -> object:
    """Per-class gallery: ``per_label`` synthetic examples per label, slide-to-slide stain variation."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    slot_w, slot_h, pad = per_label * thumb, thumb + 16, 6
    rows = (len(labels) + columns - 1) // columns
    img = Image.new("RGB", (columns * (slot_w + pad) + pad, rows * (slot_h + pad) + pad), "white")
    draw = ImageDraw.Draw(img)
    font = _font(11)
    for i, label in enumerate(labels):
        r, c = divmod(i, columns)
        x0, y0 = pad + c * (slot_w + pad), pad + r * (slot_h + pad)
        big = label in (
            "megakaryocyte",
            "promegakaryocyte",
            "pseudo_gaucher_cell",
            "macrophage",
            "phagocytosis",
            "technically_unfit",
        )
        for k in range(per_label):
            stain = sample_stain(rng)
            crop = context_crop(label, rng, size=420 if big else 220, stain=stain, n_rbc=10 if big else 6)
            thumb_img = Image.fromarray(crop).resize((thumb, thumb), Image.Resampling.LANCZOS)
            img.paste(thumb_img, (x0 + k * thumb, y0 + 16))
        shown = label.replace("degranulated_neutrophilic", "degran. neutr.")
        draw.text((x0 + 1, y0 + 1), shown + (" (½ scale)" if big else ""), fill=(0, 0, 0), font=font)  # type: ignore[arg-type]
    return img


def roi_image(seed: int = 0, *, diagnosis: str = "AML", size: int = 640, crop: int = 320) -> object:
    """A synthetic 2048 px ROI (downscaled to ``size``) next to a native-resolution ``crop`` of it."""
    from PIL import Image

    from marrowscope.data.synth.composition import sample_patient

    rng = np.random.default_rng(seed)
    patient = sample_patient(diagnosis, rng, hard_case=False)
    cfg = FieldConfig(width=4096, height=2560, roi_size=2048, n_rois=1, cells_per_roi=120)
    fld = render_field(patient.composition, cfg, rng)
    b = fld.rois[0].box
    roi = fld.image[int(b.y1) : int(b.y2), int(b.x1) : int(b.x2)]
    left = Image.fromarray(roi).resize((size, size), Image.Resampling.LANCZOS)
    y0 = x0 = (roi.shape[0] - crop) // 2
    right = Image.fromarray(roi[y0 : y0 + crop, x0 : x0 + crop]).resize((size // 2, size // 2))
    smear = Image.fromarray(fld.image).resize(
        (size // 2, int(size / 2 * fld.image.shape[0] / fld.image.shape[1])), Image.Resampling.LANCZOS
    )
    out = Image.new("RGB", (size + size // 2 + 8, size), "white")
    out.paste(left, (0, 0))
    out.paste(right, (size + 8, 0))
    out.paste(smear, (size + 8, size // 2 + 8))
    return out


def _read_manifest(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def comparison_image(real_root: Path, *, n: int = 3, thumb: int = 96, seed: int = 0, look: str = "basic"
                     ) -> object:
    """Rows of real thumbnails (Matek bone marrow, PBC blood) beside synthetic cells of the mapped label."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    rows: list[tuple[str, list[Path], str, int]] = []
    matek = real_root / "matek_bm_samples"
    if (matek / "manifest.csv").is_file():
        man = _read_manifest(matek / "manifest.csv")
        for code, label in MATEK_PAIRS:
            files = [matek / m["path"] for m in man if m["label"] == code][:n]
            rows.append((f"Matek {code}", files, label, _MATEK_CROP))
    pbc = real_root / "pbc_acevedo2020"
    if (pbc / "manifest.csv").is_file():
        man = _read_manifest(pbc / "manifest.csv")
        for code, label in PBC_PAIRS:
            files = [pbc / m["path"] for m in man if m["fine_label"] == code][::37][:n]
            rows.append((f"PBC {code}", files, label, _PBC_CROP))
    font = _font(12)
    label_w, pad, head = 270, 4, 22
    width = label_w + 2 * n * (thumb + pad) + 12
    img = Image.new("RGB", (width, head + len(rows) * (thumb + pad) + pad), "white")
    draw = ImageDraw.Draw(img)
    draw.text((label_w, 4), "real (CC BY 4.0)", fill=(0, 0, 0), font=font)  # type: ignore[arg-type]
    draw.text((label_w + n * (thumb + pad) + 12, 4), f"synthetic ({look})", fill=(0, 0, 0), font=font)  # type: ignore[arg-type]
    for r, (name, files, label, crop_px) in enumerate(rows):
        y = head + r * (thumb + pad)
        draw.text((4, y + thumb // 2 - 14), name, fill=(0, 0, 0), font=font)  # type: ignore[arg-type]
        draw.text((4, y + thumb // 2 + 2), f"-> {label}", fill=(60, 60, 60), font=font)  # type: ignore[arg-type]
        for k, f in enumerate(files):
            with Image.open(f) as im:
                img.paste(
                    im.convert("RGB").resize((thumb, thumb), Image.Resampling.LANCZOS),
                    (label_w + k * (thumb + pad), y),
                )
        for k in range(n):
            crop = context_crop(
                label, rng, size=crop_px, stain=sample_stain(rng, look), n_rbc=7 if crop_px < 300 else 14,
                look=look)
            img.paste(
                Image.fromarray(crop).resize((thumb, thumb), Image.Resampling.LANCZOS),
                (label_w + n * (thumb + pad) + 12 + k * (thumb + pad), y),
            )
    return img


def write_docs_figures(out_dir: str | Path, real_root: str | Path | None = None, seed: int = 0) -> list[Path]:
    """Write gallery.png, roi.png and (with ``real_root``) real_vs_synthetic.png and
    real_vs_synthetic_textured.png (the ``textured`` look) as palette PNGs."""
    from PIL import Image

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figs: list[tuple[str, object]] = [
        ("gallery.png", gallery_image(seed=seed, thumb=88)),
        ("roi.png", roi_image(seed=seed, size=560, crop=280)),
    ]
    if real_root is not None and Path(real_root).is_dir():
        figs.append(("real_vs_synthetic.png", comparison_image(Path(real_root), seed=seed, thumb=76)))
        figs.append(("real_vs_synthetic_textured.png",
                     comparison_image(Path(real_root), seed=seed, thumb=76, look="textured")))
    written = []
    for name, fig in figs:
        assert isinstance(fig, Image.Image)
        path = out / name
        colors = 64 if name == "roi.png" else 128  # fewer colours flatten textures and real thumbnails
        fig.quantize(colors=colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
            path, optimize=True
        )
        written.append(path)
    return written
