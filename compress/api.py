"""The Python API: run a recipe and read typed results, from a script or a notebook.

    import compress

    results = compress.run("recipes/resnet.yaml")           # a path, a dict or a Recipe
    results.verdict.exit_code                               # 0 pass, 1 a gate failed, 3 a variant failed
    results.variants["int8"].speedup["cpu"]["32"].estimate  # typed: compress.results.models.Results

Invalid input raises ``compress.errors.RecipeError`` / ``InputError`` (exit code 2 on the
command line), a failed run ``CompressError``; a failed gate is a verdict, not an exception.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from compress.recipe import Recipe
    from compress.results.models import Results

#: run.recipe_path of a recipe given as a dict or a Recipe (its relative paths are relative to base_dir)
IN_MEMORY = "<recipe from Python>"


def load_recipe(recipe: str | Path | dict | Recipe, *, base_dir: str | Path | None = None) -> Recipe:
    """A validated ``Recipe`` from a YAML file's path, a dict shaped like the YAML, or a Recipe.
    For a dict, ``base_dir`` (default: the working directory) is what its relative paths are
    relative to, and the files it names are checked there, as for a file."""
    from compress.recipe import Recipe, parse_recipe
    from compress.recipe import load_recipe as load_file

    if isinstance(recipe, Recipe):
        return recipe
    if isinstance(recipe, dict):
        return parse_recipe(recipe, base_dir=Path(base_dir if base_dir is not None else Path.cwd()))
    return load_file(recipe)


def run(recipe: str | Path | dict | Recipe, *, out_dir: str | Path | None = None, use_cache: bool = True,
        progress: Any = None, base_dir: str | Path | None = None,
        log: Callable[[str], None] | None = print, executor: Any = None) -> Results:
    """Run a recipe as ``compress run`` does and return its typed results (also in
    ``results.run.run_dir``: results.json, report.md, artifacts).

    ``out_dir``: where run directories go (default: the recipe's report.dir); ``use_cache``:
    reuse artifacts built before; ``progress``: a ``rich.progress.Progress`` to show bars in;
    ``base_dir``: what relative paths in a dict or Recipe are relative to (default: the working
    directory; a file's own folder for a path); ``log``: where progress lines go (None: nowhere);
    ``executor``: where the work runs (default in-process; ``compress.run.executor.make_executor``).
    """
    from compress.run.pipeline import run_recipe

    loaded = load_recipe(recipe, base_dir=base_dir)
    if isinstance(recipe, (str, Path)):
        recipe_path = Path(recipe)
    else:
        recipe_path = Path(base_dir if base_dir is not None else Path.cwd()) / IN_MEMORY
    outcome = run_recipe(loaded, recipe_path, out_dir=None if out_dir is None else Path(out_dir),
                         use_cache=use_cache, progress=progress, log=log or (lambda _m: None),
                         executor=executor)
    return load_results(outcome.run_dir)


def load_results(path: str | Path) -> Results:
    """Typed results from a results.json, its run directory, or a report directory (its newest run)."""
    from compress.results.schema import load_results as load
    from compress.results.schema import parse_results

    data, file = load(Path(path))
    return parse_results(data, str(file))
