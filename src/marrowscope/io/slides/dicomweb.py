"""A DICOM WSI series read over DICOMweb (QIDO-RS/WADO-RS) with wsidicom's web client: the same reader
as :class:`~marrowscope.io.slides.dicom.DicomSlide`, fetching only the frames a region needs."""

from __future__ import annotations

import logging
from typing import Any

from marrowscope.errors import InputError
from marrowscope.io.dicomweb import dicomweb_client, network_errors
from marrowscope.io.slides.dicom import DicomSlide, quiet_dicom_imports

log = logging.getLogger(__name__)


def _no_bulk(*_: Any) -> bytes:
    return b""  # header only: bulk data (e.g. ICC profiles) are not fetched


class DicomWebSlide(DicomSlide):
    """Slide series ``series_uid`` of study ``study_uid`` on the DICOMweb server at ``url``."""

    def __init__(self, url: str | Any, study_uid: str, series_uid: str, mpp: float | None = None) -> None:
        import pydicom

        quiet_dicom_imports()
        from wsidicom import WsiDicom, WsiDicomWebClient

        client = dicomweb_client(url) if isinstance(url, str) else url
        label = f"{getattr(client, 'base_url', url)} study {study_uid} series {series_uid}"
        self._files = []
        try:
            self._wsi = WsiDicom.open_web(WsiDicomWebClient(client), study_uid, series_uid)
            meta = [
                pydicom.Dataset.from_json(m) for m in client.retrieve_series_metadata(study_uid, series_uid)
            ]
        except network_errors() as e:
            from marrowscope.errors import NetworkUnavailableError

            raise NetworkUnavailableError(
                f"{label}: the DICOMweb server did not answer ({e}); check the URL and the network"
            ) from e
        except Exception as e:  # wsidicom and the client raise many types
            raise InputError(label, f"cannot open the slide over DICOMweb ({type(e).__name__}: {e})") from e
        volumes = [m for m in meta if "VOLUME" in list(m.get("ImageType", []))] or meta
        if not volumes:
            raise InputError(label, "the series has no slide (SM) instance")
        base = max(
            volumes,
            key=lambda m: int(m.get("TotalPixelMatrixColumns", 0)) * int(m.get("TotalPixelMatrixRows", 0)),
        )
        self._setup(label, base, float(self._wsi.levels.base_level.mpp.width), mpp, series_uid)
