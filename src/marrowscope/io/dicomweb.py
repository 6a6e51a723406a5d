"""DICOMweb access (QIDO-RS search, WADO-RS retrieve) for ROI-only downloads: the annotation series in
the cohort layout of :mod:`marrowscope.io.idc`, and the slides' series for region reads.

IDC serves its collections over DICOMweb; any server with the standard endpoints works (tested against
Orthanc with its DICOMweb plugin). Errors from an unreachable server become
:class:`~marrowscope.errors.NetworkUnavailableError` with the URL.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from marrowscope.errors import InputError, NetworkUnavailableError
from marrowscope.io.atomic import atomic_path

log = logging.getLogger(__name__)

_TAG = {
    "study": "0020000D",
    "series": "0020000E",
    "sop": "00080018",
    "modality": "00080060",
    "patient": "00100020",
    "description": "0008103E",
}


def network_errors() -> tuple[type[BaseException], ...]:
    import requests

    return (requests.exceptions.ConnectionError, requests.exceptions.Timeout)


def dicomweb_client(url: str, timeout: float = 60.0) -> Any:
    """A ``dicomweb_client.DICOMwebClient`` for ``url`` (e.g. ``http://host:8042/dicom-web``)."""
    from dicomweb_client.api import DICOMwebClient

    client = DICOMwebClient(url.rstrip("/"))
    client.set_http_retry_params(retry=True, max_attempts=3, wait_exponential_multiplier=500)  # ~1.5 s
    session = client._session  # noqa: SLF001 - the client offers no timeout setting
    session.request = _with_timeout(session.request, timeout)  # type: ignore[method-assign]
    return client


def _with_timeout(request: Any, timeout: float) -> Any:
    def call(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("timeout", timeout)
        return request(*args, **kwargs)

    return call


def _value(d: dict[str, Any], key: str) -> str:
    v = d.get(_TAG[key], {}).get("Value", [""])
    return str(v[0]) if v else ""


@dataclass(frozen=True)
class RemoteSeries:
    patient_id: str
    study_uid: str
    series_uid: str
    modality: str
    description: str

    def folder(self, root: str | Path) -> Path:
        """Where the series lives below ``root`` (the layout of ``marrowscope fetch``)."""
        return Path(root) / "dicom" / self.patient_id / self.study_uid / f"{self.modality}_{self.series_uid}"


def list_series(client: Any, patients: Sequence[str] | None = None) -> list[RemoteSeries]:
    """The SM and ANN series of every study (of ``patients`` when given) on the server."""
    url = getattr(client, "base_url", "DICOMweb server")
    try:
        if patients:
            studies = [
                s for p in patients for s in client.search_for_studies(search_filters={"PatientID": p})
            ]
        else:
            studies = client.search_for_studies()
        out = []
        for st in studies:
            study_uid, pid = _value(st, "study"), _value(st, "patient")
            for se in client.search_for_series(study_uid):
                mod = _value(se, "modality")
                if mod in ("SM", "ANN"):
                    out.append(
                        RemoteSeries(pid, study_uid, _value(se, "series"), mod, _value(se, "description"))
                    )
    except network_errors() as e:
        raise NetworkUnavailableError(
            f"{url}: the DICOMweb server did not answer ({type(e).__name__}); check the URL and the network"
        ) from e
    if patients:
        found = {s.patient_id for s in out}
        for p in patients:
            if p not in found:
                log.warning("patient %s: no slide or annotation series on %s", p, url)
    return sorted(out, key=lambda s: (s.patient_id, s.study_uid, s.modality, s.series_uid))


def download_series(client: Any, series: RemoteSeries, root: str | Path) -> list[Path]:
    """Every instance of ``series`` as a DICOM file under ``series.folder(root)`` (files already there
    are kept: a download resumes)."""
    folder = series.folder(root)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        instances = client.search_for_instances(series.study_uid, series.series_uid)
        paths = []
        for inst in instances:
            sop = _value(inst, "sop")
            path = folder / f"{sop}.dcm"
            if not path.is_file():
                ds = client.retrieve_instance(series.study_uid, series.series_uid, sop)
                with atomic_path(path) as tmp:
                    ds.save_as(tmp, enforce_file_format=True)
            paths.append(path)
    except network_errors() as e:
        raise NetworkUnavailableError(
            f"{getattr(client, 'base_url', '')}: the DICOMweb server stopped "
            f"answering during series {series.series_uid} ({type(e).__name__}); "
            "run the same command again to resume"
        ) from e
    if not paths:
        raise InputError(series.series_uid, "the series has no instances on the server")
    return paths
