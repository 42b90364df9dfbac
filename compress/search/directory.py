"""A search directory, ``<report.dir>/search-<time>/``: the recipe copied with absolute paths (so the
copies it writes read the same files and key the same cache), the study (study.db), search.json,
search-result.yaml and report.md. The cache is ``<report.dir>/.cache``, shared with `compress run`."""

from __future__ import annotations

import copy
import datetime as dt
import json
from pathlib import Path

import yaml

from compress.errors import InputError
from compress.recipe.load import load_recipe

RECIPE_FILE = "recipe.yaml"
PATH_SCHEMES = ("npz", "imagefolder", "onnx", "csv", "tsv", "jsonl", "hf", "hf-disk")


def _absolute(value: str, base_dir: Path) -> str:
    """A source with its file made absolute (python:FILE.py:NAME, npz:FILE, ...); names stay."""
    scheme, sep, ref = value.partition(":")
    if not sep:
        return value
    if scheme == "python":
        module, colon, name = ref.rpartition(":")
        if module.endswith(".py") and not Path(module).is_absolute():
            return f"python:{(base_dir / module).resolve()}{colon}{name}"
        return value
    if scheme in PATH_SCHEMES:
        path, at, split = ref.partition("@") if scheme == "hf-disk" else (ref, "", "")
        if not Path(path).expanduser().is_absolute():
            return f"{scheme}:{(base_dir / path).resolve()}{at}{split}"
    return value


def absolute_paths(data: dict, base_dir: Path) -> dict:
    """The recipe mapping with every file it names made absolute, so copies of it (the search
    directory's recipe.yaml, search-result.yaml) read the same files and key the same cache."""
    out = copy.deepcopy(data)
    model, dat = out.get("model", {}), out.get("data", {})
    if isinstance(model.get("source"), str):
        model["source"] = _absolute(model["source"], base_dir)
    if isinstance(model.get("tokenizer"), str):
        model["tokenizer"] = str((base_dir / model["tokenizer"]).resolve())
    ck = model.get("checkpoint")
    if isinstance(ck, str):
        model["checkpoint"] = str((base_dir / ck).resolve())
    elif isinstance(ck, dict) and ck.get("path"):
        ck["path"] = str((base_dir / ck["path"]).resolve())
    if isinstance(dat.get("source"), str):
        dat["source"] = _absolute(dat["source"], base_dir)
    for role, src in (dat.get("sources") or {}).items():
        dat["sources"][role] = _absolute(src, base_dir)
    for key in ("drift", "production"):
        if isinstance(dat.get(key), dict) and isinstance(dat[key].get("source"), str):
            dat[key]["source"] = _absolute(dat[key]["source"], base_dir)
    return out


def new_search_dir(recipe_path: Path, out_dir: Path | None) -> Path:
    """Validate the recipe (it must have a search section) and create ``<root>/search-<time>/``
    holding its copy with absolute paths; the cache is ``<root>/.cache``, shared with `compress run`."""
    recipe = load_recipe(recipe_path)
    if recipe.search is None:
        raise InputError(f"{recipe_path}: has no `search:` section; see docs/search.md for one")
    data = absolute_paths(json.loads(recipe.model_dump_json(by_alias=True, exclude_unset=True)),
                          recipe_path.parent.resolve())
    root = Path(out_dir) if out_dir is not None else Path(recipe.report.dir)
    data.setdefault("report", {})["dir"] = str(root.resolve())
    root.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    n = 1
    while True:
        search_dir = root / f"search-{stamp}" if n == 1 else root / f"search-{stamp}-{n}"
        try:
            search_dir.mkdir()
            break
        except FileExistsError:
            n += 1
    (search_dir / RECIPE_FILE).write_text(yaml.safe_dump(data, sort_keys=False))
    return search_dir
