"""DimseClient against a real Orthanc (C-FIND, C-GET, C-MOVE, C-STORE) and, for the faults Orthanc
cannot be made to show on demand (failure statuses, an abort mid-way, a DIMSE timeout), a small
pynetdicom SCP standing in for the PACS."""
from __future__ import annotations

import io
import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    MRImageStorage,
    RLELossless,
    generate_uid,
)
from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage, StudyRootQueryRetrieveInformationModelFind

from bench.orthanc import Orthanc, available, free_port
from pipeline.pacs.client import instance_file_name
from pipeline.pacs.config import PacsConfig
from pipeline.pacs.dimse import DimseClient
from pipeline.pacs.errors import PacsAuthError, PacsError
from tests.pacs_archive import DATE_RANGE, Series, common_series, make_series

# The stand-in SCP tests run everywhere; the others need Debian's orthanc and orthanc-dicomweb.
needs_orthanc = pytest.mark.skipif(not available(), reason="Orthanc or its DICOMweb plugin is not installed "
                                                           "(bash .ci/install-dicom-tools)")

@dataclass
class Archive:
    pacs: Orthanc
    series: dict[str, Series]

    def config(self, **kw) -> PacsConfig:
        base = dict(protocol="dimse", host="127.0.0.1", port=self.pacs.dicom_port, called_aet=self.pacs.aet,
                    calling_aet="DENOISER", move_port=self.pacs.our_port, connect_timeout=5, timeout=30)
        return PacsConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Archive]:
    """One Orthanc for the module (checking the called AE title, so a wrong one is rejected; taking
    C-STORE only from the AE titles it knows, as C-FIND, C-GET and C-MOVE) holding:
    study A with an uncompressed, a JPEG 2000 lossless and an RLE CT series; study B with a CT and an MR
    series; study M with only an MR series; study O, CT but dated outside the queried range."""
    tmp = tmp_path_factory.mktemp("dimse")
    pacs = Orthanc(tmp / "orthanc")
    cfg = json.loads(pacs.config.read_text())
    cfg.update({"DicomCheckCalledAet": True, "DicomAlwaysAllowStore": False})
    pacs.config.write_text(json.dumps(cfg))
    series = common_series(tmp)
    with pacs:
        pacs.upload([p for s in series.values() for p in s.paths])
        yield Archive(pacs, series)


# -- queries ---------------------------------------------------------------------------------------
@needs_orthanc
def test_find_studies_returns_the_ct_studies_of_the_range(archive: Archive) -> None:
    with DimseClient(archive.config()) as client:
        studies = {s.study_uid: s for s in client.find_studies(DATE_RANGE)}
    s = archive.series
    assert set(studies) == {s["plain"].study_uid, s["b_ct"].study_uid}  # not the MR-only one, not the old one
    a, b = studies[s["plain"].study_uid], studies[s["b_ct"].study_uid]
    assert (a.study_date, a.study_time, a.modalities, a.instances) == ("20260101", "080000", ("CT",), 9)
    assert set(b.modalities) == {"CT", "MR"} and b.instances == 6


@needs_orthanc
def test_find_series_and_instances(archive: Archive) -> None:
    s = archive.series
    with DimseClient(archive.config()) as client:
        found = {x.series_uid: x for x in client.find_series(s["plain"].study_uid)}
        assert set(found) == {s[k].series_uid for k in ("plain", "j2k", "rle")}
        assert all(x.modality == "CT" and x.instances == 3 and x.number == "5" for x in found.values())
        mixed = {x.modality for x in client.find_series(s["b_mr"].study_uid)}
        assert mixed == {"CT", "MR"}
        instances = client.find_instances(s["j2k"].study_uid, s["j2k"].series_uid)
        mr = client.find_instances(s["b_mr"].study_uid, s["b_mr"].series_uid)
    assert {i.sop_uid for i in instances} == set(s["j2k"].pixels)
    assert {i.sop_class_uid for i in instances} == {CTImageStorage}
    assert {i.image_type for i in instances} == {("ORIGINAL", "PRIMARY", "AXIAL")}
    assert {i.sop_class_uid for i in mr} == {MRImageStorage}


# -- retrieval -------------------------------------------------------------------------------------
@needs_orthanc
@pytest.mark.parametrize("method", ["get", "move"])
@pytest.mark.parametrize("name", ["plain", "j2k", "rle"])
def test_retrieve_series_keeps_syntax_and_values(archive: Archive, tmp_path: Path, method: str, name: str) -> None:
    series = archive.series[name]
    with DimseClient(archive.config(retrieve=method)) as client:
        n = client.retrieve_series(series.study_uid, series.series_uid, tmp_path)
    files = sorted(tmp_path.iterdir())
    assert n == 3 and [f.name for f in files] == sorted(instance_file_name(u) for u in series.pixels)
    for f in files:
        ds = pydicom.dcmread(f)
        assert ds.file_meta.TransferSyntaxUID == series.syntax
        np.testing.assert_array_equal(ds.pixel_array, series.pixels[ds.SOPInstanceUID])


@needs_orthanc
def test_get_of_a_sop_class_we_did_not_propose_fails_with_the_status(archive: Archive, tmp_path: Path) -> None:
    mr = archive.series["b_mr"]  # MR Image Storage: not among the storage contexts we propose
    with pytest.raises(PacsError) as err, DimseClient(archive.config(retrieve="get")) as client:
        client.retrieve_series(mr.study_uid, mr.series_uid, tmp_path)
    assert not err.value.transient and "C-GET" in str(err.value)
    assert "0xC000" in str(err.value) and "1 failed" in str(err.value)


@needs_orthanc
def test_move_to_a_port_the_pacs_does_not_send_to_fails(archive: Archive, tmp_path: Path) -> None:
    """Orthanc sends to DENOISER at ``our_port``; we listen elsewhere: its sub-operations fail (0xC000)."""
    plain = archive.series["plain"]
    with pytest.raises(PacsError) as err, DimseClient(archive.config(retrieve="move", move_port=free_port())) as c:
        c.retrieve_series(plain.study_uid, plain.series_uid, tmp_path)
    assert not err.value.transient and "C-MOVE" in str(err.value) and "0xC000" in str(err.value)
    assert list(tmp_path.iterdir()) == []


# -- storage ---------------------------------------------------------------------------------------
def copies(archive: Archive, folder: Path) -> tuple[str, dict[str, UID]]:
    """One file of each uploaded A series as a new instance of one new series, in a new study dated
    outside the queried range (the query tests see the same archive whatever the order):
    (series UID, transfer syntax by SOP Instance UID)."""
    folder.mkdir()
    study_uid, series_uid, syntaxes = generate_uid(), generate_uid(), {}

    def renew(path: Path) -> Dataset:
        ds = pydicom.dcmread(path)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.StudyInstanceUID, ds.StudyDate = study_uid, "20240101"
        ds.SeriesInstanceUID, ds.SeriesNumber = series_uid, 99
        return ds

    for name in ("plain", "j2k", "rle"):
        ds = renew(archive.series[name].paths[0])
        ds.save_as(folder / f"{name}.dcm", enforce_file_format=True)
        syntaxes[ds.SOPInstanceUID] = ds.file_meta.TransferSyntaxUID
    # The uncompressed series' second instance in Implicit VR: a fourth syntax, a fourth context.
    ds = renew(archive.series["plain"].paths[1])
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    ds.save_as(folder / "implicit.dcm", enforce_file_format=True)
    syntaxes[ds.SOPInstanceUID] = ImplicitVRLittleEndian
    return series_uid, syntaxes


@needs_orthanc
def test_store_sends_every_syntax_and_is_idempotent(archive: Archive, tmp_path: Path) -> None:
    series_uid, syntaxes = copies(archive, tmp_path / "new")
    paths = sorted((tmp_path / "new").iterdir())
    with DimseClient(archive.config()) as client:
        client.store(paths)
        stored = archive.pacs.instances(series_uid)
        assert {r["SOPInstanceUID"] for r in stored} == set(syntaxes)
        client.store(paths)  # a re-send: Orthanc answers 0x0000 and keeps one copy
    assert len(archive.pacs.instances(series_uid)) == len(syntaxes)
    j2k = next(u for u, ts in syntaxes.items() if ts == JPEG2000Lossless)
    kept = pydicom.dcmread(io.BytesIO(archive.pacs.file(series_uid, j2k)))
    assert kept.file_meta.TransferSyntaxUID == JPEG2000Lossless


@needs_orthanc
def test_store_of_a_file_that_is_not_dicom(archive: Archive, tmp_path: Path) -> None:
    bad = tmp_path / "notes.dcm"
    bad.write_text("not DICOM")
    with pytest.raises(PacsError) as err, DimseClient(archive.config()) as client:
        client.store([bad])
    assert not err.value.transient and "notes.dcm" in str(err.value)


# -- refusals --------------------------------------------------------------------------------------
@needs_orthanc
def test_unknown_calling_aet_is_an_auth_error(archive: Archive, tmp_path: Path) -> None:
    """Orthanc accepts the association of an AE missing from DicomModalities, then answers the first
    C-FIND / C-GET / C-MOVE (and C-STORE, with DicomAlwaysAllowStore false) with an A-ABORT."""
    plain = archive.series["plain"]
    new_series, _ = copies(archive, tmp_path / "new")
    with pytest.raises(PacsAuthError, match="C-STORE.*STRANGER"):
        DimseClient(archive.config(calling_aet="STRANGER")).store(sorted((tmp_path / "new").iterdir()))
    assert archive.pacs.instances(new_series) == []
    folder = tmp_path / "retrieved"
    folder.mkdir()
    for method in ("get", "move"):
        config = archive.config(calling_aet="STRANGER", retrieve=method)
        with DimseClient(config) as client:
            with pytest.raises(PacsAuthError) as err:
                client.find_studies(DATE_RANGE)
            msg = str(err.value)
            assert "\n" not in msg and config.describe() in msg and "STRANGER" in msg and "calling_aet" in msg
            with pytest.raises(PacsAuthError, match="C-GET" if method == "get" else "C-MOVE"):
                client.retrieve_series(plain.study_uid, plain.series_uid, folder)
    assert list(folder.iterdir()) == []


@needs_orthanc
def test_wrong_called_aet_is_rejected(archive: Archive) -> None:
    config = archive.config(called_aet="NOTORTHANC")
    with pytest.raises(PacsAuthError) as err, DimseClient(config) as client:
        client.find_series(archive.series["plain"].study_uid)
    msg = str(err.value)
    assert "\n" not in msg and "rejected" in msg and "NOTORTHANC" in msg and "called_aet" in msg


@needs_orthanc
def test_stopped_pacs_is_a_quick_transient_error(tmp_path: Path) -> None:
    files = make_series(tmp_path / "ct", "S", "ct", 9).paths
    with Orthanc(tmp_path / "orthanc") as pacs:
        config = PacsConfig(protocol="dimse", host="127.0.0.1", port=pacs.dicom_port, called_aet=pacs.aet,
                            move_port=pacs.our_port, connect_timeout=2, timeout=5)
        with DimseClient(config) as client:
            assert client.find_studies(DATE_RANGE) == []
        pacs.stop()
        for method in ("get", "move"):
            with DimseClient(replace(config, retrieve=method)) as client:
                for op in (lambda: client.find_studies(DATE_RANGE), lambda: client.store(files),
                           lambda: client.retrieve_series("1.2.3", "1.2.3.4", tmp_path)):
                    start = time.monotonic()
                    with pytest.raises(PacsError) as err:
                        op()
                    assert err.value.transient and config.describe() in str(err.value)
                    assert time.monotonic() - start < 4


# -- faults shown by a stand-in SCP -------------------------------------------------------------------
@contextmanager
def stand_in(handlers: list, aet: str = "FAKE") -> Iterator[PacsConfig]:
    """A pynetdicom SCP for Study Root C-FIND and CT C-STORE; yields a config pointing at it."""
    ae = AE(aet)
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
    ae.add_supported_context(CTImageStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=handlers)
    try:
        # one C-STORE association: the statuses below are answered by the n-th instance sent
        yield PacsConfig(protocol="dimse", host="127.0.0.1", port=port, called_aet=aet, connect_timeout=2, timeout=5,
                         store_associations=1)
    finally:
        server.shutdown()


def find_answering(status: int, delay: float = 0.0) -> list:
    def handle(event: evt.Event):
        time.sleep(delay)
        yield status, None
    return [(evt.EVT_C_FIND, handle)]


def store_answering(statuses: Callable[[int], int | None]) -> tuple[list, list[str]]:
    """A C-STORE handler answering the n-th request with ``statuses(n)``; None aborts the association."""
    received: list[str] = []
    lock = threading.Lock()

    def handle(event: evt.Event) -> int:
        with lock:
            n = len(received)
            received.append(event.request.AffectedSOPInstanceUID)
        status = statuses(n)
        if status is None:
            event.assoc.abort()
            return 0x0000
        return status
    return [(evt.EVT_C_STORE, handle)], received


@pytest.fixture
def ct_files(tmp_path: Path) -> list[Path]:
    return make_series(tmp_path / "ct", "F", "ct", 8).paths


def test_find_failure_status_is_permanent() -> None:
    with stand_in(find_answering(0xA700)) as config, DimseClient(config) as client:
        with pytest.raises(PacsError, match="failure status 0xA700") as err:
            client.find_studies(DATE_RANGE)
    assert not err.value.transient and "C-FIND" in str(err.value)


def test_find_timeout_is_transient() -> None:
    with stand_in(find_answering(0x0000, delay=2.0)) as config:
        with DimseClient(replace(config, timeout=0.5)) as client:
            with pytest.raises(PacsError, match="DIMSE timeout") as err:
                client.find_series("1.2.3")
    assert err.value.transient


def test_store_statuses(ct_files: list[Path]) -> None:
    handlers, received = store_answering(lambda n: 0xB000)  # a warning (coercion) is a success
    with stand_in(handlers) as config, DimseClient(config) as client:
        client.store(ct_files)
    assert len(received) == 3
    handlers, received = store_answering(lambda n: 0xA700 if n == 1 else 0x0000)
    with stand_in(handlers) as config, DimseClient(config) as client:
        with pytest.raises(PacsError, match="failure status 0xA700") as err:
            client.store(ct_files)
    assert not err.value.transient and len(received) == 2


def test_store_aborted_midway_is_transient(ct_files: list[Path]) -> None:
    handlers, received = store_answering(lambda n: None if n == 1 else 0x0000)
    with stand_in(handlers) as config, DimseClient(config) as client:
        with pytest.raises(PacsError, match="aborted") as err:
            client.store(ct_files)
    assert err.value.transient and not isinstance(err.value, PacsAuthError) and "1 of 3 sent" in str(err.value)


def test_store_of_a_syntax_the_pacs_refuses(ct_files: list[Path], tmp_path: Path) -> None:
    ds = pydicom.dcmread(ct_files[0])
    ds.compress(RLELossless, generate_instance_uid=False)
    ds.save_as(tmp_path / "rle.dcm", enforce_file_format=True)
    handlers, received = store_answering(lambda n: 0x0000)
    with stand_in(handlers) as config, DimseClient(config) as client:
        with pytest.raises(PacsError, match="CT Image Storage in RLE Lossless") as err:
            client.store([*ct_files, tmp_path / "rle.dcm"])
    assert not err.value.transient and received == []  # nothing sent


@contextmanager
def rejecting(result: int, source: int, reason: int) -> Iterator[PacsConfig]:
    """A bare socket that answers any A-ASSOCIATE-RQ with an A-ASSOCIATE-RJ and closes at once (the
    quick close is what made pynetdicom report a failed connection instead of the rejection)."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    port = listener.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5)
                conn.recv(65536)
                conn.sendall(bytes([0x03, 0, 0, 0, 0, 4, 0, result, source, reason]))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield PacsConfig(protocol="dimse", host="127.0.0.1", port=port, connect_timeout=2, timeout=5)
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def test_rejections() -> None:
    for _ in range(5):  # the race between the rejection and the closed connection: either way, an auth error
        with rejecting(1, 1, 3) as config, DimseClient(config) as client:
            with pytest.raises(PacsAuthError, match="Calling AE title not recognised") as err:
                client.find_studies(DATE_RANGE)
        assert "\n" not in str(err.value) and "calling_aet" in str(err.value)
    with rejecting(2, 3, 1) as config, DimseClient(config) as client:  # temporary congestion: try later
        with pytest.raises(PacsError, match="Rejected Transient") as err:
            client.find_studies(DATE_RANGE)
    assert err.value.transient and not isinstance(err.value, PacsAuthError)


# -- TLS -------------------------------------------------------------------------------------------
def make_certificates(folder: Path) -> Path:
    """A test CA and, signed by it, certificates for Orthanc and for us (valid for 127.0.0.1)."""
    folder.mkdir()

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
        "-subj", "/CN=ct-denoise test CA")
    for name in ("orthanc", "denoiser"):
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN={name}")
        (folder / f"{name}.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext")
    return folder


@needs_orthanc
@pytest.mark.skipif(not shutil.which("openssl"), reason="the openssl command makes the test certificates")
def test_tls(tmp_path: Path) -> None:
    """Orthanc with DICOM TLS (our certificate required, and used for the C-MOVE to us): store, find,
    C-GET and C-MOVE; a CA that does not sign Orthanc's certificate is a permanent error."""
    certs = make_certificates(tmp_path / "certs")
    pacs = Orthanc(tmp_path / "orthanc")
    cfg = json.loads(pacs.config.read_text())
    cfg.update({"DicomTlsEnabled": True, "DicomTlsCertificate": str(certs / "orthanc.crt"),
                "DicomTlsPrivateKey": str(certs / "orthanc.key"), "DicomTlsTrustedCertificates": str(certs / "ca.crt"),
                "DicomTlsRemoteCertificateRequired": True,
                "DicomModalities": {"denoiser": {"AET": "DENOISER", "Host": "127.0.0.1", "Port": pacs.our_port,
                                                 "UseDicomTls": True}}})
    pacs.config.write_text(json.dumps(cfg))
    series = make_series(tmp_path / "ct", "T", "ct", 10, JPEG2000Lossless)
    with pacs:
        config = PacsConfig(protocol="dimse", host="127.0.0.1", port=pacs.dicom_port, called_aet=pacs.aet,
                            move_port=pacs.our_port, connect_timeout=5, timeout=30, tls=True,
                            tls_ca_file=str(certs / "ca.crt"), tls_cert_file=str(certs / "denoiser.crt"),
                            tls_key_file=str(certs / "denoiser.key"))
        with DimseClient(config) as client:
            client.store(series.paths)
            (study,) = client.find_studies(DATE_RANGE)
            assert study.study_uid == series.study_uid and study.instances == 3
        for method in ("get", "move"):
            with DimseClient(replace(config, retrieve=method)) as client:
                folder = tmp_path / method
                folder.mkdir()
                assert client.retrieve_series(series.study_uid, series.series_uid, folder) == 3
                for f in folder.iterdir():
                    ds = pydicom.dcmread(f)
                    assert ds.file_meta.TransferSyntaxUID == JPEG2000Lossless
                    np.testing.assert_array_equal(ds.pixel_array, series.pixels[ds.SOPInstanceUID])
        with DimseClient(replace(config, tls_ca_file=str(certs / "denoiser.crt"))) as client:
            with pytest.raises(PacsError, match="TLS handshake failed.*CERTIFICATE_VERIFY_FAILED") as err:
                client.find_studies(DATE_RANGE)
        assert not err.value.transient


@needs_orthanc
def test_store_over_several_associations_sends_every_instance_once(archive: Archive, tmp_path: Path) -> None:
    files = make_series(tmp_path / "par", "PAR", "par", 21, slices=7).paths
    series_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)
    with DimseClient(archive.config(store_associations=3)) as client:
        client.store(files)
    stored = [t["SOPInstanceUID"] for t in archive.pacs.instances(series_uid)]
    assert sorted(stored) == sorted(str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files)
