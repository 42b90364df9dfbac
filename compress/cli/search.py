"""`compress search`: Optuna varies the recipe's `search:` options on the tuning split; the front is
then measured on held-out like any run."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from compress.cli.app import app, err_console, out_console
from compress.errors import InputError


@app.command()
def search(
    recipe: Annotated[Path | None, typer.Argument(help="A recipe with a `search:` section.", show_default=False)] = None,
    resume: Annotated[Path | None, typer.Option(help="Continue the search stored in this search directory.")] = None,
    out: Annotated[Path | None, typer.Option(help="Where the search directory goes (default: the recipe's report.dir).")] = None,
    max_trials: Annotated[int | None, typer.Option(
        min=1, help="Stop after this many new trials (resume later with --resume).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
    ray: Annotated[bool, typer.Option("--ray", help="Run trials as tasks on a local Ray started here (pip extra `ray`).")] = False,
    ray_address: Annotated[str | None, typer.Option(help="Join this Ray cluster (e.g. HEAD_IP:6379) instead; see docs/scale.md.")] = None,
) -> None:
    """Search RECIPE's `search:` space for the cheapest variant that passes the gate.

    Trials are scored on the tuning split and timed against the gate's reference; the study is
    stored in `<report.dir>/search-<time>/study.db`, so an interrupted search continues with
    --resume DIR. When the budget is spent, the Pareto front is written as ordinary variants
    (search-result.yaml), measured on held-out and gated through `compress run`'s pipeline, and
    report.md shows the front and each member's selection optimism. Exits as `compress run` does for
    the winner (0 pass, 1 fail or nothing passed on tuning, 2 invalid recipe or space, 3 a failure);
    0 when stopped by --max-trials.

    With --ray or --ray-address, trials run in batches (one per worker CPU) as Ray tasks; each
    target's candidates are timed on a node providing it (docs/search.md, docs/scale.md).
    """

    from compress.recipe.load import load_recipe
    from compress.run.executor import make_executor
    from compress.search.directory import RECIPE_FILE, new_search_dir

    if (recipe is None) == (resume is None):
        raise InputError("give a RECIPE to start a search, or --resume SEARCH_DIR to continue one (not both)")
    if resume is not None and not (resume / RECIPE_FILE).is_file():
        raise InputError(f"--resume {resume}: not a search directory (it has no {RECIPE_FILE})")
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        if not quiet:
            err_console.print(f"[dim]{time.perf_counter() - t0:7.1f}s  {escape(msg)}[/]", highlight=False)

    with make_executor(ray=ray, ray_address=ray_address, log=log) as executor:
        if executor.name != "in-process":  # e.g. a target no node provides: before the directory is made
            executor.check(load_recipe(recipe if recipe is not None else resume / RECIPE_FILE))
        search_dir = resume if resume is not None else new_search_dir(recipe, out)
        code = _search(search_dir, executor, max_trials, quiet, log)
    raise typer.Exit(code)


def _search(search_dir: Path, executor, max_trials: int | None, quiet: bool, log) -> int:
    from compress.cli.run import _progress
    from compress.search.study import run_search

    log(f"search directory: {search_dir}")
    progress = None if quiet else _progress(log)
    with progress or contextlib.nullcontext():
        outcome = run_search(search_dir, max_new_trials=max_trials, progress=progress, log=log, executor=executor)
    if not outcome.complete:
        out_console.print(f"Stopped after {outcome.trials} trial(s); continue with: compress search --resume "
                          f"{search_dir}", highlight=False, soft_wrap=True, markup=False)
    else:
        out_console.print(f"Search finished: {outcome.trials} trial(s). Report: {search_dir / 'report.md'}",
                          highlight=False, soft_wrap=True, markup=False)
    return outcome.exit_code
