"""A whole tiny run with the profiler's extras on: memory, cost, break-even and the report's
serving section, plus a target that cannot run the variants."""

from __future__ import annotations

import pytest

from compress.recipe import load_recipe
from compress.report.markdown import render_report
from compress.run.pipeline import run_recipe


def _run(tmp_path_factory, tiny_project, new_tiny_recipe, *, memory: bool) -> dict:
    folder = tiny_project(tmp_path_factory.mktemp("profiled"))
    recipe = new_tiny_recipe()
    recipe["targets"] = [
        {"name": "cpu", "runtime": "onnxruntime", "device": "cpu", "threads": 1, "instance": "c7i.large"},
        {"name": "eager", "runtime": "torch", "device": "cpu", "threads": 1, "usd_per_hour": 0.1},
    ]
    recipe["profile"].update(memory=memory, requests_per_day=300_000, compression_usd_per_hour=1.2)
    import yaml

    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    outcome = run_recipe(load_recipe(path), path, out_dir=folder / "runs", log=lambda m: None)
    return outcome.results


@pytest.fixture(scope="module")
def profiled(tmp_path_factory, tiny_project, new_tiny_recipe):
    """Profiled without the memory subprocesses, so the run takes seconds."""
    return _run(tmp_path_factory, tiny_project, new_tiny_recipe, memory=False)


@pytest.mark.slow
def test_every_profiled_pair_has_its_peak_memory(tmp_path_factory, tiny_project, new_tiny_recipe):
    results = _run(tmp_path_factory, tiny_project, new_tiny_recipe, memory=True)
    for name in ("onnx-fp32", "int8"):
        mem = results["variants"][name]["memory"]["cpu"]
        assert mem["measured"] is True and mem["session_peak_bytes"] > 0, mem
        assert "eager" not in results["variants"][name]["memory"]  # not run there: not measured
    assert results["baseline"]["memory"]["eager"]["measured"] is True
    assert "MB" in render_report(results).split("### Serving on `cpu`")[1].split("###")[0]


def test_every_profiled_pair_has_cost(profiled):
    from compress.measure.cost import PRICES

    assert profiled["targets"][0]["usd_per_hour"] == PRICES["c7i.large"].usd_per_hour
    for name in ("onnx-fp32", "int8"):
        v = profiled["variants"][name]
        assert "memory" not in v  # profile.memory: false
        for m in v["latency"]["cpu"].values():
            assert m["usd_per_1m"] == pytest.approx(
                PRICES["c7i.large"].usd_per_hour / 3600 / m["throughput_per_s"] * 1e6)
            assert m["monthly_usd"] == pytest.approx(9.0 * m["usd_per_1m"])  # 300 k x 30 days = 9 M
            assert {"round_cv", "stable", "warmup_runs", "p50_low_ms"} <= set(m)


def test_break_even_uses_the_recorded_step_seconds(profiled):
    v = profiled["variants"]["int8"]
    cost = v["cost"]["cpu"]
    assert cost["against"] == "onnx-fp32"
    seconds = sum(s["compute_seconds"] for s in v["steps"])  # export (inherited) + quantize
    assert len(v["steps"]) == 2 and cost["compression_seconds"] == pytest.approx(seconds)
    assert cost["compression_usd_per_hour"] == 1.2
    assert all(s["machine"] for s in v["steps"])  # where the compute was spent
    assert cost["compression_machines"] == sorted({s["machine"] for s in v["steps"]})
    for be in cost["per_batch_size"].values():
        assert be["compression_cost_usd"] == pytest.approx(seconds / 3600 * 1.2)
        assert be["sentence"].startswith(("pays for itself", "never pays off"))


def test_targets_that_cannot_run_a_model_say_why(profiled):
    assert profiled["variants"]["int8"]["not_profiled"]["eager"] == "torch cannot run a onnx model"
    assert profiled["baseline"]["not_profiled"]["cpu"] == "onnxruntime cannot run a torch model"
    assert "eager" in profiled["baseline"]["latency"]


def test_report_shows_serving_cost_energy_and_what_was_not_profiled(profiled):
    text = render_report(profiled)
    assert "### Serving on `cpu`" in text
    assert "$ / month at 300,000 req/day" in text
    assert "**When compression pays off**" in text
    assert "`int8` against `onnx-fp32`: compressing took" in text
    assert "Price: c7i.large" in text and "verify before budgeting" in text
    assert "`int8` was not profiled on this target: torch cannot run a onnx model." in text
    energy_measured = profiled["variants"]["int8"]["latency"]["cpu"]["1"]["energy"]["measured"]
    assert ("Energy: not measured" in text) is (not energy_measured)


def test_image_models_have_no_sequence_axis_keys(profiled):
    for v in [profiled["baseline"], *profiled["variants"].values()]:
        assert not {"latency_by_seq_len", "speedup_by_seq_len", "real_lengths"} & set(v)
        assert all("seq_len" not in m for per_bs in (v.get("latency") or {}).values() for m in per_bs.values())
