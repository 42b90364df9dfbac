import math

import pytest

from compress.measure.cost import (
    PRICES,
    BreakEven,
    InstancePrice,
    break_even,
    describe,
    lookup_price,
    monthly_cost_usd,
    usd_per_1m,
)


def test_usd_per_1m_worked_example():
    # $0.17/h / 3600 s = $4.7222e-5 per second; / 1000 inf/s = $4.7222e-8 per inference;
    # x 1e6 = $0.047222 per million inferences.
    assert usd_per_1m(1000, 0.17) == pytest.approx(0.047222, rel=1e-4)


def test_usd_per_1m_halves_when_throughput_doubles():
    assert usd_per_1m(2000, 0.17) == pytest.approx(usd_per_1m(1000, 0.17) / 2)


def test_free_instance_costs_nothing():
    assert usd_per_1m(10, 0.0) == 0.0


def test_monthly_cost_worked_example():
    # 1 M requests/day x 30 days = 30 M inferences; 30 x $0.047222 = $1.41667.
    assert monthly_cost_usd(1_000_000, 1000, 0.17) == pytest.approx(1.41667, rel=1e-4)
    # 7 days: 7 x $0.047222 = $0.33056.
    assert monthly_cost_usd(1_000_000, 1000, 0.17, days=7) == pytest.approx(0.33056, rel=1e-4)


@pytest.fixture
def pruned_on_cpu() -> BreakEven:
    # Baseline: $0.17/h at 100 inf/s -> 0.17 / 3600 / 100 x 1e6 = $0.47222 per 1M.
    # Variant:  $0.17/h at 250 inf/s -> $0.18889 per 1M. Saving: $0.28333 per 1M.
    # Compressing: 1200 s on a $1.20/h machine = $0.40.
    # Break-even: 0.40 / 0.28333 x 1e6 = 1.4118 M inferences; at 300 k/day: 4.706 days.
    return break_even(
        compression_seconds=1200,
        compression_usd_per_hour=1.20,
        baseline_usd_per_1m=usd_per_1m(100, 0.17),
        variant_usd_per_1m=usd_per_1m(250, 0.17),
        requests_per_day=300_000,
    )


def test_break_even_worked_example(pruned_on_cpu: BreakEven):
    assert pruned_on_cpu.compression_cost_usd == pytest.approx(0.40)
    assert pruned_on_cpu.saving_usd_per_1m == pytest.approx(0.28333, rel=1e-4)
    assert pruned_on_cpu.break_even_inferences == pytest.approx(1.4118e6, rel=1e-4)
    assert pruned_on_cpu.days_at_traffic == pytest.approx(4.706, rel=1e-3)


def test_describe_break_even(pruned_on_cpu: BreakEven):
    assert describe(pruned_on_cpu) == (
        "pays for itself after 1.4 M inferences, about 5 days at 300 k requests/day"
    )


def test_break_even_without_traffic_has_no_days():
    be = break_even(3600, 1.0, 0.5, 0.25)  # $1 / $0.25 per 1M = 4 M inferences
    assert be.break_even_inferences == pytest.approx(4e6)
    assert be.days_at_traffic is None
    assert describe(be) == "pays for itself after 4 M inferences"


def test_break_even_short_horizon_in_hours():
    be = break_even(3600, 1.0, 0.5, 0.25, requests_per_day=24e6)  # 4 M at 1 M/hour = 4 hours
    assert (
        describe(be) == "pays for itself after 4 M inferences, about 4 hours at 24 M requests/day"
    )


def test_no_saving_never_pays_off():
    be = break_even(600, 1.0, baseline_usd_per_1m=0.2, variant_usd_per_1m=0.2, requests_per_day=1e6)
    assert be.break_even_inferences is None
    assert be.days_at_traffic is None
    assert describe(be) == "never pays off: no saving per inference"


def test_slower_variant_never_pays_off_and_says_by_how_much():
    be = break_even(600, 1.0, baseline_usd_per_1m=0.2, variant_usd_per_1m=0.3)
    assert be.saving_usd_per_1m == pytest.approx(-0.1)
    assert describe(be) == (
        "never pays off: no saving per inference (the variant costs $0.1 more per 1M)"
    )


def test_break_even_to_dict_round_trips(pruned_on_cpu: BreakEven):
    assert BreakEven(**pruned_on_cpu.to_dict()) == pruned_on_cpu


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: usd_per_1m(0, 0.17), "throughput_per_s must be a positive number, got 0"),
        (lambda: usd_per_1m(-5, 0.17), "throughput_per_s must be a positive number"),
        (lambda: usd_per_1m(math.nan, 0.17), "throughput_per_s must be a positive number"),
        (lambda: usd_per_1m(100, -0.17), "usd_per_hour must be a non-negative number of dollars"),
        (lambda: monthly_cost_usd(-1, 100, 0.17), "requests_per_day must be a non-negative"),
        (lambda: monthly_cost_usd(1, 100, 0.17, days=0), "days must be a positive number"),
        (lambda: break_even(-1, 1.0, 0.5, 0.25), "compression_seconds must be a non-negative"),
        (lambda: break_even(60, -1.0, 0.5, 0.25), "compression_usd_per_hour must be"),
        (lambda: break_even(60, 1.0, 0.5, 0.25, -10), "requests_per_day must be a non-negative"),
    ],
)
def test_bad_numbers_are_rejected(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_price_table_is_consistent():
    assert len(PRICES) >= 8
    for key, price in PRICES.items():
        assert isinstance(price, InstancePrice)
        assert key == price.name
        assert 0 < price.usd_per_hour < 10
        assert price.vcpus >= 2
        assert price.source and price.as_of and price.region


def test_lookup_price_is_case_insensitive():
    assert lookup_price("C7I.LARGE") is PRICES["c7i.large"]
    assert lookup_price("standard_d2s_v5").provider == "azure"


def test_unknown_instance_lists_valid_names():
    with pytest.raises(ValueError, match="no built-in price for instance 'c9z.huge'") as info:
        lookup_price("c9z.huge")
    for name in PRICES:
        assert name in str(info.value)


# ---------------------------------------------------------------- costs added to run results


def _timed(throughput_per_s: float) -> dict:
    return {"throughput_per_s": throughput_per_s}


@pytest.fixture
def run_entries() -> dict:
    """A reference at 100 inf/s, a variant at 250 inf/s built by steps of 1000 s + 200 s compute,
    and a variant slower than the reference (80 inf/s)."""
    return {
        "baseline": {"not_profiled": {"cpu": "onnxruntime cannot run a torch model"}},
        "onnx-fp32": {"steps": [{"step": "export", "compute_seconds": 3.0}],
                      "latency": {"cpu": {"1": _timed(100.0)}}},
        "pruned": {"steps": [{"step": "prune", "compute_seconds": 1000.0},
                             {"step": "export", "compute_seconds": 200.0, "inherited": True}],
                   "latency": {"cpu": {"1": _timed(250.0)}}},
        "slow": {"steps": [{"step": "quantize", "compute_seconds": 60.0}],
                 "latency": {"cpu": {"1": _timed(80.0)}}},
    }


def test_serving_costs_worked_example(run_entries):
    from compress.measure.cost import serving_costs

    # priced at $0.17/h, compressed on a $1.20/h machine, 300 k requests/day: the worked example
    # of pruned_on_cpu above (1200 s of steps -> $0.40; saving $0.28333 per 1M; 1.4118 M; 4.706 days)
    serving_costs(run_entries, "cpu", 0.17, reference="onnx-fp32", requests_per_day=300_000,
                  compression_usd_per_hour=1.20)
    ref = run_entries["onnx-fp32"]["latency"]["cpu"]["1"]
    assert ref["usd_per_1m"] == pytest.approx(0.47222, rel=1e-4)
    # 300 k/day x 30 days = 9 M inferences x $0.47222 = $4.25
    assert ref["monthly_usd"] == pytest.approx(4.25, rel=1e-4)
    cost = run_entries["pruned"]["cost"]["cpu"]
    assert cost["against"] == "onnx-fp32"
    assert cost["compression_seconds"] == 1200.0
    be = cost["per_batch_size"]["1"]
    assert be["compression_cost_usd"] == pytest.approx(0.40)
    assert be["break_even_inferences"] == pytest.approx(1.4118e6, rel=1e-4)
    assert be["days_at_traffic"] == pytest.approx(4.706, rel=1e-3)
    assert be["sentence"] == "pays for itself after 1.4 M inferences, about 5 days at 300 k requests/day"
    assert run_entries["slow"]["cost"]["cpu"]["per_batch_size"]["1"]["sentence"].startswith("never pays off")
    assert "cost" not in run_entries["onnx-fp32"]  # the reference is not compared with itself


def test_serving_costs_fall_back_to_the_baseline_and_default_to_the_target_price(run_entries):
    from compress.measure.cost import serving_costs

    run_entries["baseline"] = {"latency": {"cpu": {"1": _timed(100.0)}}}
    serving_costs(run_entries, "cpu", 0.17, reference="not-profiled-anywhere")
    cost = run_entries["pruned"]["cost"]["cpu"]
    assert cost["against"] == "baseline"
    assert cost["compression_usd_per_hour"] == 0.17
    assert cost["per_batch_size"]["1"]["days_at_traffic"] is None
    assert "monthly_usd" not in run_entries["pruned"]["latency"]["cpu"]["1"]


def test_serving_costs_without_a_profiled_reference_add_only_prices(run_entries):
    from compress.measure.cost import serving_costs

    serving_costs(run_entries, "cpu", 0.17, reference="nothing")
    assert "usd_per_1m" in run_entries["pruned"]["latency"]["cpu"]["1"]
    assert all("cost" not in e for e in run_entries.values())


def test_about_an_hour_is_singular():
    # $1 / $0.25 per 1M = 4 M inferences at 96 M/day (4 M per hour): one hour
    be = break_even(3600, 1.0, 0.5, 0.25, requests_per_day=96e6)
    assert describe(be) == "pays for itself after 4 M inferences, about an hour at 96 M requests/day"
