"""The yardstick's contract (pipeline.qa.yardstick), and that its callers score alike."""
import math

import numpy as np
import pytest

from pipeline.qa.yardstick import Score, mean_score, score_methods


def test_every_method_gets_the_same_copy_and_is_scored_clipped_against_the_clipped_reference():
    reference = np.zeros((16, 16), np.float32)
    reference[:, 8:] = 1.5  # above the window: the reference is clipped to 1 before scoring
    noisy = np.full((16, 16), 0.3, np.float32)
    seen = []

    def method(value):
        def run(x):
            seen.append(x)
            return np.where(reference > 0, value, 0.1).astype(np.float32)  # 0.1 off where the reference is 0
        return run

    scores = score_methods(reference, noisy, {"over": method(7.0), "exact": method(1.0)})
    assert all(x is noisy for x in seen) and len(seen) == 2
    # 7.0 is clipped to 1, which the clipped reference holds: both methods differ from it only by
    # 0.1 on half the pixels, MSE 0.005, PSNR 10 log10(1 / 0.005) with data range 1
    expected = 10 * math.log10(1 / 0.005)
    assert [s.psnr for s in scores["over"]] == pytest.approx([expected])
    assert scores["over"] == scores["exact"]
    assert 0 < scores["exact"][0].ssim < 1


def test_a_stack_gives_one_score_per_slice_and_a_context_copy_may_carry_neighbours():
    reference = np.random.default_rng(0).random((3, 16, 16), dtype=np.float32)
    scores = score_methods(reference, reference.copy(), {"same": lambda x: x}, with_ssim=False)
    assert [s.psnr for s in scores["same"]] == [math.inf] * 3
    assert all(math.isnan(s.ssim) for s in scores["same"])
    centre = reference[1]
    with_neighbours = score_methods(centre, reference, {"centre": lambda x: x[1]})  # (3, H, W) in, (H, W) out
    assert with_neighbours["centre"][0].psnr == math.inf
    with pytest.raises(ValueError, match="method 'whole' returned \\(3, 16, 16\\) for a copy of \\(16, 16\\)"):
        score_methods(centre, reference, {"whole": lambda x: x})


def test_time_is_summed_per_method_and_results_can_be_kept():
    ticks = iter([0.0, 1.5, 10.0, 10.25, 20.0, 21.0])
    seconds = {"a": 2.0}
    kept = {}
    ref = np.zeros((8, 8), np.float32)
    score_methods(ref, ref, {"a": lambda x: x + 2, "b": lambda x: x - 1}, seconds=seconds,
                  clock=lambda: next(ticks), keep=lambda name, r: kept.setdefault(name, r))
    assert seconds == {"a": 3.5, "b": 0.25}
    assert kept["a"].max() == 1.0 and kept["b"].min() == 0.0  # what is kept is the clipped result


def test_the_mean_leaves_out_identical_images():
    assert mean_score([Score(30.0, 0.9), Score(math.inf, 1.0), Score(40.0, 0.8)]) == Score(35.0, 0.9)


def test_training_validation_and_the_model_card_score_the_model_alike(tiny_conditioned_model):
    """Both go through the yardstick on the same references and seeds: the same PSNR."""
    import dataclasses

    from models.training.card import measure
    from models.training.config import TrainConfig
    from models.training.data import validation_set
    from models.training.train import evaluate

    cfg = dataclasses.replace(TrainConfig(), val_slices=2)
    refs = [dataclasses.replace(r, unit=r.unit[:128, :128]) for r in validation_set(cfg)]
    model = tiny_conditioned_model.model
    card = measure(model, refs, sigmas=(0.05,))["0.05"]["autoencoder"]["psnr_db"]
    try:
        assert evaluate(model, refs, 0.05) == pytest.approx(card, abs=1e-3)
    finally:
        model.eval()  # evaluate leaves a model in training mode; this one is shared
