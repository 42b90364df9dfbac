"""The evaluator's promises: paired comparisons with intervals, more than top-1, held-out
discipline by content hash, the overfitting gate, and clear errors for bad input."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from conftest import NUM_CLASSES, learnable_images

from compress.errors import InputError
from compress.measure.accuracy import (
    EvalResult,
    compare,
    drop_decision,
    evaluate,
    fidelity,
    overfit_gap,
    per_class_accuracy,
)
from compress.measure.overlap import heldout_overlap
from compress.results.gate import gate_variant
from compress.sources.data import Split, Splits


def make_split(role: str, images: np.ndarray, labels: np.ndarray) -> Split:
    x = images.astype(np.float32) / 255.0
    ones = np.ones((1, x.shape[1], 1, 1), np.float32)
    return Split.from_arrays(role, x, labels.astype(np.int64), 0 * ones, ones, f"test:{role}")


def result_from(predictions, labels, logits=None, split="heldout") -> EvalResult:
    predictions = np.asarray(predictions, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    correct = predictions == labels
    return EvalResult(split, len(labels), float(100 * correct.mean()), None, predictions, correct,
                      np.ones(len(labels), np.float32), labels=labels, logits=logits)


class CentroidSession:
    """A healthy model: nearest class template (generalises to new samples of the same classes)."""

    def __init__(self, split: Split):
        x = split.inputs()["pixel_values"].reshape(len(split), -1)
        self.centroids = np.stack([x[split.labels == c].mean(axis=0) for c in range(NUM_CLASSES)])

    def run(self, inputs) -> np.ndarray:
        batch = inputs["pixel_values"]
        d = ((batch.reshape(len(batch), 1, -1) - self.centroids[None]) ** 2).sum(axis=2)
        return (-d).astype(np.float32)

    def close(self) -> None:
        pass


class MemorisingSession:
    """A deliberately memorised model: right on every sample it was fitted on (looked up by
    content), a fixed guess on everything else, as a model fine-tuned to death on a tiny split."""

    def __init__(self, split: Split):
        self.table = {hashlib.sha1(x.tobytes()).hexdigest(): int(y)
                      for x, y in zip(split.inputs()["pixel_values"], split.labels, strict=True)}

    def run(self, inputs) -> np.ndarray:
        batch = inputs["pixel_values"]
        out = np.zeros((len(batch), NUM_CLASSES), np.float32)
        for i, x in enumerate(batch):
            out[i, self.table.get(hashlib.sha1(x.tobytes()).hexdigest(), 0)] = 5.0
        return out

    def close(self) -> None:
        pass


@pytest.fixture
def toy_splits() -> Splits:
    images, labels = learnable_images(n=300, seed=1)
    splits = Splits()
    splits["train"] = make_split("train", images[:40], labels[:40])  # tiny train split
    splits["heldout"] = make_split("heldout", images[100:], labels[100:])
    splits.classes = [str(c) for c in range(NUM_CLASSES)]
    return splits


# --- paired comparison ----------------------------------------------------------------------------


def test_compare_reports_paired_change_interval_top5_per_class_and_fidelity():
    rng = np.random.default_rng(0)
    labels = np.arange(200) % NUM_CLASSES
    base_logits = rng.normal(size=(200, NUM_CLASSES)).astype(np.float32)
    base_logits[np.arange(200), labels] += 3.0  # the baseline is mostly right
    var_logits = base_logits.copy()
    broken = np.flatnonzero(labels == 3)[:10]  # the variant breaks 10 of the 20 samples of class 3
    var_logits[broken, 3] -= 10.0
    base = EvalResult("heldout", 200, 0, None, base_logits.argmax(1), base_logits.argmax(1) == labels,
                      np.ones(200, np.float32), labels=labels, logits=base_logits)
    base.top1 = float(100 * base.correct.mean())
    var = EvalResult("heldout", 200, 0, None, var_logits.argmax(1), var_logits.argmax(1) == labels,
                     np.ones(200, np.float32), labels=labels, logits=var_logits)
    var.top1 = float(100 * var.correct.mean())
    n_broken = int(np.sum(base.correct & ~var.correct))

    out = compare(var, base)

    assert out["change_points"] == pytest.approx(-100 * n_broken / 200)
    iv = out["change_interval"]
    assert iv["low"] <= out["change_points"] <= iv["high"] < 0
    assert out["change_split"] == "heldout" and out["change_n"] == 200
    assert out["mcnemar"]["n_baseline_only"] == n_broken
    assert out["per_class"]["worst_class"] == 3
    assert out["per_class"]["worst_class_drop_points"] == pytest.approx(100 * n_broken / 20)
    assert out["per_class"]["worst_class_n"] == 20
    # 190 of 200 outputs are untouched (cosine 1), the 10 broken ones point elsewhere
    assert out["fidelity"]["cosine_min"] < 0.5 and 0.9 < out["fidelity"]["cosine_mean"] < 1.0
    assert out["fidelity"]["kl_max_nats"] > 1.0


def test_per_class_accuracy_and_fidelity_of_identical_outputs():
    r = result_from([0, 1, 1, 2], [0, 1, 2, 2])
    acc, n = per_class_accuracy(r, 4)
    assert acc == [100.0, 100.0, 50.0, None] and n == [1, 1, 2, 0]
    logits = np.random.default_rng(0).normal(size=(5, 3))
    f = fidelity(logits, logits.copy())
    assert f["cosine_mean"] == pytest.approx(1.0) and f["kl_mean_nats"] == pytest.approx(0.0, abs=1e-12)


def test_evaluate_scores_top1_and_top5_from_a_session(toy_splits):
    held = toy_splits["heldout"]
    result = evaluate(CentroidSession(toy_splits["train"]), held, batch_size=64)
    assert result.n == len(held) and result.split == "heldout"
    assert result.top1 > 90 and result.top5 >= result.top1
    assert result.logits.shape == (len(held), NUM_CLASSES)


# --- can the held-out set decide? -----------------------------------------------------------------


def _acc(change, low, high, n, discordance):
    return {"change_points": change, "change_n": n, "discordance_rate": discordance,
            "change_interval": {"estimate": change, "low": low, "high": high, "confidence": 0.95},
            "heldout": {"n": n}}


def test_drop_decision_within_beyond_and_undecided_with_needed_sample_size():
    assert drop_decision(_acc(-0.2, -0.5, 0.1, 5000, 0.02), 1.0)["state"] == "within"
    assert drop_decision(_acc(-3.0, -4.0, -2.0, 5000, 0.05), 1.0)["state"] == "beyond"
    d = drop_decision(_acc(-0.4, -2.0, 1.2, 500, 0.08), 1.0)
    assert d["state"] == "undecided"
    # margin 0.6 points at 8% discordance: the normal approximation needs
    # n = (1.96 * 100 / 0.6)^2 * 0.08 = 8537; the score interval's continuity and skewness
    # corrections ask a little more at this many discordant pairs, never less.
    assert 8537 <= d["needed_n"] <= 8537 * 1.05


def test_gate_says_held_out_is_too_small_and_modes_differ():
    v = {"status": "ok", "accuracy": _acc(-0.4, -2.0, 1.2, 500, 0.08)}
    point = gate_variant("v", v, {"max_accuracy_drop": 1.0, "mode": "point"})
    confident = gate_variant("v", v, {"max_accuracy_drop": 1.0, "mode": "confident"})
    assert point["verdict"] == "pass"  # estimate 0.4 <= 1.0
    assert confident["verdict"] == "fail"  # upper bound of the drop 2.0 > 1.0
    check = confident["checks"][0]
    assert "too small to decide" in check["detail"] and check["needed_heldout_n"] > 500
    assert check["mode"] == "confident"


# --- held-out discipline --------------------------------------------------------------------------


def test_overlap_check_catches_a_single_shared_sample(toy_splits):
    clean = heldout_overlap(toy_splits, ["train"])
    assert clean == {"train": 0}
    held = toy_splits["heldout"]
    train = toy_splits["train"]
    leaked = Splits(toy_splits)
    leaked.classes = toy_splits.classes
    images = train.pixels()
    images[7] = held.pixels([42])[0]  # one held-out sample slipped into train
    leaked["train"] = Split.from_arrays("train", images, train.labels, train.mean, train.std, "test:train")
    overlap = heldout_overlap(leaked, ["train", "calibration"])
    assert overlap == {"train": 1}
    gate = gate_variant("v", {"status": "ok", "heldout_overlap": overlap,
                              "accuracy": {"heldout": {"n": len(held)}}}, {})
    assert gate["verdict"] == "fail"
    (check,) = gate["checks"]
    assert check["rule"] == "heldout_disjoint" and check["value"] == 1
    assert "1 of 200 with train" in check["detail"]


# --- overfitting ----------------------------------------------------------------------------------


def _evals(session, splits):
    return {r: evaluate(session, splits[r]) for r in ("train", "heldout")}


def test_overfit_gate_fires_on_a_memorised_model_and_not_on_a_healthy_one(toy_splits):
    baseline = _evals(CentroidSession(toy_splits["train"]), toy_splits)
    memorised = _evals(MemorisingSession(toy_splits["train"]), toy_splits)
    jittered = toy_splits["train"]
    healthy_fit = Split.from_arrays("train", np.clip(jittered.pixels() + 0.01, 0, 1), jittered.labels,
                                    jittered.mean, jittered.std, "jittered")
    healthy = _evals(CentroidSession(healthy_fit), toy_splits)
    gate = {"max_overfit_gap_increase": 5.0, "mode": "confident"}

    bad = overfit_gap(memorised, baseline, "train")
    assert bad["variant_fit_top1"] == 100.0 and bad["variant_heldout_top1"] < 20
    assert bad["gap_increase_interval"]["low"] > 50
    verdict = gate_variant("memorised", {"status": "ok", "overfit": bad}, gate)
    assert verdict["verdict"] == "fail"
    assert "train n=40, held-out n=200" in verdict["checks"][0]["detail"]

    good = overfit_gap(healthy, baseline, "train")
    assert abs(good["gap_increase_points"]) < 2
    assert gate_variant("healthy", {"status": "ok", "overfit": good}, {**gate, "mode": "point"}
                        )["verdict"] == "pass"
    # Nothing changed on 40 train samples bounds the growth by about 10 points, not 0: a confident
    # gate at 5 points cannot pass it on this little data, one at 10 points does.
    assert 5.0 < good["gap_increase_interval"]["high"] < 10.0
    assert gate_variant("healthy", {"status": "ok", "overfit": good}, gate)["verdict"] == "fail"
    assert gate_variant("healthy", {"status": "ok", "overfit": good},
                        {**gate, "max_overfit_gap_increase": 10.0})["verdict"] == "pass"


# --- bad input ------------------------------------------------------------------------------------


def test_evaluate_refuses_an_empty_split(toy_splits):
    train = toy_splits["train"]
    empty = train.subset(np.arange(0), role="heldout")
    with pytest.raises(InputError, match="heldout split is empty"):
        evaluate(CentroidSession(train), empty)


def test_evaluate_refuses_labels_outside_the_models_classes(toy_splits):
    train = toy_splits["train"]
    drift = Split.from_arrays("drift", train.pixels(), train.labels + 5, train.mean, train.std, "drift")
    with pytest.raises(InputError, match=r"drift split has labels up to 14, but the model outputs 10"):
        evaluate(CentroidSession(train), drift)


def test_negative_tolerance_is_a_clear_error():
    with pytest.raises(ValueError, match="must be a number of points >= 0"):
        drop_decision(_acc(-0.4, -2.0, 1.2, 500, 0.08), -1.0)
    with pytest.raises(ValueError, match="max_overfit_gap_increase is a tolerance in points"):
        gate_variant("v", {"status": "ok"}, {"max_overfit_gap_increase": -0.5})


# --- the evaluation stage of a run ----------------------------------------------------------------


def test_evaluation_stage_adds_a_robustness_profile_when_no_drift_data_is_given(toy_splits):
    from conftest import _tiny_recipe

    from compress.recipe import parse_recipe
    from compress.run.build import Built
    from compress.run.evaluate import evaluate_all

    data = _tiny_recipe()
    data["evaluate"] = {"bootstrap_resamples": 200,
                        "robustness": {"corruptions": ["contrast"], "severities": [1, 5]}}
    recipe = parse_recipe(data)
    baseline, variant = object(), object()
    sessions = {id(baseline): CentroidSession(toy_splits["train"]),
                id(variant): MemorisingSession(toy_splits["train"])}
    variants = {"memorised": {"consumed_splits": ["train"]}}
    base_entry = evaluate_all(
        recipe, toy_splits, baseline, {"trained": False}, {"memorised": Built("memorised", variant)},
        variants, lambda art: sessions[id(art)], lambda art: "cpu", log=lambda _m: None,
    )
    profile = base_entry["drift"]["robustness"]
    assert sorted(profile["cells"]) == ["contrast@1", "contrast@5"]
    assert profile["cells"]["contrast@5"]["top1"] < profile["cells"]["contrast@1"]["top1"]
    v = variants["memorised"]
    assert "change_points" in v["drift"]["robustness"]["cells"]["contrast@1"]
    assert v["fit_splits"] == ["train"] and v["heldout_overlap"] == {"train": 0}
    assert v["overfit"]["gap_increase_points"] > 50
    assert base_entry["fit_splits"] == [] and "overfit" not in base_entry


def test_report_says_held_out_is_too_small_with_the_sample_size_needed():
    from compress.report.evaluation import accuracy_lines

    v = {"status": "ok", "accuracy": _acc(-0.4, -2.0, 1.2, 500, 0.08)}
    v["gate"] = gate_variant("v", v, {"max_accuracy_drop": 1.0})
    lines = accuracy_lines(v, {"data": {"classes": []}})
    assert lines[0].startswith("Paired with the baseline on `heldout` (n=500): top-1 change -0.40 "
                               "points [95% CI -2.00, +1.20]")
    needed = v["gate"]["checks"][0]["needed_heldout_n"]
    assert lines[1] == (f"> ⚠️ held-out (n=500) too small to decide at this tolerance (1 points); "
                        f"about {needed} samples needed.")


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("gate", "max_drift_drop_increase", -1.0,
         r"gate.max_drift_drop_increase: max_drift_drop_increase is a tolerance in points and must "
         r"be >= 0 \(0 = no loss allowed\), got -1.0"),
        ("gate", "max_worst_class_drop", -0.5, r"gate.max_worst_class_drop: .* must be >= 0"),
        ("gate", "mode", "strict", r"gate.mode: Input should be 'point' or 'confident'"),
        ("evaluate", "bootstrap_resamples", 10, r"evaluate.bootstrap_resamples: .*greater than or equal to 100"),
        ("evaluate", "robustness", {"corruptions": ["fog"]},
         r"evaluate.robustness.corruptions: unknown corruption\(s\) \['fog'\]; valid: brightness"),
    ],
)
def test_bad_evaluator_keys_fail_with_their_path(section, key, value, message):
    from conftest import _tiny_recipe

    from compress.errors import RecipeError
    from compress.recipe import parse_recipe

    data = _tiny_recipe()
    data.setdefault(section, {})[key] = value
    with pytest.raises(RecipeError, match=message):
        parse_recipe(data)
