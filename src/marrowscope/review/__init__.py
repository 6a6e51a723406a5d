"""``marrowscope review``: a local web app where a hematologist checks and corrects each differential.

The model's outputs (``analyze``'s slide folders) stay read-only; the reviewer's corrections are a
separate layer with an audit log in ``OUT/marrowscope-review/review.sqlite`` (:mod:`.store`), written
in one transaction per edit. Modules: :mod:`.catalog` (the slides of an output folder), :mod:`.store`
(corrections, audit log, slide status), :mod:`.tally` (the live differential and diagnosis, with the
project's counting code), :mod:`.queue` (the review queue), :mod:`.tiles` (DeepZoom tiles and cell crops
from the slide), :mod:`.exports` (corrected cell table, GeoJSON, MANUAL DICOM ANN, reviewed report),
:mod:`.dataset` (corrections as a training set), :mod:`.service` (what the routes call) and
:mod:`.server` (FastAPI routes only). FastAPI and uvicorn are the ``review`` extra.
"""
