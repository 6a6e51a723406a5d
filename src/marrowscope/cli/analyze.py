"""CLI: ``marrowscope analyze`` (slides to differential, diagnosis suggestion and report) and ``demo``."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from marrowscope.cli import params
from marrowscope.cli.app import app
from marrowscope.errors import InputError, MarrowscopeError
from marrowscope.models.inference import PRECISIONS

if TYPE_CHECKING:
    from marrowscope.engines.pipeline import AnalysisConfig
    from marrowscope.engines.ray_runner import RayConfig

class SlidesFailed(MarrowscopeError):
    """Some slides of a batch failed (the others were analysed); exit status 1."""

    exit_code = 1


# analyze's defaults are the models for real slides (engines.pipeline.REAL_SLIDE_MODELS), the demo's the
# synthetic-only ones (SYNTHETIC_MODELS); None here means "the command's default set"
_DET = typer.Option(None, "--detector", help="Detector: bundled name or weights file (analyze: "
                    "detector-marrow, for real slides; demo: detector-synth).")
_CLF = typer.Option(None, "--classifier", help="Cell classifier: bundled name or weights file (analyze: "
                    "classifier-marrow, for real slides; demo: classifier-synth).")
_DX = typer.Option(None, "--diagnosis", help="Diagnosis model: bundled name, file, or 'none' (default: "
                   "diagnosis-synth, the only one, trained on synthetic counts).")
_TARGET = typer.Option(500, "--target-cells", min=1, help="Countable cells for the differential (ICSH: 500).")
_SEED = typer.Option(0, "--seed", callback=params.NON_NEGATIVE,
                     help="Random seed (recorded in summary.json).")
_DEVICE = typer.Option("auto", "--device", callback=params.device,
                       help="Where the models run: auto (cuda when available), cpu, cuda, cuda:N or mps.")
_THREADS = typer.Option(None, "--threads", min=1, help="CPU threads for torch (default: torch's own).")
_BATCH = typer.Option(4, "--batch-size", min=1, help="Tiles per detector call (larger is faster on a GPU).")
_PRECISION = typer.Option("auto", "--precision", callback=params.one_of(*PRECISIONS),
                          help="Inference precision: auto (bf16 where the CPU has AMX or the GPU "
                               "supports it; else, on a CPU, an int8 classifier where its weights carry "
                               "an int8 calibration; else fp32), fp32, bf16 or int8 (the classifier; the "
                               "detector stays fp32) (docs/benchmarks.md, speed).")


def _config(detector: str | None, classifier: str | None, diagnosis: str | None, target_cells: int, seed: int,
            max_cells: int | None = None, device: str = "auto", threads: int | None = None,
            batch_size: int = 4, precision: str = "auto", synthetic: bool = False) -> AnalysisConfig:
    from marrowscope.engines.pipeline import REAL_SLIDE_MODELS, SYNTHETIC_MODELS, AnalysisConfig

    default = SYNTHETIC_MODELS if synthetic else REAL_SLIDE_MODELS
    diagnosis = diagnosis or default["diagnosis"]
    cfg = AnalysisConfig(detector=detector or default["detector"],
                         classifier=classifier or default["classifier"],
                         diagnosis=None if diagnosis.lower() == "none" else diagnosis,
                         target_cells=target_cells, seed=seed, device=None if device == "auto" else device,
                         threads=threads, batch_size=batch_size, precision=precision)
    return cfg if max_cells is None else replace(cfg, max_cells=max(max_cells, target_cells))


def _ray_config(address: str, cpus_per_worker: float | None) -> RayConfig:
    from marrowscope.engines.ray_runner import RayConfig

    if address not in ("auto", "local") and Path(address).exists():
        raise InputError(address, "--ray takes the cluster address (auto, local or HOST:PORT), not a slide; "
                                  "e.g. --ray auto")
    return RayConfig(address=address, cpus_per_worker=cpus_per_worker)


@app.command("analyze")
def analyze(
    slides: list[Path] = typer.Argument(..., help="Slides: DICOM folders or files, MRXS/SVS/TIFF, images."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (one subfolder per slide)."),
    detector: str | None = _DET,
    classifier: str | None = _CLF,
    diagnosis: str | None = _DX,
    target_cells: int = _TARGET,
    max_cells: int = typer.Option(5000, "--max-cells", min=1,
                                  help="Most cells counted while a blast interval straddles a threshold."),
    mpp: str | None = typer.Option(None, "--mpp", callback=params.pixel_size, metavar="MPP|auto",
                                   help="Pixel size in µm/px of slides that lack one (the slide's scale; the "
                                        "models' own scales come from their weights), or 'auto': read "
                                        "it from the red cells of a slide that has none (the report says "
                                        "so)."),
    rois: Path | None = typer.Option(None, "--rois", help="ROI CSV (dataset format) or QuPath GeoJSON."),
    seed: int = _SEED,
    regions: str = typer.Option(
        "annotated", "--regions",
        help="'annotated': a slide's annotated ROIs (its DICOM ANN ROI series, the cohort's ROI CSV or "
             "--rois), automatic monolayer fields where it has none; 'auto': automatic fields always."),
    ray: str | None = typer.Option(
        None, "--ray", metavar="auto|local|ADDRESS",
        help="Spread the slides over a Ray cluster (pip install 'marrowscope\\[ray]'): 'auto' (RAY_ADDRESS, "
             "a cluster started on this machine, else a local one), 'local', or the head's HOST:PORT or "
             "ray://HOST:10001 (docs/scale.md)."),
    ray_cpus: float | None = typer.Option(
        None, "--ray-cpus-per-worker", min=0.01,
        help="CPUs (= torch threads) each Ray worker (one slide at a time) takes; default: one per CPU, "
             "or fewer, wider workers where there are fewer slides than CPUs (1 with GPUs)."),
    device: str = _DEVICE,
    threads: int | None = _THREADS,
    batch_size: int = _BATCH,
    precision: str = _PRECISION,
) -> None:
    """Analyse slides: regions, cells, differential with intervals, diagnosis suggestion, report.

    A finished slide is reused when its slide and settings match (else redone, and batch_summary.json says
    why), so an interrupted run is restarted with the same command.
    """
    from marrowscope.engines.batch import analyze_batch

    if regions not in ("annotated", "auto"):
        raise InputError("--regions", f"must be 'annotated' or 'auto', got {regions!r}")
    cfg = _config(detector, classifier, diagnosis, target_cells, seed, max_cells, device, threads, batch_size,
                  precision)
    cfg = replace(cfg, use_annotated_rois=regions == "annotated")
    summary = analyze_batch([str(s) for s in slides], out, cfg, mpp=mpp, rois=rois,
                            ray=None if ray is None else _ray_config(ray, ray_cpus))
    for s in summary.slides:
        if s.status == "failed":
            typer.echo(f"FAILED  {s.slide_id or s.source}: {s.reason}", err=True)
        else:
            blast = "" if s.blast_fraction is None else f"blasts {100 * s.blast_fraction:.1f} %"
            dx = f", suggestion {s.headline}" if s.suggestion else ""
            warn = f" [warnings: {', '.join(s.warnings)}]" if s.warnings else ""
            typer.echo(f"{s.status:<7} {s.slide_id}: {s.n_counted} cells, {blast}{dx}{warn}")
    n_failed = len(summary.failures)
    typer.echo(f"{summary.n_done} analysed, {summary.n_skipped} already done, {n_failed} failed; "
               f"index: {summary.index}")
    if summary.failures:
        raise SlidesFailed(f"{n_failed} of {len(summary.slides)} slide(s) failed (reasons above and in "
                           f"{summary.summary_path})")


@app.command("demo")
def demo(
    out: Path = typer.Option(Path("demo-out"), "--out", "-o", help="Output folder."),
    detector: str | None = _DET,
    classifier: str | None = _CLF,
    diagnosis: str | None = _DX,
    target_cells: int = _TARGET,
    seed: int = _SEED,
    device: str = _DEVICE,
    threads: int | None = _THREADS,
) -> None:
    """Write a synthetic slide with four annotated ROIs and analyse it with the synthetic-only models
    (detector-synth, classifier-synth, diagnosis-synth; the report names them)."""
    from marrowscope.engines.demo import run_demo

    cfg = _config(detector, classifier, diagnosis, target_cells, seed, device=device, threads=threads,
                  synthetic=True)
    result = run_demo(out, cfg, seed=seed)
    typer.echo(str(result.report))
