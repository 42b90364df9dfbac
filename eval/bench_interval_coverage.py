"""How often the paired accuracy interval misses the true drop, old bootstrap against the score
interval, when a variant breaks only a handful of the baseline's predictions.

Simulation (issue 18's design): the baseline is right on each held-out sample with probability
0.92; the variant breaks each of the baseline's correct predictions with probability
``drop / 0.92`` and fixes none, so the true drop is known. Each row draws ``--sets`` held-out sets
and computes, for each, the 95% interval of the change with

- the paired percentile bootstrap compress used before (2,000 resamples, seeded per set), and
- ``compress.measure.paired.paired_diff_interval`` (the corrected Tango score interval).

It prints a Markdown table: how often the interval's upper bound of the drop is below the truth
(the gate's risk, nominal 2.5%), with a one-sided 95% Clopper-Pearson upper bound of that rate
over the sets and the exact rate for the score interval (a sum over every possible count); how often the lower bound of the drop is above the truth (the other end); how often
the interval is [0, 0]; and the mean upper bound of the drop.

    python eval/bench_interval_coverage.py --sets 2000
    python eval/bench_interval_coverage.py --exact-grid   # the exact coverage table, no simulation
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy import stats as sps

from compress.measure.paired import paired_diff_interval, paired_score_interval

BASELINE_TOP1 = 0.92
ROWS = ((1000, 0.2), (1000, 0.3), (1000, 0.5), (539, 0.5), (5000, 0.1))


def old_bootstrap(variant: np.ndarray, baseline: np.ndarray, seed: int,
                  n_resamples: int = 2000) -> tuple[float, float]:
    """The paired percentile bootstrap of compress before issue 18, in points (low, high)."""
    n = variant.size
    counts = np.array([np.count_nonzero(variant & ~baseline), np.count_nonzero(~variant & baseline)])
    draws = np.random.default_rng(seed).multinomial(
        n, np.append(counts, n - counts.sum()) / n, n_resamples
    )
    low, high = np.quantile(100.0 * (draws[:, 0] - draws[:, 1]) / n, [0.025, 0.975])
    return float(low), float(high)


def upper_bound_of_rate(misses: int, sets: int) -> float:
    """One-sided 95% Clopper-Pearson upper bound of a miss rate, in percent."""
    return 100.0 * (1.0 if misses == sets else float(sps.beta.ppf(0.95, misses + 1, sets - misses)))


def exact_miss_rates(n: int, drop_points: float) -> tuple[float, float]:
    """Exact chance, in percent, that the score interval's drop upper bound is below the truth and
    that its drop lower bound is above it: here the broken count is Binomial(n, drop) and no
    prediction is fixed, so the sum over every possible count replaces the simulation."""
    rate = drop_points / 100.0
    counts = np.arange(0, int(n * rate + 12 * np.sqrt(n * rate) + 15))
    weights = sps.binom.pmf(counts, n, rate)
    below = above = 0.0
    for k, w in zip(counts, weights, strict=True):
        interval = paired_score_interval(0, int(k), n)
        below += w * (interval.low > -drop_points)
        above += w * (interval.high < -drop_points)
    return 100.0 * below, 100.0 * above


def exact_errors(n: int, rate_fixed: float, rate_broken: float) -> tuple[float, float]:
    """Exact one-sided errors of the score interval, in percent (interval above the true change,
    interval below it), summing over every discordant count with non-negligible probability."""
    rate = rate_fixed + rate_broken
    lam = n * rate
    discordant = np.arange(max(0, int(lam - 10 * np.sqrt(lam) - 5)), int(lam + 10 * np.sqrt(lam) + 15))
    truth = 100.0 * (rate_fixed - rate_broken)
    above = below = 0.0
    for m, w in zip(discordant, sps.binom.pmf(discordant, n, rate), strict=True):
        if w < 1e-9:
            continue
        fixed = np.arange(m + 1)
        for b, w2 in zip(fixed, sps.binom.pmf(fixed, m, rate_fixed / rate), strict=True):
            if w * w2 < 1e-10:
                continue
            interval = paired_score_interval(int(b), int(m - b), n)
            above += w * w2 * (interval.low > truth)
            below += w * w2 * (interval.high < truth)
    return 100.0 * above, 100.0 * below


VARIANTS = (("Tango's score interval", {"continuity": 0.0, "corrected": False}),
            ("+ bias and skewness corrections (SCAS)", {"continuity": 0.0}),
            ("+ continuity correction 0.5 (compress)", {}))


def worst_errors_without_fixes(options: dict) -> tuple[float, str, float, str]:
    """Largest exact one-sided errors, in percent, when the variant only breaks predictions, over
    n in (200, 539, 1,000, 5,000, 10,000) and 40 expected broken counts from 0.1 to 60."""
    worst_low = worst_high = (0.0, "")
    for n in (200, 539, 1000, 5000, 10_000):
        for expected in np.geomspace(0.1, 60, 40):
            rate = expected / n
            counts = np.arange(0, int(expected + 12 * np.sqrt(expected) + 15))
            too_low = too_high = 0.0  # the drop's upper bound below / lower bound above the truth
            for k, w in zip(counts, sps.binom.pmf(counts, n, rate), strict=True):
                iv = paired_score_interval(0, int(k), n, **options)
                too_low += w * (iv.low > -100 * rate)
                too_high += w * (iv.high < -100 * rate)
            where = f"n={n:,}, {expected:.1f} expected"
            worst_low = max(worst_low, (100 * too_low, where))
            worst_high = max(worst_high, (100 * too_high, where))
    return worst_low[0], worst_low[1], worst_high[0], worst_high[1]


def exact_grid() -> None:
    """The coverage table of docs/evaluator.md: exact one-sided errors over sizes and rates."""
    rates = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05)
    for share, what in ((0.0, "the variant only breaks predictions"),
                        (0.25, "the variant breaks 3 predictions for each 1 it fixes")):
        print(f"\nExact one-sided errors of the 95% score interval, {what}: "
              "interval above the truth / below the truth (each nominal <= 2.5%)\n")
        print("| n | " + " | ".join(f"discordance {100 * r:g}%" for r in rates) + " |")
        print("|---|" + "---|" * len(rates))
        for n in (200, 539, 1000, 2000, 5000, 10_000):
            cells = [exact_errors(n, r * share, r * (1 - share)) for r in rates]
            print(f"| {n:,} | " + " | ".join(f"{a:.2f}% / {b:.2f}%" for a, b in cells) + " |",
                  flush=True)
    print("\nWhich correction does what, when the variant only breaks predictions: the largest "
          "exact one-sided error over n = 200-10,000 and 0.1-60 expected broken predictions\n")
    print("| interval | drop upper bound below the truth (gate's risk) | where | "
          "drop lower bound above the truth | where | 0 of 1,000 changed: drop upper bound |")
    print("|---|---|---|---|---|---|")
    for name, options in VARIANTS:
        low, low_at, high, high_at = worst_errors_without_fixes(options)
        zero = -paired_score_interval(0, 0, 1000, **options).low
        print(f"| {name} | {low:.2f}% | {low_at} | {high:.2f}% | {high_at} | {zero:.2f} pt |",
              flush=True)


def row(n: int, drop_points: float, sets: int, rng: np.random.Generator) -> dict:
    truth = -drop_points
    break_rate = drop_points / 100.0 / BASELINE_TOP1
    out = {name: {"below": 0, "above": 0, "zero": 0, "upper_sum": 0.0} for name in ("old", "new")}
    for s in range(sets):
        baseline = rng.random(n) < BASELINE_TOP1
        variant = baseline & ~(rng.random(n) < break_rate)
        new = paired_diff_interval(variant, baseline)
        for name, (low, high) in (("old", old_bootstrap(variant, baseline, seed=s)),
                                  ("new", (new.low, new.high))):
            tally = out[name]
            tally["below"] += low > truth + 1e-12  # drop upper bound below the true drop
            tally["above"] += high < truth - 1e-12  # drop lower bound above the true drop
            tally["zero"] += low == high == 0.0
            tally["upper_sum"] += -low
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", type=int, default=2000, help="simulated held-out sets per row")
    parser.add_argument("--seed", type=int, default=18)
    parser.add_argument("--exact-grid", action="store_true",
                        help="print the exact one-sided errors over n x discordance instead")
    args = parser.parse_args()
    if args.exact_grid:
        exact_grid()
        return
    rng = np.random.default_rng(args.seed)
    print(f"{args.sets} simulated held-out sets per row; baseline {100 * BASELINE_TOP1:.0f}% "
          "correct; the variant breaks a fraction of the baseline's correct predictions.\n")
    print("| n held-out | true drop | drop upper bound below the truth: old bootstrap | "
          "score interval (95% upper bound of the rate) | score interval, exact | "
          "drop lower bound above the truth: old / score (exact) | interval [0, 0]: old / score | "
          "mean upper bound of the drop: old / score |")
    print("|---|---|---|---|---|---|---|---|")
    for n, drop in ROWS:
        r = row(n, drop, args.sets, rng)
        old, new = r["old"], r["new"]
        exact_below, exact_above = exact_miss_rates(n, drop)
        pct = lambda k: 100.0 * k / args.sets  # noqa: E731
        print(f"| {n:,} | {drop:.2f} pt | {pct(old['below']):.1f}% | {pct(new['below']):.1f}% "
              f"(<= {upper_bound_of_rate(new['below'], args.sets):.1f}%) | {exact_below:.2f}% | "
              f"{pct(old['above']):.1f}% / {pct(new['above']):.1f}% ({exact_above:.2f}%) | "
              f"{pct(old['zero']):.1f}% / {pct(new['zero']):.1f}% | "
              f"{old['upper_sum'] / args.sets:.2f} / {new['upper_sum'] / args.sets:.2f} pt |",
              flush=True)


if __name__ == "__main__":
    main()
