"""`compress compare A B`: the same variants in two runs, changes with intervals, exit 1 on a regression."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from compress.cli import app
from compress.results.compare import Tolerances, compare_runs, render_comparison
from compress.results.gate import apply_gate

GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture
def run_a() -> dict:
    return json.loads((GOLDEN / "results.json").read_text())


@pytest.fixture
def run_b() -> dict:
    """The same recipe after a bad change: int8 lost 3 samples and got slower at batch 1."""
    return json.loads((GOLDEN / "results_regressed.json").read_text())


def _write(tmp_path: Path, name: str, results: dict) -> Path:
    d = tmp_path / name
    d.mkdir()
    (d / "results.json").write_text(json.dumps(results))
    return d


def test_a_run_against_itself_has_no_regression(run_a):
    cmp = compare_runs(run_a, copy.deepcopy(run_a))
    assert cmp.regressions == [] and cmp.exit_code == 0
    assert cmp.new == [] and cmp.vanished == []
    assert all(c.change_points == 0 and c.method == "paired" for c in cmp.accuracy)
    assert "✅ No regression" in render_comparison(cmp)


def test_known_regression_is_named_and_exits_1(run_a, run_b):
    cmp = compare_runs(run_a, run_b, tolerances=Tolerances.from_results(run_b, max_speedup_loss=0.10))
    assert cmp.exit_code == 1
    acc = next(c for c in cmp.accuracy if c.variant == "int8")
    assert acc.change_points == pytest.approx(-5.0)
    assert acc.method == "paired" and acc.low < acc.change_points <= acc.high
    assert acc.regression and "`int8`" in acc.regression and "5.00 points" in acc.regression
    slow = [c for c in cmp.latency if c.regression]
    assert [(c.variant, c.batch_size) for c in slow] == [("int8", "1")]
    assert slow[0].low > 1.3  # median latency up ~50%, the whole interval above +30%
    # the reference and the unchanged baseline are not regressions
    assert not any("onnx-fp32" in r or "baseline" in r for r in cmp.regressions)
    text = render_comparison(cmp)
    assert "❌ 3 regression(s)" in text
    assert "New in B: `pruned-int8`" in text and "Vanished (in A, not in B): `pruned`" in text


def test_accuracy_tolerance_comes_from_the_recipe_and_can_be_overridden(run_a, run_b):
    loose = Tolerances.from_results(run_b, max_accuracy_drop=6.0)
    assert Tolerances.from_results(run_b).max_accuracy_drop == 2.0  # the recipe's gate
    cmp = compare_runs(run_a, run_b, tolerances=loose)
    assert not any(c.regression for c in cmp.accuracy)


def test_speed_changes_are_reported_but_not_gated_by_default(run_a, run_b):
    cmp = compare_runs(run_a, run_b)
    assert not any(c.regression for c in cmp.latency)
    slow = next(c for c in cmp.latency if (c.variant, c.batch_size) == ("int8", "1"))
    assert slow.a_speedup["estimate"] > 1.7 and slow.b_speedup["estimate"] < 1.3  # shown in the table


def test_confident_mode_judges_the_upper_bound_of_the_drop(run_a, run_b):
    # drop 5 points with an upper bound of ~11.7: point mode passes a 6-point tolerance,
    # confident mode does not
    tol = Tolerances(max_accuracy_drop=6.0, mode="confident", max_speedup_loss=None)
    acc = next(c for c in compare_runs(run_a, run_b, tolerances=tol).accuracy if c.variant == "int8")
    assert acc.regression and "upper bound of the drop" in acc.regression


def test_speed_regression_needs_non_overlapping_intervals(run_a):
    b = copy.deepcopy(run_a)
    a_sp = run_a["variants"]["int8"]["speedup"]["cpu"]["1"]
    # 15% lower, but the intervals overlap: noise, not a regression
    b["variants"]["int8"]["speedup"]["cpu"]["1"] = {**a_sp, "estimate": a_sp["estimate"] * 0.85,
                                                    "high": a_sp["high"]}
    tol = Tolerances.from_results(b, max_speedup_loss=0.10)
    assert compare_runs(run_a, b, tolerances=tol).regressions == []
    b["variants"]["int8"]["speedup"]["cpu"]["1"] = {"estimate": 1.3, "low": 1.25, "high": 1.35, "confidence": 0.95}
    assert any("speed-up on cpu, batch 1" in r for r in compare_runs(run_a, b, tolerances=tol).regressions)


def test_different_heldout_sets_are_compared_unpaired(run_a, run_b):
    run_b["data"]["heldout_labels"] = run_b["data"]["heldout_labels"][::-1]
    cmp = compare_runs(run_a, run_b)
    acc = next(c for c in cmp.accuracy if c.variant == "int8")
    assert acc.method == "unpaired"
    assert acc.low < -5.0 < acc.high
    assert any("different held-out samples" in n for n in cmp.notes)


def test_a_variant_that_stops_building_is_a_regression(run_a):
    b = copy.deepcopy(run_a)
    b["variants"]["int8"] = {"status": "failed", "error": "quantize failed: boom", "gated": True}
    apply_gate(b)
    cmp = compare_runs(run_a, b)
    assert any("`int8`: built and ran in A, failed in B: quantize failed: boom" in r for r in cmp.regressions)


def test_environment_differences_are_flagged(run_a):
    b = copy.deepcopy(run_a)
    b["environment"]["packages"]["onnxruntime"] = "1.32.0"
    cmp = compare_runs(run_a, b)
    assert any("onnxruntime 1.31.1 → 1.32.0" in n for n in cmp.notes)


def test_cli_compare_exit_codes_and_output(cli, tmp_path, run_a, run_b):
    a, b = _write(tmp_path, "main", run_a), _write(tmp_path, "branch", run_b)
    res = cli.invoke(app, ["compare", str(a), str(b), "--output", str(tmp_path / "diff.md")])
    assert res.exit_code == 1, res.output
    assert "❌ 2 regression(s)" in res.output and "`int8`: held-out top-1 fell 5.00 points" in res.output
    timed = cli.invoke(app, ["compare", str(a), str(b), "--max-speedup-loss", "0.1"])
    assert "❌ 3 regression(s)" in timed.output and "`int8`: speed-up on cpu, batch 1 fell" in timed.output
    assert (tmp_path / "diff.md").read_text() in res.output
    same = cli.invoke(app, ["compare", str(a), str(a / "results.json")])
    assert same.exit_code == 0, same.output
    # looser tolerances leave only B's own gate verdict, which flipped from pass to fail
    loose = cli.invoke(app, ["compare", str(a), str(b), "--max-accuracy-drop", "20", "--max-speedup-loss", "0.5"])
    assert loose.exit_code == 1, loose.output
    assert "❌ 1 regression(s)" in loose.output and "gate verdict pass → fail" in loose.output
    fixed = copy.deepcopy(run_b)
    apply_gate(fixed, {**fixed["recipe"]["gate"], "max_accuracy_drop": 10.0})
    c = _write(tmp_path, "fixed", fixed)
    res = cli.invoke(app, ["compare", str(a), str(c), "--max-accuracy-drop", "20", "--max-speedup-loss", "0.5"])
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize("args, message", [
    (["missing-dir", "{a}"], "does not exist"),
    (["{bad}", "{a}"], "is not valid JSON"),
    (["{a}", "{a}", "--max-speedup-loss", "1.5"], "fraction in"),
    (["{a}", "{a}", "--max-accuracy-drop", "-1"], "must be >= 0"),
    (["{a}", "{a}", "--max-latency-increase", "-0.1"], "a fraction >= 0"),
])
def test_cli_compare_invalid_input_exits_2(cli, tmp_path, run_a, args, message):
    a = _write(tmp_path, "main", run_a)
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    argv = [x.format(a=a, bad=bad) for x in args]
    res = cli.invoke(app, ["compare", *argv])
    assert res.exit_code == 2, res.output
    assert message in " ".join(res.output.split())  # rich wraps long lines


def test_cli_compare_rejects_results_that_break_the_schema(cli, tmp_path, run_a):
    broken = copy.deepcopy(run_a)
    del broken["verdict"]
    a, b = _write(tmp_path, "main", run_a), _write(tmp_path, "branch", broken)
    res = cli.invoke(app, ["compare", str(a), str(b)])
    assert res.exit_code == 2
    assert "'verdict' is a required property" in " ".join(res.output.split())


def test_cli_compare_appends_to_the_github_step_summary(cli, tmp_path, run_a, run_b):
    a, b = _write(tmp_path, "main", run_a), _write(tmp_path, "branch", run_b)
    summary = tmp_path / "summary.md"
    summary.write_text("## an earlier step\n")
    res = cli.invoke(app, ["compare", str(a), str(b)], env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert res.exit_code == 1
    text = summary.read_text()
    assert text.startswith("## an earlier step\n# compress compare: B against A")
    assert "`int8`: held-out top-1 fell 5.00 points" in text
