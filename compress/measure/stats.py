"""Honest statistics behind the evaluator's gate and the profiler.

Pure functions on numpy arrays: paired accuracy differences with score intervals that stay honest
when few samples change, McNemar's exact test, sample-size planning from the same interval,
distribution shift (PSI, KS, chi-square) and timing summaries with bootstrap intervals.
Bad input raises ``ValueError`` with a message that names the problem and the fix.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import optimize
from scipy import stats as sps

__all__ = [
    "Interval",
    "McNemar",
    "ShiftTest",
    "TimingSummary",
    "chi2_shift",
    "ks_shift",
    "mcnemar_exact",
    "paired_diff_in_diff",
    "paired_diff_interval",
    "paired_score_interval",
    "per_class_drop_upper",
    "two_sample_accuracy_shift",
    "psi",
    "psi_categorical",
    "ratio_interval",
    "samples_to_decide",
    "summarize_timings",
]

MIN_RESAMPLES = 100
# Index matrices for the bootstrap are drawn this many elements at a time (~32 MB of int64),
# so 10k timings x 2000 resamples never holds the whole matrix in memory.
_CHUNK_ELEMENTS = 1 << 22


class _JsonReady:
    def to_dict(self) -> dict:
        """The fields as plain Python floats, ints and strings, ready for ``json.dumps``."""
        return asdict(self)  # type: ignore[call-overload]


@dataclass(frozen=True)
class Interval(_JsonReady):
    """A point estimate with a two-sided interval at ``confidence`` (e.g. 0.95); ``method`` names
    how the interval was computed where more than one method exists (omitted from ``to_dict`` when
    None)."""

    estimate: float
    low: float
    high: float
    confidence: float
    method: str | None = None

    def to_dict(self) -> dict:
        out = asdict(self)
        if out["method"] is None:
            del out["method"]
        return out


@dataclass(frozen=True)
class McNemar(_JsonReady):
    """Discordant-pair counts and the exact two-sided p-value that both models are equally right."""

    n_variant_only: int  # variant right, baseline wrong
    n_baseline_only: int  # baseline right, variant wrong
    p_value: float


@dataclass(frozen=True)
class ShiftTest(_JsonReady):
    """A two-sample test that ``current`` comes from the same distribution as ``reference``."""

    statistic: float
    p_value: float
    method: str


@dataclass(frozen=True)
class TimingSummary(_JsonReady):
    """Latency percentiles of repeated runs, with a bootstrap 95% interval of the median."""

    n: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    min_ms: float
    cv: float  # coefficient of variation: sample std / mean
    p50_low_ms: float
    p50_high_ms: float


# --- input checks ---------------------------------------------------------------------------------


def _as_1d(name: str, values) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array, got shape {array.shape}; flatten it first.")
    if array.size == 0:
        raise ValueError(f"{name} is empty: pass at least one sample.")
    return array


def _as_samples(name: str, values) -> np.ndarray:
    array = _as_1d(name, values)
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise ValueError(f"{name} must hold real numbers, got dtype {array.dtype}.")
    array = array.astype(np.float64)
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or infinity: drop or fix those samples first.")
    return array


def _as_correctness(name: str, values) -> np.ndarray:
    array = _as_1d(name, values)
    if array.dtype != np.bool_:
        if not np.issubdtype(array.dtype, np.number) or not np.all(np.isin(array, (0, 1))):
            raise ValueError(
                f"{name} must be per-sample correctness (booleans or 0/1), "
                f"e.g. predictions == labels; got other values."
            )
        array = array.astype(bool)
    return array


def _as_paired(correct_variant, correct_baseline) -> tuple[np.ndarray, np.ndarray]:
    variant = _as_correctness("correct_variant", correct_variant)
    baseline = _as_correctness("correct_baseline", correct_baseline)
    if variant.size != baseline.size:
        raise ValueError(
            f"correct_variant has {variant.size} samples but correct_baseline has {baseline.size}: "
            f"both must score the same held-out samples in the same order."
        )
    return variant, baseline


def _as_labels(name: str, values, n_classes: int) -> np.ndarray:
    array = _as_1d(name, values)
    if not np.issubdtype(array.dtype, np.integer):
        if not np.issubdtype(array.dtype, np.floating) or not np.all(array == np.round(array)):
            raise ValueError(f"{name} must hold integer class indices, got dtype {array.dtype}.")
        array = array.astype(np.int64)
    if array.min() < 0 or array.max() >= n_classes:
        raise ValueError(
            f"{name} has class indices in [{array.min()}, {array.max()}] but n_classes is "
            f"{n_classes}: labels must lie in [0, n_classes - 1]."
        )
    return array


def _check_n_classes(n_classes: int) -> None:
    if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)) or n_classes < 1:
        raise ValueError(f"n_classes must be a positive integer, got {n_classes!r}.")


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(
            f"confidence must lie strictly between 0 and 1 (e.g. 0.95), got {confidence!r}."
        )


def _check_n_resamples(n_resamples: int) -> None:
    if n_resamples < MIN_RESAMPLES:
        raise ValueError(
            f"n_resamples={n_resamples} is too few for a stable percentile interval: "
            f"use at least {MIN_RESAMPLES} (1000-2000 is typical)."
        )


def _percentile_interval(estimate: float, replicates: np.ndarray, confidence: float) -> Interval:
    alpha = 1.0 - confidence
    low, high = np.quantile(replicates, [alpha / 2, 1.0 - alpha / 2])
    return Interval(float(estimate), float(low), float(high), float(confidence))


def _bootstrap_medians(
    samples: np.ndarray, n_resamples: int, rng: np.random.Generator
) -> np.ndarray:
    """Medians of ``n_resamples`` resamples with replacement, drawn in memory-bounded chunks."""
    n = samples.size
    rows_per_chunk = max(1, _CHUNK_ELEMENTS // n)
    medians = np.empty(n_resamples)
    for start in range(0, n_resamples, rows_per_chunk):
        stop = min(start + rows_per_chunk, n_resamples)
        indices = rng.integers(0, n, size=(stop - start, n))
        medians[start:stop] = np.median(samples[indices], axis=1)
    return medians


# --- accuracy: paired comparison of two models on the same samples -------------------------------
#
# The paired interval is Tango's asymptotic score interval for a difference of paired proportions
# (Tango 1998) with Laud's bias (n / (n - 1)) and skewness corrections (the SCAS interval of
# ratesci::pairbinci) and a continuity correction of half a pair. The continuity correction is what
# keeps each one-sided error at or under alpha / 2 when only a handful of pairs disagree (the
# compression case); its coverage is measured in docs/results/evaluator.md and tests/test_stats.py.

PAIRED_METHOD = "tango_scas_cc"  # Tango score + skewness correction + continuity correction 0.5
DIFF_IN_DIFF_METHOD = "mover_tango_scas_cc"  # MOVER combination of two paired score intervals
CONTINUITY_PAIRS = 0.5
# Candidate limits are scanned from the edge (-1 or +1) toward the estimate on this grid of
# fractions of the distance, then refined by root finding: the limit is the edge of the hull of
# the values the score test does not reject.
_SCAN = np.geomspace(1.0, 1e-12, 700)


def _score_statistic(b: float, c: float, n: int, delta0, z: float, continuity: float,
                     corrected: bool):
    """Score statistic for H0: (b - c) / n estimates delta0 (b: variant-only pairs, c:
    baseline-only pairs); large positive values reject delta0 as too small."""
    delta0 = np.asarray(delta0, dtype=np.float64)
    # Restricted maximum likelihood of the baseline-only cell probability under delta0 (Tango 1998).
    quad_b = -b - c + (2.0 * n - b + c) * delta0
    quad_c = -c * delta0 * (1.0 - delta0)
    p_c = (np.sqrt(np.maximum(quad_b * quad_b - 8.0 * n * quad_c, 0.0)) - quad_b) / (4.0 * n)
    p_b = p_c + delta0
    variance = (p_b + p_c - delta0 * delta0) / (n - 1 if corrected and n > 1 else n)
    gap = (b - c) / n - delta0
    gap = np.sign(gap) * np.maximum(np.abs(gap) - continuity / n, 0.0)
    if not corrected:
        with np.errstate(divide="ignore", invalid="ignore"):
            return gap / np.sqrt(variance)
    third_moment = (
        p_b * (1.0 - delta0) ** 3 + p_c * (-1.0 - delta0) ** 3 + (1.0 - p_b - p_c) * (-delta0) ** 3
    ) / (n * n)
    with np.errstate(divide="ignore", invalid="ignore"):
        return gap / np.sqrt(variance) - third_moment / variance**1.5 / 6.0 * (z * z - 1.0)


def _score_limit(b: float, c: float, n: int, z: float, side: int, continuity: float,
                 corrected: bool) -> float:
    """Lower (side=-1) or upper (side=+1) limit of the paired difference, as a proportion."""
    estimate = (b - c) / n
    edge = float(side)
    if estimate == edge:
        return edge
    candidates = estimate + (edge - estimate) * _SCAN
    args = (z, continuity, corrected)
    accepted = np.flatnonzero(side * _score_statistic(b, c, n, candidates, *args) > -z)
    if accepted.size == 0:
        return estimate
    first = int(accepted[0])
    if first == 0:
        return edge

    def excess(d: float) -> float:
        return side * float(_score_statistic(b, c, n, d, *args)) + z

    rejected, inside = candidates[first - 1], candidates[first]
    if not np.isfinite(excess(rejected)):
        # The statistic is undefined there (zero variance at the edge): keep the wider limit.
        return float(rejected)
    return float(optimize.brentq(excess, rejected, inside, xtol=1e-13))


def paired_score_interval(
    n_variant_only: float,
    n_baseline_only: float,
    n: int,
    confidence: float = 0.95,
    *,
    continuity: float = CONTINUITY_PAIRS,
    corrected: bool = True,
) -> Interval:
    """Accuracy of variant minus baseline in points from the discordant-pair counts of ``n`` paired
    samples, with the corrected Tango score interval: each one-sided error stays at or under
    (1 - confidence) / 2 even with few or no discordant pairs. Counts may be fractional (planning).

    ``continuity=0`` gives the published SCAS interval, and with ``corrected=False`` Tango's own
    (no bias or skewness correction): both only to check against published worked examples.
    """
    _check_confidence(confidence)
    if not n >= 1 or n_variant_only < 0 or n_baseline_only < 0:
        raise ValueError(
            f"need n >= 1 and discordant counts >= 0, got n={n!r}, "
            f"n_variant_only={n_variant_only!r}, n_baseline_only={n_baseline_only!r}."
        )
    if n_variant_only + n_baseline_only > n:
        raise ValueError(
            f"{n_variant_only} + {n_baseline_only} discordant pairs exceed the {n} samples: "
            f"the counts must come from the same n paired samples."
        )
    z = float(sps.norm.ppf(0.5 + confidence / 2.0))
    args = (continuity, corrected)
    low = _score_limit(n_variant_only, n_baseline_only, n, z, -1, *args)
    high = _score_limit(n_variant_only, n_baseline_only, n, z, +1, *args)
    estimate = 100.0 * (n_variant_only - n_baseline_only) / n
    method = PAIRED_METHOD if (continuity, corrected) == (CONTINUITY_PAIRS, True) else None
    return Interval(estimate, 100.0 * low, 100.0 * high, float(confidence), method)


def _discordant_counts(variant: np.ndarray, baseline: np.ndarray) -> tuple[int, int]:
    return int(np.count_nonzero(variant & ~baseline)), int(np.count_nonzero(~variant & baseline))


def paired_diff_interval(correct_variant, correct_baseline, *, confidence: float = 0.95) -> Interval:
    """Accuracy of variant minus baseline in percentage points (-0.8 = 0.8 points worse) on the
    same samples, with the paired score interval (``paired_score_interval``): deterministic, and
    never zero-width, so "0 of n changed" still bounds the drop by about 3.9 / n."""
    variant, baseline = _as_paired(correct_variant, correct_baseline)
    _check_confidence(confidence)
    return paired_score_interval(*_discordant_counts(variant, baseline), variant.size, confidence)


def _mover_difference(a: Interval, b: Interval, method: str) -> Interval:
    """a - b for independent estimates, by the method of variance estimates recovery (Newcombe's
    square-and-add; Zou and Donner 2008): each side takes the matching half-widths of a and b."""
    estimate = a.estimate - b.estimate
    low = estimate - math.hypot(a.estimate - a.low, b.high - b.estimate)
    high = estimate + math.hypot(a.high - a.estimate, b.estimate - b.low)
    return Interval(estimate, max(low, -200.0), min(high, 200.0), a.confidence, method)


def paired_diff_in_diff(
    correct_variant_a,
    correct_baseline_a,
    correct_variant_b,
    correct_baseline_b,
    *,
    confidence: float = 0.95,
) -> Interval:
    """(variant - baseline on set A) - (variant - baseline on set B), in points, with the MOVER
    combination of the two paired score intervals (the two sets are independent samples).

    With A = train and B = held-out this is the growth of the variant's overfitting gap over the
    baseline's; with A = held-out and B = drift, how much more the variant loses under the shift.
    """
    interval_a = paired_diff_interval(correct_variant_a, correct_baseline_a, confidence=confidence)
    interval_b = paired_diff_interval(correct_variant_b, correct_baseline_b, confidence=confidence)
    return _mover_difference(interval_a, interval_b, DIFF_IN_DIFF_METHOD)


def per_class_drop_upper(correct_variant, correct_baseline, labels, n_classes: int, *,
                         confidence: float = 0.95) -> list[float | None]:
    """Upper limit of each class's top-1 drop (baseline minus variant, points) from the paired
    score interval on that class's samples; None for a class with no samples.

    The largest of them bounds the largest true drop at the same one-sided level: the class with
    the largest true drop is missed only when its own bound misses, so no multiplicity correction
    is needed for the worst class.
    """
    variant, baseline = _as_paired(correct_variant, correct_baseline)
    _check_n_classes(n_classes)
    labels = _as_labels("labels", labels, n_classes)
    if labels.size != variant.size:
        raise ValueError(f"labels has {labels.size} entries but there are {variant.size} samples.")
    counts = np.bincount(labels, minlength=n_classes)
    only_v = np.bincount(labels, weights=variant & ~baseline, minlength=n_classes)
    only_b = np.bincount(labels, weights=~variant & baseline, minlength=n_classes)
    return [
        -paired_score_interval(int(v), int(b), int(k), confidence).low if k else None
        for v, b, k in zip(only_v, only_b, counts, strict=True)
    ]


def two_sample_accuracy_shift(
    correct_reference,
    correct_current,
    *,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[Interval, float]:
    """Accuracy on ``current`` minus accuracy on ``reference`` (different samples), in points, with
    an independent-samples bootstrap interval, and the two-sided p-value of Fisher's exact test.

    Fisher's test conditions on the total number correct, which is exactly the null distribution
    of a random split of one sample into two: its false-alarm rate never exceeds the nominal one.
    """
    reference = _as_correctness("correct_reference", correct_reference)
    current = _as_correctness("correct_current", correct_current)
    _check_confidence(confidence)
    _check_n_resamples(n_resamples)
    n_ref, n_cur = reference.size, current.size
    k_ref, k_cur = int(reference.sum()), int(current.sum())
    rng = np.random.default_rng(seed)
    replicates = 100.0 * (
        rng.binomial(n_cur, k_cur / n_cur, n_resamples) / n_cur
        - rng.binomial(n_ref, k_ref / n_ref, n_resamples) / n_ref
    )
    estimate = 100.0 * (k_cur / n_cur - k_ref / n_ref)
    table = [[k_ref, n_ref - k_ref], [k_cur, n_cur - k_cur]]
    p_value = float(sps.fisher_exact(table, alternative="two-sided").pvalue)
    return _percentile_interval(estimate, replicates, confidence), p_value


def mcnemar_exact(correct_variant, correct_baseline) -> McNemar:
    """Exact two-sided McNemar test: a binomial test (p=0.5) on the pairs where only one model is
    right. p=1.0 when the models never disagree."""
    variant, baseline = _as_paired(correct_variant, correct_baseline)
    n_variant_only = int(np.count_nonzero(variant & ~baseline))
    n_baseline_only = int(np.count_nonzero(~variant & baseline))
    n_discordant = n_variant_only + n_baseline_only
    if n_discordant == 0:
        return McNemar(n_variant_only, n_baseline_only, 1.0)
    p_value = sps.binomtest(n_variant_only, n_discordant, p=0.5, alternative="two-sided").pvalue
    return McNemar(n_variant_only, n_baseline_only, float(p_value))


def samples_to_decide(
    rate_variant_only: float,
    rate_baseline_only: float,
    tolerance_points: float,
    confidence: float = 0.95,
    *,
    max_n: int = 10**9,
) -> int | None:
    """About how many paired samples the paired score interval needs to put the drop wholly on one
    side of ``tolerance_points``, if the discordant-pair rates stay as observed: the smallest n at
    which the upper limit of the drop is within the tolerance (estimate below it) or the lower limit
    beyond it (estimate above it). None when the estimate sits on the tolerance or max_n is not enough.

    Rates of 0 are allowed: "nothing changed" is decided once about 3.9 / n is under the tolerance.
    """
    for name, rate in (("rate_variant_only", rate_variant_only),
                       ("rate_baseline_only", rate_baseline_only)):
        if not 0.0 <= rate <= 1.0:
            raise ValueError(
                f"{name} is a fraction of the paired samples and must lie in [0, 1], got {rate!r}."
            )
    if rate_variant_only + rate_baseline_only > 1.0 + 1e-12:
        raise ValueError("rate_variant_only + rate_baseline_only exceeds 1: pass fractions of one set.")
    if not tolerance_points >= 0.0:
        raise ValueError(
            f"tolerance_points must be a number of points >= 0 (e.g. 1.0), got {tolerance_points!r}."
        )
    _check_confidence(confidence)
    drop = 100.0 * (rate_baseline_only - rate_variant_only)
    if abs(drop - tolerance_points) < 1e-9:
        return None

    def decided(n: int) -> bool:
        interval = paired_score_interval(n * rate_variant_only, n * rate_baseline_only, n, confidence)
        if drop < tolerance_points:
            return -interval.low <= tolerance_points + 1e-9
        return -interval.high > tolerance_points + 1e-9

    if not decided(max_n):
        return None
    low, high = 1, max_n  # decided(high) holds; the interval narrows as n grows
    while high - low > 1:
        middle = (low + high) // 2
        if decided(middle):
            high = middle
        else:
            low = middle
    return high if not decided(low) else low


# --- distribution shift between a reference and a current sample ---------------------------------


def _psi_from_counts(reference_counts: np.ndarray, current_counts: np.ndarray, eps: float) -> float:
    if not eps > 0.0:
        raise ValueError(f"eps must be a small positive number (e.g. 1e-4), got {eps!r}.")
    # eps stands in for empty bins so that log(0) never occurs; identical inputs still give 0.0.
    reference = np.maximum(reference_counts / reference_counts.sum(), eps)
    current = np.maximum(current_counts / current_counts.sum(), eps)
    return float(np.sum((current - reference) * np.log(current / reference)))


def psi(reference, current, *, bins: int = 10, eps: float = 1e-4) -> float:
    """Population stability index of a continuous score (e.g. max softmax confidence), with bins at
    the reference deciles. Usual reading: < 0.1 no shift, 0.1-0.25 moderate, > 0.25 major."""
    reference = _as_samples("reference", reference)
    current = _as_samples("current", current)
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 2:
        raise ValueError(f"bins must be an integer of at least 2 (10 is usual), got {bins!r}.")
    # Interior quantiles are the cut points; the outer bins are open so that current values outside
    # the reference range still count. Ties (a score stuck at 1.0) collapse duplicate cut points.
    cuts = np.unique(np.quantile(reference, np.linspace(0.0, 1.0, bins + 1)[1:-1]))
    n_bins = cuts.size + 1
    reference_counts = np.bincount(np.searchsorted(cuts, reference), minlength=n_bins)
    current_counts = np.bincount(np.searchsorted(cuts, current), minlength=n_bins)
    return _psi_from_counts(reference_counts, current_counts, eps)


def psi_categorical(reference_labels, current_labels, n_classes: int, eps: float = 1e-4) -> float:
    """Population stability index of predicted-class frequencies; read like ``psi``."""
    _check_n_classes(n_classes)
    reference = _as_labels("reference_labels", reference_labels, n_classes)
    current = _as_labels("current_labels", current_labels, n_classes)
    return _psi_from_counts(
        np.bincount(reference, minlength=n_classes), np.bincount(current, minlength=n_classes), eps
    )


def ks_shift(reference, current) -> ShiftTest:
    """Two-sided two-sample Kolmogorov-Smirnov test on a continuous score."""
    reference = _as_samples("reference", reference)
    current = _as_samples("current", current)
    result = sps.ks_2samp(reference, current, alternative="two-sided")
    return ShiftTest(float(result.statistic), float(result.pvalue), "ks")


def chi2_shift(reference_labels, current_labels, n_classes: int) -> ShiftTest:
    """Chi-square test of homogeneity of predicted-class frequencies (2 x n_classes table).

    Classes neither sample predicts are dropped; Yates' correction is off so that 2 and 1000
    classes are read the same way. A single class left means identical distributions (p=1).
    """
    _check_n_classes(n_classes)
    reference = _as_labels("reference_labels", reference_labels, n_classes)
    current = _as_labels("current_labels", current_labels, n_classes)
    table = np.stack(
        [np.bincount(reference, minlength=n_classes), np.bincount(current, minlength=n_classes)]
    )
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        return ShiftTest(0.0, 1.0, "chi2")
    result = sps.chi2_contingency(table, correction=False)
    return ShiftTest(float(result.statistic), float(result.pvalue), "chi2")


# --- timings --------------------------------------------------------------------------------------


def _as_timings(name: str, values) -> np.ndarray:
    samples = _as_samples(name, values)
    if samples.min() < 0.0:
        raise ValueError(f"{name} contains negative durations: check the clock and the units (ms).")
    return samples


def summarize_timings(samples_ms, *, n_resamples: int = 1000, seed: int = 0) -> TimingSummary:
    """Percentiles (numpy's linear interpolation), mean, min and spread of repeated latencies, with
    a bootstrap 95% interval of the median so two runs can be compared honestly."""
    samples = _as_timings("samples_ms", samples_ms)
    if samples.size < 2:
        raise ValueError(
            "samples_ms has 1 timing: at least 2 are needed to measure spread; run more iterations."
        )
    _check_n_resamples(n_resamples)
    p50, p90, p99 = np.percentile(samples, [50, 90, 99])
    mean = float(samples.mean())
    cv = float(samples.std(ddof=1) / mean) if mean > 0.0 else 0.0
    medians = _bootstrap_medians(samples, n_resamples, np.random.default_rng(seed))
    median_ci = _percentile_interval(p50, medians, 0.95)
    return TimingSummary(
        n=int(samples.size),
        p50_ms=float(p50),
        p90_ms=float(p90),
        p99_ms=float(p99),
        mean_ms=mean,
        min_ms=float(samples.min()),
        cv=cv,
        p50_low_ms=median_ci.low,
        p50_high_ms=median_ci.high,
    )


def ratio_interval(
    reference_ms,
    variant_ms,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> Interval:
    """Speed-up median(reference) / median(variant) with a bootstrap interval; the two runs are
    independent, so each is resampled on its own."""
    reference = _as_timings("reference_ms", reference_ms)
    variant = _as_timings("variant_ms", variant_ms)
    if variant.min() <= 0.0:
        raise ValueError(
            "variant_ms contains a 0 ms timing: a speed-up needs positive durations; "
            "use a finer clock or time batches of calls."
        )
    _check_confidence(confidence)
    _check_n_resamples(n_resamples)
    rng = np.random.default_rng(seed)
    ratios = _bootstrap_medians(reference, n_resamples, rng) / _bootstrap_medians(
        variant, n_resamples, rng
    )
    return _percentile_interval(np.median(reference) / np.median(variant), ratios, confidence)
