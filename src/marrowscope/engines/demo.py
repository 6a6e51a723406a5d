"""``marrowscope demo``: a synthetic slide with four annotated ROIs, analysed end to end.

The slide comes from the synthetic cohort generator (:mod:`marrowscope.data.synth.cohort`, one patient,
DICOM WSI + a DICOM ANN ROI series in the IDC layout) and is analysed with the bundled models like any
user slide (:func:`marrowscope.engines.batch.analyze_batch`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from marrowscope.engines.batch import BatchSummary, analyze_batch
from marrowscope.engines.pipeline import AnalysisConfig
from marrowscope.errors import InputError

log = logging.getLogger(__name__)

DEMO_SLIDE_DIR = "demo-slide"


@dataclass(frozen=True)
class DemoResult:
    slide_dir: Path
    batch: BatchSummary
    report: Path


def check_models(cfg: AnalysisConfig) -> None:
    """Raise :class:`InputError` naming the first model of ``cfg`` that cannot be found."""
    from marrowscope.models.registry import list_models, resolve_model

    wanted = (("detector", cfg.detector), ("classifier", cfg.classifier), ("diagnosis", cfg.diagnosis))
    for task, name in wanted:
        if name is None:
            continue
        try:
            resolve_model(name, task=task)
        except InputError as e:
            bundled = ", ".join(m.name for m in list_models() if m.task == task) or "none"
            raise InputError(
                name, f"the demo needs the {task} model '{name}', which is neither bundled in this "
                f"installation (bundled {task}s: {bundled}) nor a file; pass --{task} NAME|PATH "
                "to use another",
            ) from e


def run_demo(out_dir: str | Path, cfg: AnalysisConfig | None = None, *, seed: int = 0, slide_size: int = 8192,
             roi_size: int = 2048, n_rois: int = 4, cells_per_roi: int = 180, progress: bool = True
             ) -> DemoResult:
    """Write the demo slide into ``out_dir/demo-slide`` (reused when present) and analyse it.

    Four ROIs of 180 boxed objects (~570 countable cells) give a full 500-cell differential, so the
    demo report carries no "target not reached" warning; fewer ROIs fit the monolayer of a smaller slide."""
    from marrowscope.data.synth.cohort import SynthConfig, generate_cohort

    cfg = cfg or AnalysisConfig.synthetic()  # a synthetic slide: the synthetic-only models
    check_models(cfg)
    out = Path(out_dir)
    synth = SynthConfig(n_patients=1, seed=seed, slide_size=slide_size, roi_size=roi_size, n_rois=n_rois,
                        cells_per_roi=cells_per_roi, kind_weights={"roi_only": 1.0})
    slide_dir = out / DEMO_SLIDE_DIR
    log.info("writing the demo slide to %s", slide_dir)
    generate_cohort(synth, slide_dir)
    batch = analyze_batch([slide_dir], out, cfg, progress=progress)
    if batch.failures:
        f = batch.failures[0]
        raise InputError(f.source, f"the demo slide could not be analysed: {f.reason}")
    done = [s for s in batch.slides if s.folder is not None]
    return DemoResult(slide_dir, batch, Path(done[0].folder or out) / "report.html")
