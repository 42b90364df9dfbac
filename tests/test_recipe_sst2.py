"""recipes/sst2.yaml: its schema and rules hold, its BERT config is the promised 4 x 256 model, and
without the shared SST-2 files validation stops with exit 2 naming the path it expects."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from compress.cli import app
from compress.recipe import parse_recipe

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
RECIPE = RECIPES / "sst2.yaml"
SST2_DIR = "shared/data/text-classification/sst2"


def test_sst2_recipe_schema_and_rules_hold():
    recipe = parse_recipe(yaml.safe_load(RECIPE.read_text()), origin=str(RECIPE))  # no file checks
    assert recipe.model.source == "hf:models/bert-4x256"
    assert recipe.data.sources["heldout"].endswith(f"{SST2_DIR}/dev.tsv")
    assert recipe.data.sources["train"].endswith(f"{SST2_DIR}/train.tsv")
    assert recipe.baseline.train.threads == 1 and recipe.baseline.train.optimizer == "adamw"
    assert set(recipe.variants) == {
        "onnx-fp32", "dynamic-int8", "static-int8", "pruned", "pruned-int8",
        "openvino-fp32", "openvino-int8", "pruned-openvino-int8",
    }
    kinds = recipe.final_kinds()
    assert {n for n, k in kinds.items() if k == "openvino"} == {
        "openvino-fp32", "openvino-int8", "pruned-openvino-int8"}
    # the pruned OpenVINO twin repeats the pruned variant's prune step exactly (one cached artifact)
    prune = dict(recipe.variants["pruned"].step_list())["prune"]
    assert dict(recipe.variants["pruned-openvino-int8"].step_list())["prune"] == prune
    assert recipe.gate.reference == "onnx-fp32" and recipe.gate.reference_target == "cpu"


def test_shipped_bert_config_is_the_4x256_model():
    pytest.importorskip("transformers")
    from compress.sources.models import ModelSpec

    config = json.loads((RECIPES / "models/bert-4x256/config.json").read_text())
    assert (config["num_hidden_layers"], config["hidden_size"], config["num_attention_heads"],
            config["intermediate_size"], config["num_labels"]) == (4, 256, 4, 1024, 2)
    module = ModelSpec("hf:models/bert-4x256", {}, RECIPES).build()
    assert module.config.num_hidden_layers == 4 and module.config._attn_implementation == "eager"
    assert module.config.vocab_size == 8000  # the WordPiece vocabulary trained on train has at most this


def test_sst2_recipe_without_the_shared_data_names_the_path(tmp_path):
    repo = tmp_path / "repo"  # a checkout with no shared/ folder beside it
    shutil.copytree(RECIPES, repo / "recipes")
    result = CliRunner().invoke(app, ["validate", str(repo / "recipes/sst2.yaml")])
    assert result.exit_code == 2, result.output
    assert f"{SST2_DIR}/train.tsv" in result.output and f"{SST2_DIR}/dev.tsv" in result.output


@pytest.mark.skipif(not (RECIPES / "../.." / SST2_DIR / "dev.tsv").is_file(),
                    reason="the shared SST-2 files are not beside this checkout (../shared/data)")
def test_sst2_recipe_validates_with_the_shared_data():
    result = CliRunner().invoke(app, ["validate", str(RECIPE)])
    assert result.exit_code == 0, result.output
    assert "valid (8 variants, 2 target(s))" in result.output


def test_the_agnews_eval_recipe_parses_and_its_model_has_four_named_classes():
    """eval/agnews.yaml (the AG News benchmark through compress): schema and rules hold without the
    shared data, and its config-only model names the four classes in the data's sorted order."""
    from compress.recipe import parse_recipe

    repo = Path(__file__).resolve().parents[1]
    recipe = parse_recipe(yaml.safe_load((repo / "eval" / "agnews.yaml").read_text()), origin="eval/agnews.yaml")
    assert recipe.model.source == "hf:models/bert-4x256-agnews" and recipe.data.text.max_length == 128
    config = json.loads((repo / "eval" / "models" / "bert-4x256-agnews" / "config.json").read_text())
    assert config["num_labels"] == 4
    assert [config["id2label"][str(i)] for i in range(4)] == sorted(["World", "Sports", "Business", "Sci/Tech"])
