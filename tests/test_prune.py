"""The prune and sparsify steps on a tiny CNN: every criterion and target, the budgets stop where
they should, unreachable targets fail clearly or no-op clearly, and pruned models reload exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from compress.artifacts import Artifact, Cache
from compress.errors import StepError
from compress.pruning.channels import count_macs_params
from compress.pruning.importance import CRITERIA
from compress.recipe import TargetConfig
from compress.sources.data import Split, Splits
from compress.sources.models import ModelSpec
from compress.steps.base import StepContext
from compress.steps.prune import PruneConfig
from compress.steps.prune import apply as prune
from compress.steps.sparsify import SparsifyConfig
from compress.steps.sparsify import apply as sparsify
from tests.conftest import IMAGE_SHAPE, NUM_CLASSES, learnable_images

WIDE_SOURCE = """
from torch import nn


def wide_cnn(num_classes=10):
    # wide enough, at 32x32, that cutting channels shows up in measured latency
    return nn.Sequential(
        nn.Conv2d(3, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
        nn.Conv2d(64, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
        nn.Conv2d(64, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes),
    )
"""


def _splits(n: int = 120, shape=IMAGE_SHAPE) -> Splits:
    images, labels = learnable_images(n)
    x = images.astype(np.float32) / 255.0
    if shape != IMAGE_SHAPE:
        x = np.resize(x, (n, *shape)).astype(np.float32)
    mean = np.full((1, shape[0], 1, 1), 0.5, np.float32)
    std = np.full((1, shape[0], 1, 1), 0.25, np.float32)
    splits = Splits()
    splits["train"] = Split.from_arrays("train", x[:80], labels[:80], mean, std, "test")
    splits["calibration"] = Split.from_arrays("calibration", x[80:], labels[80:], mean, std, "test")
    splits.classes = [str(i) for i in range(NUM_CLASSES)]
    return splits


@pytest.fixture
def spec(tiny_model_file) -> ModelSpec:
    return ModelSpec(f"python:{tiny_model_file.name}:tiny_cnn", {}, tiny_model_file.parent)


@pytest.fixture
def baseline(spec, tiny_module) -> Artifact:
    art = Artifact(kind="torch", digest="base", module=tiny_module, model_spec=spec)
    art.meta["macs"], art.meta["params"] = count_macs_params(tiny_module, IMAGE_SHAPE)
    return art


def _ctx(tmp_path, baseline, splits=None, shape=IMAGE_SHAPE, targets=()) -> StepContext:
    return StepContext(splits=splits or _splits(), model_spec=baseline.model_spec, input_shape=shape,
                       seed=0, workdir=tmp_path, baseline=baseline, log=lambda _m: None,
                       targets=list(targets))


def _batch(shape=IMAGE_SHAPE, n: int = 4) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(1).standard_normal((n, *shape)).astype(np.float32))


@pytest.mark.parametrize("importance", CRITERIA)
def test_every_criterion_prunes_and_the_model_still_runs(importance, tmp_path, baseline):
    out = prune(baseline, PruneConfig(ratio=0.5, importance=importance), _ctx(tmp_path, baseline))
    pr = out.meta["pruning"]
    assert pr["importance"] == importance
    assert pr["macs_after"] < pr["macs_before"] and pr["params_after"] < pr["params_before"]
    convs = [m for m in out.module.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [4, 8]
    assert out.module(_batch()).shape == (4, NUM_CLASSES)
    assert isinstance(out.module[-1], nn.Linear) and out.module[-1].out_features == NUM_CLASSES


def test_global_ranking_respects_the_per_layer_cap(tmp_path, baseline):
    cfg = PruneConfig(ratio=0.5, global_pruning=True, max_layer_ratio=0.6)
    out = prune(baseline, cfg, _ctx(tmp_path, baseline))
    widths = [m.out_channels for m in out.module.modules() if isinstance(m, nn.Conv2d)]
    assert widths[0] >= 8 * 0.4 and widths[1] >= 16 * 0.4


def test_round_to_keeps_widths_multiples(tmp_path, baseline):
    out = prune(baseline, PruneConfig(ratio=0.4, round_to=4), _ctx(tmp_path, baseline))
    widths = [m.out_channels for m in out.module.modules() if isinstance(m, nn.Conv2d)]
    assert all(w % 4 == 0 for w in widths)


def test_ignored_layers_keep_their_width(tmp_path, baseline):
    out = prune(baseline, PruneConfig(ratio=0.5, ignore=["3"]), _ctx(tmp_path, baseline))
    convs = [m for m in out.module.modules() if isinstance(m, nn.Conv2d)]
    assert convs[1].out_channels == 16 and convs[0].out_channels == 4


def test_unknown_ignore_pattern_is_an_error(tmp_path, baseline):
    with pytest.raises(StepError, match="prune.ignore pattern 'nope' matches no module"):
        prune(baseline, PruneConfig(ignore=["nope"]), _ctx(tmp_path, baseline))


def test_one_target_only():
    with pytest.raises(ValueError, match="prune takes one target, got ratio and macs_budget"):
        PruneConfig(ratio=0.3, macs_budget=0.5)


@pytest.mark.parametrize("budget", [0.7, 0.5, 0.3])
def test_macs_budget_stops_just_under_the_budget(budget, tmp_path, baseline):
    out = prune(baseline, PruneConfig(macs_budget=budget), _ctx(tmp_path, baseline))
    pr = out.meta["pruning"]
    assert pr["target"] == "macs_budget"
    assert pr["macs_after"] <= budget * pr["baseline_macs"]
    # it does not overshoot: a slightly smaller ratio no longer meets the budget
    less = prune(baseline, PruneConfig(ratio=pr["ratio"] - 0.07), _ctx(tmp_path, baseline))
    assert less.meta["pruning"]["macs_after"] > budget * pr["baseline_macs"]


def test_macs_budget_below_the_floor_is_a_clear_error(tmp_path, baseline):
    # ignoring the first conv keeps most MACs: 10% of them is out of reach
    with pytest.raises(StepError, match=r"macs_budget 10% is below what this model allows.*Raise macs_budget"):
        prune(baseline, PruneConfig(macs_budget=0.1, ignore=["0"]), _ctx(tmp_path, baseline))


def _wide(tmp_path):
    path = tmp_path / "wide_model.py"
    path.write_text(WIDE_SOURCE)
    spec = ModelSpec("python:wide_model.py:wide_cnn", {}, tmp_path)
    torch.manual_seed(0)
    module = spec.build().eval()
    art = Artifact(kind="torch", digest="wide", module=module, model_spec=spec)
    art.meta["macs"], art.meta["params"] = count_macs_params(module, (3, 32, 32))
    return art


CPU1 = TargetConfig(name="cpu", runtime="onnxruntime", device="cpu", threads=1)


def test_latency_budget_stops_at_the_first_ratio_that_meets_it(tmp_path):
    base = _wide(tmp_path)
    cfg = PruneConfig(latency_budget={"target": "cpu", "batch_size": 8, "max_fraction": 0.7,
                                      "ratio_step": 0.3, "max_ratio": 0.9, "rounds": 3})
    ctx = _ctx(tmp_path, base, _splits(shape=(3, 32, 32)), shape=(3, 32, 32), targets=[CPU1])
    out = prune(base, cfg, ctx)
    trace = out.meta["pruning"]["search"]
    assert trace[-1]["ok"] and trace[-1]["fraction"] <= 0.7
    assert all(not t["ok"] and t["fraction"] > 0.7 for t in trace[:-1])
    assert out.meta["pruning"]["ratio"] == trace[-1]["ratio"]
    assert (tmp_path / "latency-search" / "unpruned.onnx").is_file()  # measured on exported ONNX


def test_latency_budget_already_met_is_a_noop_with_a_note(tmp_path, baseline):
    cfg = PruneConfig(latency_budget={"target": "cpu", "max_ms": 1e6, "rounds": 1})
    ctx = _ctx(tmp_path, baseline, targets=[CPU1])
    out = prune(baseline, cfg, ctx)
    assert out.meta["pruning"]["ratio"] is None
    assert out.meta["pruning"]["macs_after"] == out.meta["pruning"]["macs_before"]
    assert any("already meets latency_budget.max_ms" in n for n in ctx.notes)


def test_latency_budget_on_an_unknown_target_names_the_valid_ones(tmp_path, baseline):
    cfg = PruneConfig(latency_budget={"target": "gpu", "max_fraction": 0.5})
    with pytest.raises(StepError, match="no target named 'gpu' in the recipe; valid: cpu"):
        prune(baseline, cfg, _ctx(tmp_path, baseline, targets=[CPU1]))


def test_iterative_finetune_records_accuracy_before_and_after_recovery(tmp_path, baseline):
    cfg = PruneConfig(ratio=0.5, iterative_steps=2,
                      finetune={"epochs": 1, "lr": 0.05, "distill": {"alpha": 0.5}})
    out = prune(baseline, cfg, _ctx(tmp_path, baseline))
    pr = out.meta["pruning"]
    assert len(pr["finetune"]) == 2 and all(h["distilled"] for h in pr["finetune"])
    assert pr["top1_split"] == "calibration"
    assert {"top1_unpruned", "top1_pruned", "top1_recovered"} <= set(pr)


def test_early_stopping_watches_a_slice_of_train_and_keeps_the_best_epoch(tmp_path, baseline):
    ctx = _ctx(tmp_path, baseline)
    cfg = PruneConfig(ratio=0.5, finetune={"epochs": 4, "lr": 0.05,
                                           "early_stopping": {"validation_fraction": 0.25, "patience": 1}})
    out = prune(baseline, cfg, ctx)
    hist = out.meta["pruning"]["finetune"][0]
    assert hist["validation_n"] == 20 and hist["samples"] == 60  # 80 train samples, split 60 / 20
    assert hist["best_epoch"] == int(np.argmax(hist["validation_top1"])) + 1
    assert ctx.consumed <= {"train", "calibration"}


def test_pruned_model_saves_reloads_and_matches(tmp_path, baseline):
    out = prune(baseline, PruneConfig(ratio=0.5, importance="l1"), _ctx(tmp_path, baseline))
    cache = Cache(tmp_path / "cache")
    out.digest = "pruned"  # the key compress.run.build gives it
    cache.put(out)
    again = cache.get(out.digest, baseline.model_spec)
    x = _batch()
    with torch.inference_mode():
        assert torch.equal(out.module(x), again.module(x))
    # the file is a plain state_dict: it loads without unpickling any code
    state = torch.load(again.path, weights_only=True)
    assert state["3.weight"].shape == (8, 4, 3, 3)


def test_sparsify_leaves_exactly_two_zeros_in_every_group_of_four(tmp_path, baseline):
    out = sparsify(baseline, SparsifyConfig(), _ctx(tmp_path, baseline))
    conv = [m for m in out.module.modules() if isinstance(m, nn.Conv2d)][1]  # 8 input channels
    groups = conv.weight.detach().permute(0, 2, 3, 1).reshape(-1, 4)
    assert ((groups == 0).sum(dim=1) == 2).all()
    sp = out.meta["pruning"]["sparsity"]
    assert sp["layers"] == 1 and sp["skipped_layers"] == ["0"]  # 3 input channels: not 2:4-able
    assert sp["zero_fraction"] == pytest.approx(0.5)
    assert out.meta["pruning"]["mac_ratio"] == 1.0


def test_sparsify_finetune_keeps_the_zeros(tmp_path, baseline):
    cfg = SparsifyConfig(finetune={"epochs": 1, "lr": 0.05})
    out = sparsify(baseline, cfg, _ctx(tmp_path, baseline))
    conv = [m for m in out.module.modules() if isinstance(m, nn.Conv2d)][1]
    groups = conv.weight.detach().permute(0, 2, 3, 1).reshape(-1, 4)
    assert ((groups == 0).sum(dim=1) == 2).all()
    assert set(out.module.state_dict()) == set(baseline.module.state_dict())  # no mask buffers left


def test_recipe_rejects_a_latency_budget_on_an_unknown_target(recipe_dict):
    from compress.errors import RecipeError
    from compress.recipe import parse_recipe

    recipe_dict["variants"]["fast"] = {"steps": [
        {"prune": {"latency_budget": {"target": "gpu", "max_fraction": 0.5}}}, {"export": {}}]}
    with pytest.raises(RecipeError, match=r"variants.fast.steps\[0\].prune.latency_budget.target: unknown target 'gpu'; valid: cpu"):
        parse_recipe(recipe_dict)


def test_recipe_rejects_two_targets_with_the_key_path(recipe_dict):
    from compress.errors import RecipeError
    from compress.recipe import parse_recipe

    recipe_dict["variants"]["p"] = {"steps": [{"prune": {"ratio": 0.3, "macs_budget": 0.5}}, {"export": {}}]}
    with pytest.raises(RecipeError, match=r"variants.p.steps\[0\].prune: prune takes one target, got ratio and macs_budget"):
        parse_recipe(recipe_dict)


def test_a_conv_classifier_keeps_one_output_per_class(tmp_path, tiny_model_file):
    spec = ModelSpec(f"python:{tiny_model_file.name}:conv_only", {}, tiny_model_file.parent)
    torch.manual_seed(0)
    base = Artifact(kind="torch", digest="conv", module=spec.build().eval(), model_spec=spec)
    out = prune(base, PruneConfig(ratio=0.5), _ctx(tmp_path, base))
    assert out.module(_batch()).shape == (4, NUM_CLASSES)
    assert [m.out_channels for m in out.module.modules() if isinstance(m, nn.Conv2d)] == [4, NUM_CLASSES]


@pytest.mark.parametrize("importance", ["taylor", "random", "lamp"])
def test_macs_budget_works_with_every_kind_of_criterion(importance, tmp_path, baseline):
    # Taylor reads gradients: the budget search cuts copies, which must carry them
    out = prune(baseline, PruneConfig(macs_budget=0.5, importance=importance), _ctx(tmp_path, baseline))
    assert out.meta["pruning"]["macs_after"] <= 0.5 * out.meta["pruning"]["baseline_macs"]
