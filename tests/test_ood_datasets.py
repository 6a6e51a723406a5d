"""Out-of-domain crop sets on tiny generated layouts: the BCCD single-WBC rule, Matek codes and both
folder layouts, TXL-PBC split by source, and the bad-input errors."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from marrowscope.data.ood_datasets import (
    bccd_wbc_crops,
    load_eval_crops,
    matek_crops,
    txl_cell_crops,
    txl_detection_by_source,
)
from marrowscope.errors import InputError


def _field(w: int = 160, h: int = 120, dot: tuple[int, int] | None = None) -> Image.Image:
    arr = np.full((h, w, 3), 230, dtype=np.uint8)
    if dot is not None:
        x, y = dot
        arr[y - 3 : y + 3, x - 3 : x + 3] = (90, 20, 140)  # a purple "nucleus" at the WBC centre
    return Image.fromarray(arr)


def _voc(path: Path, stem: str, boxes: list[tuple[str, int, int, int, int]]) -> None:
    objs = "".join(
        f"<object><name>{n}</name><bndbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax><ymax>{d}</ymax>"
        f"</bndbox></object>" for n, a, b, c, d in boxes)
    path.write_text(f"<annotation><filename>{stem}.jpg</filename><size><width>160</width><height>120"
                    f"</height><depth>3</depth></size>{objs}</annotation>", encoding="utf-8")


def _bccd(root: Path, fields: dict[int, tuple[str, list[tuple[str, int, int, int, int]]]]) -> Path:
    voc = root / "BCCD"
    (voc / "Annotations").mkdir(parents=True)
    (voc / "JPEGImages").mkdir()
    rows = []
    for i, (cat, boxes) in fields.items():
        stem = f"BloodImage_{i:05d}"
        wbc = [b for b in boxes if b[0] == "WBC"]
        dot = ((wbc[0][1] + wbc[0][3]) // 2, (wbc[0][2] + wbc[0][4]) // 2) if wbc else None
        _field(dot=dot).save(voc / "JPEGImages" / f"{stem}.jpg", quality=95)
        _voc(voc / "Annotations" / f"{stem}.xml", stem, boxes)
        rows.append([i - 1, i, cat])
    with (root / "wbc_subtype_labels.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["", "Image", "Category"])
        w.writerows(rows)
    return root


def test_bccd_single_wbc_rule_counts_what_it_skips(tmp_path: Path) -> None:
    wbc = ("WBC", 60, 40, 100, 80)
    rbc = ("RBC", 5, 5, 30, 30)
    root = _bccd(tmp_path, {
        1: ("NEUTROPHIL", [wbc, rbc]),  # kept
        2: ("LYMPHOCYTE", [wbc]),  # kept
        3: ("NEUTROPHIL, EOSINOPHIL", [wbc, ("WBC", 110, 60, 150, 100)]),  # two subtypes
        4: ("", [wbc]),  # no subtype
        5: ("MONOCYTE", [wbc, ("WBC", 110, 60, 150, 100)]),  # one subtype, two WBC boxes
        6: ("EOSINOPHIL", [rbc]),  # no WBC box
    })
    ec = bccd_wbc_crops(root, mpp=0.3, size=32, src_mpp=0.1)
    assert ec.labels == ("neutrophil", "lymphocyte")
    assert ec.skipped == {"two or more subtype labels": 1, "no subtype label": 1, "two or more WBC boxes": 1,
                          "no WBC box": 1}
    assert ec.images.shape == (2, 32, 32, 3)
    # the crop is centred on the WBC box: the purple dot is at the centre, the field around it is kept
    c = ec.images[0, 15:17, 15:17].astype(int)
    assert (c[..., 1] < 80).all()
    assert ec.images[0, 0, 0, 1] > 200
    assert ec.summary()["by_label"] == {"LYMPHOCYTE".lower(): 1, "neutrophil": 1}
    # the same through the FORMAT:PATH entry point
    assert load_eval_crops(f"bccd-wbc:{root}", mpp=0.3, size=32, src_mpp=0.1).labels == ec.labels


def test_bccd_unknown_subtype_names_file_and_label(tmp_path: Path) -> None:
    root = _bccd(tmp_path, {7: ("MEGAKARYOCYTE", [("WBC", 60, 40, 100, 80)])})
    with pytest.raises(InputError, match=r"BloodImage_00007.*'MEGAKARYOCYTE'"):
        bccd_wbc_crops(root, mpp=0.3, size=32)


def _crop(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((50, 50, 3), 200, dtype=np.uint8)).save(path)


def test_matek_tcia_and_flat_layouts(tmp_path: Path) -> None:
    tcia = tmp_path / "tcia"
    _crop(tcia / "BLA" / "0001-1000" / "BLA_00001.jpg")
    _crop(tcia / "PLM" / "PLM_00002.jpg")
    _crop(tcia / "NGS" / "0001-1000" / "NGS_00003.jpg")
    ec = matek_crops(tcia, mpp=0.3, size=16)
    assert ec.source_labels == ("BLA", "NGS", "PLM")
    assert ec.labels == ("blast", "segmented_neutrophil", "plasma_cell")
    flat = tmp_path / "flat"
    _crop(flat / "EBO_00004.jpg")
    _crop(flat / "lyt_00005.png")
    assert load_eval_crops(f"matek:{flat}", mpp=0.3, size=16).labels == ("erythroblast", "lymphocyte")


def test_matek_all_21_codes_map(tmp_path: Path) -> None:
    codes = ["ABE", "ART", "BAS", "BLA", "EBO", "EOS", "FGC", "HAC", "KSC", "LYI", "LYT", "MMZ", "MON",
             "MYB", "NGB", "NGS", "NIF", "OTH", "PEB", "PLM", "PMO"]
    for k, c in enumerate(codes):
        _crop(tmp_path / c / f"{c}_{k:05d}.jpg")
    ec = matek_crops(tmp_path, mpp=0.3, size=8)
    assert sorted(ec.source_labels) == codes and all(ec.labels)


def test_matek_unknown_code_and_mismatch_are_one_line_errors(tmp_path: Path) -> None:
    _crop(tmp_path / "a" / "XYZ_00001.jpg")
    with pytest.raises(InputError, match=r"XYZ_00001\.jpg.*'XYZ'") as e:
        matek_crops(tmp_path / "a", mpp=0.3, size=8)
    assert "\n" not in str(e.value)
    _crop(tmp_path / "b" / "BLA" / "EOS_00001.jpg")
    with pytest.raises(InputError, match=r"EOS_00001\.jpg.*'EOS'.*'BLA'"):
        matek_crops(tmp_path / "b", mpp=0.3, size=8)


def _txl(root: Path) -> Path:
    rows = []
    for k, (src, size, ctype, lines) in enumerate([
        ("PBC", 360, "monocyte", ["0 0.5 0.5 0.3 0.3", "1 0.1 0.1 0.1 0.1"]),
        ("PBC", 360, "basophil", ["0 0.5 0.5 0.3 0.3", "0 0.2 0.2 0.1 0.1"]),  # two WBCs: skipped
        ("Raabin-WBC", 575, "", ["0 0.5 0.5 0.2 0.2"]),
        ("BCCD", 640, "", ["0 0.4 0.5 0.2 0.2", "1 0.8 0.8 0.1 0.1"]),
    ]):
        stem = f"img{k}"
        img = root / "TXL_PBC" / "images" / "val" / f"{stem}.jpg"
        lab = root / "TXL_PBC" / "labels" / "val" / f"{stem}.txt"
        img.parent.mkdir(parents=True, exist_ok=True)
        lab.parent.mkdir(parents=True, exist_ok=True)
        h = 480 if size == 640 else size
        Image.fromarray(np.full((h, size, 3), 210, dtype=np.uint8)).save(img)
        lab.write_text("\n".join(lines) + "\n")
        rows.append([str(img.relative_to(root)), str(lab.relative_to(root)), "val", src, ctype, size, h])
    (root / "TXL_PBC" / "labels" / "classes.txt").write_text("WBC\nRBC\nPlatelet\n")
    with (root / "manifest.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label_path", "split", "source_inferred_from_size", "pbc_cell_type", "width",
                    "height"])
        w.writerows(rows)
    return root


def test_txl_split_by_source(tmp_path: Path) -> None:
    root = _txl(tmp_path)
    ec = txl_cell_crops(root, mpp=0.45, size=16, splits=("val",))
    assert ec.labels == ("monocyte",) and ec.groups == ("pbc",)
    assert ec.skipped == {"pbc: two or more WBC box(es)": 1, "raabin: no cell type": 1,
                          "bccd: no cell type": 1}
    by = txl_detection_by_source(root, ("WBC", "RBC", "Platelet"), splits=("val",))
    assert sorted(by) == ["bccd", "pbc", "raabin"]
    assert [len(v) for _, v in sorted(by.items())] == [1, 2, 1]
    with pytest.raises(InputError, match="unknown TXL-PBC source"):
        txl_cell_crops(root, mpp=0.45, size=16, source="elsewhere", splits=("val",))


def test_real_bccd_rule_on_shared_data(shared_data: Path) -> None:
    ec = bccd_wbc_crops(shared_data / "bccd", mpp=0.45, size=64)
    assert len(ec) + sum(ec.skipped.values()) == 337
    assert ec.skipped["two or more subtype labels"] >= 10
    assert set(ec.labels) <= {"neutrophil", "eosinophil", "lymphocyte", "monocyte", "basophil"}
