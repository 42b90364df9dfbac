"""report.md from hand-made results: the verdict first, the comparison table, failures shown."""

from __future__ import annotations

import copy

from compress.report.markdown import comparison_table, render_report
from compress.results.gate import apply_gate
from compress.results.schema import validate_results

COLUMNS = [
    "variant",
    "top-1 (held-out, n=500)",
    "change vs baseline, points [95% CI]",
    "p50 ms (b1 / b32)",
    "speed-up vs baseline (b1 / b32)",
    "size",
    "$ / 1M (b32)",
    "gate",
]


def _table_rows(text: str) -> list[list[str]]:
    rows = [line for line in text.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]


def _gated(make_results, make_variant) -> dict:
    res = make_results(
        {
            "int8": make_variant(change=-0.4, speedup=2.5),
            "pruned": make_variant(change=-3.0, speedup=4.0),
            "broken": make_variant(
                status="failed", error="step 0 (prune): pattern 'x' matches no module"
            ),
        },
        {"max_accuracy_drop": 1.0, "min_speedup": 1.5},
    )
    apply_gate(res)
    return res


def test_hand_made_results_meet_the_results_schema(make_results, make_variant):
    validate_results(_gated(make_results, make_variant))


def test_report_opens_with_the_verdict(make_results, make_variant):
    report = render_report(_gated(make_results, make_variant))
    title, verdict, *_ = report.split("\n\n")
    assert title == "# compress report: hand-made"
    assert verdict.startswith("**💥 1 variant(s) failed to build or run:** broken.")
    assert report.index("❌ Gate failed** for pruned") < report.index("| variant |")
    assert "Recommended: `int8`" in report


def test_passing_run_says_so(make_results, make_variant):
    res = make_results({"int8": make_variant(change=0.0, speedup=2.0)}, {"max_accuracy_drop": 1.0})
    apply_gate(res)
    report = render_report(res)
    assert report.split("\n\n")[1].startswith(
        "**✅ Every gated variant passes** (max_accuracy_drop = 1.0)"
    )


def test_comparison_table_has_the_expected_columns_and_rows(make_results, make_variant):
    res = _gated(make_results, make_variant)
    header, separator, *rows = _table_rows(comparison_table(res, "cpu"))
    assert header == COLUMNS
    assert all(set(cell) <= {"-"} for cell in separator)
    by_name = {row[0].strip("*"): row for row in rows}
    assert list(by_name) == ["baseline", "int8", "pruned", "broken"]
    assert by_name["int8"][1] == "89.60%" and by_name["int8"][2] == "-0.40"
    assert by_name["int8"][4] == "2.50x / 2.50x"
    assert by_name["int8"][7] == "✅ pass" and by_name["pruned"][7] == "❌ fail"
    assert by_name["baseline"][7] == "—"


def test_failed_variant_is_shown_with_its_error(make_results, make_variant):
    res = _gated(make_results, make_variant)
    report = render_report(res)
    broken_row = next(r for r in _table_rows(report) if r[0] == "**broken**")
    assert broken_row[-1] == "💥 error"
    assert "### broken\n\n**Failed:** step 0 (prune): pattern 'x' matches no module" in report


def test_gate_checks_are_explained_per_variant(make_results, make_variant):
    report = render_report(_gated(make_results, make_variant))
    pruned = report[report.index("### pruned") :]
    assert "❌ top-1 drop +3.00 points" in pruned


def test_report_is_a_pure_function_of_the_results(make_results, make_variant):
    res = _gated(make_results, make_variant)
    before = copy.deepcopy(res)
    first = render_report(res)
    assert res == before
    assert render_report(res) == first


def test_variant_section_names_the_quantize_rewrites(make_results, make_variant):
    res = _gated(make_results, make_variant)
    res["variants"]["int8"]["artifact"]["facts"]["quantization"] = {
        "padded_channels": [{"conv": "/conv1/Conv", "pad_node": "p", "channels": 3, "padded_to": 4}],
        "channel_pads_as_convs": [{"pad_node": "a"}, {"pad_node": "b"}],
    }
    report = render_report(res)
    int8 = report[report.index("### int8") : report.index("### pruned")]
    assert "rewritten for int8: /conv1/Conv input 3 → 4 channels, 2 channel Pad(s) run as 1x1 Conv" in int8
    assert "rewritten for int8" not in report[report.index("### pruned") :]
