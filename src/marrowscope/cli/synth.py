"""CLI: ``marrowscope synth`` writes a synthetic cohort in the dataset's formats."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from marrowscope.cli import params
from marrowscope.cli.app import app
from marrowscope.errors import InputError


def _kind_weights(labelled: float, detection_only: float, roi_only: float) -> dict[str, float]:
    weights = {"labelled": labelled, "detection_only": detection_only, "roi_only": roi_only}
    if any(v < 0 for v in weights.values()) or not any(v > 0 for v in weights.values()):
        raise InputError("--labelled/--detection-only/--roi-only", "kind weights must be >= 0, not all 0")
    return {k: v for k, v in weights.items() if v > 0}


def _size(text: str) -> tuple[int, int]:
    parts = text.lower().replace("×", "x").split("x")
    if len(parts) in (1, 2) and all(p.strip().isdigit() for p in parts):
        w = int(parts[0])
        return w, int(parts[-1])
    raise InputError("--slide-size", f"give a side in px (6144) or WIDTHxHEIGHT (180000x60000), got {text!r}")


@app.command("synth")
def synth(
    patients: int = typer.Option(6, "--patients", "-n", help="Number of patients (one slide each)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (built beside it, moved into place)."),
    seed: int = typer.Option(0, "--seed", callback=params.NON_NEGATIVE,
                             help="Random seed: same seed and settings, same cohort."),
    slide_size: str = typer.Option(
        "6144", "--slide-size",
        help="Slide side in px, or WIDTHxHEIGHT (e.g. 180000x60000, the real slides' size: written tile by "
             "tile in bounded memory, as are all slides over 16384 x 16384 px)."),
    roi_size: int = typer.Option(2048, "--roi-size", help="ROI side in px (2048 in the real data)."),
    rois: int = typer.Option(2, "--rois", help="ROIs per slide."),
    cells_per_roi: int = typer.Option(120, "--cells-per-roi", help="Boxed objects placed per ROI."),
    labelled: float = typer.Option(1.0, "--labelled", help="Weight of labelled slides."),
    detection_only: float = typer.Option(0.0, "--detection-only", help="Weight of detection-only slides."),
    roi_only: float = typer.Option(0.0, "--roi-only", help="Weight of slides with ROIs only."),
    look: str = typer.Option(
        "basic", "--look",
        help="How cells are drawn: basic (what the bundled synthetic models were trained on) or textured "
             "(real cells' chromatin and granule texture at 0.45 µm/px, paler red cells, warm to cool "
             "glass; docs/synth.md)."),
    box_red_cells: bool = typer.Option(
        False, "--box-red-cells",
        help="Also box the ROIs' background red cells (label erythrocyte), as in data that boxes every red "
             "cell: for a detector with a red_cell class (detector-marrow's recipe). Same pixels."),
    workers: int = typer.Option(
        min(2, os.cpu_count() or 1),
        "--workers",
        min=1,
        help="Processes rendering slides (same result for any).",
    ),
) -> None:
    """Write a synthetic cohort: DICOM WSI + ANN series, dataset CSVs, clinical CSV, truth record."""
    from marrowscope.data.synth.cohort import SynthConfig, generate_cohort

    width, height = _size(slide_size)
    limits = (
        ("--patients", patients, 1), ("--slide-size", min(width, height), 64), ("--roi-size", roi_size, 32),
        ("--rois", rois, 0), ("--cells-per-roi", cells_per_roi, 0), ("--workers", workers, 1),
    )  # fmt: skip
    for flag, value, lowest in limits:
        if value < lowest:
            raise InputError(flag, f"must be at least {lowest}, got {value}")
    try:
        config = SynthConfig(
            n_patients=patients,
            seed=seed,
            slide_size=width,
            slide_height=None if height == width else height,
            roi_size=roi_size,
            n_rois=rois,
            cells_per_roi=cells_per_roi,
            kind_weights=_kind_weights(labelled, detection_only, roi_only),
            look=look,
            box_red_cells=box_red_cells,
        )
    except ValueError as exc:
        raise InputError(out, f"bad synthetic cohort settings: {exc}") from exc
    record = generate_cohort(config, out, workers=workers)
    if record.already_complete:
        typer.echo(f"{out}: already holds this complete synthetic cohort (seed {seed}); nothing to do")
    else:
        n = len(record.slides)
        typer.echo(f"wrote a synthetic cohort of {n} patient(s) to {out} in {record.seconds:.1f} s")
    for s in record.slides:
        typer.echo(
            f"  {s.patient_id}  {s.diagnosis:<7} {s.kind:<14} {s.n_rois} ROI(s)  {s.n_annotated:>5} boxes  "
            f"{len(s.ann_files)} ANN series"
        )
    typer.echo(
        "  dicom/  csv/cells_labelled.csv  csv/cells_detection_only.csv  csv/rois.csv  csv/clinical.csv"
    )
    typer.echo(
        f"  synth_record.json (the truth: diagnoses, counts, every box); {record.n_annotated} boxes in all"
    )
