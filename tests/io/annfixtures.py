"""Test helpers for DICOM ANN / cohort tests: a minimal SM (slide) header made with pydicom alone.

Nothing here decodes pixels: highdicom only needs the base-level SM header to reference it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from marrowscope.io.slides.dicom import openslide_properties_item

SM_SOP_CLASS_UID = "1.2.840.10008.5.1.4.1.1.77.1.6"


def make_source_image(
    *,
    width: int = 4000,
    height: int = 3000,
    patient_id: str = "PATIENT_A",
    slide_id: str = "PATIENT_A_1_bm",
    study_uid: str | None = None,
    series_uid: str | None = None,
    openslide_properties: Mapping[str, str] | None = None,
) -> Dataset:
    """Header of a base-level VL Whole Slide Microscopy image (no pixel data)."""
    ds = Dataset()
    ds.SOPClassUID = SM_SOP_CLASS_UID
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.FrameOfReferenceUID = generate_uid()
    ds.Modality = "SM"
    ds.PatientID = patient_id
    ds.PatientName = f"{patient_id}^"
    ds.PatientBirthDate = ""
    ds.PatientSex = "F"
    ds.StudyID = "1"
    ds.StudyDate = ""
    ds.StudyTime = ""
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    ds.ContainerIdentifier = slide_id
    ds.TotalPixelMatrixColumns = width
    ds.TotalPixelMatrixRows = height
    ds.Columns = 256
    ds.Rows = 256
    if openslide_properties is not None:
        item = openslide_properties_item(json.dumps(dict(openslide_properties), sort_keys=True))
        ds.AcquisitionContextSequence = Sequence([item])
    return ds


def save_source_image(ds: Dataset, path: Path) -> Path:
    """Write the header as a DICOM file (Part 10) without pixel data."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path
