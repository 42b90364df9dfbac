"""Paired accuracy intervals: two models scored on the same samples.

The interval is Tango's asymptotic score interval for a difference of paired proportions (Tango
1998) with Laud's bias (n / (n - 1)) and skewness corrections (the SCAS interval of
ratesci::pairbinci) and a continuity correction of half a pair. The continuity correction is what
keeps each one-sided error at or under alpha / 2 when only a handful of pairs disagree (the
compression case); its coverage is measured in docs/evaluator.md and tests/test_stats.py.
Differences of two paired changes on independent sets use MOVER; sample-size planning uses the
same interval. Bad input raises ``ValueError`` naming the problem and the fix.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import optimize
from scipy import stats as sps

from compress.measure.stats import (
    Interval,
    _as_labels,
    _as_paired,
    _check_confidence,
    _check_n_classes,
)

__all__ = [
    "paired_diff_in_diff",
    "paired_diff_interval",
    "paired_score_interval",
    "per_class_drop_upper",
    "samples_to_decide",
]

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
