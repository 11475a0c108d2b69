import pytest

from pipeline.dicom.uids import derived_uid, is_valid_uid, path_safe_uid


def test_derived_uids_are_valid_deterministic_and_input_dependent():
    a = derived_uid("1.2.3", "model-a")
    assert is_valid_uid(a) and a.startswith("2.25.") and len(a) <= 64
    assert derived_uid("1.2.3", "model-a") == a
    assert derived_uid("1.2.3", "model-b") != a
    assert derived_uid("1.2.4", "model-a") != a


@pytest.mark.parametrize("uid", ["1.2.840.10008.5.1.4.1.1.2", "2.25.0"])
def test_valid_uids(uid):
    assert is_valid_uid(uid)
    assert path_safe_uid(uid) == uid


@pytest.mark.parametrize("uid", ["../etc", "1.2/3", "1.2.\n3", "", "1." + "2" * 70, "1..2", None])
def test_unsafe_uids_never_reach_a_path(uid):
    with pytest.raises(ValueError, match="not a DICOM UID"):
        path_safe_uid(uid)


def test_leading_zero_component_is_invalid_uid_but_path_safe():
    assert not is_valid_uid("1.02.3")
    assert path_safe_uid("1.02.3") == "1.02.3"
