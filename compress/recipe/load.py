"""Loading a recipe: YAML -> schema (per-key validation) -> rules between keys -> the files it names.

Every problem is reported at once, each with its key path, as a ``RecipeError`` (exit 2).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from compress.errors import InputError, RecipeError
from compress.recipe.rules import check_rules
from compress.recipe.schema import Recipe


def _format_loc(loc: tuple) -> str:
    out = ""
    prev = None
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part == prev or str(part).startswith("function-"):  # the tagged union repeats the step name
            continue
        else:
            out += ("." if out else "") + str(part)
        prev = part
    return out or "(top level)"


def format_validation_error(err: ValidationError) -> list[str]:
    problems = []
    for e in err.errors():
        loc = _format_loc(e["loc"])
        if e["type"] == "runtime_options":  # a runtime's typed options: one problem per key
            problems += [f"{loc}{'.' + key if key else ''}: {msg}" for key, msg in e["ctx"]["problems"]]
            continue
        if e["type"] == "runtime_check":
            problems.append(f"{loc}.options: {e['ctx']['message']}")
            continue
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; `compress schema` lists the valid keys)"
        msg = msg.removeprefix("Value error, ")
        problems.append(f"{loc}: {msg}")
    return problems


def check_files(recipe: Recipe, base_dir: Path) -> list[str]:
    """The files and folders the recipe names exist (checked without running any of your code)."""
    from compress.sources.models import resolve

    problems = []

    def need(key: str, path: str | Path, what: str, folder: bool = False) -> None:
        p = resolve(path, base_dir)
        if not (p.is_dir() if folder else p.is_file()):
            problems.append(f"{key}: {what} {str(p)!r} does not exist; paths are relative to the "
                            "recipe's folder")

    def source(key: str, value: str, kind: str) -> None:
        scheme, _, ref = value.partition(":")
        if scheme == "npz":
            need(key, ref, "file")
        elif scheme == "imagefolder":
            need(key, ref, "folder", folder=True)
        elif scheme == "onnx" and kind == "model":
            need(key, ref, "ONNX file")
        elif scheme == "hf" and kind == "model":
            problems.extend(_hf_model_dir(recipe, resolve(ref, base_dir)))
        elif scheme in ("csv", "tsv", "jsonl"):
            need(key, ref, f"{scheme} file")
        elif scheme == "hf-disk":
            need(key, ref.partition("@")[0], "dataset folder", folder=True)
        elif scheme == "python":
            module = ref.rpartition(":")[0]
            if module.endswith(".py"):
                need(key, module, "python file")
            elif module and importlib.util.find_spec(module.partition(".")[0]) is None:
                # the top-level name only: finding a submodule would import (run) its package
                problems.append(f"{key}: no module {module.partition('.')[0]!r} on the Python path; "
                                "install it, or name a file: python:path/to/file.py:NAME")

    source("model.source", recipe.model.source, "model")
    if recipe.model.tokenizer is not None:
        need("model.tokenizer", recipe.model.tokenizer, "tokenizer folder", folder=True)
    ck = recipe.model.checkpoint_config
    if ck is not None:
        need("model.checkpoint", ck.path, "checkpoint")
    data = recipe.data
    if data.source is not None:
        source("data.source", data.source, "data")
    for role, value in (data.sources or {}).items():
        source(f"data.sources.{role}", value, "data")
    if data.drift is not None and data.drift.source is not None:
        source("data.drift.source", data.drift.source, "data")
    if data.production is not None:
        source("data.production.source", data.production.source, "data")
    return problems


def _hf_model_dir(recipe: Recipe, path: Path) -> list[str]:
    """An hf: directory exists and has a config; without weights, the baseline must be trained."""
    from compress.sources.hf import has_weights

    if not path.is_dir():
        return [f"model.source: Hugging Face model folder {str(path)!r} does not exist; paths are "
                "relative to the recipe's folder"]
    if not (path / "config.json").is_file():
        return [f"model.source: {path} has no config.json, so it is not a saved Hugging Face model; save "
                "one with model.save_pretrained(DIR) (or config.save_pretrained(DIR) for an untrained model)"]
    if has_weights(path) or recipe.model.checkpoint is not None:
        return []
    if recipe.baseline.train is None:
        return [f"model.source: {path} has a config.json but no weights (model.safetensors or "
                "pytorch_model.bin), and baseline.train is not set: add `baseline: {train: {epochs: 1, "
                "optimizer: adamw, lr: 5.0e-4}}` to train it on the train split, or save weights there"]
    if "train" not in recipe.data.roles():
        return [f"model.source: {path} has no weights, so the baseline must be trained, and the data has "
                "no train split: set data.split.train (e.g. 0.6) or data.sources.train"]
    return []


def parse_recipe(data: Any, *, origin: str = "recipe", base_dir: Path | None = None) -> Recipe:
    """Validate a parsed recipe; with ``base_dir``, also check that the files it names exist."""
    if not isinstance(data, dict):
        raise RecipeError(f"{origin}: a recipe must be a YAML mapping of keys, got {type(data).__name__}")
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as err:
        problems = format_validation_error(err)
        raise RecipeError(f"{origin} is invalid:\n  " + "\n  ".join(problems), problems) from None
    problems = check_rules(recipe)
    if base_dir is not None:
        problems += check_files(recipe, base_dir)
    if problems:
        raise RecipeError(f"{origin} is invalid:\n  " + "\n  ".join(problems), problems)
    return recipe


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a recipe file. Relative input paths in it are relative to its folder."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"recipe file {str(path)!r} does not exist; check the path")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise RecipeError(f"{path}: YAML syntax error{where}: {problem}") from None
    return parse_recipe(data, origin=str(path), base_dir=path.parent)


def recipe_json_schema() -> dict:
    return Recipe.model_json_schema(by_alias=True)
