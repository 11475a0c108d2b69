"""[pacs] settings, credentials, the study-date query and the retry policy (no PACS needed)."""
from __future__ import annotations

import datetime as dt
import re

import pytest

from pipeline.errors import ConfigError
from pipeline.pacs.config import PacsConfig, StudyRequest, date_query, load_password, study_query
from pipeline.pacs.errors import PacsAuthError, PacsError
from pipeline.pacs.retry import with_retries


def test_study_date_day_and_range():
    q = date_query("20261124")
    assert (q.dicom_range, q.label()) == ("20261124-20261124", "20261124")
    assert q.matches("20261124", "") and not q.matches("20261125", "0100")
    r = date_query("20261120-20261124")
    assert r.matches("20261120", "000000") and r.matches("20261124", "235959") and not r.matches("20261119", "")


def test_since_hours_filters_by_study_date_and_time():
    q = date_query(since_hours=6, now=dt.datetime(2026, 11, 25, 3, 0))
    assert q.dicom_range == "20261124-20261125"
    assert q.matches("20261124", "213000") and q.matches("20261125", "0200")
    assert not q.matches("20261124", "205959.123") and not q.matches("20261123", "235900")
    assert q.matches("20261124", "garbage")  # an unreadable time: the date decides


@pytest.mark.parametrize("kwargs, message", [
    ({}, "give one of --study-date"), ({"study_date": "20261124", "since_hours": 2}, "give one of --study-date"),
    ({"study_date": "2026-11-24"}, "use YYYYMMDD"), ({"study_date": "20261324"}, "use YYYYMMDD"),
    ({"study_date": "20261124-20261120"}, "ends before it starts"), ({"since_hours": 0}, "must be > 0")])
def test_bad_dates_are_refused_with_the_reason(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        date_query(**kwargs)


def test_studies_on_demand_by_uid_or_accession_number():
    assert study_query(study_uids="1.2.3, 1.2.4,1.2.3") == StudyRequest(study_uids=("1.2.3", "1.2.4"))
    assert study_query(accession_number=" A1234 ") == StudyRequest(accession_number="A1234")
    assert "A1234" not in study_query(accession_number="A1234").label()  # the log names no accession number
    assert isinstance(study_query(study_date="20261124"), type(date_query("20261124")))


@pytest.mark.parametrize("kwargs, message", [
    ({"study_uids": "1.2.3", "accession_number": "A1"}, "give one of"),
    ({"study_uids": "1.2.3", "study_date": "20261124"}, "give one of"),
    ({"study_uids": "1.2.abc"}, "--study-uid '1.2.abc': not a UID"),
    ({"study_uids": "1.2.3,1." + "2" * 70}, "not a UID"),
    ({"accession_number": "A*"}, "a wildcard would match other patients' studies"),
    ({"accession_number": "A?1"}, "without"), ({"accession_number": "X" * 17}, "at most 16"),
    ({"study_uids": " , "}, "give one of")])
def test_bad_study_requests_are_refused_with_the_reason(kwargs, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        study_query(**kwargs)


def test_password_from_file_or_environment_and_never_in_repr(tmp_path, monkeypatch):
    secret = tmp_path / "pw"
    secret.write_text("hunter2\nignored\n")
    assert load_password(str(secret)) == "hunter2"
    monkeypatch.setenv("PACS_PW", "from-env")
    assert load_password(password_env="PACS_PW") == "from-env"
    assert load_password() == ""
    with pytest.raises(ConfigError, match="no such environment variable") as err:
        load_password(password_env="NOT_SET_ANYWHERE")
    with pytest.raises(ConfigError, match="cannot be read"):
        load_password(str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="not both"):
        load_password(str(secret), "PACS_PW")
    cfg = PacsConfig(url="https://pacs.example/dicom-web", username="user", password="hunter2")
    assert "hunter2" not in repr(cfg) and "hunter2" not in cfg.describe() and "hunter2" not in str(err.value)
    assert cfg.describe() == "dicomweb https://pacs.example/dicom-web"
    with pytest.raises(ConfigError, match="url holds credentials") as err:
        PacsConfig(url="https://user:hunter2@pacs.example/dicom-web")
    assert "hunter2" not in str(err.value)


@pytest.mark.parametrize("kwargs, message", [
    ({"protocol": "hl7"}, "protocol"), ({"url": "pacs:8042"}, "url"), ({"protocol": "dimse"}, "host is empty"),
    ({"protocol": "dimse", "host": "h", "calling_aet": "A" * 17}, "AE title"), ({"retrieve": "push"}, "retrieve"),
    ({"keep_work": "sometimes"}, "keep_work"), ({"retries": -1}, "retries"), ({"timeout": 0}, "timeout"),
    ({"store_associations": 0}, "store_associations")])
def test_bad_settings_fail_before_anything_is_contacted(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        PacsConfig(**{"url": "http://pacs/dicom-web", **kwargs})


def test_transient_faults_are_retried_with_doubling_waits_then_reported():
    waits, calls = [], []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise PacsError("connection refused", transient=True)
        return "ok"

    assert with_retries(flaky, "op", retries=3, backoff_seconds=2, sleep=waits.append) == "ok"
    assert waits == [2, 4]
    calls.clear(), waits.clear()

    def down():
        calls.append(1)
        raise PacsError("503", transient=True)

    with pytest.raises(PacsError, match="gave up after 3 attempts") as err:
        with_retries(down, "op", retries=2, backoff_seconds=1, sleep=waits.append)
    assert err.value.transient and len(calls) == 3 and waits == [1, 2]


def test_refused_credentials_and_permanent_faults_are_not_retried():
    calls = []

    def refused():
        calls.append(1)
        raise PacsAuthError("HTTP 401")

    with pytest.raises(PacsAuthError):
        with_retries(refused, "op", retries=5, backoff_seconds=1, sleep=lambda s: pytest.fail("slept"))
    assert len(calls) == 1
