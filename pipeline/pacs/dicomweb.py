"""DICOMweb: QIDO-RS to query, WADO-RS to retrieve, STOW-RS to store (dicomweb-client over requests).

dicomweb-client's own retry is switched off: it re-sends an EMPTY body when it retries a chunked
upload, and retries a refused connection for half a minute. The nightly run retries whole
operations itself (:mod:`.retry`).
"""
from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import pydicom
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from pipeline.errors import describe
from pipeline.pacs.client import (
    InstanceInfo,
    PacsClient,
    SeriesInfo,
    StudyInfo,
    instance_file_name,
    instance_info,
    series_info,
    study_info,
    text,
)
from pipeline.pacs.config import PacsConfig
from pipeline.pacs.errors import PacsAuthError, PacsError

log = logging.getLogger(__name__)
T = TypeVar("T")
TRANSIENT_HTTP = {408, 429, 502, 503, 504}
STORED_SYNTAX = (("application/dicom", "*"),)  # WADO-RS: the transfer syntax the PACS stored, no transcoding
PAGE = 1000  # QIDO results per request


class _Session(requests.Session):
    """A session whose own ``verify`` ([pacs] tls_ca_file, tls_verify = false) beats REQUESTS_CA_BUNDLE and
    CURL_CA_BUNDLE: requests lets those variables override ``Session.verify`` (psf/requests#3829)."""

    def merge_environment_settings(self, url, proxies, stream, verify, cert):
        if verify is None and self.verify is not True:
            verify = self.verify
        return super().merge_environment_settings(url, proxies, stream, verify, cert)


class DicomWebClient(PacsClient):
    def __init__(self, config: PacsConfig) -> None:
        super().__init__(config)
        self.session = _Session()
        if config.username or config.password:
            self.session.auth = (config.username, config.password)
        self.session.verify = (config.tls_ca_file or True) if config.tls_verify else False
        if config.tls_cert_file:
            self.session.cert = (config.tls_cert_file, config.tls_key_file) if config.tls_key_file \
                else config.tls_cert_file
        self.web = DICOMwebClient(config.url.rstrip("/"), session=self.session,
                                  timeout=(config.connect_timeout, config.timeout))
        self.web.set_http_retry_params(retry=False)

    def close(self) -> None:
        self.session.close()

    @contextmanager
    def _faults(self, what: str) -> Iterator[None]:
        """Turn requests/dicomweb-client exceptions into one-line PacsErrors (never with credentials)."""
        where = f"{self.config.describe()}: {what}"
        try:
            yield
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else 0
            if status in (401, 403):
                raise PacsAuthError(f"{where}: the PACS refused our credentials (HTTP {status}); check [pacs] "
                                    "username and the password file or variable") from None
            raise PacsError(f"{where}: HTTP {status} {getattr(exc.response, 'reason', '')}",
                            transient=status in TRANSIENT_HTTP) from None
        except requests.Timeout:
            raise PacsError(f"{where}: no answer within the timeout", transient=True) from None
        except requests.exceptions.SSLError as exc:  # an untrusted certificate is no fault a retry can mend
            found = re.search(r"\[SSL: (\w+)\] ([^(']*)", str(exc))
            reason = f"{found.group(1)}: {found.group(2).strip()}" if found else "TLS error"
            raise PacsError(f"{where}: TLS handshake failed ({reason}); check [pacs] tls_ca_file, tls_cert_file "
                            "and that the URL's scheme and port are the PACS's",
                            transient="CERTIFICATE_VERIFY_FAILED" not in str(exc)) from None
        except requests.ConnectionError as exc:
            reason = "connection refused" if "refused" in str(exc).lower() else "connection failed"
            raise PacsError(f"{where}: {reason}", transient=True) from None
        except (requests.RequestException, ValueError, OSError) as exc:
            raise PacsError(f"{where}: {describe(exc)}") from None

    def _search(self, what: str, call: Callable[..., list[dict]], key: str) -> list[Dataset]:
        """Every result of a QIDO search, ``PAGE`` at a time (``limit``/``offset``). Paging stops at a
        short page, or at a page with nothing new (a server that ignores ``offset``). dicomweb-client's
        own ``get_remaining`` never ended on a filtered study search against Orthanc (seen)."""
        rows: dict[str, Dataset] = {}
        with self._faults(what):
            while True:
                page = [Dataset.from_json(row) for row in call(limit=PAGE, offset=len(rows))]
                new = {text(ds, key): ds for ds in page if text(ds, key) not in rows}
                rows.update(new)
                if len(page) < PAGE or not new:
                    return list(rows.values())

    def find_studies(self, date_range: str = "", *, study_uid: str = "", accession_number: str = "") -> list[StudyInfo]:
        keys = {"StudyDate": date_range, "StudyInstanceUID": study_uid, "AccessionNumber": accession_number}
        filters = {"ModalitiesInStudy": "CT", **{k: v for k, v in keys.items() if v}}
        rows = self._search("QIDO studies", lambda **page: self.web.search_for_studies(
            search_filters=filters, **page,
            fields=["StudyDate", "StudyTime", "ModalitiesInStudy", "NumberOfStudyRelatedInstances"]),
            "StudyInstanceUID")
        studies = [study_info(ds) for ds in rows]
        return [s for s in studies if not s.modalities or "CT" in s.modalities]

    def find_series(self, study_uid: str) -> list[SeriesInfo]:
        return [series_info(ds) for ds in self._search(f"QIDO series of study {study_uid}", lambda **page: (
            self.web.search_for_series(study_uid, **page,
                                       fields=["Modality", "SeriesNumber", "NumberOfSeriesRelatedInstances"])),
            "SeriesInstanceUID")]

    def find_instances(self, study_uid: str, series_uid: str) -> list[InstanceInfo]:
        return [instance_info(ds) for ds in self._search(f"QIDO instances of series {series_uid}", lambda **page: (
            self.web.search_for_instances(study_uid, series_uid, **page,
                                          fields=["SOPClassUID", "ImageType", "DerivationDescription"])),
            "SOPInstanceUID")]

    def retrieve_series(self, study_uid: str, series_uid: str, folder: Path) -> int:
        written = 0
        with self._faults(f"WADO series {series_uid}"):
            for ds in self.web.iter_series(study_uid, series_uid, media_types=STORED_SYNTAX):
                ds.save_as(folder / instance_file_name(text(ds, "SOPInstanceUID")), enforce_file_format=True)
                written += 1
        return written

    def store(self, paths: Sequence[Path]) -> None:
        batch = self.config.store_batch
        for start in range(0, len(paths), batch):
            part = paths[start:start + batch]
            datasets = []
            for p in part:
                try:
                    datasets.append(pydicom.dcmread(p))
                except (OSError, InvalidDicomError) as exc:
                    raise PacsError(f"{self.config.describe()}: STOW: {p}: not a readable DICOM file "
                                    f"({type(exc).__name__}: {exc})") from None
            with self._faults(f"STOW {len(part)} instances"):
                response = self.web.store_instances(datasets)
            failed = list(response.get("FailedSOPSequence", []))
            if failed:  # a 202: some instances refused, without an exception
                first = failed[0]
                raise PacsError(f"{self.config.describe()}: STOW refused {len(failed)} of {len(part)} instances "
                                f"(first {text(first, 'ReferencedSOPInstanceUID')}: failure reason "
                                f"{text(first, 'FailureReason')})")
