"""Slides: one ``open_slide()`` for DICOM WSI, MRXS/SVS/TIFF and in-memory arrays."""

from marrowscope.io.slides.base import SlideInfo, SlideLevel, SlideReader

__all__ = ["SlideInfo", "SlideLevel", "SlideReader"]
