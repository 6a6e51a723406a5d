"""The file suffixes marrowscope reads: one list, used by every reader, ``info``, ``analyze`` and the
batch runner, so a file that one command opens every other command accepts too."""

from __future__ import annotations

#: plain raster images opened whole (PIL) as a slide: ``open_slide``, ``info``, ``analyze``
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
#: vendor whole-slide formats opened through OpenSlide (TIFF family through tiffslide as a fallback)
OPENSLIDE_SUFFIXES: tuple[str, ...] = (
    ".mrxs", ".svs", ".ndpi", ".tif", ".tiff", ".scn", ".bif", ".vms", ".vmu", ".svslide",
)
#: the TIFF family tiffslide can open when OpenSlide cannot
TIFF_SUFFIXES: tuple[str, ...] = (".tif", ".tiff", ".svs", ".ndpi", ".bif")
#: DICOM instance files (files without a suffix are recognised by their DICM magic)
DICOM_SUFFIXES: tuple[str, ...] = (".dcm", ".dicom")
#: every single-file slide ``open_slide`` opens by its suffix
SLIDE_FILE_SUFFIXES: tuple[str, ...] = OPENSLIDE_SUFFIXES + IMAGE_SUFFIXES
#: images of labelled datasets (image folders, YOLO/VOC/COCO images): plain images and TIFF
DATASET_IMAGE_SUFFIXES: tuple[str, ...] = IMAGE_SUFFIXES + (".tif", ".tiff")
