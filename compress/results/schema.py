"""Loading and validating results files, and the JSON Schema of results.json.

results.json is the contract between a run and everything that reads it (the report, the gate,
`compress compare`, other tools). It is described once, by the typed models of
``compress.results.models``; they validate it and generate its JSON Schema, which is written to
``docs/results.schema.json`` by ``python -m compress.results.schema > docs/results.schema.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import ValidationError

from compress.errors import InputError
from compress.results.models import SCHEMA_ID, SCHEMA_VERSION, Results, results_json_schema

__all__ = ["SCHEMA_ID", "SCHEMA_VERSION", "load_results", "parse_results", "resolve_results_path",
           "results_json_schema", "validate_results"]


def _problem(err: dict) -> str:
    loc = [str(p) for p in err["loc"]]
    if err["type"] == "missing":
        where = ".".join(loc[:-1]) or "(top level)"
        return f"{where}: '{loc[-1]}' is a required property"
    where = ".".join(loc) or "(top level)"
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] not in ("value_error", "assertion_error") and "input" in err:
        msg += f" (got {err['input']!r:.40})"
    return f"{where}: {msg}"


def parse_results(results, source: str = "results") -> Results:
    """``results`` (a dict as read from results.json) as typed ``Results``; raises InputError
    listing every field that breaks the schema."""
    if isinstance(results, dict) and results.get("schema_version") not in (None, SCHEMA_VERSION):
        raise InputError(
            f"{source} has schema_version {results['schema_version']!r}; this compress reads "
            f"version {SCHEMA_VERSION}: rerun the recipe with this version, or use the compress "
            "version that wrote it"
        )
    try:
        return Results.model_validate(results)
    except ValidationError as err:
        problems = [_problem(e) for e in err.errors()]
    shown = "\n  ".join(problems[:10])
    more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
    raise InputError(
        f"{source} does not match the results schema (docs/results.schema.json, version "
        f"{SCHEMA_VERSION}):\n  {shown}{more}\nIt was not written by this version of compress "
        "or was edited by hand: rerun the recipe to get a valid file."
    )


def validate_results(results, source: str = "results") -> None:
    """Raise InputError listing every field of ``results`` that breaks the schema."""
    parse_results(results, source)


def resolve_results_path(path: Path) -> Path:
    """A results.json file, a run directory holding one, or a report directory whose newest
    run directory holds one (run directories are named by their UTC start time)."""
    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir():
        if (path / "results.json").is_file():
            return path / "results.json"
        runs = sorted(p for p in path.iterdir()
                      if p.is_dir() and not p.name.startswith(".") and (p / "results.json").is_file())
        if runs:
            return runs[-1] / "results.json"
        raise InputError(
            f"{path} holds no results.json, neither directly nor in a run directory below it: "
            "pass a run directory (runs/<name>/<timestamp>) or its results.json"
        )
    raise InputError(f"{path} does not exist: pass a run directory or a results.json file")


def load_results(path: Path) -> tuple[dict, Path]:
    """Read and validate results.json (see ``resolve_results_path``); return (results, file)."""
    file = resolve_results_path(path)
    try:
        results = json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise InputError(f"{file} is not valid JSON ({err}): pass the results.json a run wrote") from None
    except OSError as err:
        raise InputError(f"cannot read {file}: {err}") from None
    if not isinstance(results, dict):
        raise InputError(f"{file} holds a JSON {type(results).__name__}, not a results object")
    validate_results(results, str(file))
    return results, file


def main() -> None:  # pragma: no cover - `python -m compress.results.schema > docs/results.schema.json`
    print(json.dumps(results_json_schema(), indent=2))


if __name__ == "__main__":  # pragma: no cover
    main()
