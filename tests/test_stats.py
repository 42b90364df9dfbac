"""The promises of compress.measure.stats: intervals cover, tests match hand-worked values, bad input says
what to fix."""

from __future__ import annotations

import json

import numpy as np
import pytest

from compress.measure.stats import (
    Interval,
    McNemar,
    ShiftTest,
    TimingSummary,
    chi2_shift,
    ks_shift,
    mcnemar_exact,
    paired_bootstrap_diff,
    psi,
    psi_categorical,
    ratio_interval,
    required_sample_size,
    summarize_timings,
)


def simulate_pairs(rng: np.random.Generator, n: int, cell_probs: dict[str, float]):
    """Paired correctness drawn from joint cells: both right, variant only, baseline only, none."""
    cells = rng.choice(
        4, size=n, p=[cell_probs[k] for k in ("both", "variant", "baseline", "none")]
    )
    correct_variant = (cells == 0) | (cells == 1)
    correct_baseline = (cells == 0) | (cells == 2)
    return correct_variant, correct_baseline


# Models that agree on most samples, as a compressed model and its baseline do. True difference:
# variant accuracy 0.77 - baseline accuracy 0.80 = -3 points.
CORRELATED = {"both": 0.72, "variant": 0.05, "baseline": 0.08, "none": 0.15}
TRUE_DIFF_POINTS = -3.0


# --- paired_bootstrap_diff ------------------------------------------------------------------------


def test_bootstrap_interval_covers_true_difference_at_nominal_rate():
    rng = np.random.default_rng(12345)
    n_datasets = 200
    covered = 0
    for i in range(n_datasets):
        variant, baseline = simulate_pairs(rng, 400, CORRELATED)
        interval = paired_bootstrap_diff(variant, baseline, n_resamples=1000, seed=i)
        covered += interval.low <= TRUE_DIFF_POINTS <= interval.high
    # 95% nominal; 0.90-0.99 is about +-3 binomial standard errors for 200 datasets. An unpaired
    # interval would be far too wide here and cover ~100% of the time.
    assert 0.90 <= covered / n_datasets <= 0.99


def test_bootstrap_estimate_is_plain_difference_in_points():
    variant = np.array([1, 1, 1, 0, 0, 1, 0, 1, 1, 1])  # 7 / 10
    baseline = np.array([1, 1, 1, 1, 0, 1, 1, 1, 1, 1])  # 9 / 10
    interval = paired_bootstrap_diff(variant, baseline)
    assert interval.estimate == pytest.approx(-20.0)
    assert interval.confidence == 0.95
    assert interval.low <= interval.estimate <= interval.high


def test_bootstrap_is_seeded():
    rng = np.random.default_rng(0)
    variant, baseline = simulate_pairs(rng, 500, CORRELATED)
    first = paired_bootstrap_diff(variant, baseline, seed=7)
    assert paired_bootstrap_diff(variant, baseline, seed=7) == first
    assert paired_bootstrap_diff(variant, baseline, seed=8) != first


def test_bootstrap_is_paired_identical_predictions_give_zero_width():
    correct = np.random.default_rng(1).random(300) < 0.7
    interval = paired_bootstrap_diff(correct, correct.copy())
    assert (interval.estimate, interval.low, interval.high) == (0.0, 0.0, 0.0)


def test_bootstrap_width_matches_paired_standard_error():
    variant, baseline = simulate_pairs(np.random.default_rng(3), 10_000, CORRELATED)
    interval = paired_bootstrap_diff(variant, baseline, n_resamples=2000)
    d = variant.astype(float) - baseline.astype(float)
    expected_half_width = 1.959964 * d.std() / np.sqrt(d.size) * 100
    assert (interval.high - interval.low) / 2 == pytest.approx(expected_half_width, rel=0.1)


def test_interval_is_frozen_and_json_ready():
    interval = paired_bootstrap_diff([1, 0, 1, 1], [1, 1, 0, 1], n_resamples=100)
    with pytest.raises(AttributeError):
        interval.low = 0.0  # type: ignore[misc]
    as_dict = interval.to_dict()
    assert set(as_dict) == {"estimate", "low", "high", "confidence"}
    assert all(type(value) is float for value in as_dict.values())
    json.dumps(as_dict)


# --- mcnemar_exact --------------------------------------------------------------------------------


def pairs_with_discordance(n_variant_only: int, n_baseline_only: int, n_both: int = 20):
    variant = [1] * n_variant_only + [0] * n_baseline_only + [1] * n_both
    baseline = [0] * n_variant_only + [1] * n_baseline_only + [1] * n_both
    return np.array(variant), np.array(baseline)


def test_mcnemar_matches_hand_worked_example():
    # b=1, c=9: two-sided exact p = 2 * (C(10,0) + C(10,1)) / 2^10 = 2 * 11 / 1024 = 0.021484375
    result = mcnemar_exact(*pairs_with_discordance(1, 9))
    assert result == McNemar(
        n_variant_only=1, n_baseline_only=9, p_value=pytest.approx(0.021484375)
    )


def test_mcnemar_is_symmetric():
    variant, baseline = pairs_with_discordance(3, 11)
    forward = mcnemar_exact(variant, baseline)
    backward = mcnemar_exact(baseline, variant)
    assert (backward.n_variant_only, backward.n_baseline_only) == (11, 3)
    assert backward.p_value == pytest.approx(forward.p_value)


def test_mcnemar_without_discordant_pairs_is_one():
    correct = np.array([True, False, True, True])
    result = mcnemar_exact(correct, correct)
    assert result.to_dict() == {"n_variant_only": 0, "n_baseline_only": 0, "p_value": 1.0}


# --- required_sample_size -------------------------------------------------------------------------


def test_required_sample_size_worked_example():
    # z(0.975) = 1.959964; n = (z * 100 / margin)^2 * p_disc
    # margin 1 point, p_disc 0.1: 1.959964^2 * 10000 * 0.1 = 3841.46 -> 3842
    # margin 2 points:            3841.46 / 4             =  960.36 ->  961
    assert required_sample_size(0.1, 1.0) == 3842
    assert required_sample_size(0.1, 2.0) == 961


def test_required_sample_size_grows_as_margin_shrinks():
    sizes = [required_sample_size(0.05, margin) for margin in (4.0, 2.0, 1.0, 0.5)]
    assert sizes == sorted(sizes)
    assert len(set(sizes)) == len(sizes)
    assert required_sample_size(0.05, 1.0, confidence=0.99) > required_sample_size(0.05, 1.0)


def test_required_sample_size_makes_the_margin_hold():
    # At the returned n the normal half-width is within the margin; one sample fewer it is not.
    p_disc, margin = 0.08, 1.5
    n = required_sample_size(p_disc, margin)

    def half_width(k):
        return 1.959964 * np.sqrt(p_disc / k) * 100

    assert half_width(n) <= margin < half_width(n - 1)


# --- PSI ------------------------------------------------------------------------------------------


def test_psi_of_identical_arrays_is_zero():
    scores = np.random.default_rng(0).random(1000)
    assert psi(scores, scores.copy()) == 0.0
    labels = np.random.default_rng(0).integers(0, 5, 1000)
    assert psi_categorical(labels, labels.copy(), n_classes=5) == 0.0


def test_psi_reads_no_shift_for_same_distribution_and_major_for_one_sigma():
    rng = np.random.default_rng(0)
    reference = rng.normal(0.0, 1.0, 10_000)
    assert psi(reference, rng.normal(0.0, 1.0, 10_000)) < 0.1
    small = psi(reference, rng.normal(0.2, 1.0, 10_000))
    large = psi(reference, rng.normal(1.0, 1.0, 10_000))
    assert small < large
    assert large > 0.25


def test_psi_counts_current_values_outside_the_reference_range():
    reference = np.linspace(0.0, 1.0, 1000)
    assert psi(reference, reference + 5.0) > 0.25


def test_psi_handles_reference_with_ties():
    # Confidence scores often sit at exactly 1.0: duplicate quantile edges must collapse, not crash.
    reference = np.concatenate([np.ones(900), np.linspace(0.5, 0.99, 100)])
    assert psi(reference, reference.copy()) == 0.0
    assert psi(reference, np.full(500, 0.6)) > 0.25


def test_psi_categorical_matches_formula():
    # reference frequencies [0.5, 0.5], current [0.25, 0.75]
    reference = [0, 1] * 50
    current = [0] * 25 + [1] * 75
    expected = (0.25 - 0.5) * np.log(0.25 / 0.5) + (0.75 - 0.5) * np.log(0.75 / 0.5)
    assert psi_categorical(reference, current, n_classes=3) == pytest.approx(expected)


# --- KS and chi-square ----------------------------------------------------------------------------


def test_ks_shift_same_distribution_large_p_shifted_small_p():
    rng = np.random.default_rng(0)
    reference = rng.normal(0.0, 1.0, 2000)
    same = ks_shift(reference, rng.normal(0.0, 1.0, 2000))
    shifted = ks_shift(reference, rng.normal(0.5, 1.0, 2000))
    assert same.method == shifted.method == "ks"
    assert same.p_value > 0.05
    assert shifted.p_value < 1e-3
    assert shifted.statistic > same.statistic


def test_chi2_shift_same_distribution_large_p_shifted_small_p():
    rng = np.random.default_rng(0)
    # Class 4 is never predicted by either sample: its empty column must be dropped.
    reference = rng.choice(5, 3000, p=[0.4, 0.3, 0.2, 0.1, 0.0])
    same = chi2_shift(reference, rng.choice(5, 3000, p=[0.4, 0.3, 0.2, 0.1, 0.0]), n_classes=5)
    shifted = chi2_shift(
        reference, rng.choice(5, 3000, p=[0.25, 0.25, 0.25, 0.25, 0.0]), n_classes=5
    )
    assert same.method == "chi2"
    assert np.isfinite(same.statistic)
    assert same.p_value > 0.05
    assert shifted.p_value < 1e-3


def test_chi2_shift_is_pearson_statistic_without_yates_correction():
    # Table [[30, 70], [50, 50]]; expected [[40, 60], [40, 60]].
    # chi2 = 2 * (10^2 / 40 + 10^2 / 60) = 8.3333..., 1 degree of freedom.
    result = chi2_shift([0] * 30 + [1] * 70, [0] * 50 + [1] * 50, n_classes=2)
    assert result.statistic == pytest.approx(25 / 3)
    assert result.p_value == pytest.approx(0.0038924, rel=1e-4)


def test_chi2_shift_single_predicted_class_is_no_shift():
    assert chi2_shift([2] * 10, [2] * 30, n_classes=4) == ShiftTest(0.0, 1.0, "chi2")


# --- timings --------------------------------------------------------------------------------------


def test_summarize_timings_known_percentiles():
    summary = summarize_timings(np.arange(1, 101, dtype=float))
    # numpy linear interpolation over 1..100: position q * 99 from the first sample.
    assert summary.n == 100
    assert summary.p50_ms == pytest.approx(50.5)
    assert summary.p90_ms == pytest.approx(90.1)
    assert summary.p99_ms == pytest.approx(99.01)
    assert summary.mean_ms == pytest.approx(50.5)
    assert summary.min_ms == 1.0
    assert summary.cv == pytest.approx(np.std(np.arange(1, 101), ddof=1) / 50.5)
    assert summary.p50_low_ms <= summary.p50_ms <= summary.p50_high_ms
    assert summary.p50_low_ms < summary.p50_high_ms


def test_summarize_timings_is_seeded_and_json_ready():
    samples = np.random.default_rng(0).gamma(4.0, 2.0, 500)
    first = summarize_timings(samples, seed=3)
    assert summarize_timings(samples, seed=3) == first
    as_dict = first.to_dict()
    assert set(as_dict) == set(TimingSummary.__dataclass_fields__)
    assert type(as_dict["n"]) is int
    json.dumps(as_dict)


def test_ratio_interval_of_constant_timings_is_exact():
    assert ratio_interval(np.full(50, 10.0), np.full(40, 5.0)) == Interval(2.0, 2.0, 2.0, 0.95)


def test_ratio_interval_brackets_the_true_speedup():
    rng = np.random.default_rng(0)
    reference = rng.normal(20.0, 1.0, 300)
    variant = rng.normal(10.0, 0.5, 300)
    interval = ratio_interval(reference, variant)
    assert interval.low < 2.0 < interval.high
    assert interval.estimate == pytest.approx(np.median(reference) / np.median(variant))


# --- bad input ------------------------------------------------------------------------------------

GOOD = np.array([1, 0, 1, 1, 0, 1])

BAD_INPUTS = [
    (paired_bootstrap_diff, ([], []), {}, "correct_variant is empty"),
    (paired_bootstrap_diff, (GOOD, GOOD[:-1]), {}, "6 samples but correct_baseline has 5"),
    (paired_bootstrap_diff, (GOOD, GOOD), {"confidence": 1.0}, "strictly between 0 and 1"),
    (paired_bootstrap_diff, (GOOD, GOOD), {"confidence": 95}, "strictly between 0 and 1"),
    (paired_bootstrap_diff, (GOOD, GOOD), {"n_resamples": 50}, "at least 100"),
    (paired_bootstrap_diff, ([0, 2, 1], [0, 1, 1]), {}, "booleans or 0/1"),
    (paired_bootstrap_diff, (GOOD.reshape(2, 3), GOOD.reshape(2, 3)), {}, "must be a 1-D array"),
    (mcnemar_exact, (GOOD, GOOD[:3]), {}, "same held-out samples"),
    (required_sample_size, (0.1, 0.0), {}, "margin_points must be a positive"),
    (required_sample_size, (0.1, -1.0), {}, "margin_points must be a positive"),
    (required_sample_size, (0.0, 1.0), {}, "rule of three"),
    (required_sample_size, (1.5, 1.0), {}, r"must lie in \(0, 1\]"),
    (required_sample_size, (0.1, 1.0), {"confidence": 0.0}, "strictly between 0 and 1"),
    (psi, ([], [1.0]), {}, "reference is empty"),
    (psi, ([1.0, np.nan], [1.0]), {}, "NaN or infinity"),
    (psi, ([1.0, 2.0], [1.0]), {"bins": 1}, "at least 2"),
    (psi, ([1.0, 2.0], [1.0]), {"eps": 0.0}, "eps must be a small positive"),
    (psi_categorical, ([0, 1], [0, 3]), {"n_classes": 3}, r"must lie in \[0, n_classes - 1\]"),
    (psi_categorical, ([0, 1], [0, 1.5]), {"n_classes": 3}, "integer class indices"),
    (chi2_shift, ([0, 1], [0, 1]), {"n_classes": 0}, "n_classes must be a positive integer"),
    (ks_shift, ([1.0], []), {}, "current is empty"),
    (summarize_timings, ([3.0],), {}, "at least 2 are needed"),
    (summarize_timings, ([3.0, -1.0],), {}, "negative durations"),
    (summarize_timings, ([3.0, 4.0],), {"n_resamples": 10}, "at least 100"),
    (ratio_interval, ([3.0], [0.0, 1.0]), {}, "0 ms timing"),
    (ratio_interval, ([3.0], [1.0]), {"confidence": -0.5}, "strictly between 0 and 1"),
]


@pytest.mark.parametrize(
    ("function", "args", "kwargs", "message"),
    BAD_INPUTS,
    ids=[f"{case[0].__name__}-{case[3][:30]}" for case in BAD_INPUTS],
)
def test_bad_input_raises_helpful_value_error(function, args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        function(*args, **kwargs)


# --- paired_diff_in_diff, two_sample_accuracy_shift -----------------------------------------------


def test_diff_in_diff_covers_the_true_difference_at_nominal_rate():
    from compress.measure.stats import paired_diff_in_diff

    # Set A: variant 3 points worse than baseline; set B: variant as good. True value: -3 points.
    same = {"both": 0.75, "variant": 0.05, "baseline": 0.05, "none": 0.15}
    rng = np.random.default_rng(2024)
    covered = 0
    for i in range(200):
        va, ba = simulate_pairs(rng, 300, CORRELATED)
        vb, bb = simulate_pairs(rng, 300, same)
        interval = paired_diff_in_diff(va, ba, vb, bb, n_resamples=1000, seed=i)
        covered += interval.low <= TRUE_DIFF_POINTS <= interval.high
    assert 0.90 <= covered / 200 <= 0.99


def test_diff_in_diff_estimate_is_the_difference_of_paired_changes():
    from compress.measure.stats import paired_diff_in_diff

    va, ba = pairs_with_discordance(1, 9, n_both=10)  # change -40 points on 20 pairs
    vb, bb = pairs_with_discordance(2, 2, n_both=16)  # change 0
    assert paired_diff_in_diff(va, ba, vb, bb).estimate == pytest.approx(-40.0)


def test_two_sample_accuracy_shift_matches_fisher_and_is_exact_under_random_splits():
    from compress.measure.stats import two_sample_accuracy_shift

    interval, p = two_sample_accuracy_shift([1] * 90 + [0] * 10, [1] * 60 + [0] * 40)
    assert interval.estimate == pytest.approx(-30.0)
    assert interval.low < -30.0 < interval.high
    assert p < 1e-5
    # Random halves of one sample: Fisher's test conditions on the total correct, which is exactly
    # the null of a random split, so the false-alarm rate stays at or below 5%.
    rng = np.random.default_rng(0)
    correct = rng.random(1000) < 0.9
    alarms = 0
    for _ in range(300):
        order = rng.permutation(1000)
        _, p = two_sample_accuracy_shift(correct[order[:500]], correct[order[500:]], n_resamples=100)
        alarms += p < 0.05
    assert alarms / 300 <= 0.05 + 0.02  # nominal, plus ~1.6 binomial standard errors
