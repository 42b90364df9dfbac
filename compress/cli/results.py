"""`compress gate` and `compress compare`: verdicts and diffs of finished runs, nothing rerun."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from compress.cli.app import (
    GateMode,
    _ci_outputs,
    app,
    err_console,
    out_console,
)
from compress.errors import InputError, RecipeError

ResultsArg = Annotated[Path, typer.Argument(
    help="A results.json, the run directory holding it, or a report directory (its newest run).",
    show_default=False)]


@app.command()
def gate(
    results: ResultsArg,
    max_accuracy_drop: Annotated[float | None, typer.Option(help="Override gate.max_accuracy_drop (points).")] = None,
    min_speedup: Annotated[float | None, typer.Option(help="Override gate.min_speedup (x).")] = None,
    speedup_batch_size: Annotated[list[int] | None, typer.Option(
        "--speedup-batch-size", help="Override gate.speedup_batch_sizes (repeat for several).")] = None,
    mode: Annotated[GateMode | None, typer.Option(help="Override gate.mode.", show_default=False)] = None,
    rule: Annotated[list[str] | None, typer.Option(
        help="Override any other gate rule, NAME=VALUE (e.g. max_worst_class_drop=5); repeatable.")] = None,
    junit: Annotated[Path | None, typer.Option(help="Write each gate check as a JUnit test case to this file.")] = None,
) -> None:
    """Re-apply the gate (possibly stricter) to an existing run's results, without rerunning anything.

    Options override the recipe's gate rules. Nothing in the run directory is changed. Exits 0 when
    every gated variant passes, 1 when a gate fails, 2 for invalid results or options, 3 when the
    run had a variant that failed to build or run.
    """
    from compress.report.markdown import verdict_section
    from compress.results.gate import apply_gate, looser_rules, override_gate
    from compress.results.schema import load_results

    overrides: dict = {"max_accuracy_drop": max_accuracy_drop, "min_speedup": min_speedup,
                       "speedup_batch_sizes": speedup_batch_size or None,
                       "mode": mode.value if mode is not None else None}
    for item in rule or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise RecipeError(f"--rule {item!r} is not NAME=VALUE, e.g. --rule max_worst_class_drop=5")
        overrides[key.strip()] = value.strip()
    res, file = load_results(results)
    recipe_gate = res["recipe"].get("gate", {})
    new_gate = override_gate(recipe_gate, overrides)
    for line in looser_rules(recipe_gate, new_gate):
        err_console.print(f"note: {line}", highlight=False, markup=False)
    summary = apply_gate(res, new_gate)
    out_console.print(f"Gate re-applied to {file}", highlight=False, soft_wrap=True, markup=False)
    out_console.print(verdict_section(res), highlight=False, soft_wrap=True, markup=False)
    for name, v in res["variants"].items():
        for c in v["gate"]["checks"]:
            out_console.print(f"  {'PASS' if c['passed'] else 'FAIL'}  {name}: {c['detail']}",
                              highlight=False, markup=False, soft_wrap=True)
    _ci_outputs(res, junit, None)
    raise typer.Exit(summary["exit_code"])


@app.command()
def compare(
    run_a: Annotated[Path, typer.Argument(help="The reference run (e.g. main's last run): results.json or its directory.",
                                          show_default=False)],
    run_b: Annotated[Path, typer.Argument(help="The candidate run (e.g. this branch's).", show_default=False)],
    max_accuracy_drop: Annotated[float | None, typer.Option(
        help="Points of held-out top-1 a model may lose from A to B (default: B's gate.max_accuracy_drop).")] = None,
    max_speedup_loss: Annotated[float | None, typer.Option(
        help="Fraction of A's speed-up a variant may lose, judged when the intervals do not overlap "
        "(off by default: on shared machines speed-ups move between runs).")] = None,
    max_latency_increase: Annotated[float | None, typer.Option(
        help="Fraction p50 latency may grow (off by default: absolute times move between machines).")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Also write the Markdown here.")] = None,
) -> None:
    """Markdown diff of the same variants in two runs, with intervals.

    Accuracy and latency changes with intervals, new and vanished variants. Exits 1 when a change
    is a regression beyond the tolerances, 2 for invalid input. Appends the diff to
    $GITHUB_STEP_SUMMARY when set.
    """
    from compress.results.ci import append_step_summary
    from compress.results.compare import Tolerances, compare_runs, render_comparison
    from compress.results.schema import load_results

    if max_speedup_loss is not None and not 0 <= max_speedup_loss < 1:
        raise RecipeError(f"--max-speedup-loss is a fraction in [0, 1), got {max_speedup_loss}")
    if max_latency_increase is not None and max_latency_increase < 0:
        raise RecipeError(f"--max-latency-increase is a fraction >= 0 (0.2 = 20% slower), got {max_latency_increase}")
    if max_accuracy_drop is not None and max_accuracy_drop < 0:
        raise RecipeError(f"--max-accuracy-drop is a tolerance in points and must be >= 0, got {max_accuracy_drop}")
    a, file_a = load_results(run_a)
    b, file_b = load_results(run_b)
    tol = Tolerances.from_results(b, max_accuracy_drop=max_accuracy_drop, max_speedup_loss=max_speedup_loss,
                                  max_latency_increase=max_latency_increase)
    cmp = compare_runs(a, b, tolerances=tol, seed=b["recipe"].get("seed", 0))
    cmp.notes.insert(0, f"A: `{file_a}` (started {a['run']['started']}); "
                        f"B: `{file_b}` (started {b['run']['started']})")
    text = render_comparison(cmp)
    if output is not None:
        try:
            output.write_text(text)
        except OSError as err:
            raise InputError(f"cannot write {output}: {err}") from None
    append_step_summary(text)
    typer.echo(text)
    raise typer.Exit(cmp.exit_code)


