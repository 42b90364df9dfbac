"""The Python API: compress.run / compress.load_recipe / compress.load_results, typed results."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import compress
from compress.errors import RecipeError


def test_import_compress_is_cheap():
    """No torch, no recipe schema, no runtimes at `import compress`: the API loads on first use."""
    code = ("import sys, compress; heavy = [m for m in ('torch', 'onnxruntime', 'compress.recipe') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_run_a_recipe_dict_returns_typed_results(tmp_path, recipe_dict, write_recipe):
    write_recipe(recipe_dict)  # puts the tiny model and data in tmp_path
    results = compress.run(recipe_dict, base_dir=tmp_path, out_dir=tmp_path / "runs", log=None)
    assert isinstance(results, compress.Results)
    assert results.verdict.exit_code == 0 and results.verdict.passed
    int8 = results.variants["int8"]
    assert int8.status == "ok" and int8.from_ == "onnx-fp32"
    assert set(int8.latency["cpu"]) == {"1", "4"} and int8.speedup["cpu"]["4"].estimate > 0
    assert int8.artifact.facts.int8_coverage["summary"].startswith("Conv")
    assert results.variants["onnx-fp32"].artifact.facts.opset == 17  # a step fact, no whitelist
    run_dir = tmp_path / "runs" / results.run.run_dir.rsplit("/", 1)[-1]
    assert (run_dir / "report.md").is_file()
    written = json.loads((run_dir / "results.json").read_text())
    assert results.verdict.recommended == written["verdict"]["recommended"]
    assert results.model_dump(by_alias=True, exclude_unset=True)["variants"].keys() == written["variants"].keys()
    # the package stays callable once its modules are imported (compress.run.pipeline was)
    assert callable(compress.run)


def test_load_recipe_takes_a_path_a_dict_or_a_recipe(recipe_dict, write_recipe):
    path = write_recipe(recipe_dict)
    recipe = compress.load_recipe(path)
    assert isinstance(recipe, compress.Recipe) and recipe.name == "tiny"
    assert compress.load_recipe(str(path)) == recipe == compress.load_recipe(recipe_dict, base_dir=path.parent)
    assert compress.load_recipe(recipe) is recipe


def test_a_dict_recipe_has_its_files_checked_like_a_file(recipe_dict, write_recipe, tmp_path):
    write_recipe(recipe_dict)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with pytest.raises(RecipeError, match=r"data\.source") as info:
        compress.load_recipe(recipe_dict, base_dir=elsewhere)  # the data file is not there
    assert info.value.exit_code == 2


def test_an_invalid_recipe_raises_with_its_key_path(recipe_dict):
    recipe_dict["profile"]["batch_sizes"] = [0]
    with pytest.raises(RecipeError, match=r"profile\.batch_sizes") as info:
        compress.run(recipe_dict, log=None)
    assert info.value.exit_code == 2
