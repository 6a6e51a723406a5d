"""marrowscope: bone-marrow aspirate smear slides to a leukemia diagnosis suggestion."""

__version__ = "0.1.0"
