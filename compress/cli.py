"""The `compress` command. Thin: parse arguments, call the library, map errors to exit codes.

Exit codes: 0 every gated variant passes; 1 a gate failed; 2 the recipe or its inputs are
invalid; 3 a step or runtime failed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from compress.errors import CompressError, RecipeError

app = typer.Typer(
    name="compress",
    help=(
        "Prune, quantize and export a trained model into variants, then prove on held-out data "
        "and the target hardware which one is worth deploying.\n\n"
        "Start with: compress run recipes/resnet.yaml"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# With OpenMP's default active wait, two threads on a busy 2-core machine run PyTorch up to 17x
# slower (measured here: ResNet-18 forward 0.95 s vs 0.055 s). Passive waiting costs little when
# the machine is idle. Set before torch is imported; a user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

err_console = Console(stderr=True)
out_console = Console()

RecipeArg = Annotated[Path, typer.Argument(help="The recipe YAML file.", show_default=False)]


def _fail(err: CompressError) -> typer.Exit:
    kind = {2: "invalid input", 3: "failed"}.get(err.exit_code, "error")
    err_console.print(f"[bold red]error[/] ({kind}): {err}", highlight=False, markup=True)
    return typer.Exit(err.exit_code)


@app.command()
def run(
    recipe: RecipeArg,
    out: Annotated[Path | None, typer.Option(help="Where run directories go (default: the recipe's report.dir).")] = None,
    cache: Annotated[bool, typer.Option(help="Reuse artifacts built by earlier runs of the same steps.")] = True,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Build every variant of RECIPE, evaluate and profile it, write the report, apply the gate.

    Writes runs/<name>/<timestamp>/ with recipe.yaml, environment.json, artifacts/, results.json
    and report.md. Exits 0 when every gated variant passes, 1 when a gate fails, 2 for an invalid
    recipe or input, 3 when a step or runtime fails.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from compress.pipeline import run_recipe
    from compress.recipe import load_recipe

    try:
        rec = load_recipe(recipe)
    except CompressError as err:
        raise _fail(err) from None
    import time

    t0 = time.perf_counter()

    def log(msg: str) -> None:
        if not quiet:
            err_console.print(f"[dim]{time.perf_counter() - t0:7.1f}s  {msg}[/]", highlight=False)

    progress = None
    if not quiet:
        progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=err_console, transient=True,
        )
    try:
        if progress is not None:
            with progress:
                outcome = run_recipe(rec, recipe, out_dir=out, use_cache=cache, progress=progress, log=log)
        else:
            outcome = run_recipe(rec, recipe, out_dir=out, use_cache=cache, log=log)
    except CompressError as err:
        raise _fail(err) from None
    _print_summary(outcome)
    raise typer.Exit(outcome.exit_code)


def _print_summary(outcome) -> None:
    from compress.report import comparison_table, verdict_section

    res = outcome.results
    out_console.print(verdict_section(res), highlight=False)
    first = res["targets"][0]["name"]
    out_console.print(comparison_table(res, first), highlight=False, soft_wrap=True)
    out_console.print(f"\nReport: {outcome.run_dir / 'report.md'}", highlight=False, soft_wrap=True)


@app.command()
def validate(recipe: RecipeArg) -> None:
    """Check RECIPE without running anything: every problem is listed with its key path. Exit 2 if invalid."""
    from compress.recipe import load_recipe

    try:
        rec = load_recipe(recipe)
    except RecipeError as err:
        err_console.print(f"[bold red]{recipe} is invalid[/]", highlight=False)
        for p in err.problems if len(err.problems) > 1 or "\n" not in str(err) else [str(err)]:
            err_console.print(f"  {p}", highlight=False, markup=False)
        raise typer.Exit(2) from None
    except CompressError as err:
        raise _fail(err) from None
    kinds = rec.final_kinds()
    out_console.print(f"{recipe}: valid ({len(rec.variants)} variants, {len(rec.targets)} target(s))", highlight=False)
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


def main() -> None:  # pragma: no cover
    app()
