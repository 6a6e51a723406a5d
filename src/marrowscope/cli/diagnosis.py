"""CLI: ``marrowscope train diagnosis`` and ``marrowscope evaluate diagnosis``."""

from __future__ import annotations

from pathlib import Path

import typer

from marrowscope.cli import params
from marrowscope.cli.app import evaluate_app, train_app

_COHORT_HELP = (
    "A cohort folder (IDC-style dicom/ + csv/ with clinical.csv, a synthetic cohort, or csv/ alone) "
    "or a plain counts CSV (patient_id, diagnosis, one column per label)."
)


def _estimator(name: str) -> str:
    from marrowscope.models.diagnosis import ESTIMATORS

    return str(params.one_of(*ESTIMATORS)(name))


@train_app.command("diagnosis")
def train_diagnosis(
    cohort: Path = typer.Option(..., "--cohort", "-c", help=_COHORT_HELP),
    out: Path = typer.Option(..., "--out", "-o", help="Model file to write (.skops)."),
    estimator: str = typer.Option("logreg", "--estimator", "-e", callback=_estimator,
                                  help="logreg | rf | gbm"),
    with_labs: bool = typer.Option(False, "--with-labs", help="Use lab values, age group and sex too."),
    seed: int = typer.Option(0, "--seed", callback=params.NON_NEGATIVE, help="Random seed."),
) -> None:
    """Train the diagnosis model on the cohort's expert counts and save it (skops)."""
    from marrowscope.io.atomic import check_writable_target
    from marrowscope.io.counts import read_counts
    from marrowscope.models.diagnosis import save_diagnosis_model, train_from_table

    check_writable_target(out)  # e.g. --out naming the input table: refused before any work
    table = read_counts(cohort)
    for line in table.problems:
        typer.echo(f"note: {line}", err=True)
    clf, summary = train_from_table(table, estimator=_estimator(estimator), include_labs=with_labs, seed=seed)
    save_diagnosis_model(clf, out, summary)
    per = ", ".join(f"{k} {v}" for k, v in summary["patients_per_diagnosis"].items())
    typer.echo(f"trained {estimator} on {summary['n_patients']} patients ({per}); "
               f"calibration: {summary['calibration'] or 'none'}; wrote {out}")
    if summary["left_out_without_diagnosis"]:
        n = len(summary["left_out_without_diagnosis"])
        typer.echo(f"note: {n} patient(s) without a diagnosis left out", err=True)


@evaluate_app.command("diagnosis")
def evaluate_diagnosis_cmd(
    cohort: Path = typer.Option(..., "--cohort", "-c", help=_COHORT_HELP),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for metrics.json and predictions.csv."),
    predicted_counts: Path | None = typer.Option(
        None, "--predicted-counts", "-p",
        help="Folder of the pipeline's summary.json files (one per slide) or a counts CSV.",
    ),
    model: str | None = typer.Option(
        None, "--model", "-m",
        help="Score this trained model (file or bundled name) on the cohort instead of cross-validating.",
    ),
    estimator: str = typer.Option("logreg", "--estimator", "-e", callback=_estimator,
                                  help="logreg | rf | gbm"),
    folds: int = typer.Option(5, "--folds", min=2, help="Cross-validation folds."),
    repeats: int = typer.Option(5, "--repeats", min=1, help="Cross-validation repeats (different seeds)."),
    train_on: str = typer.Option(
        "matched", "--train-on", callback=params.one_of("matched", "true"),
        help="Predicted-count settings: 'matched' trains on predicted counts, 'true' on expert counts.",
    ),
    seed: int = typer.Option(0, "--seed", callback=params.NON_NEGATIVE, help="Random seed."),
) -> None:
    """Macro F1 with 95 % intervals, per-diagnosis F1 and the rule baseline (true / predicted counts)."""
    from marrowscope.eval.diagnosis import evaluate_diagnosis, evaluate_model_file, write_evaluation
    from marrowscope.io.counts import predicted_counts_from_summaries, read_counts

    truth = read_counts(cohort)
    for line in truth.problems:
        typer.echo(f"note: {line}", err=True)
    pred = predicted_counts_from_summaries(predicted_counts) if predicted_counts is not None else None
    if model is not None:
        metrics_path, notes = evaluate_model_file(model, truth, out, predicted=pred, seed=seed)
        for line in notes:
            typer.echo(f"note: {line}", err=True)
    else:
        ev = evaluate_diagnosis(truth, pred, estimator=_estimator(estimator), n_splits=folds,
                                n_repeats=repeats, seed=seed, train_on=train_on)
        metrics_path = write_evaluation(out, evaluation=ev)
        for line in ev.messages:
            typer.echo(f"note: {line}", err=True)
        for name, res in ev.settings.items():
            lo, hi = res.model.ci
            rlo, rhi = res.rules.ci
            typer.echo(f"{name:<22} {len(res.patient_ids):>4} patients  macro F1 {res.model.macro_f1:.3f} "
                       f"[{lo:.3f}, {hi:.3f}]   rules {res.rules.macro_f1:.3f} [{rlo:.3f}, {rhi:.3f}]")
    typer.echo(f"wrote {metrics_path}")
