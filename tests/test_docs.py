"""The recipe reference is generated from the schema; it must match the code."""

from pathlib import Path

from compress.recipe.doc import render

ROOT = Path(__file__).resolve().parents[1]


def test_recipe_reference_is_current():
    doc = (ROOT / "docs" / "recipe.md").read_text()
    assert doc == render(), "docs/recipe.md is stale: run python -m compress.recipe.doc > docs/recipe.md"


def test_readme_quickstart_has_the_ci_commands():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    for command in ('pip install -e ".[dev]"', "compress run recipes/resnet.yaml", "pytest"):
        assert command in readme
        assert command in ci
