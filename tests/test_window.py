import numpy as np
import pytest

from pipeline.inference.window import Window, hu_to_unit, unit_to_hu


def test_window_maps_edges_to_0_and_1():
    w = Window(-1000, 1000)
    assert hu_to_unit(np.array([-1000.0, 0.0, 1000.0]), w).tolist() == [0.0, 0.5, 1.0]


def test_round_trip_keeps_values_outside_the_window():
    w = Window(-1000, 1000)
    hu = np.array([-3024.0, -1024.0, -1000.0, 40.0, 1000.0, 1800.0, 3071.0], dtype=np.float32)
    unit = hu_to_unit(hu, w)
    assert unit.min() < 0 and unit.max() > 1  # not clipped
    np.testing.assert_allclose(unit_to_hu(unit, w), hu, atol=1e-3)


def test_clip_only_when_asked():
    w = Window(-160, 240)
    unit = hu_to_unit(np.array([-1000.0, 40.0, 2000.0]), w, clip=True)
    np.testing.assert_allclose(unit, [0.0, 0.5, 1.0])


@pytest.mark.parametrize("low,high", [(100, 100), (200, -200), (float("nan"), 1)])
def test_bad_window_is_refused(low, high):
    with pytest.raises(ValueError, match="low < high"):
        Window(low, high)
