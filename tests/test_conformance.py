"""Written series checked by real validators: dciodvfy, dcentvfy (dicom3tools), dcmdump (dcmtk)."""
import re
import shutil
import subprocess

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from pipeline.dicom.discovery import scan
from pipeline.inference.denoiser import Denoiser
from pipeline.settings import Settings
from pipeline.study_run import process_scan
from tests.conftest import SAMPLES, ct_dataset, sitk_series


def _tool(name):
    path = shutil.which(name)
    if not path:
        pytest.fail(f"{name} missing: run bash .ci/install-dicom-tools")
    return path


def _errors(path):
    """dciodvfy's "Error" lines, without the file-specific parts (values, element paths)."""
    proc = subprocess.run([_tool("dciodvfy"), str(path)], capture_output=True, text=True)
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith("Error")]
    return {re.sub(r"\"[^\"]*\"|\d+", "#", ln) for ln in lines}  # values and numbers vary



@pytest.fixture(scope="module")
def abdomen_out(tmp_path_factory, tiny_model):
    out = tmp_path_factory.mktemp("conf")
    (outcome,) = process_scan(scan(SAMPLES / "abdomen"), out, Settings(progress=False), Denoiser(tiny_model, "cpu"))
    return outcome


def test_dciodvfy_finds_no_new_errors_and_dcmdump_reads_every_output(abdomen_out):
    (series,) = abdomen_out.series
    files = sorted((abdomen_out.folder / series.derived_series_uid).glob("*.dcm"))
    sources = {str(ds.SOPInstanceUID): p for p in (SAMPLES / "abdomen").iterdir()
               for ds in [pydicom.dcmread(p, stop_before_pixels=True)]}
    assert len(files) == 16
    for f in files:
        src = sources[pydicom.dcmread(f, stop_before_pixels=True).SourceImageSequence[0].ReferencedSOPInstanceUID]
        new = _errors(f) - _errors(src)
        assert not new, (f.name, new)
        assert subprocess.run([_tool("dcmdump"), str(f)], capture_output=True).returncode == 0


def test_dcentvfy_finds_the_output_series_consistent(abdomen_out):
    (series,) = abdomen_out.series
    files = sorted(str(p) for p in (abdomen_out.folder / series.derived_series_uid).glob("*.dcm"))
    proc = subprocess.run([_tool("dcentvfy"), *files], capture_output=True, text=True)
    assert proc.returncode == 0 and "Error" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    uids = [pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in files]
    assert len(set(uids)) == len(uids)


def test_simpleitk_geometry_and_padding_of_the_signed_sample(abdomen_out):
    (series,) = abdomen_out.series
    src, out = sitk_series(SAMPLES / "abdomen"), sitk_series(abdomen_out.folder / series.derived_series_uid)
    assert out.GetSize() == src.GetSize()
    np.testing.assert_allclose(out.GetSpacing(), src.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(out.GetOrigin(), src.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(out.GetDirection(), src.GetDirection(), atol=1e-6)
    a_src, a_out = sitk.GetArrayFromImage(src), sitk.GetArrayFromImage(out)
    np.testing.assert_array_equal(a_out == a_src.min(), a_src == a_src.min())  # padding pixels identical


def test_gantry_tilted_stack_keeps_each_slice_geometry(tmp_path, tiny_model):
    """A tilted acquisition is a sheared stack: positions move in y as z changes. No resampling:
    every output slice carries its source slice's position."""
    src = tmp_path / "tilt"
    src.mkdir()
    tilt = np.deg2rad(15.0)
    for k in range(6):
        ds = ct_dataset(np.full((32, 32), 1000 + 20 * k, np.uint16), z=2.0 * k, index=k + 1)
        ds.GantryDetectorTilt = 15
        ds.ImagePositionPatient = [-20.0, round(-30.0 + 2.0 * k * np.tan(tilt), 4), 2.0 * k]
        ds.save_as(src / f"t{k}", enforce_file_format=True)
    (outcome,) = process_scan(scan(src), tmp_path / "out", Settings(progress=False), Denoiser(tiny_model, "cpu"))
    files = sorted((outcome.folder / outcome.series[0].derived_series_uid).glob("*.dcm"))
    src_pos = sorted(tuple(map(float, pydicom.dcmread(p).ImagePositionPatient)) for p in src.iterdir())
    out_pos = sorted(tuple(map(float, pydicom.dcmread(p).ImagePositionPatient)) for p in files)
    np.testing.assert_allclose(out_pos, src_pos, atol=1e-4)
    assert all(pydicom.dcmread(p).GantryDetectorTilt == 15 for p in files)
    by_uid = {pydicom.dcmread(p).SOPInstanceUID: p for p in src.iterdir()}
    for f in files:
        source = by_uid[pydicom.dcmread(f).SourceImageSequence[0].ReferencedSOPInstanceUID]
        assert not _errors(f) - _errors(source)


def test_variable_slice_spacing_round_trips_without_resampling(tmp_path, tiny_model):
    src = tmp_path / "var"
    src.mkdir()
    zs = [0.0, 1.0, 3.0, 7.0, 7.5]
    for k, z in enumerate(zs):
        ct_dataset(np.full((32, 32), 1000, np.uint16), z=z, index=k + 1).save_as(src / f"v{k}", enforce_file_format=True)
    (outcome,) = process_scan(scan(src), tmp_path / "out", Settings(progress=False), Denoiser(tiny_model, "cpu"))
    files = sorted((outcome.folder / outcome.series[0].derived_series_uid).glob("*.dcm"))
    assert [float(pydicom.dcmread(f).ImagePositionPatient[2]) for f in files] == zs
