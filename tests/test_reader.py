import numpy as np
import pydicom
import pytest

from pipeline.dicom.discovery import scan
from pipeline.dicom.reader import load_series, to_hu
from pipeline.errors import InputError
from tests.conftest import SAMPLES, ct_dataset


def _only_series(result):
    (study,) = result.studies.values()
    (series,) = study.series.values()
    return series


def test_shuffled_oblique_series_is_ordered_along_the_slice_normal(tmp_path, series_writer):
    n = 7
    vol = np.stack([np.full((16, 16), 1000 + 10 * k, np.uint16) for k in range(n)])
    rng = np.random.default_rng(3)
    names = [f"x{v}" for v in rng.permutation(1000)[:n]]  # names say nothing about order
    # an oblique stack: normal not along z, so sorting by the z coordinate alone would be wrong
    c, s = np.cos(0.5), np.sin(0.5)
    series_writer(tmp_path / "st", vol, names=names, z0=-5.0, dz=1.5, orientation=(1, 0, 0, 0, c, s))
    series = load_series(_only_series(scan(tmp_path / "st")))
    # slice k was written with stored value 1000 + 10k at position z0 + k dz along the normal
    np.testing.assert_allclose(series.hu[:, 0, 0], [1000 + 10 * k - 1024 for k in range(n)])
    assert [int(d.InstanceNumber) for d in series.datasets] == list(range(1, n + 1))


def test_sample_series_with_shuffled_file_names_loads_in_position_order():
    refs = scan(SAMPLES / "chest")
    series = [load_series(ref) for ref in next(iter(refs.studies.values())).series.values()]
    assert len(series) == 2
    for s in series:
        z = [float(d.ImagePositionPatient[2]) for d in s.datasets]
        assert z == sorted(z) and len(z) == 16
        assert [p.name for p in s.paths] != sorted(p.name for p in s.paths)  # the names really are shuffled


def test_hu_conversion_uses_slope_and_intercept():
    stored = np.array([[0, 100], [2000, 4095]], dtype=np.uint16)
    ds = ct_dataset(stored, z=0.0, slope=2.0, intercept=-1000.0, bits_stored=12)
    np.testing.assert_array_equal(to_hu(ds, "mem"), [[-1000, -800], [3000, 7190]])
    signed = ct_dataset(np.array([[-2000, 0]], dtype=np.int16), z=0.0, slope=0.5, intercept=0.0)
    np.testing.assert_array_equal(to_hu(signed, "mem"), [[-1000, 0]])


def test_scan_groups_studies_and_skips_non_dicom_with_a_reason(tmp_path, series_writer):
    series_writer(tmp_path / "a" / "deep" / "er", np.zeros((2, 16, 16), np.uint16), study="A")
    series_writer(tmp_path / "b", np.zeros((3, 16, 16), np.uint16), study="B", series="s9")
    (tmp_path / "notes.dcm").write_text("not dicom at all")
    (tmp_path / "empty").write_bytes(b"")
    result = scan(tmp_path)
    assert sorted(len(next(iter(s.series.values())).files) for s in result.studies.values()) == [2, 3]
    reasons = {p.split("/")[-1]: r for p, r in ((s.path, s.reason) for s in result.skipped)}
    assert reasons["notes.dcm"].startswith("not a DICOM file")
    assert "empty" in reasons


def test_non_ct_and_localizer_are_skipped(tmp_path):
    mr = ct_dataset(np.zeros((16, 16), np.uint16), z=0.0)
    mr.Modality = "MR"
    mr.save_as(tmp_path / "mr.dcm", enforce_file_format=True)
    loc = ct_dataset(np.zeros((16, 16), np.uint16), z=1.0, index=2)
    loc.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    loc.save_as(tmp_path / "loc.dcm", enforce_file_format=True)
    result = scan(tmp_path)
    assert not result.studies
    assert sorted(s.reason for s in result.skipped) == ["ImageType LOCALIZER (localizer, screen save or dose information)",
                                                          "modality MR is not CT"]


def test_missing_position_falls_back_to_instance_number_with_warning(tmp_path):
    for k, inst in enumerate([3, 1, 2]):
        ds = ct_dataset(np.full((16, 16), inst, np.uint16), z=float(k), index=inst)
        del ds.ImagePositionPatient
        ds.save_as(tmp_path / f"f{k}", enforce_file_format=True)
    series = load_series(_only_series(scan(tmp_path)))
    assert series.hu[:, 0, 0].tolist() == [1 - 1024, 2 - 1024, 3 - 1024]
    assert any("InstanceNumber" in w for w in series.warnings)


def test_duplicate_position_keeps_higher_acquisition_number(tmp_path):
    for k, (z, acq, val) in enumerate([(0.0, 1, 10), (0.0, 2, 20), (2.0, 1, 30)]):
        ds = ct_dataset(np.full((16, 16), val, np.uint16), z=z, index=k + 1)
        ds.AcquisitionNumber = acq
        ds.save_as(tmp_path / f"f{k}", enforce_file_format=True)
    series = load_series(_only_series(scan(tmp_path)))
    assert series.hu[:, 0, 0].tolist() == [20 - 1024, 30 - 1024]
    assert any("duplicate position" in w for w in series.warnings)
    (dropped,) = series.dropped
    assert dropped.path.endswith("f0") and dropped.reason.startswith("duplicate position 0.0 mm")


def test_lone_odd_sized_image_in_a_series_is_skipped_with_its_name(tmp_path, series_writer):
    series_writer(tmp_path, np.zeros((2, 16, 16), np.uint16))
    odd = ct_dataset(np.zeros((20, 20), np.uint16), z=10.0, index=3)
    odd.save_as(tmp_path / "odd.dcm", enforce_file_format=True)
    result = scan(tmp_path)
    series = load_series(_only_series(result))
    assert len(series) == 2
    (skip,) = result.skipped
    assert skip.path.endswith("odd.dcm") and "matrix or pixel spacing differs" in skip.reason


def test_series_mixing_two_stacks_is_split(tmp_path, series_writer):
    series_writer(tmp_path / "ax", np.zeros((3, 16, 16), np.uint16))
    series_writer(tmp_path / "cor", np.ones((2, 16, 16), np.uint16), orientation=(1, 0, 0, 0, 0, -1), index_offset=3)
    (study,) = scan(tmp_path).studies.values()
    stacks = sorted(study.series.values(), key=lambda r: r.stack)
    assert [(r.stack, r.stacks, len(r.files)) for r in stacks] == [(0, 2, 3), (1, 2, 2)]
    assert stacks[0].series_uid == stacks[1].series_uid and stacks[0].key != stacks[1].key
    assert [len(load_series(r)) for r in stacks] == [3, 2]


def test_truncated_pixel_data_gives_one_line_error_naming_the_file(tmp_path, series_writer):
    (path,) = series_writer(tmp_path, np.zeros((1, 16, 16), np.uint16))
    data = path.read_bytes()
    path.write_bytes(data[:-300])
    with pytest.raises(InputError) as err:
        load_series(_only_series(scan(tmp_path)))
    assert str(err.value).startswith(str(path) + ": ") and "\n" not in str(err.value)


def test_scan_does_not_modify_inputs(tmp_path, series_writer):
    paths = series_writer(tmp_path, np.arange(2 * 256, dtype=np.uint16).reshape(2, 16, 16))
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in paths}
    load_series(_only_series(scan(tmp_path)))
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in paths} == before
    assert pydicom.dcmread(paths[0]).PixelData  # still complete
