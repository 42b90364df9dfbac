"""The recipes eval/search_resnet56.py and eval/search_vit.py write (docs/results/search.md) are valid
searches whose hand-written start is the first trial (so the result is never worse than it): checked
without the shared data (placeholder files stand for the splits and the weights)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("optuna")

from compress.recipe.load import parse_recipe  # noqa: E402
from compress.search.space import start_params  # noqa: E402
from eval import search_resnet56, search_vit  # noqa: E402


def _files(tmp_path: Path) -> tuple[dict[str, Path], Path]:
    splits = {role: tmp_path / f"{role}.npz" for role in ("heldout", "calibration", "tuning", "train")}
    weights = tmp_path / "weights.pth"
    for p in [*splits.values(), weights]:
        p.write_bytes(b"")
    return splits, weights


def test_vit_search_recipe_is_valid_and_starts_from_the_hand_guess(tmp_path):
    splits, weights = _files(tmp_path)
    recipe = parse_recipe(search_vit.recipe(splits, weights, trials=10, minutes=35, space="layers"), base_dir=tmp_path)
    assert recipe.search.start == "layers-nncf"
    assert start_params(recipe) == {"prune.ratio": 0.2, "prune.finetune.epochs": 3,
                                    "prune.finetune.distill.hidden_states": False,
                                    "targets.openvino.options.hint": "LATENCY"}
    assert recipe.search.budget.minutes == 35 and recipe.gate.max_accuracy_drop == 1.0


def test_vit_ffn_search_recipe_cuts_only_the_ffn_neurons(tmp_path):
    splits, weights = _files(tmp_path)
    recipe = parse_recipe(search_vit.recipe(splits, weights, trials=10, minutes=None), base_dir=tmp_path)
    assert recipe.search.start == "ffn-nncf"
    assert start_params(recipe) == {"prune.ratio": 0.25, "prune.finetune.epochs": 3,
                                    "targets.openvino.options.hint": "LATENCY"}
    prune = recipe.variants["ffn-nncf"].steps[0].prune
    assert prune.granularity == "channels" and "transformer.layers.*.linear2" in prune.ignore


def test_compare_recipe_adds_the_unpruned_nncf_variant_without_search(tmp_path):
    splits, weights = _files(tmp_path)
    result = search_vit.recipe(splits, weights, trials=4, minutes=None)
    compare = parse_recipe(search_resnet56.compare_recipe(result, "vit-compare"), base_dir=tmp_path)
    assert compare.search is None
    assert set(compare.variants) == {"onnx-fp32", "ffn-nncf", "nncf-int8"}
    assert compare.variants["nncf-int8"].from_ == "onnx-fp32"
    assert "search" in result  # the search-result given is not modified
    result["targets"].append({**result["targets"][1], "name": "openvino-trial4", "options": {"hint": "THROUGHPUT"}})
    result["variants"]["ffn-nncf"]["targets"] = ["openvino-trial4"]
    compare = parse_recipe(search_resnet56.compare_recipe(result, "vit-compare"), base_dir=tmp_path)
    assert compare.variants["nncf-int8-openvino-trial4"].targets == ["openvino-trial4"]


def _resnet_weights(tmp_path: Path) -> Path:
    (tmp_path / "cifar10_resnets").mkdir()
    (tmp_path / "cifar10_resnets" / "resnet56-f146b3b8.th").write_bytes(b"")
    return tmp_path / "cifar10_resnets"


def test_resnet56_prune_search_recipe_takes_its_space_from_the_arguments(tmp_path):
    splits, _ = _files(tmp_path)
    r = search_resnet56.recipe(splits, _resnet_weights(tmp_path), trials=10)
    r = search_resnet56.prune_space(r, 42, budgets=(0.55, 0.6, 0.65), importances=("taylor",), epochs=(8, 12),
                                    batch_size=64, fidelity_samples=None)
    recipe = parse_recipe(r, base_dir=tmp_path)
    assert "fidelity" not in r["search"] and "prune.importance" not in r["search"]["space"]
    assert start_params(recipe) == {"prune.macs_budget": 0.65, "prune.finetune.epochs": 8}
    prune = recipe.variants["taylor65-nncf"].steps[0].prune
    assert prune.finetune.batch_size == 64 and prune.finetune.distill.features == ["layer1", "layer2", "layer3"]


def test_resnet56_start_outside_the_space_is_not_enqueued(tmp_path):
    splits, _ = _files(tmp_path)
    r = search_resnet56.prune_space(search_resnet56.recipe(splits, _resnet_weights(tmp_path), trials=4), None,
                                    budgets=(0.5, 0.55))
    assert start_params(parse_recipe(r, base_dir=tmp_path)) is None
