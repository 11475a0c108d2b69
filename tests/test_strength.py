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


def test_a_model_card_names_its_own_rule_for_blotchy_noise():
    from pipeline.inference.strength import LevelRule

    assert LevelRule.from_card({}) == LevelRule()  # cards before the field: the default rule
    flat = LevelRule.from_card({"level_rule": {"exponent": 0.5, "max_gain": 1.5}})
    assert model_level_hu(20.0, 1.0, flat) == 20.0
    assert model_level_hu(20.0, 0.8, flat) == pytest.approx(20.0 * 0.8**-0.5)  # 1.12x, not 2.9x
    assert model_level_hu(20.0, 0.1, flat) == 30.0  # at most 1.5x
    assert parse_strength("full").model_hu(20.0, 0.1, flat) == 30.0
    assert parse_strength("12").model_hu(20.0, 0.1, flat) == 12  # an absolute strength is told as it is
    for bad in ({"exponent": -1, "max_gain": 2}, {"exponent": 1, "max_gain": 0.5}, {"exponent": "x", "max_gain": 2},
                {"max_gain": 2}):
        with pytest.raises(ConfigError, match="level_rule"):
            LevelRule.from_card({"level_rule": bad})


def test_the_calibration_fit_finds_the_rule_that_loses_least():
    import numpy as np

    from bench.noise_level import fit_rule
    from pipeline.inference.strength import LevelRule

    gains = np.array([0.5, 1, 1.5, 2, 3, 4, 6])
    want = LevelRule(2.0, 4.0)

    def scores(whiteness):  # PSNR peaks at the gain the rule asks for, 1 dB lost per doubling away
        return -np.abs(np.log2(gains) - np.log2(want.gain(whiteness)))

    pairs = [(w, scores(w)) for w in (1.0, 1.1, 0.9, 0.8, 0.7, 0.6, 0.4, 0.3)]
    rule, loss = fit_rule(pairs, gains)
    assert (rule.exponent, rule.max_gain) == (2.0, 4.0) and -0.05 < loss <= 0  # grid points miss the peak a little
    default_loss = np.mean([np.interp(np.log(LevelRule().gain(w)), np.log(gains), sc) - sc.max() for w, sc in pairs])
    assert default_loss < loss - 0.3
    white_only = [(1.0, scores(1.0))] * 3
    assert fit_rule(white_only, gains)[1] == pytest.approx(0.0, abs=1e-9)
