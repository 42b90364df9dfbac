"""Drift checks: a real shift is flagged, a random split of one sample is not (at most the nominal
false-alarm rate), a variant that degrades more than the baseline is measured, and bad drift data
is refused with a clear message."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import learnable_images

from compress.errors import InputError
from compress.measure.corruptions import corrupt
from compress.measure.drift import (
    corrupted_splits,
    drift_degradation,
    labelled_shift,
    prediction_shift,
    psi_reading,
    robustness_profile,
)
from compress.recipe import DataConfig
from compress.sources.data import make_splits


def model_outputs(rng, n, *, sharpness=4.0, n_classes=10, class_p=None):
    """Predicted classes and max-softmax confidence of a simulated model."""
    logits = rng.normal(size=(n, n_classes))
    cls = rng.choice(n_classes, size=n, p=class_p)
    logits[np.arange(n), cls] += sharpness
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return logits.argmax(axis=1), (e.max(axis=1) / e.sum(axis=1)).astype(np.float32)


def test_prediction_shift_of_identical_samples_is_zero_and_not_flagged():
    pred, conf = model_outputs(np.random.default_rng(0), 500)
    out = prediction_shift(pred, conf, pred.copy(), conf.copy(), 10)
    assert out["psi_confidence"] == 0.0 and out["psi_classes"] == 0.0
    assert not out["flagged"] and out["p_value"] == 1.0


def test_prediction_shift_flags_less_confident_predictions():
    rng = np.random.default_rng(1)
    ref_pred, ref_conf = model_outputs(rng, 1000, sharpness=4.0)
    cur_pred, cur_conf = model_outputs(rng, 1000, sharpness=2.0)  # the model is less sure
    out = prediction_shift(ref_pred, ref_conf, cur_pred, cur_conf, 10)
    assert out["flagged"] and out["ks"]["p_value"] < 1e-6
    assert out["psi_confidence_reading"] in ("moderate", "major")
    assert out["confidence_mean_current"] < out["confidence_mean_reference"]


def test_prediction_shift_flags_a_change_of_predicted_classes():
    rng = np.random.default_rng(2)
    ref_pred, ref_conf = model_outputs(rng, 1000)
    skew = np.full(10, 0.05)
    skew[0] = 0.55
    cur_pred, cur_conf = model_outputs(rng, 1000, class_p=skew)
    out = prediction_shift(ref_pred, ref_conf, cur_pred, cur_conf, 10)
    assert out["flagged"] and out["chi2"]["p_value"] < 1e-6
    assert out["psi_classes_reading"] == "major"


def test_random_halves_of_one_sample_raise_at_most_the_nominal_false_alarm_rate():
    rng = np.random.default_rng(3)
    pred, conf = model_outputs(rng, 1000)
    correct = rng.random(1000) < 0.9
    alarms_unlabelled = alarms_labelled = 0
    seeds = 200
    for _ in range(seeds):
        order = rng.permutation(1000)
        a, b = order[:500], order[500:]
        alarms_unlabelled += prediction_shift(pred[a], conf[a], pred[b], conf[b], 10)["flagged"]
        alarms_labelled += labelled_shift(correct[a], correct[b], paired=False,
                                          n_resamples=100)["flagged"]
    # nominal 5%; +2 points is ~1.3 binomial standard errors for 200 seeds
    assert alarms_unlabelled / seeds <= 0.07
    assert alarms_labelled / seeds <= 0.07


def test_labelled_shift_flags_an_accuracy_drop_paired_and_unpaired():
    rng = np.random.default_rng(4)
    held = rng.random(1000) < 0.9
    drift = held & (rng.random(1000) < 0.85)  # the same samples, 15% of the right ones broken
    paired = labelled_shift(held, drift, paired=True)
    assert paired["flagged"] and paired["test"] == "mcnemar"
    assert paired["change_interval"]["high"] < 0
    unpaired = labelled_shift(held, rng.random(3000) < 0.75, paired=False)
    assert unpaired["flagged"] and unpaired["test"] == "fisher" and unpaired["drift_n"] == 3000


def test_drift_degradation_measures_how_much_more_the_variant_loses():
    rng = np.random.default_rng(5)
    base_held = rng.random(800) < 0.9
    base_drift = rng.random(800) < 0.8
    var_held = base_held.copy()  # as good as the baseline on held-out
    var_drift = base_drift & (rng.random(800) < 0.9)  # loses ~8 more points on drift
    out = drift_degradation(var_held, base_held, var_drift, base_drift)
    expected = 100 * (base_drift.mean() - var_drift.mean())
    assert out["drop_increase_points"] == pytest.approx(expected)
    assert out["drop_increase_interval"]["low"] > 0


def test_robustness_profile_over_corruptions_and_severities():
    images, labels = learnable_images(n=20)
    from compress.sources.data import Split

    ones = np.ones((1, 3, 1, 1), np.float32)
    held = Split.from_arrays("heldout", images.astype(np.float32) / 255, labels, 0 * ones, ones, "t")
    corrupted = corrupted_splits(held, ["gaussian_noise", "brightness"], [1, 5])
    assert sorted(corrupted) == ["brightness@1", "brightness@5", "gaussian_noise@1", "gaussian_noise@5"]
    assert not np.array_equal(corrupted["gaussian_noise@5"].pixels(), held.pixels())
    np.testing.assert_array_equal(corrupted["brightness@1"].pixels(),
                                  corrupt(held.pixels(), "brightness", 1))
    profile = robustness_profile({"a@1": np.array([1, 1, 0, 0])}, {"a@1": np.array([1, 1, 1, 0])})
    assert profile["cells"]["a@1"] == {"top1": 50.0, "n": 4, "change_points": -25.0}
    assert profile["mean_change_points"] == -25.0


def test_psi_reading_thresholds():
    assert [psi_reading(x) for x in (0.0, 0.12, 0.3)] == ["none", "moderate", "major"]


def test_alpha_out_of_range_is_a_clear_error():
    with pytest.raises(ValueError, match="alpha"):
        labelled_shift([1, 0], [1, 1], paired=True, alpha=0.0)


# --- bad drift data -------------------------------------------------------------------------------


def _write_npz(path, n=30, label_offset=0, classes=None):
    images, labels = learnable_images(n=n)
    arrays = {"images": images, "labels": labels + label_offset}
    if classes is not None:
        arrays["classes"] = np.array(classes)
    np.savez(path, **arrays)
    return path


def test_drift_source_with_more_classes_is_refused(tmp_path):
    _write_npz(tmp_path / "main.npz", n=100)
    _write_npz(tmp_path / "drift.npz", label_offset=2)  # labels 2..11, the model knows 0..9
    cfg = DataConfig(source="npz:main.npz", drift={"source": "npz:drift.npz"})
    with pytest.raises(InputError, match="drift data must share the label space"):
        make_splits(cfg, tmp_path, 0)


def test_drift_source_naming_a_different_number_of_classes_is_refused(tmp_path):
    _write_npz(tmp_path / "main.npz", n=100)
    _write_npz(tmp_path / "drift.npz", classes=[f"c{i}" for i in range(12)])
    cfg = DataConfig(source="npz:main.npz", drift={"source": "npz:drift.npz"})
    with pytest.raises(InputError, match="names 12 classes, but the model's data has 10"):
        make_splits(cfg, tmp_path, 0)


def test_production_source_needs_no_labels(tmp_path):
    _write_npz(tmp_path / "main.npz", n=100)
    images, _ = learnable_images(n=25, seed=9)
    np.savez(tmp_path / "prod.npz", images=images)
    splits = make_splits(DataConfig(source="npz:main.npz", production={"source": "npz:prod.npz"}),
                         tmp_path, 0)
    assert len(splits["production"]) == 25
