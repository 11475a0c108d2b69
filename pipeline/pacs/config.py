"""``[pacs]`` settings: which PACS, how to reach it, credentials, retries; and which studies a run asks
for (a study-date query, or studies named by StudyInstanceUID or accession number).

Credentials are read from a file or from an environment variable named in the configuration, never
from the configuration itself; they are kept out of ``repr``, logs and provenance.
"""
from __future__ import annotations

import datetime as dt
import os
import re
import ssl
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.dicom.uids import is_valid_uid
from pipeline.errors import ConfigError

PROTOCOLS = ("dicomweb", "dimse")
RETRIEVE_METHODS = ("get", "move")
KEEP_WORK = ("never", "on_failure", "always")
_DATE = re.compile(r"^\d{8}$")


@dataclass(frozen=True)
class PacsConfig:
    """Where the PACS is and how to talk to it. ``password`` is filled by :func:`load_password`."""

    protocol: str = "dicomweb"
    url: str = ""                      # DICOMweb root, e.g. https://pacs.example.org/dicom-web
    host: str = ""                     # DIMSE
    port: int = 104
    called_aet: str = "ORTHANC"
    calling_aet: str = "DENOISER"      # our AE title (the PACS must know it for C-FIND/C-GET/C-MOVE)
    retrieve: str = "get"              # DIMSE: C-GET, or C-MOVE to our storage SCP on move_port
    move_port: int = 11113
    username: str = ""
    password: str = field(default="", repr=False)
    tls: bool = False                  # DIMSE over TLS (DICOMweb: use an https:// URL)
    tls_ca_file: str = ""              # CA bundle to verify the PACS (default: the system's)
    tls_cert_file: str = ""            # our client certificate and key, if the PACS asks for one
    tls_key_file: str = ""
    tls_verify: bool = True
    connect_timeout: float = 10.0      # seconds to open a connection / association
    timeout: float = 120.0             # seconds a request or DIMSE message may take
    retries: int = 3                   # retries of a transient fault, per operation of a study
    backoff_seconds: float = 5.0       # first wait; doubles on every retry
    store_batch: int = 50              # instances per STOW-RS request
    store_associations: int = 4        # DIMSE: C-STORE associations in parallel
    keep_work: str = "on_failure"      # never, on_failure, always: the retrieved and derived files

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ConfigError(f"[pacs] protocol {self.protocol!r}: use one of {', '.join(PROTOCOLS)}")
        if self.protocol == "dicomweb" and not re.match(r"^https?://", self.url):
            raise ConfigError(f"[pacs] url {self.url!r}: give the DICOMweb root, http(s)://host:port/dicom-web")
        if re.match(r"^https?://[^/]*@", self.url):
            raise ConfigError("[pacs] url holds credentials: give username, and password_file or password_env")
        if self.protocol == "dimse" and not self.host:
            raise ConfigError("[pacs] host is empty: give the PACS host name for protocol dimse")
        if self.retrieve not in RETRIEVE_METHODS:
            raise ConfigError(f"[pacs] retrieve {self.retrieve!r}: use get or move")
        if self.keep_work not in KEEP_WORK:
            raise ConfigError(f"[pacs] keep_work {self.keep_work!r}: use one of {', '.join(KEEP_WORK)}")
        for name in ("called_aet", "calling_aet"):
            aet = getattr(self, name)
            if not 0 < len(aet) <= 16 or not aet.isascii() or "\\" in aet:
                raise ConfigError(f"[pacs] {name} {aet!r}: an AE title is 1 to 16 ASCII characters")
        if self.retries < 0 or self.backoff_seconds < 0 or self.store_batch < 1 or self.store_associations < 1:
            raise ConfigError("[pacs] retries and backoff_seconds must be >= 0, store_batch and "
                              "store_associations >= 1")
        if self.connect_timeout <= 0 or self.timeout <= 0:
            raise ConfigError("[pacs] connect_timeout and timeout must be > 0 seconds")

    def describe(self) -> str:
        """The PACS as logs and reports name it: protocol and address, never credentials."""
        if self.protocol == "dicomweb":
            return f"dicomweb {self.url}"
        return f"dimse {self.called_aet}@{self.host}:{self.port}"

    def ssl_context(self) -> ssl.SSLContext | None:
        """Client TLS context for DIMSE (``tls``), from the CA file and our certificate."""
        if not self.tls:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.tls_ca_file or None)
        if not self.tls_verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if self.tls_cert_file:
            ctx.load_cert_chain(self.tls_cert_file, self.tls_key_file or None)
        return ctx


def load_password(password_file: str = "", password_env: str = "") -> str:
    """The password from ``password_file`` (first line) or the environment variable ``password_env``;
    empty when neither is set. A missing file or variable is a :class:`ConfigError` naming it (not the value)."""
    if password_file and password_env:
        raise ConfigError("[pacs] give password_file or password_env, not both")
    if password_file:
        path = Path(password_file).expanduser()
        try:
            lines = path.read_text().splitlines()
        except OSError as exc:
            raise ConfigError(f"[pacs] password_file {path}: cannot be read ({exc.strerror or exc})") from None
        return lines[0].strip() if lines else ""
    if password_env:
        if password_env not in os.environ:
            raise ConfigError(f"[pacs] password_env {password_env}: no such environment variable")
        return os.environ[password_env]
    return ""


@dataclass(frozen=True)
class DateQuery:
    """Studies to fetch: StudyDate in ``first``..``last`` (YYYYMMDD), and with ``since`` only those
    whose StudyDate + StudyTime is at or after it (without a readable StudyTime, the date decides)."""

    first: str
    last: str
    since: dt.datetime | None = None

    @property
    def dicom_range(self) -> str:
        return f"{self.first}-{self.last}"

    def matches(self, study_date: str, study_time: str) -> bool:
        if not self.first <= study_date <= self.last:
            return False
        if self.since is None:
            return True
        digits = re.sub(r"[^0-9]", "", study_time.split(".")[0])[:6]
        if len(digits) < 2:
            return True  # no time: the date decides (a study is rather fetched than missed)
        digits = digits.ljust(6, "0")
        try:
            when = dt.datetime.strptime(study_date + digits, "%Y%m%d%H%M%S")
        except ValueError:
            return True  # an unreadable time: the date decides
        return when >= self.since

    def label(self) -> str:
        if self.since is not None:
            return f"since {self.since.isoformat(timespec='minutes')}"
        return self.first if self.first == self.last else self.dicom_range


@dataclass(frozen=True)
class StudyRequest:
    """Studies asked for by name, on demand: StudyInstanceUIDs, or one accession number (which may
    name several studies). Each is queried exactly, never with wildcards."""

    study_uids: tuple[str, ...] = ()
    accession_number: str = ""

    def label(self) -> str:  # the accession number is not written to logs
        if self.accession_number:
            return "the accession number asked for"
        return f"{len(self.study_uids)} study UID(s) asked for"


ONE_OF = ("give one of --study-date YYYYMMDD[-YYYYMMDD], --since-hours N, --study-uid UID[,UID...] or "
          "--accession-number N")


def study_query(study_date: str = "", since_hours: float | None = None, study_uids: str = "",
                accession_number: str = "", now: dt.datetime | None = None) -> DateQuery | StudyRequest:
    """The studies a run asks for: exactly one of a study date (range), the last N hours, a
    comma-separated list of StudyInstanceUIDs or an accession number."""
    uids = tuple(dict.fromkeys(u.strip() for u in study_uids.split(",") if u.strip()))
    given = [bool(study_date), since_hours is not None, bool(uids), bool(accession_number.strip())]
    if sum(given) != 1:
        raise ConfigError(ONE_OF)
    if uids:
        bad = [u for u in uids if not is_valid_uid(u)]
        if bad:
            raise ConfigError(f"--study-uid {bad[0]!r}: not a UID (digits and dots, at most 64 characters)")
        return StudyRequest(study_uids=uids)
    if accession_number.strip():
        acc = accession_number.strip()
        if len(acc) > 16 or any(c in acc for c in "*?\\") or not acc.isprintable():
            raise ConfigError("--accession-number: at most 16 printable characters, without * ? or \\ "
                              "(a wildcard would match other patients' studies)")
        return StudyRequest(accession_number=acc)
    return date_query(study_date, since_hours, now)


def date_query(study_date: str = "", since_hours: float | None = None, now: dt.datetime | None = None) -> DateQuery:
    """``--study-date YYYYMMDD`` or ``YYYYMMDD-YYYYMMDD``, or ``--since-hours N`` (local time)."""
    if bool(study_date) == (since_hours is not None):
        raise ConfigError(ONE_OF)
    if since_hours is not None:
        if since_hours <= 0:
            raise ConfigError(f"--since-hours {since_hours}: must be > 0")
        now = now or dt.datetime.now()
        since = now - dt.timedelta(hours=since_hours)
        return DateQuery(since.strftime("%Y%m%d"), now.strftime("%Y%m%d"), since)
    first, _, last = study_date.partition("-")
    last = last or first
    for d in (first, last):
        try:
            if not _DATE.match(d):
                raise ValueError
            dt.datetime.strptime(d, "%Y%m%d")
        except ValueError:
            raise ConfigError(f"--study-date {study_date!r}: use YYYYMMDD or YYYYMMDD-YYYYMMDD") from None
    if first > last:
        raise ConfigError(f"--study-date {study_date!r}: the range ends before it starts")
    return DateQuery(first, last)
