"""The promises of compress.measure.stats and compress.measure.paired: intervals cover, tests match
hand-worked and published values, bad input says what to fix."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats as sps

from compress.measure.paired import (
    paired_diff_in_diff,
    paired_diff_interval,
    paired_score_interval,
    per_class_drop_upper,
    samples_to_decide,
)
from compress.measure.stats import (
    Interval,
    McNemar,
    ShiftTest,
    TimingSummary,
    chi2_shift,
    ks_shift,
    mcnemar_exact,
    psi,
    psi_categorical,
    ratio_interval,
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


# --- paired_diff_interval: published values ------------------------------------------------------


def test_score_interval_matches_published_worked_examples():
    # Bentur et al. 2009 as in Fagerland, Lydersen & Laake 2014 (Stat Med 33:2850), table
    # (a, b, c, d) = (1, 1, 7, 12): b = 1 pair right only under the first test, c = 7 only under
    # the second. Tango's asymptotic score interval: -0.517 to -0.026 (their Table).
    tango = paired_score_interval(1, 7, 21, continuity=0.0, corrected=False)
    assert tango.estimate == pytest.approx(-100 * 6 / 21)
    assert (round(tango.low / 100, 3), round(tango.high / 100, 3)) == (-0.517, -0.026)
    # The same table with the bias and skewness corrections (SCAS, ratesci::pairbinci's worked
    # example): -0.528113 to -0.018422; and Agresti & Min 2005, (53, 16, 8, 9): -0.020 to 0.207.
    scas = paired_score_interval(1, 7, 21, continuity=0.0)
    assert (round(scas.low / 100, 6), round(scas.high / 100, 6)) == (-0.528113, -0.018422)
    agresti_min = paired_score_interval(16, 8, 86, continuity=0.0)
    assert (round(agresti_min.low / 100, 3), round(agresti_min.high / 100, 3)) == (-0.020, 0.207)


def test_continuity_correction_widens_the_published_interval_by_about_half_a_pair():
    published = paired_score_interval(16, 8, 86, continuity=0.0)
    used = paired_score_interval(16, 8, 86)
    assert used.method == "tango_scas_cc"
    assert used.low < published.low and used.high > published.high
    # Half a pair of 86 is 0.58 points; the limits move by about that much, not more than twice.
    assert 0.3 < published.low - used.low < 1.2 and 0.3 < used.high - published.high < 1.2


def test_estimate_is_plain_difference_in_points_and_deterministic():
    variant = np.array([1, 1, 1, 0, 0, 1, 0, 1, 1, 1])  # 7 / 10
    baseline = np.array([1, 1, 1, 1, 0, 1, 1, 1, 1, 1])  # 9 / 10
    interval = paired_diff_interval(variant, baseline)
    assert interval.estimate == pytest.approx(-20.0)
    assert interval.confidence == 0.95
    assert interval.low < interval.estimate < interval.high
    assert paired_diff_interval(variant, baseline) == interval
    assert paired_diff_interval(variant, baseline, confidence=0.99).low < interval.low


def test_every_table_of_a_tiny_set_gives_an_interval_around_the_estimate():
    # Per-class intervals see classes of one or two samples: every count must work.
    for n in range(1, 13):
        for b in range(n + 1):
            for c in range(n + 1 - b):
                interval = paired_score_interval(b, c, n)
                assert -100.0 <= interval.low <= interval.estimate <= interval.high <= 100.0
                assert interval.low < interval.high


# --- no discordant pair: an honest bound, not [0, 0] ----------------------------------------------


def test_zero_discordance_gives_a_nonzero_width_interval():
    correct = np.random.default_rng(1).random(1000) < 0.92
    interval = paired_diff_interval(correct, correct.copy())
    assert interval.estimate == 0.0
    assert interval.low < 0.0 < interval.high
    # Any valid bound must reach the exact one-sided 97.5% Clopper-Pearson bound of "0 of 1000
    # broken" (0.368 points), since a variant that only ever breaks predictions is possible.
    assert 0.368 <= interval.high <= 0.45 and interval.low == pytest.approx(-interval.high)


@pytest.mark.parametrize("n", [200, 539, 1000, 10_000])
def test_drop_bound_with_no_fixed_prediction_is_at_least_the_exact_binomial_bound(n):
    # When the variant fixes nothing, the drop is a binomial proportion; an upper bound below the
    # Clopper-Pearson one would miss more than 2.5% of the time for some true drop.
    for broken in range(12):
        exact = 100 * sps.beta.ppf(0.975, broken + 1, n - broken)
        assert -paired_score_interval(0, broken, n).low >= exact - 1e-9


# --- coverage ----------------------------------------------------------------------------------------


def one_sided_errors_exact(n: int, rate_broken: float) -> tuple[float, float]:
    """Exact chance that the interval lies above / below the true change when the variant breaks
    each sample with probability rate_broken and fixes none (the compression case)."""
    broken = np.arange(0, int(n * rate_broken + 12 * np.sqrt(n * rate_broken) + 15))
    weights = sps.binom.pmf(broken, n, rate_broken)
    truth = -100 * rate_broken
    above = below = 0.0
    for k, w in zip(broken, weights, strict=True):
        if w < 1e-12:
            continue
        interval = paired_score_interval(0, int(k), n)
        above += w * (interval.low > truth)
        below += w * (interval.high < truth)
    return above, below


@pytest.mark.parametrize("n", [200, 539, 1000, 5000])
def test_exact_one_sided_errors_stay_at_nominal_when_few_pairs_disagree(n):
    # Expected broken predictions from 0.1 to 40, densely around the few-pairs region where the
    # bootstrap failed (13% at 2 expected pairs) and where a zero-count bound is tested hardest.
    for expected in np.geomspace(0.1, 40, 24):
        above, below = one_sided_errors_exact(n, expected / n)
        assert above <= 0.025 and below <= 0.025, (n, expected, above, below)


def simulate_counts(rng, n, rate_fixed, rate_broken, n_sets):
    """Discordant-pair counts of n_sets simulated held-out sets of n paired samples."""
    counts = rng.multinomial(n, [rate_fixed, rate_broken, 1 - rate_fixed - rate_broken], n_sets)
    return counts[:, 0], counts[:, 1]


def one_sided_errors_simulated(rng, n, rate_fixed, rate_broken, n_sets):
    fixed, broken = simulate_counts(rng, n, rate_fixed, rate_broken, n_sets)
    truth = 100 * (rate_fixed - rate_broken)
    pairs, index = np.unique(np.stack([fixed, broken], axis=1), axis=0, return_inverse=True)
    limits = np.array([
        (lambda iv: (iv.low, iv.high))(paired_score_interval(int(b), int(c), n)) for b, c in pairs
    ])
    low, high = limits[index.ravel(), 0], limits[index.ravel(), 1]
    return float(np.mean(low > truth)), float(np.mean(high < truth))


@pytest.mark.slow
def test_coverage_simulation_over_discordance_rates_and_sizes():
    # 2.5% at each end; simulation error allowance 3 standard errors of a 2.5% rate over n_sets
    # (1.05 points at 2,000 sets), so the test fails for a method that really under-covers.
    n_sets = 2000
    allowance = 0.025 + 3 * np.sqrt(0.025 * 0.975 / n_sets)
    rng = np.random.default_rng(20261130)
    for n in (200, 539, 1000, 2000, 5000, 10_000):
        for discordance in (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05):
            # the variant only breaks (the compression case), or breaks 3 for each 1 it fixes
            for fixed_share in (0.0, 0.25):
                above, below = one_sided_errors_simulated(
                    rng, n, discordance * fixed_share, discordance * (1 - fixed_share), n_sets
                )
                assert above <= allowance and below <= allowance, (n, discordance, fixed_share,
                                                                   above, below)


def test_simulated_sets_through_the_arrays_match_the_counts():
    # The coverage tests work on counts; the function the evaluator calls works on arrays.
    rng = np.random.default_rng(5)
    variant, baseline = simulate_pairs(rng, 700, CORRELATED)
    b = int(np.count_nonzero(variant & ~baseline))
    c = int(np.count_nonzero(~variant & baseline))
    assert paired_diff_interval(variant, baseline) == paired_score_interval(b, c, 700)


def test_width_matches_the_paired_standard_error_with_many_discordant_pairs():
    variant, baseline = simulate_pairs(np.random.default_rng(3), 10_000, CORRELATED)
    interval = paired_diff_interval(variant, baseline)
    d = variant.astype(float) - baseline.astype(float)
    expected_half_width = 1.959964 * d.std() / np.sqrt(d.size) * 100
    assert (interval.high - interval.low) / 2 == pytest.approx(expected_half_width, rel=0.03)


def test_interval_is_frozen_and_json_ready():
    interval = paired_diff_interval([1, 0, 1, 1], [1, 1, 0, 1])
    with pytest.raises(AttributeError):
        interval.low = 0.0  # type: ignore[misc]
    as_dict = interval.to_dict()
    assert set(as_dict) == {"estimate", "low", "high", "confidence", "method"}
    assert as_dict["method"] == "tango_scas_cc"
    json.dumps(as_dict)
    assert "method" not in ratio_interval([2.0, 2.1], [1.0, 1.1]).to_dict()


# --- through the gate -------------------------------------------------------------------------------


def test_confident_gate_does_not_pass_zero_changes_out_of_539_at_half_a_point():
    from compress.measure.accuracy import EvalResult, compare
    from compress.results.gate import gate_variant

    labels = np.arange(539) % 10
    predictions = labels.copy()
    predictions[:40] = (labels[:40] + 1) % 10  # the baseline is wrong on 40
    logits = np.eye(10, dtype=np.float32)[predictions]

    def result(preds):
        return EvalResult("heldout", 539, float(100 * np.mean(preds == labels)), None, preds,
                          preds == labels, np.ones(539, np.float32), labels, logits)

    accuracy = compare(result(predictions.copy()), result(predictions))
    assert accuracy["mcnemar"]["n_variant_only"] == accuracy["mcnemar"]["n_baseline_only"] == 0
    variant = {"status": "ok", "accuracy": {**accuracy, "heldout": {"n": 539}}}
    gate = {"mode": "confident", "max_accuracy_drop": 0.5}
    verdict = gate_variant("int8", variant, gate)
    assert verdict["verdict"] == "fail"
    check = verdict["checks"][0]
    assert check["value"] > 0.5  # the upper bound of the drop: about 0.72 points, not 0
    assert check["needed_heldout_n"] == samples_to_decide(0.0, 0.0, 0.5)
    assert gate_variant("int8", variant, {**gate, "max_accuracy_drop": 1.0})["verdict"] == "pass"
    assert gate_variant("int8", variant, {**gate, "mode": "point"})["verdict"] == "pass"


# --- worst class ----------------------------------------------------------------------------------


def test_per_class_drop_upper_is_the_paired_bound_on_each_class():
    labels = np.repeat([0, 1, 2], 50)
    baseline = np.ones(150, bool)
    variant = baseline.copy()
    variant[50:55] = False  # class 1: 5 of 50 broken
    uppers = per_class_drop_upper(variant, baseline, labels, n_classes=4)
    assert uppers[3] is None  # no samples
    assert uppers[0] == uppers[2] == pytest.approx(-paired_score_interval(0, 0, 50).low)
    assert uppers[1] == pytest.approx(-paired_score_interval(0, 5, 50).low)
    assert uppers[1] > 10.0 > uppers[0] > 0.0


def test_worst_class_confident_gate_uses_the_largest_upper_bound():
    from compress.measure.accuracy import EvalResult, compare
    from compress.results.gate import gate_variant

    labels = np.repeat(np.arange(5), 100)
    base_pred = labels.copy()
    var_pred = labels.copy()
    var_pred[200:203] = 0  # class 2: 3 of 100 broken

    def result(preds):
        logits = np.eye(5, dtype=np.float32)[preds]
        return EvalResult("heldout", 500, float(100 * np.mean(preds == labels)), None, preds,
                          preds == labels, np.ones(500, np.float32), labels, logits)

    acc = compare(result(var_pred), result(base_pred))
    pc = acc["per_class"]
    assert (pc["worst_class"], pc["worst_class_drop_points"]) == (2, pytest.approx(3.0))
    assert pc["worst_class_drop_high_class"] == 2
    assert pc["worst_class_drop_high_points"] == pytest.approx(-paired_score_interval(0, 3, 100).low)
    variant = {"status": "ok", "accuracy": acc}
    rule = {"max_worst_class_drop": 5.0}
    assert gate_variant("v", variant, {**rule, "mode": "point"})["verdict"] == "pass"
    confident = gate_variant("v", variant, {**rule, "mode": "confident"})
    assert confident["verdict"] == "fail"  # 3 of 100 broken: the class may have lost ~8 points
    assert confident["checks"][0]["value"] == pytest.approx(pc["worst_class_drop_high_points"])


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


# --- samples_to_decide ----------------------------------------------------------------------------


def test_samples_to_decide_is_the_first_size_whose_interval_decides():
    # At the returned n the score interval of the drop clears the tolerance; one sample fewer, not.
    for fixed, broken, tolerance in ((0.0, 0.0, 0.5), (0.002, 0.005, 1.0), (0.01, 0.04, 1.0)):
        n = samples_to_decide(fixed, broken, tolerance)
        drop = 100 * (broken - fixed)

        def clears(k, fixed=fixed, broken=broken, tolerance=tolerance, drop=drop):
            interval = paired_score_interval(k * fixed, k * broken, k)
            return -interval.low <= tolerance if drop < tolerance else -interval.high > tolerance

        assert clears(n) and not clears(n - 1), (fixed, broken, tolerance, n)


def test_samples_to_decide_matches_the_normal_approximation_with_many_discordant_pairs():
    # margin 1 point at 10% discordance, no net change: (1.96 * 100 / 1)^2 * 0.1 = 3842 for the
    # normal approximation; the continuity and skewness corrections ask a few percent more.
    assert 3842 <= samples_to_decide(0.05, 0.05, 1.0) <= 3842 * 1.05


def test_samples_to_decide_with_nothing_changed_is_about_four_over_the_tolerance():
    # 0 of n changed bounds the drop by about 3.9 / n: 0.5 points needs about 780 samples.
    n = samples_to_decide(0.0, 0.0, 0.5)
    assert 740 <= n <= 800
    assert samples_to_decide(0.0, 0.0, 1.0) == pytest.approx(n / 2, abs=2)


def test_samples_to_decide_grows_as_the_margin_shrinks_and_none_on_the_tolerance():
    sizes = [samples_to_decide(0.01, 0.02, tol) for tol in (4.0, 3.0, 2.0, 1.5)]
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)
    assert samples_to_decide(0.01, 0.02, 1.0) is None  # the estimate is the tolerance
    assert samples_to_decide(0.01, 0.05, 1.0) < samples_to_decide(0.01, 0.05, 1.0, confidence=0.99)


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
    (paired_diff_interval, ([], []), {}, "correct_variant is empty"),
    (paired_diff_interval, (GOOD, GOOD[:-1]), {}, "6 samples but correct_baseline has 5"),
    (paired_diff_interval, (GOOD, GOOD), {"confidence": 1.0}, "strictly between 0 and 1"),
    (paired_diff_interval, (GOOD, GOOD), {"confidence": 95}, "strictly between 0 and 1"),
    (paired_diff_interval, ([0, 2, 1], [0, 1, 1]), {}, "booleans or 0/1"),
    (paired_diff_interval, (GOOD.reshape(2, 3), GOOD.reshape(2, 3)), {}, "must be a 1-D array"),
    (paired_score_interval, (3, 4, 5), {}, "exceed the 5 samples"),
    (paired_score_interval, (-1, 0, 5), {}, "counts >= 0"),
    (per_class_drop_upper, (GOOD, GOOD, [0, 1, 2]), {"n_classes": 3}, "labels has 3 entries"),
    (mcnemar_exact, (GOOD, GOOD[:3]), {}, "same held-out samples"),
    (samples_to_decide, (0.1, 0.1, -1.0), {}, "tolerance_points must be"),
    (samples_to_decide, (1.5, 0.0, 1.0), {}, r"must lie in \[0, 1\]"),
    (samples_to_decide, (0.6, 0.6, 1.0), {}, "exceeds 1"),
    (samples_to_decide, (0.1, 0.1, 1.0), {"confidence": 0.0}, "strictly between 0 and 1"),
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
    # Set A: variant 3 points worse than baseline; set B: variant as good. True value: -3 points.
    same = {"both": 0.75, "variant": 0.05, "baseline": 0.05, "none": 0.15}
    rng = np.random.default_rng(2024)
    covered = 0
    for _ in range(200):
        va, ba = simulate_pairs(rng, 300, CORRELATED)
        vb, bb = simulate_pairs(rng, 300, same)
        interval = paired_diff_in_diff(va, ba, vb, bb)
        covered += interval.low <= TRUE_DIFF_POINTS <= interval.high
    assert 0.90 <= covered / 200 <= 0.995


@pytest.mark.slow
def test_diff_in_diff_one_sided_errors_with_few_discordant_pairs():
    # Growth of a gap: set A (e.g. drift) where the variant breaks `rate_a` of the samples, set B
    # (held-out) where it breaks `rate_b`; truth -100 * (rate_a - rate_b) points. Each end <= 2.5%
    # within 3 simulation standard errors.
    n_sets = 2000
    allowance = 0.025 + 3 * np.sqrt(0.025 * 0.975 / n_sets)
    rng = np.random.default_rng(7)
    cache: dict = {}

    def limits(b, c, n):
        key = (b, c, n)
        if key not in cache:
            cache[key] = paired_score_interval(b, c, n)
        return cache[key]

    from compress.measure.paired import _mover_difference

    for n_a, n_b in ((500, 1000), (2000, 2000), (10_000, 1000)):
        for rate_a, rate_b in ((0.002, 0.0), (0.005, 0.001), (0.02, 0.005), (0.001, 0.001)):
            fixed_a, broken_a = simulate_counts(rng, n_a, 0.0, rate_a, n_sets)
            fixed_b, broken_b = simulate_counts(rng, n_b, 0.0, rate_b, n_sets)
            truth = -100 * (rate_a - rate_b)
            above = below = 0
            for fa, ca, fb, cb in zip(fixed_a, broken_a, fixed_b, broken_b, strict=True):
                iv = _mover_difference(limits(int(fa), int(ca), n_a), limits(int(fb), int(cb), n_b),
                                       "mover")
                above += iv.low > truth
                below += iv.high < truth
            assert above / n_sets <= allowance and below / n_sets <= allowance, (
                n_a, n_b, rate_a, rate_b, above / n_sets, below / n_sets)


def test_diff_in_diff_with_no_discordant_pair_is_not_zero_width():
    correct = np.random.default_rng(0).random(1000) < 0.9
    interval = paired_diff_in_diff(correct, correct.copy(), correct[:500], correct[:500].copy())
    assert interval.estimate == 0.0 and interval.low < 0.0 < interval.high
    assert interval.method == "mover_tango_scas_cc"
    # square-and-add of the two zero-count half-widths (n=1000 and n=500)
    expected = np.hypot(paired_score_interval(0, 0, 1000).high, paired_score_interval(0, 0, 500).high)
    assert interval.high == pytest.approx(expected)


def test_diff_in_diff_estimate_is_the_difference_of_paired_changes():
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
