"""The PACS through DIMSE (pynetdicom): C-FIND, C-GET or C-MOVE, C-STORE.

One association per operation, released (or aborted) when the operation ends. Every fault becomes a
one-line :class:`~.errors.PacsError` naming the PACS and the operation: a peer that cannot be reached,
an association aborted, a DIMSE timeout or a missing response is ``transient``; a rejected association
(permanent) or an A-ABORT sent by the PACS in answer to our very first request (what Orthanc does to an
AE title missing from its ``DicomModalities``) is a :class:`~.errors.PacsAuthError`; a failure status
is a permanent ``PacsError`` naming the status in hex.
"""
from __future__ import annotations

import fcntl
import logging
import os
import socket
import ssl
import tempfile
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import (
    JPEG2000,
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import AE, Association, build_context, build_role, evt
from pynetdicom.pdu import A_ABORT_RQ, A_ASSOCIATE_RJ
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import (
    ComprehensiveSRStorage,
    CTImageStorage,
    EnhancedCTImageStorage,
    EnhancedSRStorage,
    GrayscaleSoftcopyPresentationStateStorage,
    LegacyConvertedEnhancedCTImageStorage,
    SecondaryCaptureImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    XRayRadiationDoseSRStorage,
)

from pipeline.errors import describe
from pipeline.pacs.client import (
    InstanceInfo,
    PacsClient,
    SeriesInfo,
    StudyInfo,
    count,
    instance_file_name,
    instance_info,
    series_info,
    study_info,
    text,
)
from pipeline.pacs.config import PacsConfig
from pipeline.pacs.errors import PacsAuthError, PacsError

log = logging.getLogger(__name__)

# Transfer syntaxes we accept when receiving: one presentation context each (a context listing several
# gets only one of them accepted), so a compressed instance arrives in the syntax the PACS stored it in.
RECEIVE_SYNTAXES: tuple[UID, ...] = (
    ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless, JPEGLSLossless, JPEG2000Lossless,
    JPEGLosslessSV1, JPEGLossless, JPEGBaseline8Bit, JPEG2000, JPEGLSNearLossless,
)
# Image SOP classes a CT series may hold (a dose screenshot is often a Secondary Capture in it): every
# syntax. Dose reports and presentation states are never compressed: the uncompressed syntaxes only.
# 4 x 10 + 4 x 2 = 48 storage contexts, well under the 128 an association may carry.
IMAGE_CLASSES: tuple[UID, ...] = (
    CTImageStorage, EnhancedCTImageStorage, LegacyConvertedEnhancedCTImageStorage, SecondaryCaptureImageStorage,
)
OTHER_CLASSES: tuple[UID, ...] = (
    XRayRadiationDoseSRStorage, EnhancedSRStorage, ComprehensiveSRStorage, GrayscaleSoftcopyPresentationStateStorage,
)
MAX_CONTEXTS = 128
STORE_WARNINGS = (0xB000, 0xB006, 0xB007)  # coercion, element discarded, data set does not match SOP class


def receive_contexts() -> list[PresentationContext]:
    """Storage contexts for C-GET / the C-MOVE storage SCP: one per (SOP class, transfer syntax)."""
    contexts = [build_context(c, ts) for c in IMAGE_CLASSES for ts in RECEIVE_SYNTAXES]
    contexts += [build_context(c, ts) for c in OTHER_CLASSES for ts in RECEIVE_SYNTAXES[:2]]
    return contexts


@contextmanager
def move_port_lock(port: int) -> Iterator[None]:
    """Hold ``port`` for our C-MOVE storage SCP against the other processes of this host (studies
    retrieved at once with ``--workers N``): the PACS sends every C-MOVE to that one port, so retrieves
    by C-MOVE take turns. The lock is a file lock, released when its holder ends, however it ends."""
    path = Path(tempfile.gettempdir()) / f"ct-denoise-move-port-{port}.lock"
    with open(path, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("C-MOVE port %d: another retrieve of this host holds it; waiting for it", port)
            fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def query(level: str, **keys: str) -> Dataset:
    """A C-FIND identifier at ``level``: the matching keys with values, the return keys empty."""
    q = Dataset()
    q.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(q, keyword, value)
    return q


def status_hex(status: int) -> str:
    return f"0x{status:04X}"


def refused_pairs(keys: Sequence[tuple[str, str]], accepted: Sequence[PresentationContext]) -> list[tuple[str, str]]:
    """The (SOP class, transfer syntax) pairs no accepted context can carry (pynetdicom converts between
    the uncompressed syntaxes itself; a compressed one needs its own context)."""
    ok = {(str(cx.abstract_syntax), str(ts)) for cx in accepted for ts in cx.transfer_syntax}
    native = {sop for sop, ts in ok if not UID(ts).is_compressed}
    return [(sop, ts) for sop, ts in keys
            if (sop, ts) not in ok and (UID(ts).is_compressed or sop not in native)]


@dataclass
class _Received:
    """What a C-STORE handler wrote (C-GET sub-operations or the C-MOVE storage SCP)."""

    folder: Path
    series_uid: str
    files: set[Path] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_store(self, event: evt.Event) -> int:
        """Write the dataset as sent (no decoding: the stored transfer syntax is kept) to a temporary
        name, then rename it, so a file under its final name is always whole. An instance of another
        series (a late sub-operation of an earlier C-MOVE to our port) is refused, not written."""
        sop_uid = str(event.request.AffectedSOPInstanceUID or "")
        path = self.folder / instance_file_name(sop_uid)
        tmp = path.with_name(f".{path.name}.part-{threading.get_ident()}")
        try:
            series = str(event.dataset.get("SeriesInstanceUID", ""))
            if series != self.series_uid:
                log.warning("refused instance %s of series %s: we asked for %s", sop_uid, series, self.series_uid)
                return 0xC000  # cannot understand
            tmp.write_bytes(event.encoded_dataset(include_meta=True))
            os.replace(tmp, path)
        except Exception as exc:  # an unreadable dataset, a full disk: tell the PACS, fail the retrieval
            tmp.unlink(missing_ok=True)
            with self.lock:
                self.errors.append(f"{sop_uid}: {describe(exc)}")
            log.error("cannot write received instance %s to %s: %s", sop_uid, self.folder, exc)
            return 0xA700  # out of resources
        with self.lock:
            self.files.add(path)
        return 0x0000


class _Watch:
    """Who ended an association: an A-ABORT PDU from the PACS, one from us (pynetdicom aborts on a DIMSE
    timeout), or neither (the connection closed); and an A-ASSOCIATE-RJ PDU, which pynetdicom may miss
    when the PACS closes the connection right after it (then it reports a failed connection)."""

    def __init__(self) -> None:
        self.peer_abort: A_ABORT_RQ | None = None
        self.rejection: A_ASSOCIATE_RJ | None = None
        self.we_aborted = False

    def on_recv(self, event: evt.Event) -> None:
        if isinstance(event.pdu, A_ABORT_RQ):
            self.peer_abort = event.pdu
        elif isinstance(event.pdu, A_ASSOCIATE_RJ):
            self.rejection = event.pdu

    def on_sent(self, event: evt.Event) -> None:
        if isinstance(event.pdu, A_ABORT_RQ):
            self.we_aborted = True

    def handlers(self) -> list:
        return [(evt.EVT_PDU_RECV, self.on_recv), (evt.EVT_PDU_SENT, self.on_sent)]


def no_delay(assoc: Association) -> None:
    """Send each PDU at once (TCP_NODELAY). pynetdicom leaves Nagle's algorithm on: the last, short
    fragment of each instance then waits for the peer's delayed acknowledgement (tens of ms per image)."""
    sock = getattr(getattr(assoc.dul, "socket", None), "socket", None)
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


class DimseClient(PacsClient):
    """A PACS reached by DIMSE; see the module docstring for how faults map to errors."""

    def __init__(self, config: PacsConfig) -> None:
        super().__init__(config)
        self._client_tls: ssl.SSLContext | None = None

    # -- plumbing -------------------------------------------------------------------------------------
    def _fail(self, what: str, reason: str, transient: bool = False) -> PacsError:
        return PacsError(f"{self.config.describe()}: {what}: {reason}", transient=transient)

    def _tls(self, what: str) -> ssl.SSLContext | None:
        """Our TLS client context (``[pacs] tls``), made once; unreadable files are a permanent error."""
        if self.config.tls and self._client_tls is None:
            try:
                self._client_tls = self.config.ssl_context()
            except (OSError, ssl.SSLError) as exc:
                raise self._fail(what, f"TLS setup: {exc}") from None
        return self._client_tls

    def _server_tls(self, what: str) -> ssl.SSLContext | None:
        """The TLS context of our C-MOVE storage SCP: it needs our certificate ([pacs] tls_cert_file) and,
        with tls_verify, checks the PACS's certificate against tls_ca_file (the system's CAs if empty)."""
        c = self.config
        if not c.tls:
            return None
        if not c.tls_cert_file:
            raise self._fail(what, "C-MOVE over TLS needs our certificate for the storage SCP: set [pacs] "
                                   "tls_cert_file and tls_key_file, or use retrieve = get")
        try:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=c.tls_ca_file or None)
            ctx.load_cert_chain(c.tls_cert_file, c.tls_key_file or None)
        except (OSError, ssl.SSLError) as exc:
            raise self._fail(what, f"TLS setup of the C-MOVE storage SCP: {exc}") from None
        ctx.verify_mode = ssl.CERT_REQUIRED if c.tls_verify else ssl.CERT_NONE
        return ctx

    def _ae(self) -> AE:
        c = self.config
        ae = AE(ae_title=c.calling_aet)
        ae.connection_timeout = c.connect_timeout
        ae.acse_timeout = c.timeout
        ae.dimse_timeout = c.timeout
        ae.network_timeout = c.timeout
        ae.maximum_pdu_size = 131072  # larger than pynetdicom's 16 KiB default: fewer PDUs per image
        return ae

    @contextmanager
    def _association(self, what: str, ae: AE, contexts: Sequence[PresentationContext],
                     ext_neg: list | None = None,
                     handlers: list | None = None) -> Iterator[tuple[Association, _Watch]]:
        """An established association (released, or aborted on an error, at the end) and its abort watch."""
        c = self.config
        watch = _Watch()
        kwargs: dict = {"ae_title": c.called_aet, "ext_neg": ext_neg or None,
                        "evt_handlers": [*watch.handlers(), *(handlers or [])]}
        tls = self._tls(what)
        if tls is not None:
            kwargs["tls_args"] = (tls, c.host)
        ae.requested_contexts = list(contexts)
        try:
            assoc = ae.associate(c.host, c.port, **kwargs)
        except (OSError, ValueError, RuntimeError) as exc:
            raise self._fail(what, f"cannot open an association ({type(exc).__name__}: {exc})", True) from None
        if not assoc.is_established:
            raise self._not_established(what, assoc, watch)
        polite = False
        try:
            yield assoc, watch
            polite = True
        except PacsError:
            polite = True  # a failure status or a bad file: the association itself is fine
            raise
        finally:
            if assoc.is_established:
                assoc.release() if polite else assoc.abort()

    def _not_established(self, what: str, assoc: Association, watch: _Watch) -> PacsError:
        """A rejection (permanent: PacsAuthError; transient: busy) or no answer at all (transient)."""
        c = self.config
        rej = assoc.acceptor.primitive if assoc.is_rejected else watch.rejection
        if rej is not None:
            detail = f"{rej.result_str}, source {rej.source_str}, reason {rej.reason_str}"
            if rej.result == 0x02:  # rejected transient: congestion or a limit, try later
                return self._fail(what, f"association rejected ({detail})", transient=True)
            return PacsAuthError(
                f"{c.describe()}: {what}: the PACS rejected the association ({detail}); check [pacs] "
                f"calling_aet (our AE title, {c.calling_aet}) and called_aet (the PACS's, {c.called_aet})")
        if watch.peer_abort is not None:
            return self._fail(what, "association not established: aborted by the PACS during negotiation",
                              transient=True)
        tls_fault = self._tls_fault()
        if tls_fault:
            return self._fail(what, f"association not established: TLS handshake failed ({tls_fault}); check [pacs] "
                                    "tls_ca_file, tls_cert_file and that the PACS port speaks TLS")
        return self._fail(what, "association not established: no answer (the PACS is down, unreachable, slow to "
                                "answer, not at this port, or it expects TLS)", transient=True)

    def _tls_fault(self) -> str:
        """Why a TLS handshake with the PACS fails ('' without TLS, or when it succeeds or the connection does
        not open): pynetdicom only logs it, and an untrusted certificate is no fault a retry can mend."""
        c = self.config
        if self._client_tls is None:
            return ""
        try:
            with socket.create_connection((c.host, c.port), timeout=c.connect_timeout) as sock:
                with self._client_tls.wrap_socket(sock, server_hostname=c.host):
                    return ""
        except ssl.SSLCertVerificationError as exc:
            return f"{exc.reason}: {exc.verify_message}"
        except ssl.SSLError as exc:
            return str(exc.reason or exc)
        except OSError:
            return ""

    def _no_response(self, what: str, assoc: Association, watch: _Watch, first: bool) -> PacsError:
        """The error for a missing response: a refusal of our AE, an abort, a closed connection, a timeout."""
        c = self.config
        abort = watch.peer_abort
        if abort is not None and first:
            source = {0: "service-user", 2: "service-provider"}.get(abort.source, str(abort.source))
            return PacsAuthError(
                f"{c.describe()}: {what}: the PACS accepted the association but aborted it at our first request "
                f"(A-ABORT from the {source}, reason {abort.reason_diagnostic}): it refuses this service to our "
                f"AE title {c.calling_aet}; check [pacs] calling_aet and that the PACS lists {c.calling_aet} "
                "with our host and port (Orthanc: DicomModalities)")
        if abort is not None:
            return self._fail(what, "association aborted by the PACS", transient=True)
        if watch.we_aborted:
            return self._fail(what, f"no response within {c.timeout:g} s (DIMSE timeout)", transient=True)
        return self._fail(what, "association aborted (connection closed)", transient=True)

    # -- queries --------------------------------------------------------------------------------------
    def _find(self, what: str, query: Dataset) -> list[Dataset]:
        """C-FIND (Study Root) ``query``; the matches, or a PacsError."""
        ae = self._ae()
        model = StudyRootQueryRetrieveInformationModelFind
        found: list[Dataset] = []
        with self._association(what, ae, [build_context(model)]) as (assoc, watch):
            try:
                responses = assoc.send_c_find(query, model)
                for status, identifier in responses:
                    code = status.get("Status", None) if status else None
                    if code is None:
                        raise self._no_response(what, assoc, watch, first=not found)
                    if code in (0xFF00, 0xFF01):
                        if identifier is not None:
                            found.append(identifier)
                        continue
                    if code == 0x0000:
                        break
                    comment = text(status, "ErrorComment")
                    raise self._fail(what, f"failure status {status_hex(code)}" + (f" ({comment})" if comment else ""))
            except (ValueError, RuntimeError) as exc:
                raise self._fail(what, describe(exc), transient=not assoc.is_established) from None
        log.debug("%s: %s: %d matches", self.config.describe(), what, len(found))
        return found

    def find_studies(self, date_range: str = "", *, study_uid: str = "", accession_number: str = "") -> list[StudyInfo]:
        q = query("STUDY", StudyDate=date_range, StudyTime="", StudyInstanceUID=study_uid, ModalitiesInStudy="CT",
                  NumberOfStudyRelatedInstances="")
        if accession_number:
            q.AccessionNumber = accession_number
        what = (f"study {study_uid}" if study_uid else "studies by accession number" if accession_number
                else f"studies {date_range}")
        studies: dict[str, StudyInfo] = {}
        for info in map(study_info, self._find(f"C-FIND {what}", q)):
            # Orthanc filters ModalitiesInStudy itself; a PACS that ignores the key is filtered here.
            if info.study_uid and (not info.modalities or "CT" in info.modalities):
                studies.setdefault(info.study_uid, info)
        return list(studies.values())

    def find_series(self, study_uid: str) -> list[SeriesInfo]:
        q = query("SERIES", StudyInstanceUID=study_uid, SeriesInstanceUID="", Modality="", SeriesNumber="",
                  NumberOfSeriesRelatedInstances="")
        return [s for s in map(series_info, self._find(f"C-FIND series of study {study_uid}", q)) if s.series_uid]

    def find_instances(self, study_uid: str, series_uid: str) -> list[InstanceInfo]:
        q = query("IMAGE", StudyInstanceUID=study_uid, SeriesInstanceUID=series_uid, SOPInstanceUID="",
                  SOPClassUID="", ImageType="", DerivationDescription="")
        found = self._find(f"C-FIND instances of series {series_uid}", q)
        return [i for i in map(instance_info, found) if i.sop_uid]

    # -- retrieval ------------------------------------------------------------------------------------
    def retrieve_series(self, study_uid: str, series_uid: str, folder: Path) -> int:
        folder = Path(folder)
        received = _Received(folder, series_uid)
        q = Dataset()
        q.QueryRetrieveLevel = "SERIES"
        q.StudyInstanceUID = study_uid
        q.SeriesInstanceUID = series_uid
        if self.config.retrieve == "get":
            self._get(f"C-GET series {series_uid}", q, received)
        else:
            self._move(f"C-MOVE series {series_uid}", q, received)
        log.info("%s: series %s: %d instances retrieved into %s", self.config.describe(), series_uid,
                 len(received.files), folder)
        return len(received.files)

    def _get(self, what: str, query: Dataset, received: _Received) -> None:
        ae = self._ae()
        model = StudyRootQueryRetrieveInformationModelGet
        contexts = [build_context(model), *receive_contexts()]
        roles = [build_role(c, scp_role=True) for c in (*IMAGE_CLASSES, *OTHER_CLASSES)]
        with self._association(what, ae, contexts, ext_neg=roles,
                               handlers=[(evt.EVT_C_STORE, received.on_store)]) as (assoc, watch):
            self._retrieve_responses(what, assoc, watch, assoc.send_c_get(query, model), received)

    def _move(self, what: str, query: Dataset, received: _Received) -> None:
        c = self.config
        ae = self._ae()
        ae.supported_contexts = receive_contexts()
        server_tls = self._server_tls(what)
        with move_port_lock(c.move_port):
            try:
                server = ae.start_server(("", c.move_port), block=False, ssl_context=server_tls,
                                         evt_handlers=[(evt.EVT_C_STORE, received.on_store)])
            except OSError as exc:
                raise self._fail(what, f"cannot listen on port {c.move_port} for the C-MOVE sub-operations "
                                       f"([pacs] move_port): {exc.strerror or exc}", transient=True) from None
            try:
                model = StudyRootQueryRetrieveInformationModelMove
                with self._association(what, ae, [build_context(model)]) as (assoc, watch):
                    self._retrieve_responses(what, assoc, watch, assoc.send_c_move(query, c.calling_aet, model),
                                             received)
            finally:
                server.shutdown()

    def _retrieve_responses(self, what: str, assoc: Association, watch: _Watch, responses: Iterator,
                            received: _Received) -> None:
        """Check the C-GET / C-MOVE responses: a failure status, a warning with failed sub-operations,
        a missing final response, or an instance we could not write is a PacsError."""
        first = True
        try:
            for status, _identifier in responses:
                code = status.get("Status", None) if status else None
                if code is None:
                    raise self._no_response(what, assoc, watch, first=first and not received.files)
                first = False
                if code in (0xFF00, 0xFF01):
                    continue
                subops = ", ".join(f"{n} {label}" for label, n in (
                    ("completed", count(status, "NumberOfCompletedSuboperations")),
                    ("failed", count(status, "NumberOfFailedSuboperations")),
                    ("warning", count(status, "NumberOfWarningSuboperations"))) if n is not None)
                failed = count(status, "NumberOfFailedSuboperations") or 0
                if received.errors:
                    raise self._fail(what, f"{len(received.errors)} received instances could not be written, "
                                           f"first {received.errors[0]}")
                if code in (0x0000, 0xB000) and not failed:
                    if code == 0xB000:
                        log.warning("%s: %s: warning status 0xB000 (%s)", self.config.describe(), what, subops)
                    return
                comment = text(status, "ErrorComment")
                kind = "status" if code in (0x0000, 0xB000) else "failure status"
                raise self._fail(what, f"{kind} {status_hex(code)}" + (f" ({comment})" if comment else "")
                                 + (f", sub-operations: {subops}" if subops else ""))
        except (ValueError, RuntimeError) as exc:
            raise self._fail(what, describe(exc), transient=not assoc.is_established) from None
        raise self._fail(what, "no final response", transient=True)

    # -- storage --------------------------------------------------------------------------------------
    def store(self, paths: Sequence[Path]) -> None:
        what = "C-STORE"
        # First pass, headers only: the (SOP class, transfer syntax) pairs to propose.
        pairs: dict[tuple[str, str], list[Path]] = {}
        for p in map(Path, paths):
            try:
                ds = dcmread(p, stop_before_pixels=True)
                key = (str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID))
            except (OSError, InvalidDicomError, AttributeError) as exc:
                raise self._fail(what, f"{p}: not a readable DICOM file ({type(exc).__name__}: {exc})") from None
            pairs.setdefault(key, []).append(p)
        keys = sorted(pairs)
        lanes = max(1, self.config.store_associations)
        for start in range(0, len(keys), MAX_CONTEXTS):
            chunk = keys[start:start + MAX_CONTEXTS]
            files = [p for k in chunk for p in pairs[k]]
            # C-STORE waits on each response (~50 ms per CT image against Orthanc): several associations
            # in parallel keep the link busy; the first failure is raised once all have ended
            groups = [g for g in (files[i::lanes] for i in range(lanes)) if g]
            with ThreadPoolExecutor(len(groups), thread_name_prefix="c-store") as pool:
                jobs = [pool.submit(self._store_files, what, chunk, g) for g in groups]
                errors = [j.exception() for j in jobs if j.exception() is not None]
            if errors:
                raise errors[0]
        log.info("%s: stored %d instances", self.config.describe(), len(paths))

    def _store_files(self, what: str, keys: Sequence[tuple[str, str]], paths: Sequence[Path]) -> None:
        """One association, one context per (SOP class, transfer syntax): C-STORE ``paths``."""
        ae = self._ae()
        contexts = [build_context(sop, ts) for sop, ts in keys]
        with self._association(what, ae, contexts) as (assoc, watch):
            no_delay(assoc)
            refused = refused_pairs(keys, assoc.accepted_contexts)
            if refused:
                names = "; ".join(f"{UID(sop).name} in {UID(ts).name}" for sop, ts in refused)
                raise self._fail(what, f"the PACS accepts no presentation context for {names} (nothing sent)")
            for n, p in enumerate(paths):
                try:
                    status = assoc.send_c_store(p)  # a path: sent as encoded in the file, not decoded and re-encoded
                except (OSError, InvalidDicomError) as exc:
                    raise self._fail(what, f"{p}: cannot be read ({type(exc).__name__}: {exc})") from None
                except (ValueError, AttributeError, RuntimeError) as exc:
                    # e.g. no accepted presentation context for this SOP class and transfer syntax
                    raise self._fail(what, f"{p}: {exc}", transient=not assoc.is_established) from None
                code = status.get("Status", None) if status else None
                if code is None:
                    raise self._no_response(f"{what} {p.name} ({n} of {len(paths)} sent before)", assoc, watch,
                                            first=n == 0)
                if code in STORE_WARNINGS:
                    log.warning("%s: %s %s: warning status %s", self.config.describe(), what, p.name, status_hex(code))
                elif code != 0x0000:
                    comment = text(status, "ErrorComment")
                    raise self._fail(what, f"{p}: failure status {status_hex(code)}"
                                           + (f" ({comment})" if comment else ""))
