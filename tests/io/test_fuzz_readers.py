"""Fuzzing every reader of user files (Hypothesis): random and mutated inputs give a result or the
project's own one-line error (a MarrowscopeError), never another exception, a traceback or a hang.

Each reader gets valid files written by the project's own writers, mutated byte by byte (truncation,
flips, insertions, hostile tokens such as ``nan``/``1e309``/``""``) and structurally (JSON values of the
wrong type, missing keys; CSV cells, columns and headers; DICOM elements removed or given values of the
wrong type), plus purely random bytes. The default run is bounded (``fuzzing.EXAMPLES`` examples per
reader, derandomised); ``benchmarks/fuzz.py`` runs many more with fresh randomness. Crashes found are
fixed in the readers; each has an ``@example`` regression case here.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from annfixtures import make_source_image
from fuzzing import FUZZ, accepted, mutated_bytes, mutated_csv, mutated_json, outcome
from hypothesis import given
from hypothesis import strategies as st

from marrowscope.cells import Box, Cell, CellAnnotations, Region

# ------------------------------------------------------------------------------------------------ seeds


def _cells(n: int = 6, labelled: bool = True) -> tuple[Cell, ...]:
    labels = ("myeloblast", "lymphocyte", "segmented_neutrophil")
    return tuple(
        Cell(Box(10.0 + 40 * i, 20.0 + 30 * i, 40.0 + 40 * i, 45.0 + 30 * i),
             label=labels[i % 3] if labelled else None, cell_id=100 + i, roi_id=1,
             session_labels=(labels[i % 3], labels[(i + 1) % 3]) if labelled else (),
             score=0.9 if labelled else None)
        for i in range(n)
    )


class Seeds:
    """Valid files written by our writers (``files``: name -> bytes); not a dataclass, so Hypothesis'
    failure reports print the short repr rather than every seed's bytes."""

    def __init__(self, root: Path, files: dict[str, bytes], png: Path, sm_folder: Path) -> None:
        self.root = root
        self.files = files
        self.png = png  # an image for the YOLO/VOC/COCO readers that read sizes from the image header
        self.sm_folder = sm_folder  # a tiny one-level DICOM slide (SM), for the slide header path

    def __repr__(self) -> str:
        return f"Seeds({self.root})"


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> Seeds:
    from PIL import Image

    from marrowscope.io.annotations.bmdeep_csv import write_cells_csv, write_rois_csv
    from marrowscope.io.annotations.clinical import ClinicalRecord, write_clinical_csv
    from marrowscope.io.annotations.coco import write_coco
    from marrowscope.io.annotations.dicom_ann_writer import write_dicom_ann
    from marrowscope.io.annotations.geojson import write_geojson
    from marrowscope.io.annotations.table import write_cell_table
    from marrowscope.io.annotations.voc import write_voc
    from marrowscope.io.annotations.yolo import write_yolo_folder
    from marrowscope.io.counts import make_counts_table, write_counts_table
    from marrowscope.io.slides.dicom_writer import write_dicom_wsi

    root = tmp_path_factory.mktemp("fuzz_seeds")
    png = root / "img.png"
    Image.fromarray(np.full((300, 400, 3), 200, np.uint8)).save(png)
    regions = (Region(Box(0, 0, 256, 256), 1), Region(Box(256, 0, 400, 300), 2))
    ann = CellAnnotations(cells=_cells(), regions=regions, slide_id="S1", width=400, height=300,
                          image_path=str(png), mpp=0.25)
    det = CellAnnotations(cells=_cells(labelled=False), slide_id="S2", width=400, height=300)
    out: dict[str, Path] = {}
    out["cells_labelled.csv"] = write_cells_csv({"S1": ann}, root / "cells_labelled.csv")
    out["cells_detection.csv"] = write_cells_csv({"S2": det}, root / "cells_detection.csv")
    out["rois.csv"] = write_rois_csv({"S1": regions, "S2": regions[:1]}, root / "rois.csv")
    pq_path, csv_path = write_cell_table([ann, det], root / "cells")
    out["cells.parquet"], out["cells.csv"] = pq_path, csv_path
    recs = [ClinicalRecord("P1", "F", "012Y", "AML", None, {"wbc": 12.5, "hb": 9.1}),
            ClinicalRecord("P2", "M", "4", "control", None, {})]
    out["clinical.csv"] = write_clinical_csv(recs, root / "clinical.csv")
    counts = make_counts_table({"P1": {"myeloblast": 30, "lymphocyte": 70}, "P2": {"myeloblast": 1}},
                               {"P1": "AML", "P2": "control"}, {"P1": {"age_months": 144}})
    out["counts.csv"] = write_counts_table(counts, root / "counts.csv")
    out["cells.geojson"] = write_geojson(ann, root / "cells.geojson")
    out["coco.json"] = write_coco([ann], root / "coco.json")
    out["voc.xml"] = write_voc(ann, root / "voc.xml", filename=png.name)
    yolo = write_yolo_folder([ann], root / "yolo", ["myeloblast", "lymphocyte", "segmented_neutrophil"],
                             images="none")
    out["yolo.txt"] = next((yolo / "labels").glob("*.txt"))
    out["data.yaml"] = yolo / "data.yaml"
    src = make_source_image(width=400, height=300, slide_id="S1", patient_id="P1")
    out["consensus.dcm"] = write_dicom_ann(ann, root / "consensus.dcm", source_image=src, kind="consensus")
    out["roi.dcm"] = write_dicom_ann(CellAnnotations(cells=(), regions=regions), root / "roi.dcm",
                                     source_image=src, kind="roi")
    sm = write_dicom_wsi(np.full((256, 256, 3), 220, np.uint8), root / "sm" / "SM_1", mpp=0.25,
                         slide_id="S1", patient_id="P1", n_levels=1, tile_size=256)
    out["sm.dcm"] = sm.base_file
    return Seeds(root, {k: Path(v).read_bytes() for k, v in out.items()}, png, sm.folder)


@contextmanager
def _file(name: str, data: bytes) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="fuzz_") as d:
        p = Path(d) / name
        p.write_bytes(data)
        yield p


def _any(seed: bytes, *structured: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    return st.one_of(mutated_bytes(seed), *structured, st.binary(max_size=300))


def _check(name: str, data: bytes, read: Callable[[Path], Any]) -> None:
    with _file(name, data) as p:
        outcome(read, p)


def test_seeds_are_valid(seeds: Seeds) -> None:
    """Each unmutated seed reads without error (so the mutations start from real files)."""
    from marrowscope.io.annotations.bmdeep_csv import read_cells_csv, read_rois_csv
    from marrowscope.io.annotations.clinical import read_clinical_csv
    from marrowscope.io.annotations.coco import read_coco
    from marrowscope.io.annotations.dicom_ann import read_dicom_ann
    from marrowscope.io.annotations.geojson import read_geojson
    from marrowscope.io.annotations.table import read_cell_table_by_slide
    from marrowscope.io.counts import read_counts_table

    assert len(read_cells_csv(seeds.root / "cells_labelled.csv")["S1"]) == 6
    assert len(read_rois_csv(seeds.root / "rois.csv")["S1"]) == 2
    assert len(read_cell_table_by_slide(seeds.root / "cells.parquet")) == 2
    assert set(read_clinical_csv(seeds.root / "clinical.csv")) == {"P1", "P2"}
    assert len(read_counts_table(seeds.root / "counts.csv")) == 2
    assert len(read_geojson(seeds.root / "cells.geojson")) == 6
    assert len(read_coco(seeds.root / "coco.json", seeds.root)[0]) == 6
    assert len(read_dicom_ann(seeds.root / "consensus.dcm").annotations) == 6
    assert outcome(_read_voc(seeds), seeds.root / "voc.xml") == "ok"
    assert outcome(_read_yolo(seeds), seeds.root / "yolo.txt") == "ok"


# ------------------------------------------------------------------------------------------------ CSVs


@FUZZ
@given(data=st.data())
def test_fuzz_dataset_cells_csv(seeds: Seeds, data: st.DataObject) -> None:
    from marrowscope.io.annotations.bmdeep_csv import read_cells_csv

    seed = seeds.files[data.draw(st.sampled_from(["cells_labelled.csv", "cells_detection.csv"]))]
    _check("cells.csv", data.draw(_any(seed, mutated_csv(seed))), read_cells_csv)


@FUZZ
@given(data=st.data())
def test_fuzz_dataset_old_format_cells_csv_with_rois(seeds: Seeds, data: st.DataObject) -> None:
    """The older internal format (x_in_slide, cell_width, ...) whose slide ids come from the ROI CSV."""
    from marrowscope.io.annotations.bmdeep_csv import read_cells_csv

    cells = (b"cell_id,x_in_slide,y_in_slide,cell_width,cell_height,rocellboxing_id,consensus_label\n"
             b"1,10,20,30,25,7,myeloblast\n2,50,60,30,25,7,lymphocyte\n")
    rois = b"id,slide_id,x_in_slide,y_in_slide,width,height\n7,S1,0,0,2458,2458\n"
    which = data.draw(st.booleans())
    mutated = data.draw(_any(cells if which else rois, mutated_csv(cells if which else rois)))
    cells_file, rois_file = (mutated, rois) if which else (cells, mutated)
    with _file("cells.csv", cells_file) as c, _file("rois.csv", rois_file) as r:
        outcome(read_cells_csv, c, rois_path=r)


@FUZZ
@given(data=st.data())
def test_fuzz_dataset_rois_csv(seeds: Seeds, data: st.DataObject) -> None:
    from marrowscope.io.annotations.bmdeep_csv import read_rois_csv

    seed = seeds.files["rois.csv"]
    old = b"id,slide_id,x_in_slide,y_in_slide,width,height\n7,S1,0,0,2458,2458\n"
    seed = data.draw(st.sampled_from([seed, old]))
    _check("rois.csv", data.draw(_any(seed, mutated_csv(seed))), read_rois_csv)


@FUZZ
@given(data=st.data())
def test_fuzz_cell_table(seeds: Seeds, data: st.DataObject) -> None:
    from marrowscope.io.annotations.table import read_cell_table, read_cell_table_by_slide

    name = data.draw(st.sampled_from(["cells.csv", "cells.parquet"]))
    seed = seeds.files[name]
    extra = [mutated_csv(seed)] if name.endswith(".csv") else []
    mutated = data.draw(_any(seed, *extra))
    _check(name, mutated, read_cell_table_by_slide)
    _check(name, mutated, lambda p: read_cell_table(p, slide_id="S1"))


@FUZZ
@given(data=st.data())
def test_fuzz_clinical_table(seeds: Seeds, data: st.DataObject) -> None:
    from marrowscope.io.annotations.clinical import read_clinical_csv

    seed = seeds.files["clinical.csv"]
    _check("clinical.csv", data.draw(_any(seed, mutated_csv(seed, sep=";"))), read_clinical_csv)


@FUZZ
@given(data=st.data())
def test_fuzz_counts_table(seeds: Seeds, data: st.DataObject) -> None:
    from marrowscope.io.counts import read_counts_table

    seed = seeds.files["counts.csv"]
    _check("counts.csv", data.draw(_any(seed, mutated_csv(seed))), read_counts_table)


# ------------------------------------------------------------------------------------------------ JSON


@FUZZ
@given(data=st.data())
def test_fuzz_geojson(seeds: Seeds, data: st.DataObject) -> None:
    from marrowscope.io.annotations.geojson import read_geojson

    seed = seeds.files["cells.geojson"]
    _check("cells.geojson", data.draw(_any(seed, mutated_json(seed))), read_geojson)


@FUZZ
@given(data=st.data())
def test_fuzz_coco(seeds: Seeds, data: st.DataObject) -> None:
    from marrowscope.io.annotations.coco import read_coco

    seed = seeds.files["coco.json"]
    _check("coco.json", data.draw(_any(seed, mutated_json(seed))), lambda p: read_coco(p, seeds.root))


# ------------------------------------------------------------------------------------------------ VOC, YOLO


def _read_voc(seeds: Seeds) -> Callable[[Path], Any]:
    from marrowscope.io.annotations.voc import read_voc

    return lambda p: read_voc(p, image_root=seeds.root)


def _read_yolo(seeds: Seeds) -> Callable[[Path], Any]:
    from marrowscope.io.annotations.yolo import read_yolo_file

    return lambda p: read_yolo_file(p, seeds.png, ["myeloblast", "lymphocyte", "segmented_neutrophil"])


@FUZZ
@given(data=st.data())
def test_fuzz_voc(seeds: Seeds, data: st.DataObject) -> None:
    seed = seeds.files["voc.xml"]
    _check("voc.xml", data.draw(_any(seed)), _read_voc(seeds))


@FUZZ
@given(data=st.data())
def test_fuzz_yolo_labels_and_classes(seeds: Seeds, data: st.DataObject) -> None:
    from marrowscope.io.annotations.yolo import read_yolo_classes

    _check("yolo.txt", data.draw(_any(seeds.files["yolo.txt"])), _read_yolo(seeds))
    with tempfile.TemporaryDirectory(prefix="fuzz_") as d:
        name = data.draw(st.sampled_from(["data.yaml", "classes.txt"]))
        seed = seeds.files["data.yaml"] if name == "data.yaml" else b"myeloblast\nlymphocyte\n"
        (Path(d) / name).write_bytes(data.draw(_any(seed)))
        outcome(read_yolo_classes, d)


# ------------------------------------------------------------------------------------------------ DICOM


@st.composite
def mutated_dicom(draw: st.DrawFn, seed: bytes) -> bytes:
    """``seed`` with DICOM elements removed or given a value of the wrong type (top level or inside the
    first item of a sequence), written back with pydicom."""
    import io

    ds = pydicom.dcmread(io.BytesIO(seed))
    for _ in range(draw(st.integers(1, 3))):
        targets = [ds] + [item for elem in ds if elem.VR == "SQ" for item in list(elem.value)[:1]]
        target = draw(st.sampled_from(targets))
        tags = [e.tag for e in target if e.tag.group != 0x7FE0]
        if not tags:
            continue
        tag = draw(st.sampled_from(tags))
        if draw(st.booleans()):
            del target[tag]
        else:
            elem = target[tag]
            value = draw(st.sampled_from(["", "abc", "-1", "1e309", "nan", "9" * 30, "1.2.3", "\\\\"]))
            try:
                if elem.VR in ("OB", "OW", "OF", "OD", "OL", "UN"):
                    elem.value = draw(st.binary(max_size=24))
                elif elem.VR == "SQ":
                    elem.value = []
                else:
                    elem.value = value
            except Exception:  # noqa: BLE001 - pydicom refuses some values; keep the file as it is
                continue
    buf = io.BytesIO()
    try:
        ds.save_as(buf, enforce_file_format=True)
    except Exception:  # noqa: BLE001 - not writable: fall back to a byte-level mutation
        return draw(mutated_bytes(seed, head=2048))
    return buf.getvalue()


def _dicom(seed: bytes) -> st.SearchStrategy[bytes]:
    return st.one_of(mutated_bytes(seed, head=4096), mutated_bytes(seed), mutated_dicom(seed),
                     st.binary(max_size=300).map(lambda b: b"\0" * 128 + b"DICM" + b))


@FUZZ
@given(data=st.data())
def test_fuzz_dicom_ann(seeds: Seeds, data: st.DataObject) -> None:
    from marrowscope.io.annotations.dicom_ann import read_dicom_ann, read_dicom_ann_header

    seed = seeds.files[data.draw(st.sampled_from(["consensus.dcm", "roi.dcm"]))]
    mutated = data.draw(_dicom(seed))
    _check("ann.dcm", mutated, read_dicom_ann_header)
    _check("ann.dcm", mutated, read_dicom_ann)


@FUZZ
@given(data=st.data())
def test_fuzz_cohort_discovery_from_dicom_headers(seeds: Seeds, data: st.DataObject) -> None:
    """A cohort folder (one slide, its ROI and consensus series) with one file mutated: discovery, loading
    the slide's annotations, and opening the slide from its header give a result or our own error."""
    from marrowscope.io.cohort import discover_cohort, load_patient_annotations
    from marrowscope.io.slides import open_slide

    which = data.draw(st.sampled_from(["sm.dcm", "roi.dcm", "consensus.dcm"]))
    mutated = data.draw(_dicom(seeds.files[which]))
    with tempfile.TemporaryDirectory(prefix="fuzz_") as d:
        study = Path(d) / "dicom" / "P1" / "study"
        shutil.copytree(seeds.sm_folder, study / "SM_1")
        (study / "ANN_roi").mkdir()
        (study / "ANN_roi" / "roi.dcm").write_bytes(seeds.files["roi.dcm"])
        (study / "ANN_c").mkdir()
        (study / "ANN_c" / "c.dcm").write_bytes(seeds.files["consensus.dcm"])
        target = {"sm.dcm": next((study / "SM_1").glob("*.dcm")), "roi.dcm": study / "ANN_roi" / "roi.dcm",
                  "consensus.dcm": study / "ANN_c" / "c.dcm"}[which]
        target.write_bytes(mutated)

        def discover_and_load(folder: str) -> None:
            for entry in discover_cohort(folder):
                for source in ("roi", "consensus"):
                    accepted(load_patient_annotations, entry, source)

        outcome(discover_and_load, d)
        if which == "sm.dcm":
            outcome(lambda p: open_slide(p).close(), target)
            outcome(lambda p: open_slide(p).close(), study / "SM_1")


# ------------------------------------------------------------------------------------------------ regressions
# Inputs the fuzzing found (minimised by hand), each crashing the original reader with a foreign exception
# or giving a wrong result quietly; now each gives the project's own one-line error.


def _reader(name: str) -> Callable[..., Any]:
    from marrowscope.io.annotations import bmdeep_csv, clinical, coco, geojson, table, yolo
    from marrowscope.io.counts import read_counts_table

    readers: dict[str, Callable[..., Any]] = {
        "rois": bmdeep_csv.read_rois_csv, "cells": bmdeep_csv.read_cells_csv,
        "table": table.read_cell_table_by_slide, "clinical": clinical.read_clinical_csv,
        "counts": read_counts_table, "coco": coco.read_coco, "geojson": geojson.read_geojson,
        "classes": lambda p: yolo.read_yolo_classes(p.parent),
    }
    return readers[name]


_OLD_ROIS = "id,slide_id,x_in_slide,y_in_slide,width,height\n"
_OLD_CELLS = "cell_id,slide_id,x_in_slide,y_in_slide,cell_width,cell_height\n"
_TABLE = "slide_id,cell_id,roi_id,x1,y1,x2,y2,label,score\n"
_COCO = {"images": [{"id": 1, "file_name": "x.png", "width": 100, "height": 80}],
         "categories": [{"id": 1, "name": "myeloblast"}],
         "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 10, 10]}]}


def _coco(**change: Any) -> str:
    doc = json.loads(json.dumps(_COCO))
    for key, value in change.items():
        section, field = key.split("__")
        doc[section][0][field] = value
    return json.dumps(doc)


def _feature(coordinates: Any, **marrowscope: Any) -> str:
    feat = {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": coordinates},
            "properties": {"objectType": "detection", "classification": {"name": "myeloblast"}}}
    return json.dumps({"type": "FeatureCollection", "features": [feat], "marrowscope": marrowscope})


REGRESSIONS = [
    ("rois", "rois.csv", _OLD_ROIS + "7,S1,0,0,width,10\n", "width: 'width' is not a finite number"),
    ("rois", "rois.csv", _OLD_ROIS + "7", "is not a finite number"),  # truncated after the id
    ("rois", "rois.csv", "roi_id,slide_id,x1,y1,x2,y2\n1.5,S1,0,0,9,9\n", "1.5 is not an integer id"),
    ("cells", "cells.csv", _OLD_CELLS + "1,S1,10,20,30,x\n", "cell_height: 'x' is not a finite number"),
    ("cells", "cells.csv", _OLD_CELLS + "1,S1," + "9" * 400 + ",20,30,25\n", "is not a finite number"),
    ("cells", "cells.csv", "cell_id,slide_id,roi_id,x1,y1,x2,y2\n1,S1,1,0,0,inf,9\n", "bad box"),
    ("cells", "cells.csv", "cell_id,slide_id,roi_id,x1,y1,x2,y2\n1,S1,1," + "9" * 400 + ",0,9,9\n",
     "row 2: bad box"),
    ("rois", "rois.csv", "roi_id,slide_id,x1,y1,x2,y2\n1,S1,0," + "9" * 400 + ",9,9\n", "row 2: bad box"),
    ("table", "cells.csv", _TABLE + "S1,nan,1,0,0,9,9,,\n", "row 1: 'nan' is not an integer"),
    ("table", "cells.csv", _TABLE + "S1,1,1,0,0,9,9,,abc\n", "row 1, score: 'abc' is not a number"),
    ("clinical", "clinical.csv", "patient_id;gender;age;diagnosis\nP1;F;3;AML\nP2;F;3;AML;x;y\n",
     "cannot parse as CSV"),
    ("coco", "coco.json", _coco(images__id=""), "images[0].id: expected a number, got ''"),
    ("coco", "coco.json", _coco(annotations__image_id=None), "annotations[0].image_id: expected a number"),
    ("coco", "coco.json", _coco(categories__id=[1]), "categories[0].id: expected a number"),
    ("coco", "coco.json", _coco(annotations__score=""), "annotations[0].score: expected a number"),
    ("coco", "coco.json", _coco(annotations__attributes={"roi_id": [2]}), "attributes.roi_id"),
    ("coco", "coco.json", _coco(images__width=1.5), "image 1 width: expected an integer"),
    ("geojson", "a.geojson", _feature([[{"x": 1}, [2, 2], [1, 2]]]), "malformed coordinates"),
    ("geojson", "a.geojson", _feature([[[0, 0], [9, 9]]], width="wide", height=10), "marrowscope.width"),
    ("geojson", "a.geojson", b"\x80{}", "not UTF-8 text"),
    ("classes", "data.yaml", "names:\n  0: a\n  5: b\n", "mapping keys must be class indices 0..N-1"),
    ("classes", "classes.txt", b"\x80a\n", "not UTF-8 text"),
]


@pytest.mark.parametrize(("reader", "name", "content", "message"), REGRESSIONS)
def test_fuzz_regressions(reader: str, name: str, content: str | bytes, message: str) -> None:
    from marrowscope.errors import InputError

    data = content.encode("utf-8") if isinstance(content, str) else content
    with _file(name, data) as p:
        with pytest.raises(InputError) as e:
            _reader(reader)(p)
        assert message in str(e.value) and "\n" not in str(e.value)


def test_fuzz_regression_voc_infinite_size(seeds: Seeds) -> None:
    from marrowscope.errors import InputError

    xml = seeds.files["voc.xml"].replace(b"<width>400</width>", b"<width>1e309</width>")
    with _file("voc.xml", xml) as p, pytest.raises(InputError, match="non-numeric width or height"):
        _read_voc(seeds)(p)


@pytest.mark.parametrize(("line", "message"), [("nan 0.5 0.5 0.1 0.1", "class index nan"),
                                               (b"\x80 0.5", "not UTF-8 text")])
def test_fuzz_regressions_yolo_labels(seeds: Seeds, line: str | bytes, message: str) -> None:
    from marrowscope.errors import InputError

    data = line.encode() if isinstance(line, str) else line
    with _file("x.txt", data) as p, pytest.raises(InputError) as e:
        _read_yolo(seeds)(p)
    assert message in str(e.value)


def _with_vr(data: bytes, tag: bytes, vr: bytes, new_vr: bytes = b"MO") -> bytes:
    """``data`` (explicit VR little endian) with the VR of element ``tag`` replaced: a value pydicom only
    fails on when it is first used."""
    i = data.index(tag + vr)
    return data[:i + 4] + new_vr + data[i + 6:]


def test_fuzz_regressions_damaged_dicom_values(seeds: Seeds, tmp_path: Path) -> None:
    """Header values pydicom decodes lazily (an unknown VR here): each reader names the file, and cohort
    discovery lists it as unreadable instead of crashing with NotImplementedError."""
    from marrowscope.errors import InputError
    from marrowscope.io.annotations.dicom_ann import read_dicom_ann, read_dicom_ann_header
    from marrowscope.io.cohort import discover_cohort
    from marrowscope.io.slides.dicom import read_header

    ann = _with_vr(seeds.files["roi.dcm"], b"\x08\x00\x3e\x10", b"LO")  # SeriesDescription
    (tmp_path / "roi.dcm").write_bytes(ann)
    for read in (read_dicom_ann_header, read_dicom_ann):
        with pytest.raises(InputError, match="roi.dcm: .*(damaged DICOM header|not a readable DICOM)"):
            read(tmp_path / "roi.dcm")
    sm = _with_vr(seeds.files["sm.dcm"], b"\x10\x00\x20\x00", b"LO")  # PatientID
    folder = tmp_path / "cohort"
    shutil.copytree(seeds.sm_folder, folder / "SM_1")
    (folder / "bad.dcm").write_bytes(sm)
    (folder / "roi.dcm").write_bytes(ann)
    cohort = discover_cohort(folder)
    assert [p.slide_id for p in cohort] == ["S1"]
    assert sorted(Path(u.path).name for u in cohort.unreadable) == ["bad.dcm", "roi.dcm"]
    assert all("damaged DICOM header" in u.problem for u in cohort.unreadable)
    modality = _with_vr(seeds.files["sm.dcm"], b"\x08\x00\x60\x00", b"CS")  # Modality
    (tmp_path / "m.dcm").write_bytes(modality)
    with pytest.raises(InputError, match="m.dcm: damaged DICOM header"):
        read_header(tmp_path / "m.dcm")


def test_fuzz_regression_damaged_cell_table_metadata(seeds: Seeds, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    from marrowscope.errors import InputError
    from marrowscope.io.annotations.table import read_cell_table_by_slide

    table = pq.read_table(seeds.root / "cells.parquet")
    bad = json.dumps({"S1": {"regions": [{"box": "abcd", "roi_id": 1, "label": "x"}]}})
    pq.write_table(table.replace_schema_metadata({**table.schema.metadata, b"marrowscope": bad}),
                   tmp_path / "t.parquet")
    with pytest.raises(InputError, match="damaged marrowscope metadata"):
        read_cell_table_by_slide(tmp_path / "t.parquet")


def test_fuzz_regression_old_cells_format_never_adds_text(tmp_path: Path) -> None:
    """A text cell in a coordinate column used to make the whole column text, so x2 = "10" + "30" =
    "1030": a wrong box, silently. Now the cell is named."""
    from marrowscope.errors import InputError
    from marrowscope.io.annotations.bmdeep_csv import read_cells_csv

    p = tmp_path / "cells.csv"
    p.write_text(_OLD_CELLS + "1,S1,10,20,30,25\n2,S1,40,20,30,25a\n")
    with pytest.raises(InputError, match=r"row 3, cell_height: '25a' is not a finite number"):
        read_cells_csv(p)
    p.write_text(_OLD_CELLS + "1,S1,10,20,30,25\n")
    assert read_cells_csv(p)["S1"].cells[0].box.as_tuple() == (10, 20, 40, 45)


def test_input_errors_are_one_line() -> None:
    from marrowscope.errors import InputError

    e = InputError("f.csv", "cannot parse (ParserError: Error tokenizing data.\nC error: line 3\n)")
    assert str(e) == "f.csv: cannot parse (ParserError: Error tokenizing data. C error: line 3 )"
