"""Writing DICOM Microscopy Bulk Simple Annotations (ANN) with highdicom, in the layout of the
BoneMarrowWSI-PediatricLeukemia collection: the series kinds, descriptions, numbers and group rules are
those :mod:`marrowscope.io.annotations.dicom_ann` reads (see its docstring), in the slide's level-0
pixel frame. ``automatic`` series carry predictions (score and class probabilities as measurements).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from marrowscope.cells import Box, Cell, CellAnnotations
from marrowscope.errors import InputError
from marrowscope.io.annotations.dicom_ann import (
    _FLOAT32_EXACT,
    AUTOMATIC_DESCRIPTION,
    CONSENSUS_DESCRIPTION,
    DETECTION_ID_CODE_VALUE,
    KINDS,
    PRIVATE_SCHEME,
    PROB_PREFIX,
    ROI_DESCRIPTION,
    ROI_GROUP,
    SCORE_CODE_VALUE,
    SESSION_DESCRIPTION,
    SM_SOP_CLASS_UID,
    UNLABELED_DESCRIPTION,
    UNLABELED_GROUP,
    _dcmread,
    _raise_outside,
)
from marrowscope.io.atomic import atomic_path

log = logging.getLogger(__name__)

#: coding schemes outside the DICOM standard's own list that our instances use, declared in the
#: CodingSchemeIdentificationSequence of each instance that uses them (PS3.3 C.12.1.1.4)
EXTRA_CODING_SCHEMES: dict[str, dict[str, str]] = {
    PRIVATE_SCHEME: {
        "CodingSchemeName": "marrowscope private codes (prediction measurements and classes)",
        "CodingSchemeResponsibleOrganization": "marrowscope",
    },
    "EFO": {
        "CodingSchemeName": "Experimental Factor Ontology",
        "CodingSchemeResponsibleOrganization": "EMBL-EBI",
    },
}


@dataclass(frozen=True)
class Algorithm:
    """A program or model that produced AUTOMATIC annotations: its name, version (for a model: the
    full sha256 of its weights), task and free-text description."""

    name: str
    version: str
    task: str | None = None  # "detector" | "classifier" | "diagnosis" for a model
    description: str | None = None

    def __post_init__(self) -> None:
        for what, v in (("name", self.name), ("version", self.version)):
            if not v or len(v) > 64:
                raise ValueError(f"algorithm {what} {v!r} must have 1 to 64 characters (DICOM LO)")


def _algorithm_sequence(program: Algorithm, models: Sequence[Algorithm]) -> Any:
    """The Annotation Group Algorithm Identification Sequence (one item, as the standard and highdicom's
    reader require): the program, with each model as a parameter ``<task>=<name> sha256:<hash>``."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    params: dict[str, str] = {}
    for i, m in enumerate(models):
        key = m.task or f"model{i + 1}"
        key = key if key not in params else f"{key}{i + 1}"
        params[key] = f"{m.name} sha256:{m.version}"
    return hd.AlgorithmIdentificationSequence(
        name=program.name, family=codes.DCM.ArtificialIntelligence, version=program.version,
        parameters=params or None, source="marrowscope",
    )


def _contributing_equipment(models: Sequence[Algorithm]) -> Any:
    """SOP Common Contributing Equipment Sequence: one 'Processing Equipment' item per model, with the
    model's name and the full sha256 of its weights as its software version."""
    from pydicom.sequence import Sequence as DcmSequence

    items = []
    for m in models:
        item = Dataset()
        purpose = Dataset()
        purpose.CodeValue, purpose.CodingSchemeDesignator = "109102", "DCM"
        purpose.CodeMeaning = "Processing Equipment"
        item.PurposeOfReferenceCodeSequence = DcmSequence([purpose])
        item.Manufacturer = "marrowscope"
        item.ManufacturerModelName = m.name
        item.SoftwareVersions = m.version
        desc = f"{m.task} model" if m.task else "model"
        item.ContributionDescription = (f"{desc}; {m.description}" if m.description else desc)[:1024]
        items.append(item)
    return DcmSequence(items)


def _used_schemes(ds: Dataset) -> set[str]:
    found: set[str] = set()

    def visit(d: Dataset) -> None:
        for elem in d:
            if elem.keyword == "CodingSchemeDesignator" and elem.value:
                found.add(str(elem.value))
            elif elem.VR == "SQ":
                for item in elem.value:
                    visit(item)

    visit(ds)
    return found


def declare_coding_schemes(ds: Dataset) -> None:
    """Add a CodingSchemeIdentificationSequence item for every non-standard scheme ``ds`` uses."""
    from pydicom.sequence import Sequence as DcmSequence

    used = sorted(_used_schemes(ds) & set(EXTRA_CODING_SCHEMES))
    if not used:
        return
    items = []
    for designator in used:
        item = Dataset()
        item.CodingSchemeDesignator = designator
        for k, v in EXTRA_CODING_SCHEMES[designator].items():
            setattr(item, k, v)
        items.append(item)
    ds.CodingSchemeIdentificationSequence = DcmSequence(items)


def hex_to_cielab(color: str) -> tuple[float, float, float]:
    """'#rrggbb' (sRGB, D65) to CIE L*a*b*."""
    s = color.lstrip("#")
    if len(s) != 6:
        raise ValueError(f"colour {color!r} is not #rrggbb")
    rgb = np.array([int(s[i : i + 2], 16) / 255.0 for i in (0, 2, 4)])
    lin = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    m = np.array([[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750],
                  [0.0193339, 0.1191920, 0.9503041]])
    xyz = m @ lin / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    L = 116 * f[1] - 16
    a = 500 * (f[0] - f[1])
    b = 200 * (f[1] - f[2])
    return (float(np.clip(L, 0, 100)), float(np.clip(a, -127, 127)), float(np.clip(b, -128, 127)))


def _hd_code(code: Any) -> Any:
    from pydicom.sr.coding import Code as PdCode

    return PdCode(value=str(code.value), scheme_designator=str(code.scheme), meaning=str(code.meaning))


def _label_concepts(name: str, allow_unknown: bool = False) -> tuple[str, Any, Any, str]:
    """(group label, category Code, type Code, colour) for a taxonomy label name.

    Group (non-leaf) labels keep their own name; with ``allow_unknown`` (predictions in another class
    scheme, e.g. ``ig``) a name outside the taxonomy gets a private type code.
    """
    import hashlib

    from pydicom.sr.coding import Code as PdCode

    from marrowscope.taxonomy import LABELS

    info = LABELS.get(name)
    if info is None:
        if not allow_unknown:
            raise ValueError(f"unknown label {name!r}: not in marrowscope.taxonomy.LABELS")
        value = "L" + hashlib.sha1(name.encode()).hexdigest()[:12]
        return (name, PdCode("91723000", "SCT", "Anatomical structure"),
                PdCode(value, PRIVATE_SCHEME, name[:64]), "#c0c0c0")
    return info.idc_name, _hd_code(info.category), _hd_code(info.type_code), info.color


def _rect(box: Box) -> np.ndarray:
    return np.array(
        [[box.x1, box.y1], [box.x2, box.y1], [box.x2, box.y2], [box.x1, box.y2]], dtype=np.float32
    )


def _check_ids(values: Sequence[int], what: str) -> None:
    if any(abs(v) > _FLOAT32_EXACT for v in values):
        raise ValueError(f"{what} above 2**24 cannot be stored exactly in DICOM float32 measurements")


def _unit() -> Any:
    from pydicom.sr.codedict import codes

    return codes.UCUM.NoUnits


def _cell_measurements(cells: Sequence[Cell], inside: bool, prob_classes: Sequence[str],
                       with_score: bool) -> list[Any]:
    import highdicom as hd
    from pydicom.sr.coding import Code as PdCode

    ids = [c.cell_id if c.cell_id is not None else -1 for c in cells]
    _check_ids(ids, "cell_id")
    ms = [hd.ann.Measurements(name=PdCode("0010197", "EFO", "single cell identifier"),
                              values=np.array(ids, dtype=np.float64), unit=_unit())]
    if any(c.detection_id is not None for c in cells):  # our id of a detection, apart from the dataset's
        det = [np.nan if c.detection_id is None else float(c.detection_id) for c in cells]
        _check_ids([int(v) for v in det if not np.isnan(v)], "detection_id")
        code = PdCode(DETECTION_ID_CODE_VALUE, PRIVATE_SCHEME, "Detection identifier")
        ms.append(hd.ann.Measurements(name=code, values=np.array(det, dtype=np.float64), unit=_unit()))
    if inside:
        rois = [int(c.roi_id) for c in cells if c.roi_id is not None]
        _check_ids(rois, "roi_id")
        roi_code = PdCode("130489", "DCM", "Referenced Region of Interest Identifier")
        ms.append(hd.ann.Measurements(name=roi_code, values=np.array(rois, dtype=np.float64), unit=_unit()))
    if with_score:
        vals = np.array([np.nan if c.score is None else c.score for c in cells], dtype=np.float64)
        if not np.isnan(vals).all():  # highdicom cannot write an all-missing column
            ms.append(hd.ann.Measurements(name=PdCode(SCORE_CODE_VALUE, PRIVATE_SCHEME, "Detection score"),
                                          values=vals, unit=_unit()))
    for j, cls in enumerate(prob_classes):
        vals = np.array([np.nan if not c.probabilities or cls not in c.probabilities else c.probabilities[cls]
                         for c in cells], dtype=np.float64)
        meaning = f"{PROB_PREFIX}{cls}"
        if len(meaning) > 64:
            raise ValueError(f"class name {cls!r} too long for a DICOM code meaning (64 characters)")
        if not np.isnan(vals).all():
            ms.append(hd.ann.Measurements(name=PdCode(f"P{j:04d}", PRIVATE_SCHEME, meaning), values=vals,
                                          unit=_unit()))
    return ms


def _series_defaults(kind: str, session: int | None) -> tuple[str, int, str | None]:
    if kind == "roi":
        return ROI_DESCRIPTION, 33, None
    if kind == "session":
        if session is None or session < 0:
            raise ValueError("kind='session' needs session=k (zero-based)")
        return SESSION_DESCRIPTION.format(k=session), 33 + session, str(session)
    if kind == "consensus":
        return CONSENSUS_DESCRIPTION, 42, "consensus"
    if kind == "unlabeled":
        return UNLABELED_DESCRIPTION, 42, "detection-only"
    if kind == "automatic":
        return AUTOMATIC_DESCRIPTION, 50, None
    raise ValueError(f"unknown kind {kind!r}; use one of {KINDS}")


def _cells_for_kind(annotations: CellAnnotations, kind: str, session: int | None) -> list[tuple[Cell, str]]:
    """(cell, label name to write) pairs for a cell series kind."""
    if kind == "session":
        assert session is not None
        return [(c, c.session_labels[session]) for c in annotations.cells if len(c.session_labels) > session]
    if kind == "unlabeled":
        return [(c, UNLABELED_GROUP) for c in annotations.cells]
    if kind == "consensus":
        out = [(c, c.label) for c in annotations.cells if c.label is not None]
        if len(out) < len(annotations.cells):
            log.warning("consensus series: %d unlabeled boxes left out (write them with kind='unlabeled')",
                        len(annotations.cells) - len(out))
        return out
    return [(c, c.label if c.label is not None else UNLABELED_GROUP) for c in annotations.cells]


def _source_dataset(source: Dataset | str | Path) -> Dataset:
    if isinstance(source, Dataset):
        return source
    p = Path(source)
    ds = _dcmread(p, header_only=True)
    if str(ds.get("SOPClassUID", "")) != SM_SOP_CLASS_UID:
        raise InputError(p, "source_image is not a VL Whole Slide Microscopy (SM) instance")
    return ds


def _check_inside(annotations: CellAnnotations, source: Dataset, out: Path) -> None:
    width, height = source.get("TotalPixelMatrixColumns"), source.get("TotalPixelMatrixRows")
    if not width or not height:
        return
    _raise_outside(annotations, int(width), int(height), out)


def _derived_uid(*parts: object) -> str:
    from pydicom.uid import generate_uid

    return str(generate_uid(entropy_srcs=[str(p) for p in parts]))


def write_dicom_ann(
    annotations: CellAnnotations,
    out_path: str | Path,
    *,
    source_image: Dataset | str | Path,
    kind: str,
    session: int | None = None,
    generation: str | None = None,
    algorithm_name: str | None = None,
    algorithm_version: str | None = None,
    series_number: int | None = None,
    series_uid: str | None = None,
    sop_uid: str | None = None,
    series_description: str | None = None,
    manufacturer: str = "marrowscope",
    manufacturer_model_name: str = "marrowscope",
    software_versions: str | Sequence[str] | None = None,
    device_serial_number: str = "0",
    models: Sequence[Algorithm] = (),
) -> Path:
    """Write one ANN instance (RECTANGLE graphics, 2D pixel coordinates) referencing ``source_image``.

    ``source_image`` is the pydicom header (or the file) of the base-level SM instance of the slide the
    boxes belong to; boxes outside its pixel matrix raise :class:`InputError`. ``kind`` picks what is
    written: ``roi`` the regions; ``session`` (with ``session=k``) the k-th session label of cells
    that have one; ``consensus`` the labels; ``unlabeled`` every box as ``haematological_structure``;
    ``automatic`` predictions (``generation`` AUTOMATIC, ``algorithm_name`` required), with
    ``Cell.score`` and ``Cell.probabilities`` stored as measurements. ``models`` (AUTOMATIC only) are the
    models behind the predictions: each is named with its weights' sha256 in the parameters of the
    Algorithm Identification item (``algorithm_name``/``algorithm_version``) and as one item of the
    Contributing Equipment Sequence. ``software_versions``
    may be several values (DICOM VM 1-n, 64 characters each). Non-standard coding schemes used are
    declared in the CodingSchemeIdentificationSequence.
    """
    import highdicom as hd

    import marrowscope

    source_image = _source_dataset(source_image)
    desc, number, trial_id = _series_defaults(kind, session)
    _check_inside(annotations, source_image, Path(out_path))
    sop_uid = sop_uid or hd.UID()
    gen = (generation or ("AUTOMATIC" if kind == "automatic" else "MANUAL")).upper()
    if gen not in ("MANUAL", "AUTOMATIC", "SEMIAUTOMATIC"):
        raise ValueError(f"generation {generation!r}: use MANUAL or AUTOMATIC")
    algo = None
    if gen != "MANUAL":
        if not algorithm_name:
            raise ValueError("AUTOMATIC annotations need algorithm_name (and algorithm_version)")
        algo = _algorithm_sequence(Algorithm(algorithm_name, algorithm_version or "unknown"), models)
    for attr in ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID"):
        if attr not in source_image:
            raise ValueError(f"source_image lacks {attr}: pass the base-level SM header of the slide")

    groups: list[hd.ann.AnnotationGroup] = []

    def add_group(label: str, cat: Any, typ: Any, color: str, boxes: list[Box], ms: list[Any],
                  description: str | None) -> None:
        groups.append(hd.ann.AnnotationGroup(
            number=len(groups) + 1, uid=_derived_uid(sop_uid, len(groups) + 1), label=label,
            annotated_property_category=cat,
            annotated_property_type=typ, graphic_type="RECTANGLE", graphic_data=[_rect(b) for b in boxes],
            algorithm_type=gen, algorithm_identification=algo, measurements=ms, description=description,
            display_color=hd.color.CIELabColor(*hex_to_cielab(color)),
        ))

    if kind == "roi":
        if annotations.regions:
            label, cat, typ, color = _label_concepts(ROI_GROUP)
            ids = [r.roi_id for r in annotations.regions]
            _check_ids(ids, "roi_id")
            from pydicom.sr.coding import Code as PdCode

            ms = [hd.ann.Measurements(name=PdCode("111030", "DCM", "Image Region"),
                                      values=np.array(ids, dtype=np.float64), unit=_unit())]
            add_group(label, cat, typ, color, [r.box for r in annotations.regions], ms, None)
    else:
        pairs = _cells_for_kind(annotations, kind, session)
        by_label: dict[str, list[Cell]] = defaultdict(list)
        for cell, name in pairs:
            by_label[name].append(cell)
        prob_classes: list[str] = []
        with_score = False
        if gen != "MANUAL":
            prob_classes = sorted({k for c, _ in pairs for k in (c.probabilities or {})})
            with_score = any(c.score is not None for c, _ in pairs)
        concepts = {name: _label_concepts(name, allow_unknown=gen != "MANUAL") for name in by_label}
        for name in sorted(by_label, key=lambda n: concepts[n][0]):
            label, cat, typ, color = concepts[name]
            cells = by_label[name]
            inside = [c for c in cells if c.roi_id is not None and c.roi_id >= 0]
            outside = [c for c in cells if c.roi_id is None or c.roi_id < 0]
            for part, is_inside in ((inside, True), (outside, False)):
                if part:
                    ms = _cell_measurements(part, is_inside, prob_classes, with_score)
                    add_group(label, cat, typ, color, [c.box for c in part], ms,
                              "cells inside ROIs" if is_inside else "cells outside ROIs")
    if not groups:
        raise ValueError(f"nothing to write for kind={kind!r}: no boxes of that kind in the annotations")

    obj = hd.ann.MicroscopyBulkSimpleAnnotations(
        source_images=[source_image],
        annotation_coordinate_type="2D",
        annotation_groups=groups,
        series_instance_uid=series_uid or hd.UID(),
        series_number=series_number if series_number is not None else number,
        sop_instance_uid=sop_uid,
        instance_number=1,
        manufacturer=manufacturer,
        manufacturer_model_name=manufacturer_model_name,
        software_versions=_software_versions(software_versions, marrowscope.__version__),
        device_serial_number=device_serial_number,
        series_description=series_description or desc,
    )
    if trial_id is not None:
        # Clinical Trial Series module: the coordinating center name is Type 2 (present, may be empty)
        obj.ClinicalTrialCoordinatingCenterName = ""
        obj.ClinicalTrialSeriesID = trial_id
    if models and gen != "MANUAL":
        obj.ContributingEquipmentSequence = _contributing_equipment(models)
    declare_coding_schemes(obj)
    out = Path(out_path)
    with atomic_path(out) as tmp:
        obj.save_as(tmp, enforce_file_format=True)
    log.info("wrote %s ANN with %d groups to %s", kind, len(groups), out)
    return out


def _software_versions(given: str | Sequence[str] | None, version: str) -> str | tuple[str]:
    values = [given] if isinstance(given, str) else list(given or [f"marrowscope {version}"])
    for v in values:
        if len(v) > 64:
            raise ValueError(f"software version {v!r} is longer than DICOM's 64 characters (LO): pass "
                             "several shorter values instead")
    # several values are a list (pydicom's multi-value); highdicom's annotation says str | tuple[str]
    return values[0] if len(values) == 1 else values  # type: ignore[return-value]


def write_dataset_series(
    annotations: CellAnnotations,
    study_dir: str | Path,
    *,
    source_image: Dataset | str | Path,
    **kwargs: Any,
) -> tuple[Path, ...]:
    """Write a slide's annotations as the IDC collection does, one series per folder in ``study_dir``.

    Writes ``ANN_<SeriesUID>/<SOPUID>.dcm`` for: the ROI series (when there are regions), Session 0..K-1
    and Consensus (when cells have labels; K = most session labels of a cell) and Unlabeled (for cells
    without a label). Series and instance UIDs are derived from the source image and the kind, so the
    same inputs give the same UIDs. ``kwargs`` go to :func:`write_dicom_ann` (e.g. ``manufacturer``).
    """
    src = _source_dataset(source_image)
    root = Path(study_dir)
    labelled = [c for c in annotations.cells if c.label is not None]
    unlabeled = [c for c in annotations.cells if c.label is None]
    jobs: list[tuple[str, int | None, CellAnnotations]] = []
    if annotations.regions:
        jobs.append(("roi", None, annotations))
    if labelled:
        part = annotations.with_cells(labelled)
        jobs += [("session", k, part) for k in range(max(len(c.session_labels) for c in labelled))]
        jobs.append(("consensus", None, part))
    if unlabeled:
        jobs.append(("unlabeled", None, annotations.with_cells(unlabeled)))
    out = []
    for kind, session, part in jobs:
        series_uid = _derived_uid(src.SOPInstanceUID, "series", kind, session)
        sop_uid = _derived_uid(src.SOPInstanceUID, "instance", kind, session)
        path = root / f"ANN_{series_uid}" / f"{sop_uid}.dcm"
        out.append(write_dicom_ann(part, path, source_image=src, kind=kind, session=session,
                                   series_uid=series_uid, sop_uid=sop_uid, **kwargs))
    return tuple(out)
