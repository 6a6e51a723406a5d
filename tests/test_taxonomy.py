"""Taxonomy: labels, codes (dataset.md §2.3 verbatim), normalisation, lineages, schemes, external mappings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from marrowscope import taxonomy as T
from marrowscope.errors import InputError


def test_counts_49_plus_structural() -> None:
    assert len(T.ORIGINAL_LABELS) == 49
    assert len(set(T.ORIGINAL_LABELS)) == 49
    assert T.STRUCTURAL_LABELS == ("no_consensus_found", "haematological_structure", "region_of_interest")
    leaves = [n for n, i in T.LABELS.items() if not i.is_group]
    assert len(leaves) == 52
    # IDC has 51 AnnotationGroupLabels in cell/ROI objects: 49 + 3 structural, minus monoblast (rename bug)
    assert len({T.to_idc_label(n) for n in leaves} - {"immature_monoblast"}) == 51
    groups = ("leukocyte", "immature_granulocyte", "neutrophil", "eosinophil", "basophil", "erythroblast",
              "blast")
    for g in groups:
        assert T.LABELS[g].is_group


@pytest.mark.parametrize(
    ("name", "idc", "category", "scheme", "value", "meaning", "color"),
    [
        ("artifact", "artifact", "Physical object", "SCT", "47973001", "Artifact", "#dadada"),
        ("basophilic_band", "basophilic_band", "Anatomical structure", "LN", "LP65588-3",
         "Basophils.band form", "#f9ae37"),
        ("damaged_cell", "damaged_cell", "Morphologically abnormal structure", "SCT", "37782003", "Damage",
         "#d7d2d1"),
        ("degranulated_neutrophilic_metamyelocyte", "degranulated_neutrophilic_metamyelocyte",
         "Anatomical structure", "NCIt", "C37174", "Neutrophil with Cytoplasmic Hypogranularity", "#d5ccc9"),
        ("lymphoblast", "lymphoid_precursor_cell", "Anatomical structure", "SCT", "127910003",
         "Lymphoid precursor cell", "#94b8cf"),
        ("myeloblast", "myeloid_precursor_cell", "Anatomical structure", "SCT", "127914007",
         "Myeloid precursor cell", "#fcc090"),
        ("monoblast", "immature_monoblast", "Anatomical structure", "NCIt", "C13120", "Immature Monocyte",
         "#f9b195"),
        ("lymphocytic_blast", "lymphocytic_blast", "Anatomical structure", "SCT", "15433008", "Lymphoblast",
         "#c8b8b7"),
        ("orthochromatic_erythroblast", "orthochromatic_erythroblast", "Anatomical structure", "SCT",
         "113334004", "Orthochromic erythroblast", "#fa6983"),
        ("technically_unfit", "technically_unfit", "Spatial and relational concepts", "DCM", "111235",
         "Unusable - Quality renders image unusable", "#d6cfce"),
        ("spicule", "spicule", "Anatomical structure", "NCIt", "C82998", "Spicule", "#d2c4c1"),
        ("unknown_blast", "unknown_blast", "Anatomical structure", "SCT", "312256009", "Blast cell",
         "#c6b4b2"),
        ("giant_platelet", "giant_platelet", "Morphologically abnormal structure", "SCT", "44687006",
         "Giant platelet", "#d7d4d2"),
        ("no_consensus_found", "no_consensus_found", "Anatomical structure", "SCT", "414387006",
         "Structure of haematological system", "#d4cac7"),
        ("haematological_structure", "haematological_structure", "Anatomical structure", "SCT", "414387006",
         "Structure of haematological system", "#ffffff"),
        ("region_of_interest", "region_of_interest", "Spatial and relational concepts", "DCM", "111099",
         "Selected region", "#ffffff"),
    ],
)
def test_codes_verbatim(name: str, idc: str, category: str, scheme: str, value: str, meaning: str,
                        color: str) -> None:
    info = T.LABELS[name]
    assert info.idc_name == idc
    assert info.category.meaning == category
    assert (info.type_code.scheme, info.type_code.value, info.type_code.meaning) == (scheme, value, meaning)
    assert info.color == color


def test_category_codes() -> None:
    assert str(T.LABELS["erythrocyte"].category) == "SCT:91723000"
    assert str(T.LABELS["smudge_cell"].category) == "SCT:49755003"
    assert str(T.LABELS["artifact"].category) == "SCT:260787004"
    assert str(T.LABELS["region_of_interest"].category) == "SCT:309825002"
    assert str(T.LABELS["erythrocyte"].type_code) == "SCT:41898006"


def test_structural_labels_told_apart_by_label_not_code() -> None:
    # dataset.md §9.2: same code, different labels
    assert T.LABELS["no_consensus_found"].type_code == T.LABELS["haematological_structure"].type_code
    assert set(T.labels_with_code("SCT:414387006")) == {"no_consensus_found", "haematological_structure"}
    assert T.from_idc_label("no_consensus_found") == "no_consensus_found"
    assert T.from_idc_label("haematological_structure") == "haematological_structure"
    assert T.LABELS["no_consensus_found"].color != T.LABELS["haematological_structure"].color


def test_all_colours_are_hex() -> None:
    for info in T.LABELS.values():
        assert len(info.color) == 7 and info.color[0] == "#"
        int(info.color[1:], 16)


def test_idc_renames_both_ways() -> None:
    assert T.to_idc_label("lymphoblast") == "lymphoid_precursor_cell"
    assert T.to_idc_label("myeloblast") == "myeloid_precursor_cell"
    assert T.to_idc_label("monoblast") == "immature_monoblast"
    assert T.from_idc_label("lymphoid_precursor_cell") == "lymphoblast"
    assert T.from_idc_label("myeloid_precursor_cell") == "myeloblast"
    assert T.from_idc_label("immature_monoblast") == "monoblast"
    assert T.from_idc_label("immature_monocyte") == "monoblast"  # the converter's code-table key
    assert T.from_idc_label("erythrocyte") == "erythrocyte"
    for name in T.ORIGINAL_LABELS + T.STRUCTURAL_LABELS:
        assert T.from_idc_label(T.to_idc_label(name)) == name
    with pytest.raises(T.UnknownLabelError):
        T.to_idc_label("eosinophil")  # a group: no IDC label


def test_normalise_session_tokens() -> None:
    assert T.normalise_label("other:basophiler Erythroblast") == "basophilic_erythroblast"
    assert T.normalise_label("other:Dichter Zellhaufen") == "technically_unfit"
    assert T.normalise_label("other:Zellhaufen") == "technically_unfit"
    assert T.normalise_label("other:degranulierter Promyelozyt") == "degranulated_neutrophilic_myelocyte"
    assert T.normalise_label("other:Hämophagozytose") == "phagocytosis"
    assert T.normalise_label("other:Riesenthrombozyt") == "giant_platelet"
    assert T.normalise_label("other:Makrothrombozyt") == "giant_platelet"
    assert T.normalise_label("other:Osteoblast") == "unknown_blast"
    assert T.normalise_label("other:osteoblast") == "unknown_blast"
    assert T.normalise_label("other:Mikrogerinsel") == "thrombocyte_aggregate"
    assert T.normalise_label("other:Plasma eines Megakaryozyten") == "damaged_cell"
    assert T.normalise_label("other:Kernreste") == "damaged_cell"
    assert T.normalise_label("other:Granula der kaputten Zelle") == "damaged_cell"
    assert T.normalise_label("annotation_error") == "technically_unfit"
    assert T.normalise_label("  Segmented_Neutrophil ") == "segmented_neutrophil"
    assert T.normalise_label("lymphoid_precursor_cell") == "lymphoblast"
    assert T.parse_session_labels("lymphoblast,other:Kernreste, lymphocytic_blast") == (
        "lymphoblast", "damaged_cell", "lymphocytic_blast")
    assert T.parse_session_labels("") == ()


@pytest.mark.parametrize("raw", ["other:Quatsch", "neutrofil", "", "mast_cell", "blastt"])
def test_unknown_label_raises(raw: str) -> None:
    with pytest.raises(T.UnknownLabelError) as e:
        T.normalise_label(raw, source="cells.csv")
    assert isinstance(e.value, InputError)
    assert "cells.csv" in str(e.value)


def test_semantics_normal_precursors_vs_leukemic_blasts() -> None:
    for n in ("lymphocytic_blast", "myelocytic_blast", "monocytic_blast", "unknown_blast"):
        assert T.is_leukemic_blast(n) and T.is_blast_equivalent(n) and T.lineage_of(n) == "blast"
    for n in ("lymphoblast", "myeloblast", "monoblast"):
        assert not T.is_leukemic_blast(n)
    # the normal lymphoid precursor (haematogone-like) is lymphoid, not a blast equivalent
    assert T.lineage_of("lymphoblast") == "lymphoid" and not T.is_blast_equivalent("lymphoblast")
    assert T.is_blast_equivalent("promonocyte") and T.is_blast_equivalent("monoblast")
    assert T.is_blast_equivalent("myeloblast")
    assert not T.is_blast_equivalent("promyelocyte") and not T.is_blast_equivalent("proerythroblast")
    assert T.cell_line_of("lymphocytic_blast") == "lymphoid"
    assert T.cell_line_of("myelocytic_blast") == "myeloid"
    assert T.cell_line_of("promonocyte") == "monocytic"
    assert T.cell_line_of("polychromatic_erythroblast") == "erythroid"


def test_lineages_and_countable() -> None:
    assert set(T.COUNTED_LINEAGES) <= set(T.LINEAGES)
    for info in T.LABELS.values():
        assert info.lineage in T.LINEAGES
    assert T.lineage_of("eosinophilic_band") == "eosinophilic"
    assert T.lineage_of("basophilic_myelocyte") == "basophilic"
    assert T.lineage_of("neutrophilic_metamyelocyte") == "neutrophilic"
    assert T.lineage_of("degranulated_neutrophilic_myelocyte") == "neutrophilic"
    assert T.lineage_of("orthochromatic_erythroblast") == "erythroid"
    assert T.lineage_of("plasma_cell") == "plasma_cell"
    assert T.lineage_of("monocyte") == "monocytic"
    assert T.lineage_of("megakaryocyte") == "megakaryocytic"
    never = ("artifact", "damaged_cell", "smudge_cell", "erythrocyte", "thrombocyte", "technically_unfit",
             "spicule", "giant_platelet", "thrombocyte_aggregate", "neutrophil_extracellular_trap",
             "no_consensus_found", "haematological_structure", "region_of_interest")
    for n in never:
        assert not T.is_countable(n), n
    for n in ("megakaryocyte", "macrophage", "mitosis"):
        assert not T.is_countable(n), n
    for n in ("myelocytic_blast", "promyelocyte", "segmented_neutrophil", "segmented_eosinophil",
              "segmented_basophil", "proerythroblast", "lymphocyte", "monocyte", "plasma_cell",
              "lymphoblast"):
        assert T.is_countable(n), n
    assert T.is_countable("annotation_error") is False  # through normalisation


def test_ancestors_and_descendants() -> None:
    assert T.ancestors("neutrophilic_band") == ("neutrophil", "granulocyte", "leukocyte")
    assert T.ancestors("promyelocyte") == ("immature_granulocyte", "granulocyte", "leukocyte")
    assert T.ancestors("myelocytic_blast") == ("blast", "leukocyte")
    assert T.ancestors("polychromatic_erythroblast") == ("erythroblast",)
    assert T.ancestors("artifact") == ()
    assert set(T.descendants("eosinophil")) == {
        "eosinophilic_myelocyte", "eosinophilic_metamyelocyte", "eosinophilic_band", "segmented_eosinophil"}
    assert "lymphocyte" in T.descendants("leukocyte")
    for name, info in T.LABELS.items():
        if info.parent is not None:
            assert T.LABELS[info.parent].is_group, name


def test_scheme_list_and_sizes() -> None:
    assert {"bmdeep49", "bmdeep33", "pbc8", "lineage", "blood3"} <= set(T.list_schemes())
    assert T.DEFAULT_SCHEME == "bmdeep33"
    assert len(T.load_scheme("bmdeep49").classes) == 49
    assert len(T.load_scheme("bmdeep33").classes) == 33
    assert T.load_scheme("pbc8").classes == (
        "basophil", "eosinophil", "erythroblast", "ig", "lymphocyte", "monocyte", "neutrophil", "platelet")
    assert T.load_scheme("blood3").classes == ("WBC", "RBC", "Platelet")


@pytest.mark.parametrize("name", ["bmdeep49", "bmdeep33", "pbc8", "lineage", "blood3"])
def test_every_class_reachable_and_every_label_mapped(name: str) -> None:
    scheme = T.load_scheme(name)
    reached = {scheme.map_label(n) for n in T.LABELS} - {None}
    assert reached == set(scheme.classes)
    for n in T.ORIGINAL_LABELS + T.STRUCTURAL_LABELS:
        assert n in scheme.mapping, f"{name} does not say what happens to {n}"
    for n, target in scheme.mapping.items():
        if target is None or (target != n and name.startswith("bmdeep")):
            assert scheme.reasons.get(n), f"{name}: no reason for dropping/merging {n}"
    for i, c in enumerate(scheme.classes):
        assert scheme.index(c) == i


def test_bmdeep33_merges() -> None:
    s = T.load_scheme("bmdeep33")
    assert s.map_label("segmented_basophil") == "basophil"
    assert s.map_label("eosinophilic_myelocyte") == "eosinophil"
    assert s.map_label("degranulated_neutrophilic_myelocyte") == "neutrophilic_myelocyte"
    assert s.map_label("monoblast") == "promonocyte"
    assert s.map_label("immature_monoblast") == "promonocyte"  # IDC name goes through normalisation
    assert s.map_label("lymphoblast") == "lymphoblast"
    assert s.map_label("lymphocytic_blast") == "lymphocytic_blast"
    assert s.map_label("no_consensus_found") is None
    assert s.map_label("eosinophil") == "eosinophil"  # group with one target
    assert s.map_label("blast") is None  # group whose members stay apart
    assert "not available" in s.description.lower()
    with pytest.raises(KeyError):
        s.index("nonsense")
    # every class is a taxonomy label
    assert all(c in T.LABELS for c in s.classes)


def test_lineage_scheme_matches_lineage_of() -> None:
    s = T.load_scheme("lineage")
    for n in T.ORIGINAL_LABELS:
        assert s.map_label(n) == T.lineage_of(n)
    assert s.map_label("blast") == "blast"
    assert s.map_label("erythroblast") == "erythroid"


def test_blood3() -> None:
    s = T.load_scheme("blood3")
    assert s.map_label("erythrocyte") == "RBC"
    assert s.map_label("thrombocyte_aggregate") == "Platelet"
    assert s.map_label("segmented_neutrophil") == "WBC"
    assert s.map_label("leukocyte") == "WBC"
    assert s.map_label("artifact") is None


def test_load_scheme_from_path_and_errors(tmp_path: Path) -> None:
    good = tmp_path / "mine.json"
    good.write_text(json.dumps({"name": "mine", "classes": ["blast", "other"],
                                "mapping": {"blast": "blast", "lymphocyte": "other",
                                            "lymphoid_precursor_cell": None}}))
    s = T.load_scheme(good)
    assert s.map_label("myelocytic_blast") == "blast"  # through ancestors
    assert s.map_label("lymphocyte") == "other"
    assert s.map_label("lymphoblast") is None
    assert s.map_label("artifact") is None
    again = tmp_path / "again.json"
    again.write_text(s.to_json())
    assert T.load_scheme(again) == s
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "bad", "classes": ["a"], "mapping": {"lymphocyte": "b"}}))
    with pytest.raises(InputError, match="not in 'classes'"):
        T.load_scheme(bad)
    bad.write_text(json.dumps({"name": "bad", "classes": ["a"], "mapping": {"lymphocyt": "a"}}))
    with pytest.raises(T.UnknownLabelError):
        T.load_scheme(bad)
    with pytest.raises(InputError, match="unknown class scheme"):
        T.load_scheme("bmdeep34")
    with pytest.raises(InputError):
        T.load_scheme(tmp_path / "missing.json")


def test_map_external_pbc() -> None:
    pbc8 = T.load_scheme("pbc8")
    for group in pbc8.classes:  # every PBC folder maps back onto its own pbc8 class
        assert pbc8.map_label(T.map_external("pbc", group)) == group
    fine = {"BA": "basophil", "EO": "eosinophil", "ERB": "erythroblast", "LY": "lymphocyte", "MO": "monocyte",
            "PLATELET": "thrombocyte", "PMY": "promyelocyte", "MY": "neutrophilic_myelocyte",
            "MMY": "neutrophilic_metamyelocyte", "IG": "immature_granulocyte", "BNE": "neutrophilic_band",
            "SNE": "segmented_neutrophil", "NEUTROPHIL": "neutrophil"}
    for raw, label in fine.items():
        assert T.map_external("pbc", raw) == label


def test_map_external_bccd_txl() -> None:
    assert T.map_external("bccd", "WBC") == "leukocyte"
    assert T.map_external("bccd", "RBC") == "erythrocyte"
    assert T.map_external("bccd", "Platelets") == "platelet"
    for sub, lab in [("NEUTROPHIL", "neutrophil"), ("EOSINOPHIL", "eosinophil"), ("LYMPHOCYTE", "lymphocyte"),
                     ("MONOCYTE", "monocyte"), ("BASOPHIL", "basophil")]:
        assert T.map_external("bccd", sub) == lab
    assert T.map_external("txl", "WBC") == "leukocyte"
    assert T.map_external("txl", "RBC") == "erythrocyte"
    assert T.map_external("txl", "Platelet") == "platelet"
    assert T.map_external("txl", "band neutrophil") == "neutrophilic_band"
    blood3 = T.load_scheme("blood3")
    for raw, cls in [("WBC", "WBC"), ("RBC", "RBC"), ("Platelet", "Platelet")]:
        assert blood3.map_label(T.map_external("txl", raw)) == cls
    with pytest.raises(T.UnknownLabelError):
        T.map_external("bccd", "Platelet_x")
    with pytest.raises(InputError):
        T.map_external("kaggle", "WBC")


def test_map_external_matek_all_21() -> None:
    codes = ["ABE", "ART", "BAS", "BLA", "EBO", "EOS", "FGC", "HAC", "KSC", "LYI", "LYT", "MMZ", "MON",
             "MYB", "NGB", "NGS", "NIF", "OTH", "PEB", "PLM", "PMO"]
    assert len(codes) == 21
    mapped = {c: T.map_external("matek", c) for c in codes}
    assert all(m in T.LABELS for m in mapped.values())
    assert mapped["BLA"] == "blast" and T.is_blast_equivalent("blast")
    assert mapped["NGB"] == "neutrophilic_band" and mapped["NGS"] == "segmented_neutrophil"
    assert mapped["PEB"] == "proerythroblast" and mapped["PLM"] == "plasma_cell"
    assert mapped["KSC"] == "smudge_cell" and mapped["ART"] == "artifact"
    assert mapped["PMO"] == "promyelocyte" and mapped["MYB"] == "neutrophilic_myelocyte"
    assert T.map_external("matek", "bla") == "blast"
    lineage = T.load_scheme("lineage")
    assert lineage.map_label(mapped["EBO"]) == "erythroid"
    assert lineage.map_label(mapped["EOS"]) == "eosinophilic"


def test_matek_manifest_labels_map(shared_data: Path) -> None:
    import csv

    with open(shared_data / "matek_bm_samples" / "manifest.csv", newline="") as f:
        labels = {row["label"] for row in csv.DictReader(f)}
    assert labels
    for raw in labels:
        assert T.map_external("matek", raw) in T.LABELS


def test_pitfall_9_3_monoblast_rename_bug() -> None:
    """dataset.md §9.3: IDC renames monoblast to immature_monoblast, a key missing from the code table.

    We read both spellings back to `monoblast` and write it with the code the table meant (NCIt C13120).
    """
    info = T.LABELS["monoblast"]
    assert info.idc_name == "immature_monoblast"
    assert str(info.type_code) == "NCIt:C13120" and info.type_code.meaning == "Immature Monocyte"
    for raw in ("immature_monoblast", "immature_monocyte", "monoblast", "Immature Monoblast"):
        assert T.normalise_label(raw) == "monoblast"
    # the normal precursor is not the leukemic monocytic blast
    assert T.normalise_label("monocytic_blast") == "monocytic_blast"
    assert T.LABELS["monocytic_blast"].type_code.meaning == "Monoblast"
