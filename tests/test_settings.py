import pytest

from pipeline.errors import ConfigError
from pipeline.settings import Settings


def test_defaults_are_valid():
    s = Settings()
    assert s.as_dict()["window"] == {"low_hu": -1000.0, "high_hu": 1000.0}
    assert s.as_dict()["strength"] == "medium"  # recorded in every provenance.json


@pytest.mark.parametrize("kw,match", [
    ({"qa_sigma": -0.1}, "qa_sigma"),
    ({"batch_size": 0}, "batch_size"),
    ({"cpu_batch_size": 0}, "cpu_batch_size"),
    ({"series_folder": "../{series_uid}"}, "series_folder"),
    ({"series_folder": "{series_number}"}, "including one of"),  # not unique per series
    ({"series_folder": "{PatientName}"}, "series_folder"),
    ({"file_name": "a/{sop_uid}.dcm"}, "file_name"),
    ({"file_name": "{series_uid}.dcm"}, "including one of"),
    ({"series_description_suffix": "x" * 40}, "suffix"),
    ({"strength": "maximum"}, "strength must be low, medium, high, full, a percentage"),
])
def test_bad_settings_fail_before_any_file_is_read(kw, match):
    with pytest.raises(ConfigError, match=match):
        Settings(**kw)
