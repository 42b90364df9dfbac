"""`compress run`, `validate` and `schema`: a recipe in, a run directory or a verdict on the recipe out."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from compress.cli.app import (
    RecipeArg,
    _ci_outputs,
    app,
    err_console,
    out_console,
)
from compress.errors import RecipeError


@app.command()
def run(
    recipe: RecipeArg,
    out: Annotated[Path | None, typer.Option(help="Where run directories go (default: the recipe's report.dir).")] = None,
    cache: Annotated[bool, typer.Option(help="Reuse artifacts built by earlier runs of the same steps.")] = True,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
    junit: Annotated[Path | None, typer.Option(help="Also write each gate check as a JUnit test case to this file.")] = None,
    ray: Annotated[bool, typer.Option("--ray", help="Build, evaluate and profile as tasks on a local Ray started here (pip extra `ray`).")] = False,
    ray_address: Annotated[str | None, typer.Option(help="Join this Ray cluster (e.g. HEAD_IP:6379) instead; see docs/scale.md.")] = None,
) -> None:
    """Build every variant of RECIPE, evaluate and profile it, write the report, apply the gate.

    Writes `runs/<name>/<timestamp>/` with recipe.yaml, environment.json, artifacts/, results.json
    and report.md. Exits 0 when every gated variant passes, 1 when a gate fails, 2 for an invalid
    recipe or input, 3 when a step or runtime fails or anything unexpected happens, 143 on
    SIGTERM (nothing half-written is left). With --junit, each gate check is also written
    as a JUnit test case; when $GITHUB_STEP_SUMMARY is set, the verdict and table are appended to it.
    With --ray or --ray-address, variants are built, evaluated and profiled as Ray tasks, with the
    same artifacts, accuracies and verdict (docs/scale.md).
    """
    from compress.recipe import load_recipe
    from compress.run.executor import make_executor
    from compress.run.pipeline import run_recipe

    rec = load_recipe(recipe)
    import time

    t0 = time.perf_counter()

    def log(msg: str) -> None:
        if not quiet:
            err_console.print(f"[dim]{time.perf_counter() - t0:7.1f}s  {escape(msg)}[/]", highlight=False)

    progress = None if quiet else _progress(log)
    with make_executor(ray=ray, ray_address=ray_address, log=log) as executor, \
            progress or contextlib.nullcontext():
        outcome = run_recipe(rec, recipe, out_dir=out, use_cache=cache, progress=progress, log=log,
                             executor=executor)
    _print_summary(outcome)
    _ci_outputs(outcome.results, junit, outcome.run_dir / "report.md")
    raise typer.Exit(outcome.exit_code)


def _print_summary(outcome) -> None:
    from compress.report.markdown import comparison_table, verdict_section

    res = outcome.results
    out_console.print(verdict_section(res), highlight=False, markup=False)
    for t in res["targets"]:
        out_console.print(f"\nTarget {t['name']} ({t['runtime']} on {t['device']}):", highlight=False, markup=False)
        out_console.print(comparison_table(res, t["name"]), highlight=False, soft_wrap=True, markup=False)
    out_console.print(f"\nReport: {outcome.run_dir / 'report.md'}", highlight=False, soft_wrap=True, markup=False)


@app.command()
def validate(recipe: RecipeArg) -> None:
    """Check RECIPE without running anything: every problem is listed with its key path. Exit 2 if invalid."""
    from compress.recipe import load_recipe

    try:
        rec = load_recipe(recipe)
    except RecipeError as err:
        err_console.print(f"[bold red]{escape(str(recipe))} is invalid[/]", highlight=False)
        for p in err.problems:
            err_console.print(f"  {p}", highlight=False, markup=False)
        raise typer.Exit(2) from None
    kinds = rec.final_kinds()
    out_console.print(f"{recipe}: valid ({len(rec.variants)} variants, {len(rec.targets)} target(s))",
                      highlight=False, markup=False)
    for name in rec.variant_order():
        v = rec.variants[name]
        steps = " → ".join(n for n, _ in v.step_list()) or "(no steps)"
        if v.from_:
            steps = f"[{v.from_}] → {steps}"
        out_console.print(f"  {name}: {steps} ⇒ {kinds[name]}", highlight=False, markup=False)


@app.command()
def schema() -> None:
    """Print the recipe's JSON Schema (point your editor's YAML plug-in at it for completion)."""
    from compress.recipe import recipe_json_schema

    typer.echo(json.dumps(recipe_json_schema(), indent=2))


def _progress(log):
    """A live progress bar on a terminal; otherwise (a log, CI) a line for long work every 30 s."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from compress.run.progress import LineProgress

    if not err_console.is_terminal:
        return LineProgress(log)
    return Progress(
        TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=err_console, transient=True,
    )
