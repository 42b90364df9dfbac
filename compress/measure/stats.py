"""Honest statistics behind the evaluator's gate and the profiler.

Pure functions on numpy arrays: McNemar's exact test, the accuracy change between different
samples, distribution shift (PSI, KS, chi-square) and timing summaries with bootstrap intervals.
The paired accuracy intervals (two models on the same samples) are in ``compress.measure.paired``.
Bad input raises ``ValueError`` with a message that names the problem and the fix.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats as sps

__all__ = [
    "Interval",
    "McNemar",
    "ShiftTest",
    "TimingSummary",
    "chi2_shift",
    "ks_shift",
    "mcnemar_exact",
    "two_sample_accuracy_shift",
    "psi",
    "psi_categorical",
    "ratio_interval",
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


# --- accuracy of two models on different samples ------------------------------------------------


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
