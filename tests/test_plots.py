"""The Pareto plot beside report.md: which points, which front, which files, and the report's embed."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from compress.report.markdown import render_report
from compress.report.plots import pareto_front, plot_filename, plotted_targets, write_plots

GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture
def results() -> dict:
    return json.loads((GOLDEN / "results.json").read_text())


def _p(name, cost, top1):
    return {"name": name, "p50_ms": cost, "top1": top1}


def test_pareto_front_keeps_only_undominated_points_cheapest_first():
    pts = [_p("slow-good", 10, 90), _p("fast-bad", 1, 80), _p("mid", 5, 85),
           _p("dominated", 6, 84), _p("tie-worse", 5, 84)]
    assert [p["name"] for p in pareto_front(pts, "p50_ms")] == ["fast-bad", "mid", "slow-good"]


def test_pareto_front_skips_points_without_that_cost():
    pts = [{"name": "a", "usd_per_1m": None, "top1": 99}, {"name": "b", "usd_per_1m": 0.1, "top1": 90}]
    assert [p["name"] for p in pareto_front(pts, "usd_per_1m")] == ["b"]


def test_one_png_per_timed_target_and_the_report_embeds_exactly_those(tmp_path, results):
    results["targets"].append({"name": "gpu box", "runtime": "tensorrt", "device": "cuda", "threads": None,
                               "usd_per_hour": 1.0})  # nothing was timed there
    assert plotted_targets(results) == ["cpu"]
    paths = write_plots(results, tmp_path)
    assert paths == [tmp_path / "pareto-cpu.png"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    with Image.open(paths[0]) as im:
        assert im.size == (1100, 420)  # two panels: latency and $ per 1M
    report = render_report(results)
    assert "](pareto-cpu.png)" in report
    assert plot_filename("gpu box") not in report


def test_without_prices_the_plot_has_one_panel(tmp_path, results):
    for v in [results["baseline"], *results["variants"].values()]:
        for per_bs in (v.get("latency") or {}).values():
            for m in per_bs.values():
                m["usd_per_1m"] = None
    (path,) = write_plots(results, tmp_path)
    from PIL import Image

    with Image.open(path) as im:
        assert im.size == (600, 420)


def test_nothing_timed_means_no_plot_and_no_embed(tmp_path, results):
    bare = copy.deepcopy(results)
    for v in bare["variants"].values():
        v.pop("latency", None)
    assert write_plots(bare, tmp_path) == []
    assert "pareto" not in render_report(bare)


def test_plot_filename_is_safe_for_any_target_name():
    assert plot_filename("cpu") == "pareto-cpu.png"
    assert plot_filename("g5.xlarge / T4") == "pareto-g5.xlarge_T4.png"


def test_a_drawing_failure_is_exit_3_naming_the_target(tmp_path, results, monkeypatch):
    import compress.report.plots as plots
    from compress.errors import CompressError

    def broken(*args, **kwargs):
        raise ValueError("bad axis limits")

    monkeypatch.setattr(plots, "render_plot", broken)
    with pytest.raises(CompressError, match="Pareto plot of target 'cpu' failed: ValueError") as info:
        plots.write_plots(results, tmp_path)
    assert info.value.exit_code == 3


def test_non_finite_numbers_are_left_out_of_the_plot(results):
    from compress.report.plots import _points

    results["variants"]["int8"]["latency"]["cpu"]["8"]["p50_ms"] = float("inf")
    results["variants"]["pruned"]["latency"]["cpu"]["8"]["usd_per_1m"] = float("nan")
    points = {p["name"]: p for p in _points(results, "cpu")}
    assert "int8" not in points
    assert points["pruned"]["usd_per_1m"] is None
