"""Gate verdicts on hand-made results: which number broke which limit, and the exit code CI sees."""

from __future__ import annotations

import copy

import pytest

from compress.results.gate import LIMIT_RULES, RULES, apply_gate, gate_variant, looser_rules


def _checks(v: dict, rule: str) -> list[dict]:
    return [c for c in v["gate"]["checks"] if c["rule"] == rule]


def test_accuracy_drop_over_the_limit_fails(make_results, make_variant):
    res = make_results({"q": make_variant(change=-2.0)}, {"max_accuracy_drop": 1.0})
    verdict = apply_gate(res)
    v = res["variants"]["q"]
    assert v["gate"]["verdict"] == "fail"
    (check,) = _checks(v, "max_accuracy_drop")
    assert (
        check["passed"] is False and check["value"] == pytest.approx(2.0) and check["limit"] == 1.0
    )
    assert "top-1 drop +2.00 points" in check["detail"]
    assert verdict["failed"] == ["q"] and verdict["exit_code"] == 1 and verdict["passed"] is False


def test_accuracy_drop_within_the_limit_passes(make_results, make_variant):
    res = make_results({"q": make_variant(change=-0.5)}, {"max_accuracy_drop": 1.0})
    verdict = apply_gate(res)
    assert res["variants"]["q"]["gate"]["verdict"] == "pass"
    assert verdict == {**verdict, "passed": True, "failed": [], "errors": [], "exit_code": 0}


def test_accuracy_gain_is_never_a_drop(make_results, make_variant):
    res = make_results({"q": make_variant(change=+3.0)}, {"max_accuracy_drop": 0.0})
    apply_gate(res)
    assert res["variants"]["q"]["gate"]["verdict"] == "pass"


def test_speedup_under_the_limit_fails(make_results, make_variant):
    res = make_results({"slow": make_variant(speedup={"1": 1.2, "32": 2.0})}, {"min_speedup": 1.5})
    verdict = apply_gate(res)
    v = res["variants"]["slow"]
    assert v["gate"]["verdict"] == "fail"
    by_bs = {c["batch_size"]: c for c in _checks(v, "min_speedup")}
    assert by_bs[1]["passed"] is False and by_bs[32]["passed"] is True
    assert "1.20x vs baseline on cpu, batch 1 < 1.5x" in by_bs[1]["detail"]
    assert verdict["exit_code"] == 1


def test_speedup_batch_sizes_limit_what_is_gated(make_results, make_variant):
    res = make_results(
        {"v": make_variant(speedup={"1": 1.2, "32": 2.0})},
        {"min_speedup": 1.5, "speedup_batch_sizes": [32]},
    )
    assert apply_gate(res)["exit_code"] == 0
    assert [c["batch_size"] for c in _checks(res["variants"]["v"], "min_speedup")] == [32]


def test_unmeasured_speedup_fails_the_speed_rule(make_results, make_variant):
    res = make_results({"v": make_variant(speedup=None)}, {"min_speedup": 1.5})
    apply_gate(res)
    (check,) = _checks(res["variants"]["v"], "min_speedup")
    assert check["passed"] is False and check["value"] is None
    assert "no speed-up against baseline could be measured" in check["detail"]


def test_unmeasured_accuracy_fails_the_accuracy_rule(make_results, make_variant):
    res = make_results({"v": make_variant(change=None)}, {"max_accuracy_drop": 1.0})
    apply_gate(res)
    (check,) = _checks(res["variants"]["v"], "max_accuracy_drop")
    assert check["passed"] is False and "no held-out accuracy was measured" in check["detail"]


def test_reference_is_not_speed_gated(make_results, make_variant):
    res = make_results(
        {"onnx-fp32": make_variant(speedup=1.0), "int8": make_variant(speedup=2.0)},
        {"reference": "onnx-fp32", "min_speedup": 1.5, "max_accuracy_drop": 1.0},
    )
    verdict = apply_gate(res)
    ref = res["variants"]["onnx-fp32"]
    assert ref["gate"]["verdict"] == "reference"
    assert not _checks(ref, "min_speedup") and _checks(ref, "max_accuracy_drop")
    assert res["variants"]["int8"]["gate"]["verdict"] == "pass"
    assert verdict["exit_code"] == 0 and verdict["passing"] == ["int8"]


def test_reference_is_still_accuracy_gated(make_results, make_variant):
    res = make_results(
        {"onnx-fp32": make_variant(change=-5.0, speedup=1.0)},
        {"reference": "onnx-fp32", "max_accuracy_drop": 1.0},
    )
    assert apply_gate(res)["failed"] == ["onnx-fp32"]


def test_ungated_variant_is_reported_but_never_fails_the_run(make_results, make_variant):
    res = make_results(
        {"experiment": make_variant(change=-30.0, speedup=0.5, gated=False), "ok": make_variant()},
        {"max_accuracy_drop": 1.0, "min_speedup": 1.5},
    )
    verdict = apply_gate(res)
    assert res["variants"]["experiment"]["gate"] == {"verdict": "not gated", "checks": []}
    assert verdict["exit_code"] == 0 and verdict["failed"] == []
    assert "experiment" not in verdict["passing"]


def test_failed_variant_is_an_error_not_a_silent_drop(make_results, make_variant):
    res = make_results(
        {
            "broken": make_variant(status="failed", error="step 0 (prune): boom"),
            "ok": make_variant(),
        },
        {"max_accuracy_drop": 1.0},
    )
    verdict = apply_gate(res)
    assert res["variants"]["broken"]["gate"]["verdict"] == "error"
    assert verdict["errors"] == ["broken"] and verdict["passed"] is False
    assert verdict["exit_code"] == 3


@pytest.mark.parametrize(
    ("variants", "exit_code"),
    [
        pytest.param({"a": {"change": -0.1}, "b": {"change": 0.0}}, 0, id="all-pass"),
        pytest.param({"a": {"change": -0.1}, "b": {"change": -4.0}}, 1, id="one-fails"),
        pytest.param(
            {"a": {"change": -4.0}, "b": {"status": "failed", "error": "x"}}, 3, id="error-wins"
        ),
    ],
)
def test_exit_codes(make_results, make_variant, variants, exit_code):
    res = make_results(
        {n: make_variant(**kw) for n, kw in variants.items()}, {"max_accuracy_drop": 1.0}
    )
    assert apply_gate(res)["exit_code"] == exit_code
    assert res["verdict"]["exit_code"] == exit_code


def test_no_rules_means_every_variant_passes(make_results, make_variant):
    res = make_results({"a": make_variant(change=-50.0, speedup=0.1)})
    assert apply_gate(res)["exit_code"] == 0
    gate = res["variants"]["a"]["gate"]
    assert (gate["verdict"], gate["checks"]) == ("pass", [])


def test_recommends_the_cheapest_passing_variant(make_results, make_variant):
    res = make_results(
        {
            "cheap-but-wrong": make_variant(change=-9.0, p50_ms=1.0),
            "fast": make_variant(change=-0.2, p50_ms=2.0),
            "slow": make_variant(change=0.0, p50_ms=4.0),
        },
        {"max_accuracy_drop": 1.0},
    )
    assert apply_gate(res)["recommended"] == "fast"


def _on_two_targets(v: dict, ms: dict[str, float], usd: dict[str, float | None]) -> dict:
    """The variant timed on each target at ms per batch (batch 32), priced as given."""
    v["latency"] = {
        t: {"32": {"p50_ms": m, "batch_size": 32, "usd_per_1m": usd[t]}} for t, m in ms.items()
    }
    v["speedup"] = {t: {"32": {"estimate": 64.0 / m, "low": 60.0 / m, "high": 70.0 / m,
                                "confidence": 0.95}} for t, m in ms.items()}
    return v


def test_recommendation_without_prices_ranks_by_latency_on_each_variants_best_target(
        make_results, make_variant):
    """The issue's case: with no prices, int8 was recommended for its ONNX Runtime timing while the
    NNCF variant ran faster on OpenVINO in the same run; and the reason quoted the wrong target."""
    from compress.report.markdown import verdict_section

    none = {"cpu": None, "cpu-openvino": None}
    res = make_results({
        "int8": _on_two_targets(make_variant(change=-0.1), {"cpu": 24.0, "cpu-openvino": 30.0}, none),
        "nncf": _on_two_targets(make_variant(change=-0.2), {"cpu": 40.0, "cpu-openvino": 19.0}, none),
    }, {"max_accuracy_drop": 1.0})
    verdict = apply_gate(res)
    assert (verdict["recommended"], verdict["recommended_target"], verdict["recommended_by"]) == (
        "nncf", "cpu-openvino", "latency")
    text = verdict_section(res)
    assert "Recommended: `nncf` on `cpu-openvino`" in text and "by latency per sample" in text
    assert "3.37x faster on cpu-openvino" in text  # 64 / 19: the target it is recommended for


def test_recommendation_by_price_only_when_every_timed_target_has_one(make_results, make_variant):
    priced = _on_two_targets(make_variant(change=0.0), {"cpu": 20.0, "gpu": 10.0}, {"cpu": 0.01, "gpu": 0.05})
    res = make_results({"v": priced, "w": _on_two_targets(
        make_variant(change=0.0), {"cpu": 30.0, "gpu": 12.0}, {"cpu": 0.02, "gpu": 0.06})})
    verdict = apply_gate(res)
    assert (verdict["recommended"], verdict["recommended_target"], verdict["recommended_by"]) == (
        "v", "cpu", "usd_per_1m")  # the cheaper machine, though the GPU is faster
    res["variants"]["w"]["latency"]["gpu"]["32"]["usd_per_1m"] = None  # one target unpriced
    verdict = apply_gate(res)
    assert (verdict["recommended"], verdict["recommended_target"], verdict["recommended_by"]) == (
        "v", "gpu", "latency")


def test_gate_is_pure(make_results, make_variant):
    v = make_variant(change=-2.0)
    before = copy.deepcopy(v)
    gate_variant("q", v, {"max_accuracy_drop": 1.0, "min_speedup": 1.5})
    assert v == before


def test_rules_know_their_direction():
    assert RULES["max_accuracy_drop"].higher_is_better is False
    assert RULES["min_speedup"].higher_is_better is True
    assert RULES["max_accuracy_drop"].unit == "points" and RULES["min_speedup"].unit == "x"


@pytest.mark.parametrize("name", list(RULES))
def test_every_rule_passes_at_its_limit_and_fails_beyond_it(name):
    rule = RULES[name]
    worse = -0.5 if rule.higher_is_better else 0.5
    assert rule.passes(2.0, 2.0) and rule.relation(True) in ("<=", ">=")
    assert not rule.passes(2.0 + worse, 2.0) and rule.relation(False) in ("<", ">")
    assert rule.passes(2.0 - worse, 2.0)
    assert rule.looser(2.0, 2.0 + worse) and not rule.looser(2.0, 2.0 - worse)  # a looser limit lets worse through
    assert rule.looser(2.0, None) and not rule.looser(None, 1.0)


def test_every_limit_rule_is_a_recipe_gate_key_and_is_checked(make_results, make_variant):
    """The table, the recipe's gate section and the checks name the same rules."""
    from compress.recipe import GateConfig

    assert set(LIMIT_RULES) <= set(GateConfig.model_fields)
    v = make_variant(change=-1.0)
    v["heldout_overlap"] = {"train": 0}
    res = make_results({"q": v}, dict.fromkeys(LIMIT_RULES, 1.0))
    apply_gate(res)
    assert {c["rule"] for c in res["variants"]["q"]["gate"]["checks"]} == set(RULES)


def test_looser_rules_name_each_loosened_limit_in_its_direction():
    old = {"max_accuracy_drop": 1.0, "min_speedup": 1.5, "max_worst_class_drop": 5.0}
    new = {"max_accuracy_drop": 2.0, "min_speedup": 1.2, "max_worst_class_drop": 4.0}
    assert looser_rules(old, new) == [
        "max_accuracy_drop = 2.0 is looser than the recipe's 1.0",
        "min_speedup = 1.2 is looser than the recipe's 1.5",
    ]


def test_speed_rule_holds_when_one_target_meets_it(make_results, make_variant):
    """A variant is deployed on one target: slow on another target does not fail it."""
    v = make_variant(change=0.0, speedup=2.0)
    v["speedup"]["slow-target"] = {"1": {"estimate": 0.5, "low": 0.4, "high": 0.6, "confidence": 0.95}}
    res = make_results({"a": v}, gate={"min_speedup": 1.5})
    assert apply_gate(res)["exit_code"] == 0
    gate = res["variants"]["a"]["gate"]
    assert "slow-target" not in gate["passing_targets"] and gate["passing_targets"]
    slow = [c for c in gate["checks"] if c.get("target") == "slow-target"]
    assert slow and not slow[0]["passed"] and not slow[0]["decisive"]


def test_speed_rule_fails_when_no_target_meets_it(make_results, make_variant):
    v = make_variant(change=0.0, speedup=1.2)
    res = make_results({"a": v}, gate={"min_speedup": 1.5})
    assert apply_gate(res)["exit_code"] == 1
    assert res["variants"]["a"]["gate"]["passing_targets"] == []


def test_the_gates_check_and_the_typed_results_check_have_the_same_fields():
    """results.json's checks are written from gate.Check and read as models.Check: one shape."""
    from dataclasses import fields

    from compress.results import gate, models

    assert {f.name for f in fields(gate.Check)} == set(models.Check.model_fields)
