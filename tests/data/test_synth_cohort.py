"""Synthetic cohort: DICOM ANN, CSVs and the generator's record agree exactly; determinism; composition."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from marrowscope.data.synth.cohort import RECORD_NAME, SynthConfig, generate_cohort, read_synth_record
from marrowscope.data.synth.composition import (
    ALL_LABELS,
    BLAST_LABELS,
    DIAGNOSES,
    NUCLEATED_LABELS,
    sample_counts,
    sample_patient,
)
from marrowscope.data.synth.experts import NO_CONSENSUS, consensus_of
from marrowscope.errors import InputError

TINY = SynthConfig(
    n_patients=4,
    seed=7,
    slide_size=1280,
    roi_size=384,
    n_rois=2,
    cells_per_roi=14,
    kind_weights={"labelled": 2.0, "detection_only": 1.0, "roi_only": 1.0},
    outside_fraction=0.1,
    tile_size=256,
)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "cohort"
    generate_cohort(TINY, out)
    return out


def _ann_files(root: Path, rec: dict) -> dict[str, list[Path]]:
    return {p["slide_id"]: [root / f for f in p["ann_files"]] for p in rec["patients"]}


def test_layout_and_kinds(cohort: Path) -> None:
    rec = read_synth_record(cohort)
    assert (cohort / "csv" / "cells_labelled.csv").is_file()
    assert (cohort / "csv" / "cells_detection_only.csv").is_file()
    assert (cohort / "csv" / "rois.csv").is_file()
    assert (cohort / "csv" / "clinical.csv").is_file()
    kinds = sorted(p["slide_kind"] for p in rec["patients"])
    assert kinds == ["detection_only", "labelled", "labelled", "roi_only"]
    for p in rec["patients"]:
        sm = cohort / p["sm_folder"]
        assert sm.parent.parent.name == p["patient_id"]
        assert sm.name.startswith("SM_") and len(list(sm.glob("*.dcm"))) >= 3
        for f in p["ann_files"]:
            assert (
                Path(f).parent.name.startswith("ANN_")
                and Path(f).parent.parent == Path(p["sm_folder"]).parent
            )


def test_counts_agree_dicom_csv_record(cohort: Path) -> None:
    from marrowscope.io.annotations.bmdeep_csv import read_cells_csv, read_rois_csv
    from marrowscope.io.annotations.dicom_ann import read_dicom_ann

    rec = read_synth_record(cohort)
    labelled_csv = read_cells_csv(cohort / "csv" / "cells_labelled.csv")
    detection_csv = read_cells_csv(cohort / "csv" / "cells_detection_only.csv")
    rois_csv = read_rois_csv(cohort / "csv" / "rois.csv")
    files = _ann_files(cohort, rec)
    all_ids: list[int] = []
    for p in rec["patients"]:
        sid = p["slide_id"]
        series = {}
        for f in files[sid]:
            s = read_dicom_ann(f)
            series[(s.kind, s.session)] = s
        record_counts = Counter(p["counts"])
        if p["slide_kind"] == "roi_only":
            assert set(series) == {("roi", None)} and not p["cells"] and not record_counts
            assert sid not in labelled_csv and sid not in detection_csv and len(rois_csv[sid]) == TINY.n_rois
            continue
        assert sum(record_counts.values()) == len(p["cells"]) > 0
        # ROIs: DICOM == CSV (shifted by the bounds offset) == record
        roi_dicom = sorted((r.roi_id, r.box.as_tuple()) for r in series[("roi", None)].annotations.regions)
        dx, dy = p["csv_offset"]
        roi_csv = sorted((r.roi_id, r.box.shifted(-dx, -dy).as_tuple()) for r in rois_csv[sid])
        roi_rec = sorted((r["roi_id"], tuple(float(v) for v in r["box"])) for r in p["rois"])
        assert roi_dicom == roi_csv == roi_rec
        if p["slide_kind"] == "labelled":
            ann = series[("consensus", None)].annotations
            dicom_counts = Counter(c.label for c in ann.cells)
            csv_counts = Counter(c.label for c in labelled_csv[sid].cells)
            n_sessions = max(len(c["session_labels"]) for c in p["cells"])
            for k in range(n_sessions):
                sess = series[("session", k)].annotations
                expected = Counter(c["session_labels"][k] for c in p["cells"] if len(c["session_labels"]) > k)
                assert Counter(c.label for c in sess.cells) == expected
            assert ("session", n_sessions) not in series
        else:
            ann = series[("unlabeled", None)].annotations
            assert all(c.label is None for c in ann.cells)
            dicom_counts = Counter("haematological_structure" for _ in ann.cells)
            csv_counts = Counter(
                "haematological_structure" for c in detection_csv[sid].cells if c.label is None
            )
            assert sid not in labelled_csv
        assert dicom_counts == csv_counts == record_counts
        # boxes and ids: DICOM frame == CSV frame - offset == record
        by_id_dicom = {c.cell_id: (c.box.as_tuple(), c.roi_id) for c in ann.cells}
        csv_ann = (labelled_csv if p["slide_kind"] == "labelled" else detection_csv)[sid]
        by_id_csv = {c.cell_id: (c.box.shifted(-dx, -dy).as_tuple(), c.roi_id) for c in csv_ann.cells}
        by_id_rec = {c["cell_id"]: (tuple(float(v) for v in c["box"]), c["roi_id"]) for c in p["cells"]}
        assert by_id_dicom == by_id_csv == by_id_rec
        sessions_csv = {
            c.cell_id: c.session_labels for c in csv_ann.cells
        }  # raw tokens normalised on reading
        assert sessions_csv == {c["cell_id"]: tuple(c["session_labels"]) for c in p["cells"]}
        assert (dx, dy) != (0, 0)
        assert any(r == -1 for _, r in by_id_rec.values())  # some annotated boxes outside ROIs
        all_ids += list(by_id_rec)
    assert len(all_ids) == len(set(all_ids))  # cell_id is global across the cohort


def test_sessions_follow_the_consensus_rule(cohort: Path) -> None:
    rec = read_synth_record(cohort)
    for p in rec["patients"]:
        if p["slide_kind"] != "labelled":
            continue
        for c in p["cells"]:
            labels = c["session_labels"]
            assert len(labels) >= 2
            # no earlier prefix reached consensus (sessions stop as soon as the rule holds)
            assert all(consensus_of(labels[:k]) is None for k in range(1, len(labels)))
            final = consensus_of(labels)
            assert c["label"] == (final if final is not None else NO_CONSENSUS)


def test_clinical_csv_matches_record(cohort: Path) -> None:
    from marrowscope.io.annotations.clinical import read_clinical_csv

    rec = read_synth_record(cohort)
    clinical = read_clinical_csv(cohort / "csv" / "clinical.csv")
    for p in rec["patients"]:
        c = clinical[p["patient_id"]]
        assert (c.diagnosis, c.ncit_code, c.age, c.sex) == (
            p["diagnosis"],
            p["ncit_code"],
            p["age"],
            p["sex"],
        )
        for k, v in p["labs"].items():
            if v is None:
                assert c.labs.get(k) is None
            else:
                assert c.labs.get(k) == pytest.approx(v)


def test_slide_header_carries_the_csv_offset(cohort: Path) -> None:
    from marrowscope.io.annotations.bmdeep_csv import csv_to_dicom_offset
    from marrowscope.io.slides import open_slide

    rec = read_synth_record(cohort)
    p = rec["patients"][0]
    slide = open_slide(sorted((cohort / p["sm_folder"]).glob("*.dcm")))
    info = slide.info
    assert len(info.levels) >= 3
    assert info.mpp == pytest.approx(0.11, rel=1e-3)
    assert csv_to_dicom_offset(info) == (-p["csv_offset"][0], -p["csv_offset"][1])


def test_rerun_is_recognised_and_other_folders_refused(cohort: Path, tmp_path: Path) -> None:
    again = generate_cohort(TINY, cohort)
    assert again.already_complete and len(again.slides) == TINY.n_patients
    with pytest.raises(InputError):
        generate_cohort(SynthConfig(n_patients=1, seed=8, slide_size=768, roi_size=256, n_rois=1), cohort)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "something.txt").write_text("x")
    with pytest.raises(InputError):
        generate_cohort(TINY, busy)


def test_deterministic_under_a_seed(tmp_path: Path) -> None:
    cfg = SynthConfig(n_patients=2, seed=3, slide_size=768, roi_size=256, n_rois=1, cells_per_roi=8)
    a = generate_cohort(cfg, tmp_path / "a")
    b = generate_cohort(cfg, tmp_path / "b", workers=2)  # processes do not change the result
    ra = json.loads((a.out_dir / RECORD_NAME).read_text())
    rb = json.loads((b.out_dir / RECORD_NAME).read_text())
    assert ra["patients"] == rb["patients"]
    for name in ("cells_labelled.csv", "rois.csv", "clinical.csv"):
        assert (a.out_dir / "csv" / name).read_bytes() == (b.out_dir / "csv" / name).read_bytes()
    c = generate_cohort(replace(cfg, seed=4, n_patients=1), tmp_path / "c")
    rc = json.loads((c.out_dir / RECORD_NAME).read_text())
    assert rc["patients"][0]["patient_id"] not in {p["patient_id"] for p in ra["patients"]}


def test_composition_differs_by_diagnosis() -> None:
    rng = np.random.default_rng(0)
    mean: dict[str, dict[str, float]] = {}
    for dx in DIAGNOSES:
        comps = [sample_patient(dx, rng).nucleated_composition for _ in range(40)]
        mean[dx] = {k: float(np.mean([c[k] for c in comps])) for k in NUCLEATED_LABELS}
        for c in comps:
            assert set(c) == set(NUCLEATED_LABELS) and abs(sum(c.values()) - 1.0) < 1e-9
    blasts = {dx: sum(mean[dx][k] for k in BLAST_LABELS) for dx in DIAGNOSES}
    assert (
        mean["ALL"]["lymphocytic_blast"]
        > 0.4
        > max(mean[d]["lymphocytic_blast"] for d in ("AML", "CML", "control"))
    )
    myeloid_blasts = {d: mean[d]["myelocytic_blast"] + mean[d]["monocytic_blast"] for d in DIAGNOSES}
    assert myeloid_blasts["AML"] > 0.3 > max(myeloid_blasts[d] for d in ("ALL", "CML", "control"))
    baso_eo = {
        d: sum(v for k, v in mean[d].items() if "basophil" in k or "eosinophil" in k) for d in DIAGNOSES
    }
    assert baso_eo["CML"] > 2 * max(baso_eo[d] for d in ("ALL", "AML", "control"))
    assert mean["CML"]["neutrophilic_myelocyte"] > 2 * mean["control"]["neutrophilic_myelocyte"]
    assert blasts["CML"] < 0.1 and blasts["control"] < 0.03
    assert mean["control"]["lymphoblast"] > mean["ALL"]["lymphoblast"]  # hematogones in controls
    assert mean["control"]["myeloblast"] > 0.005  # normal precursors present at low %
    assert "monoblast" not in {k for d in DIAGNOSES for k, v in mean[d].items() if v > 0}
    # labs correlate with the diagnosis
    wbc = {
        dx: np.nanmedian([sample_patient(dx, rng).labs["wbc"] or np.nan for _ in range(40)])
        for dx in DIAGNOSES
    }
    assert wbc["CML"] > 3 * max(wbc["ALL"], wbc["AML"], wbc["control"])
    assert wbc["control"] < min(wbc["ALL"], wbc["AML"])
    # counts are drawn from the composition over every label
    p = sample_patient("ALL", rng)
    counts = sample_counts(p.composition, 500, rng)
    assert sum(counts.values()) == 500 and set(counts) <= set(ALL_LABELS)


def test_consensus_rule() -> None:
    assert consensus_of(["a"]) is None
    assert consensus_of(["a", "a"]) == "a"
    assert consensus_of(["a", "b"]) is None  # tie
    assert consensus_of(["a", "b", "a"]) == "a"
    assert consensus_of(["a", "b", "c"]) is None
    assert consensus_of(["a", "b", "c", "a"]) == "a"  # 2 of 4 = half, unique top
    assert consensus_of(["a", "b", "a", "b"]) is None


def test_csv_session_tokens_can_be_raw_and_normalise_back() -> None:
    from marrowscope.cells import Box, Cell, CellAnnotations
    from marrowscope.data.synth.cohort import RAW_TOKENS, _with_raw_tokens
    from marrowscope.io.annotations.bmdeep_csv import parse_session_labels

    labels = tuple(RAW_TOKENS) + ("lymphocyte",)
    ann = CellAnnotations(cells=(Cell(box=Box(0, 0, 5, 5), label="lymphocyte", session_labels=labels),))
    raw = _with_raw_tokens(ann, 1.0, np.random.default_rng(0)).cells[0].session_labels
    assert raw[-1] == "lymphocyte" and all(
        t.startswith("other:") or t == "annotation_error" for t in raw[:-1]
    )
    assert parse_session_labels(",".join(raw)) == labels
