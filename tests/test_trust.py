"""Outputs a clinician and a pipeline can trust (issue 14, clinical/report half).

Provenance and machine-readable warnings, the rule explaining its own decision, the uncertain headline,
units named apart, lineage order, colours, all fields, gallery ids, permissions."""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
import stat
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from marrowscope import taxonomy
from marrowscope.counting import differential_from_counts
from marrowscope.engines import pipeline
from marrowscope.engines.pipeline import AnalysisConfig, Models, analyze_slide, diagnose
from marrowscope.models.registry import list_models
from pipeline_stubs import smear_image, smear_slide, stub_models, two_rois

CFG = AnalysisConfig(target_cells=20, tta=1)


class FixedDiagnosis:
    """A diagnosis model that returns the same probabilities for every differential."""

    def __init__(self, probs: dict[str, float]) -> None:
        self.classes = tuple(probs)
        self.input_columns = ()
        self._p = np.array([list(probs.values())])

    def predict_proba_table(self, X: object) -> np.ndarray:  # noqa: N803
        return self._p


def _bundled(name: str) -> Path:
    return next(m.path for m in list_models() if m.name == name)


def _synthetic_models(diagnosis: object | None = None) -> Models:
    base = stub_models()
    refs = (pipeline.model_ref("detector-synth", "detector", _bundled("detector-synth")),
            pipeline.model_ref("classifier-pbc", "classifier", _bundled("classifier-pbc")))
    return replace(base, refs=refs, diagnosis=diagnosis if diagnosis is not None else base.diagnosis)


# ---------------------------------------------------------------------------------------------- provenance

def test_bundled_models_say_what_they_were_trained_on() -> None:
    kinds = {m.name: pipeline.model_ref(m.name, m.task, m.path) for m in list_models()}
    assert kinds["classifier-synth"].training_data_kind == "synthetic"
    assert kinds["detector-synth"].training_data_kind == "synthetic"
    assert kinds["diagnosis-synth"].training_data_kind == "synthetic"
    assert kinds["classifier-pbc"].training_data_kind == "real"
    assert "PBC" in kinds["classifier-pbc"].training_datasets[0]
    assert all(r.training_data for r in kinds.values())


def test_synthetic_model_warning_in_summary_report_and_index(tmp_path: Path) -> None:
    from PIL import Image

    from marrowscope.engines.batch import analyze_batch

    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(smear_image(seed=3)).save(src / "s.png")
    res = analyze_batch([src / "s.png"], tmp_path / "out", CFG, mpp=0.5, models=_synthetic_models(),
                        progress=False)
    summary = json.loads((tmp_path / "out" / "s" / "summary.json").read_text())
    codes = [w["code"] for w in summary["warnings"]]
    assert "synthetic_model" in codes
    assert all(set(w) == {"code", "message"} for w in summary["warnings"])
    msg = next(w["message"] for w in summary["warnings"] if w["code"] == "synthetic_model")
    assert "detector detector-synth" in msg and "classifier-pbc" not in msg
    models = {m["name"]: m for m in summary["models"]}
    assert models["detector-synth"]["training_data_kind"] == "synthetic"
    pbc = models["classifier-pbc"]
    assert pbc["training_data_kind"] == "real" and pbc["training_data"]
    # the report: the warning stands beside the differential, before the differential table
    html = (tmp_path / "out" / "s" / "report.html").read_text()
    i_warn = html.index('data-code="synthetic_model"')
    assert i_warn < html.index("<h2>Differential count") and html.index('class="modelbox"') < i_warn
    assert "synthetic" in html[html.index("Models and their training data"):][:600]
    # the cohort index and cohort.csv carry the codes and the models' training data
    index = res.index.read_text()
    assert "synthetic_model" in index and "detector detector-synth (synthetic)" in index
    rows = list(csv.DictReader(res.cohort_csv.open()))
    assert "synthetic_model" in rows[0]["warnings"].split(";")
    assert "classifier classifier-pbc (real)" in rows[0]["models"]


def test_warning_codes_are_declared_and_typed() -> None:
    from marrowscope import alerts

    with pytest.raises(ValueError, match="undeclared"):
        alerts.ResultWarning("no_such_code", "x")
    code = alerts.register_code("test_only_code", "a test code")
    assert alerts.ResultWarning(code.code, "m").to_dict() == {"code": "test_only_code", "message": "m"}
    assert "ood_slide" in alerts.codes() and alerts.codes()["ood_slide"].about_models
    with pytest.raises(ValueError, match="lower_snake_case"):
        alerts.register_code("Bad Code", "x")


# ------------------------------------------------------------------------------------------ the rule

def _rule(counts: dict[str, int], **params: float) -> tuple[str, str]:
    from marrowscope.models.diagnosis import RuleBaseline

    d = RuleBaseline(**params).explain(counts)
    return d.outcome, d.reason


def test_rule_explanation_counts_unknown_blasts_as_the_rule_does() -> None:
    # 15 % lymphoid + 12 % unassigned blasts: the rule calls ALL (unknown go to the larger side)
    counts = {"lymphocytic_blast": 15, "unknown_blast": 12, "lymphocyte": 40, "segmented_neutrophil": 33}
    dx = diagnose(differential_from_counts(counts), FixedDiagnosis({"ALL": 0.5, "AML": 0.3, "control": 0.2}),
                  "fixed")
    assert dx.rule_baseline == "ALL" and dx.rule_outcome == "ALL"
    assert dx.rule_reason.startswith("ALL: lymphoid blasts incl. unassigned 27.0 % ≥ 25.0 %")
    assert dx.rule_values["lymphoid_blasts_with_unknown"] == pytest.approx(0.27)


def test_rule_explanation_uses_the_rules_own_thresholds() -> None:
    counts = {"lymphocytic_blast": 27, "lymphocyte": 73}
    outcome, reason = _rule(counts, all_threshold=0.30)
    assert outcome == "other" and "unassigned 27.0 % < 30.0 %" in reason and "≥" not in reason.split(";")[0]
    outcome, reason = _rule(counts)
    assert outcome == "ALL" and "27.0 % ≥ 25.0 %" in reason


@pytest.mark.parametrize("seed", range(25))
def test_rule_explanation_never_contradicts_the_decision(seed: int) -> None:
    from marrowscope.data.synth.composition import DIAGNOSES, sample_counts, sample_patient
    from marrowscope.models.diagnosis import RuleBaseline

    rng = np.random.default_rng(seed)
    p = sample_patient(DIAGNOSES[seed % 4], rng, hard_case=seed % 3 == 0)
    counts = sample_counts(p.composition, 300, rng)
    d = RuleBaseline().explain(counts)
    assert d.reason.startswith(d.outcome if d.outcome != "other" else "no rule met")
    # the same decision as the fitted estimator on the same row
    import pandas as pd

    labels = sorted(counts)
    X = pd.DataFrame([[counts[k] for k in labels]] * 4, columns=labels)  # noqa: N806
    fitted = RuleBaseline().fit(X, ["ALL", "AML", "CML", "control"])
    assert fitted.rule_outcomes(X.iloc[:1])[0] == d.outcome


def test_the_rule_is_not_fitted_at_inference(monkeypatch: pytest.MonkeyPatch) -> None:
    from marrowscope.models import diagnosis as dmod

    def refuse(self: object, *a: object, **k: object) -> None:
        raise AssertionError("RuleBaseline.fit called at inference")

    monkeypatch.setattr(dmod.RuleBaseline, "fit", refuse)
    dx = diagnose(differential_from_counts({"myelocytic_blast": 30, "segmented_neutrophil": 70}),
                  FixedDiagnosis({"AML": 0.9, "control": 0.1}), "fixed")
    assert dx.rule_baseline == "AML"


def test_all_flag_uses_lymphoid_blasts_and_the_cap() -> None:
    from marrowscope.report.html import flag_need

    # AML with 4 % lymphoid blasts, 22 % myeloid: no ALL flag (the old flag fired on all 26 % blasts)
    aml = differential_from_counts({"lymphocytic_blast": 20, "myelocytic_blast": 110,
                                    "segmented_neutrophil": 370})
    assert "ALL 25%" not in {f.name for f in aml.flags}
    # lymphoid blasts near 25 %: flagged on the lymphoid interval, and not decidable within 5000 cells
    near = differential_from_counts({"lymphocytic_blast": 123, "lymphocyte": 377})
    f = next(f for f in near.flags if f.name == "ALL 25%")
    assert f.quantity == "lymphoid_blasts" and f.cells_needed is None and f.max_cells == 5000
    assert "cannot be decided within the 5000-cell cap" in flag_need(f)
    uncapped = differential_from_counts({"lymphocytic_blast": 123, "lymphocyte": 377}, max_cells=10**6)
    assert next(f for f in uncapped.flags if f.name == "ALL 25%").cells_needed > 4500


# -------------------------------------------------------------------------------------------- headline

def test_weak_suggestion_is_uncertain_between_the_top_two() -> None:
    diff = differential_from_counts({"myelocytic_blast": 20, "segmented_neutrophil": 80})
    weak = diagnose(diff, FixedDiagnosis({"ALL": 0.21, "AML": 0.43, "CML": 0.10, "control": 0.26}), "w")
    assert weak.uncertain_between == ("AML", "control")
    assert weak.headline == "uncertain between AML and control"
    assert weak.to_dict()["headline"] == weak.headline
    strong = diagnose(diff, FixedDiagnosis({"ALL": 0.001, "AML": 0.997, "CML": 0.001, "control": 0.001}), "s")
    assert strong.uncertain_between is None and strong.headline == "AML"


def test_report_heads_a_weak_suggestion_as_uncertain() -> None:
    from marrowscope.report.html import render_report

    models = _synthetic_models(FixedDiagnosis({"ALL": 0.21, "AML": 0.43, "CML": 0.10, "control": 0.26}))
    slide = smear_slide()
    r = analyze_slide(slide, models, CFG, annotations=two_rois())
    html = render_report(r, slide)
    card = html[html.index("Diagnosis suggestion</div>"):][:400]
    assert "uncertain between AML and control" in card and "43 %" in card
    assert "uncertain_diagnosis" in [w.code for w in r.warnings]


# ------------------------------------------------------------------------------------ units, order, looks

def test_fraction_and_percent_are_named_apart(tmp_path: Path) -> None:
    from PIL import Image

    from marrowscope.engines.batch import analyze_batch

    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(smear_image(seed=1, blast_share=0.3)).save(src / "a.png")
    res = analyze_batch([src / "a.png"], tmp_path / "out", CFG, mpp=0.5, models=stub_models(), progress=False)
    d = json.loads((tmp_path / "out" / "a" / "summary.json").read_text())["differential"]
    assert "blast_pct" not in json.dumps(d) and 0 < d["blast_fraction"] < 1
    row = next(csv.DictReader(res.cohort_csv.open()))
    assert "blast_pct" not in row
    assert float(row["blast_percent"]) == pytest.approx(100 * d["blast_fraction"], abs=0.01)
    assert float(row["blast_ci_low_percent"]) == pytest.approx(100 * d["blast_interval"][0], abs=0.01)


def test_differential_is_listed_in_lineage_and_maturation_order() -> None:
    counts = {"segmented_neutrophil": 5, "promyelocyte": 2, "neutrophilic_band": 4,
              "neutrophilic_myelocyte": 3, "neutrophilic_metamyelocyte": 3, "myeloblast": 1, "lymphocyte": 4,
              "polychromatic_erythroblast": 2, "proerythroblast": 1}
    d = differential_from_counts(counts)
    assert list(d.counts) == ["myeloblast", "promyelocyte", "neutrophilic_myelocyte",
                              "neutrophilic_metamyelocyte", "neutrophilic_band", "segmented_neutrophil",
                              "proerythroblast", "polychromatic_erythroblast", "lymphocyte"]
    assert list(d.proportions) == list(d.counts) == list(d.to_dict()["intervals"])
    assert list(d.lineage_counts) == ["blast", "neutrophilic", "erythroid", "lymphoid"]
    from marrowscope.io.counts import make_counts_table

    t = make_counts_table({"p1": counts})
    assert list(t.counts.columns) == list(d.counts)


def test_report_lists_the_differential_in_maturation_order() -> None:
    from marrowscope.report.html import _differential_rows

    slide = smear_slide()
    r = analyze_slide(slide, stub_models(), CFG, annotations=two_rois())
    counts = {"segmented_neutrophil": 5, "promyelocyte": 2, "neutrophilic_band": 4,
              "neutrophilic_myelocyte": 3, "neutrophilic_metamyelocyte": 3}
    r = replace(r, differential=differential_from_counts(counts))
    groups, _ = _differential_rows(r)
    neut = next(g for g in groups if g["lineage"] == "neutrophilic")
    names = [row.name for row in neut["rows"]]
    assert names.index("promyelocyte") < names.index("neutrophilic_myelocyte") < \
        names.index("neutrophilic_metamyelocyte") < names.index("neutrophilic_band") < \
        names.index("segmented_neutrophil")


def test_class_colours_are_distinct_visible_and_colour_blind_safe() -> None:
    from marrowscope.report import colors

    fine = [n for n in taxonomy.DIFFERENTIAL_ORDER
            if taxonomy.is_countable(n) and not taxonomy.LABELS[n].is_group]
    cols = {n: colors.label_color(n) for n in fine}
    worst = min(colors.delta_e(cols[a], cols[b]) for a, b in itertools.combinations(fine, 2))
    assert worst >= 8.0, worst  # every counted class its own colour
    for n in fine:
        if taxonomy.is_blast_equivalent(n):
            L, a, b = colors.hex_to_lab(cols[n])  # noqa: N806
            assert math.hypot(a, b) >= 50, (n, cols[n])  # saturated, never near-grey
            assert colors.delta_e(cols[n], "#7b4f9d") >= 30  # apart from May-Grünwald-Giemsa purple
    base = list(colors.LINEAGE_COLORS.values())
    for deficiency in colors.CVD_MATRICES:
        sim = [colors.simulate(c, deficiency) for c in base]
        assert min(colors.delta_e(x, y) for x, y in itertools.combinations(sim, 2)) >= 15, deficiency
    assert colors.label_color(None) == colors.UNCERTAIN_COLOR not in cols.values()


def test_report_shows_every_field_and_gallery_ids_with_probabilities() -> None:
    import re

    from marrowscope.report.html import render_report

    slide = smear_slide()
    r = analyze_slide(slide, stub_models(), CFG, annotations=two_rois())
    assert len(r.regions) == 2
    html = render_report(r, slide)
    assert html.count('alt="counting field with cell boxes"') == 2
    captions = re.findall(r"<figcaption>#(\d+) · (\d+) %</figcaption>", html)
    assert captions
    by_id = {c.detection_id: c for c in r.cells.cells}
    for det, p in captions:
        c = by_id[int(det)]
        assert c.probabilities is not None and round(100 * max(c.probabilities.values())) == int(p)


# ----------------------------------------------------------------------------------------- permissions

def test_outputs_get_normal_permissions(tmp_path: Path) -> None:
    from PIL import Image

    from marrowscope.engines.batch import analyze_batch
    from marrowscope.io.atomic import atomic_dir, write_text_atomic

    old = os.umask(0o022)
    try:
        f = write_text_atomic(tmp_path / "x.txt", "x")
        assert stat.S_IMODE(f.stat().st_mode) == 0o644
        with atomic_dir(tmp_path / "d") as d:
            (d / "a").write_text("a")
        assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755
        src = tmp_path / "in"
        src.mkdir()
        Image.fromarray(smear_image(seed=2)).save(src / "a.png")
        res = analyze_batch([src / "a.png"], tmp_path / "out", CFG, mpp=0.5, models=stub_models(),
                            progress=False)
        for p in (res.index, res.cohort_csv, res.summary_path, tmp_path / "out" / "a" / "report.html"):
            assert stat.S_IMODE(p.stat().st_mode) == 0o644, p
        assert stat.S_IMODE((tmp_path / "out" / "a").stat().st_mode) == 0o755
        os.umask(0o077)  # a private umask is respected too
        g = write_text_atomic(tmp_path / "y.txt", "y")
        assert stat.S_IMODE(g.stat().st_mode) == 0o600
    finally:
        os.umask(old)


# ------------------------------------------------------------------------------------- joinable outputs

def test_cell_table_frame_ids_and_export_in_the_dataset_csv_frame(tmp_path: Path) -> None:
    import pandas as pd

    from marrowscope.cells import Cell, CellAnnotations
    from marrowscope.io.annotations.bmdeep_csv import dicom_to_csv
    from marrowscope.io.annotations.table import read_cell_table
    from marrowscope.io.slides import open_slide
    from marrowscope.io.slides.dicom_writer import write_dicom_wsi
    from marrowscope.report.export import export_dataset_csv
    from marrowscope.report.outputs import write_slide_outputs

    bounds = {"openslide.bounds-x": "1000", "openslide.bounds-y": "500"}
    ref = write_dicom_wsi(smear_image(512, 512, n_cells=25, seed=5), tmp_path / "SM", mpp=0.5, slide_id="d1",
                          patient_id="P1", n_levels=1, tile_size=256, openslide_properties=bounds)
    models = stub_models(diagnosis=False)
    with open_slide(ref.base_file) as slide:
        first = analyze_slide(slide, models, CFG)
        # the dataset's own annotation of these cells, in the DICOM frame, with the dataset's ids
        moved = (Cell(c.box.shifted(1.0, -1.0), label="lymphocyte", cell_id=9000 + i)
                 for i, c in enumerate(first.cells.cells))
        truth = CellAnnotations(cells=tuple(moved),
                                regions=first.cells.regions, slide_id="d1")
        r = analyze_slide(slide, models, CFG, annotations=truth)
        assert r.slide.frame == "dicom" and r.slide.dataset_csv_offset == (1000.0, 500.0)
        out = write_slide_outputs(r, slide, tmp_path / "out")
    table = pd.read_csv(out.cells_csv)
    assert set(table["frame"]) == {"dicom"}
    assert table["detection_id"].notna().all() and table["detection_id"].is_unique
    assert table["cell_id"].dropna().astype(int).between(9000, 9000 + len(truth.cells)).all()
    assert table["cell_id"].notna().mean() > 0.8  # matched to the annotated cells
    back = read_cell_table(out.cells_parquet)
    assert back.extra["frame"] == "dicom" and back.extra["dataset_csv_offset"] == "1000,500"
    summary = json.loads(out.summary.read_text())
    assert summary["slide"]["frame"] == "dicom" and summary["slide"]["dataset_csv_offset"] == [1000.0, 500.0]
    # export: boxes in the dataset CSV (MRXS) frame; they join the dataset's CSV by cell_id, box for box
    res = export_dataset_csv(tmp_path / "out")
    exp = pd.read_csv(res.path)
    assert set(exp["frame"]) == {"csv"} and res.n_cells == len(table)
    dataset = {c.cell_id: c.box for c in dicom_to_csv(truth, {k: v for k, v in bounds.items()}).cells}
    joined = exp.dropna(subset=["cell_id"])
    for row in joined.itertuples():
        b = dataset[int(row.cell_id)]
        assert abs(row.x1 - b.x1) <= 1.01 and abs(row.y1 - b.y1) <= 1.01  # the 1 px jitter, not 1000 px
    assert (exp["x1"] - table["x1"] == 1000).all() and (exp["y1"] - table["y1"] == 500).all()


def test_export_refuses_a_slide_without_a_dataset_frame(tmp_path: Path) -> None:
    from marrowscope.errors import InputError
    from marrowscope.report.export import export_dataset_csv
    from marrowscope.report.outputs import write_slide_outputs

    slide = smear_slide("png1")
    r = analyze_slide(slide, stub_models(diagnosis=False), CFG, annotations=two_rois())
    assert r.slide.frame == "level0" and r.slide.dataset_csv_offset is None
    write_slide_outputs(r, slide, tmp_path / "out")
    with pytest.raises(InputError, match="not a dataset slide"):
        export_dataset_csv(tmp_path / "out")


def test_export_command(tmp_path: Path) -> None:
    from marrowscope.cli.main import main
    from marrowscope.report.outputs import write_slide_outputs

    slide = smear_slide("png2")
    r = analyze_slide(slide, stub_models(diagnosis=False), CFG, annotations=two_rois())
    r = replace(r, slide=replace(r.slide, frame="csv", dataset_csv_offset=(0.0, 0.0)))
    write_slide_outputs(r, slide, tmp_path / "out")
    args = ["export", str(tmp_path / "out"), "--format", "dataset-csv", "--to", str(tmp_path / "p.csv")]
    assert main(args) == 0
    assert (tmp_path / "p.csv").is_file()
    assert main(["export", str(tmp_path / "out"), "--format", "nope"]) != 0


# ------------------------------------------------------------------------------- harder synthetic cases

def test_synthetic_cohort_has_the_hard_cases_at_their_documented_prevalence() -> None:
    from marrowscope.data.synth.composition import DIAGNOSES, HARD_CASES, sample_patient

    rng = np.random.default_rng(7)
    for dx in DIAGNOSES:
        kinds = [sample_patient(dx, rng).case_kind for _ in range(400)]
        for case in HARD_CASES[dx]:
            share = kinds.count(case.kind) / len(kinds)
            assert abs(share - case.prevalence) < 0.06, (dx, case.kind, share)
    again = [sample_patient("AML", np.random.default_rng(3)).case_kind for _ in range(3)]
    assert again == [sample_patient("AML", np.random.default_rng(3)).case_kind for _ in range(3)]
    low = sample_patient("AML", np.random.default_rng(0), hard_case=True)
    assert low.hard_case and low.case_kind in {c.kind for c in HARD_CASES["AML"]}


def test_hard_cases_defeat_the_blast_threshold_rules() -> None:
    from marrowscope.data.synth_counts import synthetic_counts_table
    from marrowscope.models.diagnosis import RuleBaseline

    t = synthetic_counts_table(200, seed=11, n_objects=500)
    X, y = t.frame(), [str(d) for d in t.diagnoses]  # noqa: N806
    pred = RuleBaseline().fit(X, y).predict(X)
    from sklearn.metrics import f1_score

    f1 = f1_score(y, pred, average="macro")
    assert 0.6 < f1 < 0.95  # the old cohort: 1.00; the rules now miss AML under 20 %, partial ALL, ...
