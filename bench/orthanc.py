"""A real Orthanc PACS (Debian ``orthanc`` + ``orthanc-dicomweb``) for the tests and the PACS benchmark
(``python -m bench.pacs``), which both import it from here.

Started as a child process on free ports with a temporary configuration and storage, HTTP
authentication on, our AE registered for C-FIND/C-GET/C-MOVE; stopped by its PID. Install the
packages with ``bash .ci/install-dicom-tools``.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from base64 import b64encode
from pathlib import Path

ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
PLUGIN_DIRS = (Path("/usr/share/orthanc/plugins"), Path("/usr/lib/orthanc"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dicomweb_plugin() -> Path | None:
    for folder in PLUGIN_DIRS:
        for p in sorted(folder.glob("libOrthancDicomWeb.so*")):
            return p
    return None


def available() -> bool:
    return os.path.exists(ORTHANC) and dicomweb_plugin() is not None


class Orthanc:
    """``with Orthanc(tmp) as pacs:`` a running Orthanc; ``pacs.stop()`` / ``pacs.start()`` keep its storage."""

    user, password = "nightly", "s3cret-test"
    aet = "ORTHANC"

    def __init__(self, root: Path, our_aet: str = "DENOISER", our_port: int | None = None,
                 max_pdu: int = 131072) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.http_port, self.dicom_port = free_port(), free_port()
        self.our_aet, self.our_port = our_aet, our_port or free_port()  # our C-MOVE destination
        self.proc: subprocess.Popen | None = None
        self.config = self.root / "orthanc.json"
        self.config.write_text(json.dumps({
            "Name": "ct-denoise-test", "StorageDirectory": str(self.root / "db"),
            "IndexDirectory": str(self.root / "db"), "HttpPort": self.http_port, "DicomPort": self.dicom_port,
            "DicomAet": self.aet, "RemoteAccessAllowed": False, "AuthenticationEnabled": True,
            "RegisteredUsers": {self.user: self.password},
            "DicomModalities": {"denoiser": [our_aet, "127.0.0.1", self.our_port]},
            "OverwriteInstances": False, "SaveJobs": False, "MaximumPduLength": max_pdu,
            "StableAge": 1, "Plugins": [str(dicomweb_plugin())],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True},
        }, indent=2))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.url}/dicom-web"

    def start(self, timeout: float = 30.0) -> Orthanc:
        self.proc = subprocess.Popen([ORTHANC, str(self.config)], stdout=subprocess.DEVNULL,
                                     stderr=open(self.root / "orthanc.log", "ab"), start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self.proc.returncode}: see {self.root / 'orthanc.log'}")
            try:
                if "dicom-web" in self.get("/plugins"):
                    return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"Orthanc did not answer on {self.url} within {timeout} s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.proc = None

    def __enter__(self) -> Orthanc:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def luigi_args(self, protocol: str, password_env: str) -> list[str]:
        """``[pacs]`` settings on the luigi command line for this server: ``dicomweb``, ``dimse-get`` or
        ``dimse-move``; the password is read from the environment variable ``password_env``."""
        if protocol == "dicomweb":
            return ["--pacs-protocol", "dicomweb", "--pacs-url", self.dicomweb_url, "--pacs-username", self.user,
                    "--pacs-password-env", password_env]
        return ["--pacs-protocol", "dimse", "--pacs-host", "127.0.0.1", "--pacs-port", str(self.dicom_port),
                "--pacs-called-aet", self.aet, "--pacs-calling-aet", self.our_aet,
                "--pacs-retrieve", protocol.split("-")[1], "--pacs-move-port", str(self.our_port)]

    # -- REST, with the test user's credentials -------------------------------------------------
    def _request(self, path: str, data: bytes | None = None, method: str | None = None) -> bytes:
        req = urllib.request.Request(self.url + path, data=data, method=method)
        token = b64encode(f"{self.user}:{self.password}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.read()

    def get(self, path: str):
        return json.loads(self._request(path))

    def upload(self, paths) -> list[str]:
        """Store files through the REST API (as a modality would); returns their Orthanc IDs."""
        return [json.loads(self._request("/instances", Path(p).read_bytes()))["ID"] for p in paths]

    def instances(self, series_uid: str | None = None) -> list[dict]:
        """Every stored instance's main tags (optionally of one series)."""
        rows = []
        for oid in self.get("/instances"):
            tags = self.get(f"/instances/{oid}/simplified-tags")
            if series_uid is None or tags.get("SeriesInstanceUID") == series_uid:
                rows.append(tags)
        return rows

    def file(self, series_uid: str, sop_uid: str) -> bytes:
        found = json.loads(self._request("/tools/find", json.dumps({
            "Level": "Instance", "Query": {"SeriesInstanceUID": series_uid, "SOPInstanceUID": sop_uid}}).encode()))
        (oid,) = found
        return self._request(f"/instances/{oid}/file")
