"""Golden outputs: a fixed results.json must render to exactly the checked-in Markdown.

A change to the report's wording or layout shows up as a diff of tests/golden/*.md in review.
Regenerate after an intended change with ``pytest tests/test_report_golden.py --update-golden``
(or ``UPDATE_GOLDEN=1 pytest tests/test_report_golden.py``), then read the diff.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from compress.report.markdown import render_report
from compress.results.compare import Tolerances, compare_runs, render_comparison

GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture
def update_golden(request) -> bool:
    return bool(request.config.getoption("--update-golden") or os.environ.get("UPDATE_GOLDEN") == "1")


def _check(name: str, actual: str, update: bool) -> None:
    path = GOLDEN / name
    if update:
        path.write_text(actual)
        return
    assert path.exists(), f"{path} is missing: run pytest {__file__} --update-golden"
    expected = path.read_text()
    assert actual == expected, (
        f"{name} differs from the golden file; if the change is intended, rerun with --update-golden "
        "(or UPDATE_GOLDEN=1) and review the diff"
    )


def _load(name: str) -> dict:
    return json.loads((GOLDEN / name).read_text())


def test_report_matches_golden(update_golden):
    _check("report.md", render_report(_load("results.json")), update_golden)


def test_comparison_matches_golden(update_golden):
    b = _load("results_regressed.json")
    tol = Tolerances.from_results(b, max_speedup_loss=0.10)
    cmp = compare_runs(_load("results.json"), b, a_label="main", b_label="branch", tolerances=tol)
    _check("compare.md", render_comparison(cmp), update_golden)


def test_golden_report_says_what_a_reader_needs_first():
    """The properties the golden file was reviewed for, asserted so a regeneration cannot lose them."""
    text = (GOLDEN / "report.md").read_text()
    verdict_end = text.index("## Target")
    head = text[:verdict_end]
    assert "Gate failed** for pruned" in head
    assert "Recommended: `int8`" in head and "cheapest" in head
    assert "failed to build or run:** broken" in head
    section = text[verdict_end:text.index("## Variants")]
    first_table = section[section.index("\n|"):section.index("\n\n", section.index("\n|"))]
    assert first_table.count("\n| **") == 5  # baseline + 4 variants
    assert "![Pareto plot on cpu" in section and "(pareto-cpu.png)" in section
    assert text.index("## Environment") < text.index("## Reproduce")
    assert text.rindex("\n## ") == text.index("\n## Reproduce")  # the reproduction command closes it
    assert "compress run recipes/synthetic.yaml" in text[text.index("## Reproduce"):]
