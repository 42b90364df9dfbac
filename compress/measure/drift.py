"""Drift checks: does a model hold up on data that differs from the held-out reference?

Three kinds, from the most to the least informative:

1. ``labelled_shift``: accuracy on a labelled drift set against held-out, per model, and (in
   ``drift_degradation``) whether a variant loses *more* than the baseline under the shift;
2. ``prediction_shift``: an unlabelled production sample, compared with held-out through what the
   model says about it: the distribution of its confidence (PSI + Kolmogorov-Smirnov) and of its
   predicted classes (PSI + chi-square);
3. ``corrupted_splits`` + ``robustness_profile``: with no drift data, synthetic corruptions of
   held-out at set severities, as a robustness profile per model.

Pure functions of per-sample results; the pipeline runs the models.
"""

from __future__ import annotations

import numpy as np

from compress.measure import stats
from compress.measure.paired import paired_diff_in_diff, paired_diff_interval

# The conventional reading of a population stability index.
PSI_READING = ((0.1, "none"), (0.25, "moderate"), (float("inf"), "major"))
DEFAULT_ROBUSTNESS_CORRUPTIONS = ("gaussian_noise", "gaussian_blur", "jpeg", "brightness")
DEFAULT_ROBUSTNESS_SEVERITIES = (1, 3, 5)


def psi_reading(value: float) -> str:
    """'none' (< 0.1), 'moderate' (< 0.25) or 'major', the usual reading of a PSI."""
    return next(label for limit, label in PSI_READING if value < limit)


def _check_alpha(alpha: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha (the false-alarm rate) must lie in (0, 1), e.g. 0.05; got {alpha!r}")


def labelled_shift(correct_heldout, correct_drift, *, paired: bool, alpha: float = 0.05,
                   n_resamples: int = 2000, seed: int = 0) -> dict:
    """One model's accuracy on drift data minus its held-out accuracy, with an interval and a
    test; ``flagged`` when the test rejects "same accuracy" at level ``alpha``.

    ``paired``: the drift set is the held-out set transformed (a synthetic corruption), so the
    samples correspond one to one (McNemar); otherwise they are different samples (Fisher).
    """
    _check_alpha(alpha)
    held = np.asarray(correct_heldout, dtype=bool)
    drift = np.asarray(correct_drift, dtype=bool)
    if paired:
        interval = paired_diff_interval(drift, held, confidence=1 - alpha)
        p_value, test = stats.mcnemar_exact(drift, held).p_value, "mcnemar"
    else:
        interval, p_value = stats.two_sample_accuracy_shift(
            held, drift, n_resamples=n_resamples, seed=seed, confidence=1 - alpha
        )
        test = "fisher"
    return {
        "heldout_top1": float(100 * held.mean()), "heldout_n": int(held.size),
        "drift_top1": float(100 * drift.mean()), "drift_n": int(drift.size),
        "change_points": interval.estimate, "change_interval": interval.to_dict(),
        "test": test, "p_value": float(p_value), "alpha": alpha, "flagged": bool(p_value < alpha),
    }


def drift_degradation(variant_heldout, baseline_heldout, variant_drift, baseline_drift, *,
                      confidence: float = 0.95) -> dict:
    """How many more points the variant loses than the baseline when moving from held-out to the
    drift set: (variant - baseline on held-out) - (variant - baseline on drift). Positive = worse."""
    interval = paired_diff_in_diff(
        variant_heldout, baseline_heldout, variant_drift, baseline_drift, confidence=confidence,
    )
    return {"drop_increase_points": interval.estimate, "drop_increase_interval": interval.to_dict()}


def prediction_shift(reference_predictions, reference_confidence, current_predictions,
                     current_confidence, n_classes: int, *, alpha: float = 0.05,
                     bins: int = 10) -> dict:
    """Shift of what one model says about an unlabelled sample against the held-out reference.

    Two tests, each at ``alpha / 2`` (Bonferroni), so the chance of a false alarm on a sample from
    the reference distribution is at most ``alpha``: Kolmogorov-Smirnov on the max-softmax
    confidence and chi-square on the predicted-class frequencies. PSI of each is the effect size.
    """
    _check_alpha(alpha)
    ks = stats.ks_shift(reference_confidence, current_confidence)
    chi2 = stats.chi2_shift(reference_predictions, current_predictions, n_classes)
    psi_conf = stats.psi(reference_confidence, current_confidence, bins=bins)
    psi_cls = stats.psi_categorical(reference_predictions, current_predictions, n_classes)
    p_value = min(1.0, 2 * min(ks.p_value, chi2.p_value))
    ref_conf = np.asarray(reference_confidence, dtype=np.float64)
    cur_conf = np.asarray(current_confidence, dtype=np.float64)
    return {
        "reference_n": int(ref_conf.size), "current_n": int(cur_conf.size),
        "confidence_mean_reference": float(ref_conf.mean()),
        "confidence_mean_current": float(cur_conf.mean()),
        "psi_confidence": psi_conf, "psi_confidence_reading": psi_reading(psi_conf),
        "psi_classes": psi_cls, "psi_classes_reading": psi_reading(psi_cls),
        "ks": ks.to_dict(), "chi2": chi2.to_dict(),
        "p_value": p_value, "alpha": alpha, "flagged": bool(p_value < alpha),
    }


def corrupted_splits(heldout, corruptions, severities, *, seed: int = 0) -> dict[str, object]:
    """Corrupted views of the held-out split, keyed ``"<corruption>@<severity>"``: each corrupts
    its batches as they are read, so no corrupted copy of the data is held."""
    return {
        f"{name}@{severity}": heldout.corrupted(name, severity, seed=seed, role="heldout",
                                                source=f"heldout + {name} (severity {severity})")
        for name in corruptions for severity in severities
    }


def robustness_profile(correct_by_key: dict[str, np.ndarray],
                       baseline_by_key: dict[str, np.ndarray] | None = None) -> dict:
    """Top-1 per ``corruption@severity`` (and its change against the baseline on the same
    corrupted samples), plus the mean over all of them."""
    cells = {}
    for key, correct in correct_by_key.items():
        correct = np.asarray(correct, dtype=bool)
        cell = {"top1": float(100 * correct.mean()), "n": int(correct.size)}
        if baseline_by_key is not None:
            cell["change_points"] = cell["top1"] - float(100 * np.mean(baseline_by_key[key]))
        cells[key] = cell
    mean_top1 = float(np.mean([c["top1"] for c in cells.values()])) if cells else None
    out = {"cells": cells, "mean_top1": mean_top1}
    if baseline_by_key is not None and cells:
        out["mean_change_points"] = float(np.mean([c["change_points"] for c in cells.values()]))
    return out
