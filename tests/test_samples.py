import hashlib

import numpy as np
import pydicom
import pytest

from pipeline.dicom.discovery import scan
from pipeline.dicom.reader import load_series
from pipeline.synthetic.samples import STUDIES, generate
from tests.conftest import SAMPLES


def _digests(root):
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_generator_reproduces_the_committed_samples_byte_for_byte(tmp_path):
    generate(tmp_path)
    assert _digests(tmp_path) == _digests(SAMPLES)


def test_samples_fit_the_size_budget():
    assert sum(p.stat().st_size for p in SAMPLES.rglob("*") if p.is_file()) <= 20 * 10**6


@pytest.mark.parametrize("spec", STUDIES, ids=lambda s: s.key)
def test_sample_studies_are_scanner_like_ct(spec):
    result = scan(SAMPLES / spec.key)
    assert not result.skipped
    (study,) = result.studies.values()
    assert len(study.series) == len(spec.series)
    for ref in study.series.values():
        series = load_series(ref)
        assert series.hu.shape == (spec.slices, 512, 512) and spec.slices >= 16
        ds = series.datasets[0]
        assert ds.SOPClassUID == pydicom.uid.CTImageStorage and ds.Modality == "CT"
        assert list(ds.ImageType) == ["ORIGINAL", "PRIMARY", "AXIAL"]
        for kw in ("PatientName", "PatientID", "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID",
                   "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness",
                   "RescaleSlope", "RescaleIntercept", "WindowCenter", "WindowWidth", "KVP"):
            assert kw in ds, kw
        assert str(ds.PatientName).startswith("PHANTOM^") and ds.PatientID.startswith("FAKE-")
        hu = series.hu
        body = hu[:, 200:312, 200:312]
        assert hu.min() <= -1000 and hu.max() > 1000  # air and cortical bone
        # tissues present: fat, soft tissue and bone marrow in the body centre region
        for lo, hi in ((-150, -50), (20, 80), (150, 400)):
            assert ((body > lo) & (body < hi)).mean() > 0.003, (lo, hi)
        if spec.region == "chest":
            assert ((hu > -950) & (hu < -700)).mean() > 0.05  # lungs
        z = [float(d.ImagePositionPatient[2]) for d in series.datasets]
        np.testing.assert_allclose(np.diff(z), spec.thickness_mm)
