"""The strength contract (pipeline/inference/strength.py): shares of the series' noise, or HU as before."""
import pytest

from pipeline.errors import ConfigError
from pipeline.inference.strength import DEFAULT_STRENGTH, SHARES, model_level_hu, parse_strength


@pytest.mark.parametrize(("text", "share", "label"), [
    ("low", 0.25, "low (25 % of the estimated noise)"), ("Medium", 0.5, "medium (50 % of the estimated noise)"),
    ("high", 0.75, "high (75 % of the estimated noise)"), ("full", 1.0, "full (100 % of the estimated noise)"),
    ("60%", 0.6, "60 % of the estimated noise"), (" 12.5 % ", 0.125, "12.5 % of the estimated noise"),
])
def test_relative_strengths_are_shares_of_the_series_noise(text, share, label):
    s = parse_strength(text)
    assert s.relative and s.share == share and s.hu is None and str(s) == label
    assert s.blend() == share and s.blend(noise_map=False) == share
    assert s.model_hu(30.0) == model_level_hu(30.0) == 30.0  # white noise: the level is the std itself
    with pytest.raises(ConfigError, match="is relative to the series' noise: no noise estimate given"):
        s.model_hu(None)


@pytest.mark.parametrize(("text", "hu", "blind_share"), [("20", 20.0, 0.5), ("40 HU", 40.0, 1.0), ("120hu", 120.0, 1.0)])
def test_numbers_in_hu_mean_what_they_meant(text, hu, blind_share):
    s = parse_strength(text)
    assert not s.relative and s.hu == hu and str(s) == f"{hu:g} HU"
    assert s.model_hu(None) == s.model_hu(3.0) == hu  # whatever the scan
    assert s.blend() == 1.0 and s.blend(noise_map=False) == blind_share


def test_the_default_is_relative_and_the_named_shares_are_ordered():
    assert parse_strength(DEFAULT_STRENGTH).relative
    assert SHARES["low"] < SHARES["medium"] < SHARES["high"] < SHARES["full"] == 1.0


def test_blotchy_noise_is_told_a_higher_level_than_white_noise_of_the_same_std():
    assert model_level_hu(20.0, 1.0) == model_level_hu(20.0, 1.2) == 20.0  # white, ramp-filtered, streaks
    assert 20.0 < model_level_hu(20.0, 0.95) < model_level_hu(20.0, 0.8) < model_level_hu(20.0, 0.6)
    assert model_level_hu(20.0, 0.8) == pytest.approx(20.0 * 0.8**-4.8)  # about 3x: blotchy noise
    assert model_level_hu(20.0, 0.6) == model_level_hu(20.0, 0.05) == 120.0  # at most 6x
    assert model_level_hu(0.0, 1.0) == 0.5  # never zero: a noise-free scan is left almost alone


@pytest.mark.parametrize("bad", ["maximum", "", "0", "-5", "nan", "inf", "501", "0%", "101%", "x%", "%"])
def test_bad_strengths_fail_in_one_line_naming_the_value(bad):
    with pytest.raises(ConfigError) as err:
        parse_strength(bad)
    message = str(err.value)
    assert message.startswith("strength must be low, medium, high, full, a percentage") and repr(bad) in message
    assert "\n" not in message
