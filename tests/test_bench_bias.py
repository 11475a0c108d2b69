"""bench/bias.py: a method's error over several noisy copies split exactly into its bias and the
noise it leaves."""
import math

import numpy as np
import pytest

from bench import bias


def _copies(k=4):
    rng = np.random.default_rng(3)
    ref = rng.uniform(0.2, 0.8, (48, 48)).astype(np.float32)
    return ref, [(ref + rng.normal(0, 0.05, ref.shape).astype(np.float32), 0.05) for _ in range(k)]


def test_a_method_that_leaves_the_copy_alone_has_no_bias_and_leaves_all_the_noise():
    ref, copies = _copies()
    s = bias.split(ref, copies, lambda x, s: x)
    err = np.mean([np.mean((np.clip(x, 0, 1) - ref) ** 2) for x, _ in copies])
    assert s.error == pytest.approx(-10 * np.log10(err))
    assert s.bias > s.error + 5  # the mean of 4 copies is near the slice
    assert s.left == pytest.approx(s.error + 10 * np.log10(4 / 3), abs=0.3)  # spread about the mean: 3/4 of it


def test_a_shift_is_bias_and_a_constant_result_leaves_no_noise():
    ref, copies = _copies()
    shifted = bias.split(ref, copies, lambda x, s: np.full_like(x, 0.0) + ref + 0.01)  # ref + 0.01, noise removed
    assert shifted.bias == pytest.approx(40.0, abs=1e-3) and shifted.error == pytest.approx(40.0, abs=1e-3)
    assert math.isinf(shifted.left)
    # the three parts add up: error MSE = bias MSE + noise-left MSE
    s = bias.split(ref, copies, lambda x, s: 0.5 * (x + ref) + 0.01)
    assert 10 ** (-s.error / 10) == pytest.approx(10 ** (-s.bias / 10) + 10 ** (-s.left / 10), rel=1e-6)
    assert s.inside == 1.0  # the slice lies inside the window
    half = ref.copy()
    half[:, :24] = -0.1  # air below the window: clipped to 0 in the reference
    air = bias.split(half, copies, lambda x, s, h=half: np.where(h < 0, 0.01, np.clip(h, 0, 1)))
    assert air.inside == 0.0 and air.bias == pytest.approx(43.01, abs=0.01)  # half the pixels 0.01 off
    with pytest.raises(ValueError, match="at least two"):
        bias.split(ref, copies[:1], lambda x, s: x)


def test_each_copy_tells_the_method_its_own_std():
    ref, copies = _copies(2)
    told = []
    bias.split(ref, [(copies[0][0], 0.03), (copies[1][0], 0.07)], lambda x, s: told.append(s) or x)
    assert told == [0.03, 0.07]


def test_the_shipped_model_on_pydicoms_slices_prints_one_row_per_slice_source_and_method(capsys):
    bias.main(["--parts", "pydicom", "--levels", "0.02", "--seeds", "2", "--no-bm3d"])
    rows = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines() if line.startswith("| 0.02")]
    assert [(r[2].strip(), r[3].strip()) for r in rows] == [
        ("CT_small (1)", "autoencoder_told"), ("head512 (1)", "autoencoder_told"), ("all (2)", "autoencoder_told")]
    error, bias_db, left = (float(c) for c in rows[-1][4:7])
    assert error > 34.5  # better than the copy (33.98 dB at 0.02)
    assert bias_db > error and left > error  # each part of the error is smaller than the whole
    with pytest.raises(SystemExit, match="at least 2"):
        bias.main(["--parts", "pydicom", "--seeds", "1"])


def test_max_slices_spreads_them_over_the_part_in_order():
    assert bias.spread(list(range(10)), 4) == [0, 3, 6, 9]
    assert bias.spread(list(range(3)), 5) == [0, 1, 2] and bias.spread([7, 8], None) == [7, 8]
