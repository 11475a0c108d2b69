"""DicomWebClient against a real Orthanc with its DICOMweb plugin: QIDO-RS queries (and their paging),
WADO-RS retrieval in the stored transfer syntax, STOW-RS storage in batches, and the faults a nightly
run meets (wrong password, PACS down, wrong URL, HTTPS with the right and a wrong CA)."""
from __future__ import annotations

import io
import shutil
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import certifi
import numpy as np
import pydicom
import pytest
from pydicom.uid import (
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    MRImageStorage,
    RLELossless,
    generate_uid,
)

from bench.orthanc import Orthanc, available
from pipeline.pacs import dicomweb
from pipeline.pacs.client import instance_file_name
from pipeline.pacs.config import PacsConfig
from pipeline.pacs.dicomweb import DicomWebClient
from pipeline.pacs.errors import PacsAuthError, PacsError
from tests.pacs_archive import DATE_RANGE, Series, common_series, make_series
from tests.proxy import tcp_proxy

pytestmark = pytest.mark.skipif(not available(), reason="Orthanc or its DICOMweb plugin is not installed "
                                                        "(bash .ci/install-dicom-tools)")

def web_config(pacs: Orthanc, **kw) -> PacsConfig:
    base = {"protocol": "dicomweb", "url": pacs.dicomweb_url, "username": pacs.user, "password": pacs.password,
            "connect_timeout": 5, "timeout": 30}
    return PacsConfig(**{**base, **kw})


def one_line(err: pytest.ExceptionInfo[PacsError], config: PacsConfig) -> str:
    """The error's message, checked to be one line naming the PACS and not holding the password."""
    msg = str(err.value)
    assert "\n" not in msg and config.describe() in msg
    assert Orthanc.password not in msg and (not config.password or config.password not in msg)
    return msg


@dataclass
class Archive:
    pacs: Orthanc
    series: dict[str, Series]

    def config(self, **kw) -> PacsConfig:
        return web_config(self.pacs, **kw)


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Archive]:
    """One Orthanc for the module holding: study A with an uncompressed, a JPEG 2000 lossless and an RLE CT
    series; study B with a CT and an MR series; study M with only an MR series; study O, CT but dated
    outside the queried range; study P (outside the range too) with one CT series of 5 instances."""
    tmp = tmp_path_factory.mktemp("dicomweb")
    series = {**common_series(tmp),
              "five": make_series(tmp / "five", "P", "ct", 8, study_date="20250601", slices=5)}
    with Orthanc(tmp / "orthanc") as pacs:
        pacs.upload([p for s in series.values() for p in s.paths])
        yield Archive(pacs, series)


# -- queries ---------------------------------------------------------------------------------------
def test_find_studies_returns_the_ct_studies_of_the_range(archive: Archive) -> None:
    with DicomWebClient(archive.config()) as client:
        studies = {s.study_uid: s for s in client.find_studies(DATE_RANGE)}
        assert {s.study_uid for s in client.find_studies("20251231-20251231")} == {archive.series["old"].study_uid}
        assert client.find_studies("20200101-20201231") == []
    s = archive.series
    assert set(studies) == {s["plain"].study_uid, s["b_ct"].study_uid}  # not the MR-only one, not the old one
    a, b = studies[s["plain"].study_uid], studies[s["b_ct"].study_uid]
    assert (a.study_date, a.study_time, a.modalities, a.instances) == ("20260101", "080000", ("CT",), 9)
    assert set(b.modalities) == {"CT", "MR"} and b.instances == 6


def test_find_series_counts_and_modality(archive: Archive) -> None:
    s = archive.series
    with DicomWebClient(archive.config()) as client:
        found = {x.series_uid: x for x in client.find_series(s["plain"].study_uid)}
        mixed = {x.series_uid: x for x in client.find_series(s["b_mr"].study_uid)}
        five = client.find_series(s["five"].study_uid)
    assert set(found) == {s[k].series_uid for k in ("plain", "j2k", "rle")}
    assert all(x.modality == "CT" and x.instances == 3 and x.number == "5" for x in found.values())
    assert {(x.series_uid, x.modality, x.instances) for x in mixed.values()} == {
        (s["b_ct"].series_uid, "CT", 3), (s["b_mr"].series_uid, "MR", 3)}
    assert [(x.series_uid, x.instances) for x in five] == [(s["five"].series_uid, 5)]


def test_find_instances_sop_classes(archive: Archive) -> None:
    s = archive.series
    with DicomWebClient(archive.config()) as client:
        instances = client.find_instances(s["j2k"].study_uid, s["j2k"].series_uid)
        mr = client.find_instances(s["b_mr"].study_uid, s["b_mr"].series_uid)
        none = client.find_instances(s["j2k"].study_uid, generate_uid())
    assert sorted(i.sop_uid for i in instances) == sorted(s["j2k"].pixels)
    assert {i.sop_class_uid for i in instances} == {CTImageStorage}
    assert {i.image_type for i in instances} == {("ORIGINAL", "PRIMARY", "AXIAL")}
    assert sorted(i.sop_uid for i in mr) == sorted(s["b_mr"].pixels)
    assert {i.sop_class_uid for i in mr} == {MRImageStorage}
    assert none == []


def test_queries_page_through_every_result(archive: Archive, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two results per QIDO request: the 5 instances (3 pages), 3 series (2 pages), 2 studies (2 pages, the
    second empty) all come back, each once."""
    monkeypatch.setattr(dicomweb, "PAGE", 2)
    s = archive.series
    offsets: list[int] = []
    with DicomWebClient(archive.config()) as client:
        search = client.web.search_for_instances

        def counting(*args, **kw):
            assert kw["limit"] == 2
            offsets.append(kw["offset"])
            return search(*args, **kw)

        client.web.search_for_instances = counting
        instances = client.find_instances(s["five"].study_uid, s["five"].series_uid)
        series = client.find_series(s["plain"].study_uid)
        studies = client.find_studies(DATE_RANGE)
    assert sorted(i.sop_uid for i in instances) == sorted(s["five"].pixels)
    assert {i.sop_class_uid for i in instances} == {CTImageStorage}
    assert offsets == [0, 2, 4]
    assert sorted(x.series_uid for x in series) == sorted(s[k].series_uid for k in ("plain", "j2k", "rle"))
    assert all(x.instances == 3 for x in series)
    assert sorted(x.study_uid for x in studies) == sorted({s["plain"].study_uid, s["b_ct"].study_uid})


# -- retrieval -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["plain", "j2k", "rle"])
def test_retrieve_series_keeps_syntax_and_values(archive: Archive, tmp_path: Path, name: str) -> None:
    series = archive.series[name]
    with DicomWebClient(archive.config()) as client:
        n = client.retrieve_series(series.study_uid, series.series_uid, tmp_path)
    files = sorted(tmp_path.iterdir())
    assert n == 3 and [f.name for f in files] == sorted(instance_file_name(u) for u in series.pixels)
    for f in files:
        ds = pydicom.dcmread(f)
        assert ds.file_meta.TransferSyntaxUID == series.syntax
        assert ds.preamble is not None  # a Part-10 file
        np.testing.assert_array_equal(ds.pixel_array, series.pixels[ds.SOPInstanceUID])


def test_retrieve_of_an_unknown_series_is_a_permanent_error(archive: Archive, tmp_path: Path) -> None:
    config = archive.config()
    with pytest.raises(PacsError) as err, DicomWebClient(config) as client:
        client.retrieve_series(archive.series["plain"].study_uid, generate_uid(), tmp_path)
    assert not err.value.transient and "WADO" in one_line(err, config)
    assert list(tmp_path.iterdir()) == []


# -- storage ---------------------------------------------------------------------------------------
def copies(archive: Archive, folder: Path, names: tuple[str, ...] = ("plain", "j2k", "rle"),
           per_series: int = 1) -> tuple[str, dict[str, UID], list[Path]]:
    """The first ``per_series`` files of each named series as new instances of one new series, in a new study
    dated outside the queried range (the query tests see the same archive whatever the order):
    (series UID, transfer syntax by SOP Instance UID, files)."""
    folder.mkdir()
    study_uid, series_uid, syntaxes, paths = generate_uid(), generate_uid(), {}, []
    for name in names:
        for k, path in enumerate(archive.series[name].paths[:per_series]):
            ds = pydicom.dcmread(path)
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            ds.StudyInstanceUID, ds.StudyDate = study_uid, "20240101"
            ds.SeriesInstanceUID, ds.SeriesNumber = series_uid, 99
            out = folder / f"{name}{k}.dcm"
            ds.save_as(out, enforce_file_format=True)
            syntaxes[ds.SOPInstanceUID] = ds.file_meta.TransferSyntaxUID
            paths.append(out)
    return series_uid, syntaxes, paths


def test_store_keeps_every_syntax_and_is_idempotent(archive: Archive, tmp_path: Path) -> None:
    series_uid, syntaxes, paths = copies(archive, tmp_path / "new")
    assert set(syntaxes.values()) == {ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless}
    with DicomWebClient(archive.config()) as client:
        client.store(paths)
        stored = archive.pacs.instances(series_uid)
        assert sorted(r["SOPInstanceUID"] for r in stored) == sorted(syntaxes)
        client.store(paths)  # a re-send: Orthanc lists them as stored and keeps one copy
    assert sorted(r["SOPInstanceUID"] for r in archive.pacs.instances(series_uid)) == sorted(syntaxes)
    for sop_uid, syntax in syntaxes.items():
        kept = pydicom.dcmread(io.BytesIO(archive.pacs.file(series_uid, sop_uid)))
        assert kept.file_meta.TransferSyntaxUID == syntax
    j2k = next(p for p in paths if pydicom.dcmread(p).file_meta.TransferSyntaxUID == JPEG2000Lossless)
    sent = pydicom.dcmread(j2k)
    kept = pydicom.dcmread(io.BytesIO(archive.pacs.file(series_uid, sent.SOPInstanceUID)))
    np.testing.assert_array_equal(kept.pixel_array, sent.pixel_array)


def test_store_in_batches(archive: Archive, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    series_uid, syntaxes, paths = copies(archive, tmp_path / "new", ("five",), per_series=5)
    assert len(paths) == 5
    config = archive.config(store_batch=2)
    with DicomWebClient(config) as client:
        batches: list[int] = []
        store = client.web.store_instances

        def counting(datasets, *args, **kw):
            batches.append(len(datasets))
            return store(datasets, *args, **kw)

        monkeypatch.setattr(client.web, "store_instances", counting)
        client.store(paths)
    assert batches == [2, 2, 1]
    assert sorted(r["SOPInstanceUID"] for r in archive.pacs.instances(series_uid)) == sorted(syntaxes)


def test_store_of_a_file_that_is_not_dicom(archive: Archive, tmp_path: Path) -> None:
    bad = tmp_path / "notes.dcm"
    bad.write_text("not DICOM")
    config = archive.config()
    with pytest.raises(PacsError) as err, DicomWebClient(config) as client:
        client.store([bad])
    assert not err.value.transient
    one_line(err, config)


# -- faults ----------------------------------------------------------------------------------------
def test_wrong_password_is_an_auth_error(archive: Archive, tmp_path: Path) -> None:
    wrong = "not-the-Pa55word"
    config = archive.config(password=wrong)
    _, _, paths = copies(archive, tmp_path / "new", ("plain",))
    s = archive.series["plain"]
    calls = [lambda c: c.find_studies(DATE_RANGE), lambda c: c.find_series(s.study_uid),
             lambda c: c.find_instances(s.study_uid, s.series_uid),
             lambda c: c.retrieve_series(s.study_uid, s.series_uid, tmp_path), lambda c: c.store(paths)]
    with DicomWebClient(config) as client:
        for call in calls:
            with pytest.raises(PacsAuthError) as err:
                call(client)
            msg = one_line(err, config)
            assert "HTTP 401" in msg and wrong not in msg and not err.value.transient
    assert [p.name for p in tmp_path.iterdir()] == ["new"]
    assert archive.pacs.instances(pydicom.dcmread(paths[0]).SeriesInstanceUID) == []


def test_unknown_user_and_no_credentials_are_auth_errors(archive: Archive) -> None:
    for config in (archive.config(username="stranger"), archive.config(username="", password="")):
        with pytest.raises(PacsAuthError) as err, DicomWebClient(config) as client:
            client.find_studies(DATE_RANGE)
        assert "HTTP 401" in one_line(err, config)


def test_url_path_that_does_not_exist_is_a_permanent_error(archive: Archive) -> None:
    config = archive.config(url=archive.pacs.dicomweb_url + "/nope")
    with pytest.raises(PacsError) as err, DicomWebClient(config) as client:
        client.find_studies(DATE_RANGE)
    assert not err.value.transient and not isinstance(err.value, PacsAuthError)
    assert "HTTP 404" in one_line(err, config)


def test_stopped_pacs_is_a_quick_transient_error(tmp_path: Path) -> None:
    series = make_series(tmp_path / "ct", "S", "ct", 9)
    with Orthanc(tmp_path / "orthanc") as pacs:
        config = web_config(pacs, connect_timeout=2, timeout=5)
        with DicomWebClient(config) as client:
            assert client.find_studies(DATE_RANGE) == []
            pacs.stop()
            for op in (lambda: client.find_studies(DATE_RANGE), lambda: client.find_series(series.study_uid),
                       lambda: client.store(series.paths),
                       lambda: client.retrieve_series(series.study_uid, series.series_uid, tmp_path)):
                start = time.monotonic()
                with pytest.raises(PacsError) as err:
                    op()
                assert time.monotonic() - start < 4
                assert err.value.transient and not isinstance(err.value, PacsAuthError)
                assert "connection refused" in one_line(err, config)


# -- HTTPS -----------------------------------------------------------------------------------------
# Debian 12's Orthanc cannot serve HTTPS itself: its civetweb 1.15 loads libssl.so (OpenSSL 3) at run
# time, finds no SSL_get_peer_certificate there (OpenSSL 3 renamed it) and calls a NULL pointer on the
# first HTTPS connection (SIGSEGV, seen with "SslEnabled": true). A PACS behind a TLS-terminating reverse
# proxy is a common deployment anyway: the tests put a small one in front of Orthanc's HTTP port.
def make_certificates(folder: Path) -> Path:
    """A test CA and, signed by it, the server's certificate (valid for 127.0.0.1); and an unrelated
    self-signed ``other.crt``."""
    folder.mkdir()

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    for ca in ("ca", "other"):
        run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{ca}.key", "-out", f"{ca}.crt",
            "-days", "2", "-subj", f"/CN=ct-denoise test {ca}")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=pacs")
    (folder / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.crt", "-days", "2", "-extfile", "server.ext")
    return folder


def tls_proxy(backend_port: int, certs: Path):
    """A TLS-terminating TCP proxy on 127.0.0.1 (``certs/server.crt``) to ``backend_port``; yields its port."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(certs / "server.crt", certs / "server.key")
    return tcp_proxy(backend_port, ctx)


@pytest.mark.skipif(not shutil.which("openssl"), reason="the openssl command makes the test certificates")
@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_https(archive: Archive, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Over HTTPS with the server's CA in tls_ca_file, store, find and retrieve work, whatever CA bundle
    REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE name; with a CA that did not sign the server's certificate, every
    request fails with a permanent one-line error naming the verification; tls_verify = false skips it."""
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):  # requests lets these beat Session.verify
        monkeypatch.setenv(name, certifi.where())
    certs = make_certificates(tmp_path / "certs")
    series_uid, syntaxes, paths = copies(archive, tmp_path / "new", ("j2k",), per_series=3)
    study_uid = str(pydicom.dcmread(paths[0], stop_before_pixels=True).StudyInstanceUID)
    with tls_proxy(archive.pacs.http_port, certs) as port:
        config = archive.config(url=f"https://127.0.0.1:{port}/dicom-web", tls_ca_file=str(certs / "ca.crt"))
        with DicomWebClient(config) as client:
            studies = client.find_studies(DATE_RANGE)
            assert sorted(s.study_uid for s in studies) == sorted(
                {archive.series["plain"].study_uid, archive.series["b_ct"].study_uid})
            client.store(paths)
            assert sorted(i.sop_uid for i in client.find_instances(study_uid, series_uid)) == sorted(syntaxes)
            folder = tmp_path / "retrieved"
            folder.mkdir()
            assert client.retrieve_series(study_uid, series_uid, folder) == 3
        for path in paths:
            sent = pydicom.dcmread(path)
            got = pydicom.dcmread(folder / instance_file_name(sent.SOPInstanceUID))
            assert got.file_meta.TransferSyntaxUID == JPEG2000Lossless
            np.testing.assert_array_equal(got.pixel_array, sent.pixel_array)

        for wrong in (replace(config, tls_ca_file=str(certs / "other.crt")), replace(config, tls_ca_file="")):
            with DicomWebClient(wrong) as client:
                for op in (lambda: client.find_studies(DATE_RANGE), lambda: client.store(paths),
                           lambda: client.retrieve_series(study_uid, series_uid, tmp_path)):
                    start = time.monotonic()
                    with pytest.raises(PacsError) as err:
                        op()
                    assert time.monotonic() - start < 4
                    assert not err.value.transient and not isinstance(err.value, PacsAuthError)
                    msg = one_line(err, wrong)
                    assert "TLS handshake failed (CERTIFICATE_VERIFY_FAILED" in msg and "tls_ca_file" in msg
        unverified = replace(config, tls_ca_file=str(certs / "other.crt"), tls_verify=False)
        with DicomWebClient(unverified) as client:
            assert [s.instances for s in client.find_series(study_uid)] == [3]
