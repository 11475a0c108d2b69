"""Real-scan measures of the derived series: noise in uniform soft tissue and strong-edge sharpness."""
import math

import cv2
import numpy as np
import pytest

from pipeline.qa.scan_measures import REGION_PX, measure_slice, summarize, uniform_regions


def _body(noise_hu: float, seed: int = 0) -> np.ndarray:
    """A 256x256 slice: air, a soft-tissue disc (40 HU) with a bone insert, white noise of noise_hu."""
    yy, xx = np.mgrid[:256, :256]
    hu = np.full((256, 256), -1000.0, np.float32)
    hu[(yy - 128) ** 2 + (xx - 128) ** 2 < 100**2] = 40.0
    hu[110:146, 60:80] = 900.0
    return hu + np.random.default_rng(seed).normal(0, noise_hu, hu.shape).astype(np.float32)


def test_uniform_regions_lie_in_soft_tissue_away_from_bone_and_air():
    hu = _body(10.0)
    regions = uniform_regions(hu)
    assert len(regions) >= 8
    for r, c in regions:
        block = hu[r:r + REGION_PX, c:c + REGION_PX]
        assert -20 < block.mean() < 120
        assert ((r + 7 - 128) ** 2 + (c + 7 - 128) ** 2) < 100**2  # inside the body
        assert not (r + REGION_PX > 105 and r < 151 and c + REGION_PX > 55 and c < 85)  # not at the bone
    assert uniform_regions(np.full((256, 256), -1000.0, np.float32)) == []  # no soft tissue: none


def test_noise_and_edges_before_and_after():
    hu = _body(20.0)
    smooth = cv2.GaussianBlur(hu, (0, 0), 2.0)
    m = measure_slice(hu, smooth, pixel_mm=0.5)
    assert m.noise_hu_before == pytest.approx(20.0, rel=0.1)
    assert m.noise_hu_after < 0.35 * m.noise_hu_before and m.noise_reduction > 0.65
    assert m.edge_kept < 0.85  # the blur softened the body outline and the bone
    same = measure_slice(hu, hu, pixel_mm=0.5)
    assert same.edge_kept == 1.0 and same.noise_reduction == 0.0
    # edges are in HU per mm: the same pixels read as 1 mm pixels have half the gradient
    assert measure_slice(hu, hu, pixel_mm=1.0).edge_before == pytest.approx(same.edge_before / 2)


def test_series_summary_is_the_median_and_tolerates_slices_without_soft_tissue():
    a = measure_slice(_body(10.0, 1), _body(5.0, 2), 0.7)
    air = np.full((256, 256), -1000.0, np.float32)
    air[100:150, 100:150] = 900.0
    b = measure_slice(air, air, 0.7)
    assert math.isnan(b.noise_hu_before) and b.regions == []
    s = summarize([a, b])
    assert s.noise_hu_before == a.noise_hu_before and s.edge_before == pytest.approx(np.median([a.edge_before, b.edge_before]))
