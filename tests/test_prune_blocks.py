"""Block (depth) pruning on a tiny ResNet: candidates are the named blocks that keep their input's
shape, every block criterion ranks them (a block that does nothing goes first), each target stops
where it should, unreachable targets fail clearly, and a block-pruned model reloads exactly."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from compress.artifacts import Artifact, Cache
from compress.errors import StepError
from compress.pruning.blocks import RemovedBlock, find_candidates
from compress.pruning.channels import count_macs_params
from compress.pruning.importance import BLOCK_CRITERIA
from compress.sources.models import ModelSpec
from compress.steps.prune import PruneConfig
from compress.steps.prune import apply as prune
from tests.conftest import IMAGE_SHAPE
from tests.test_prune import CPU1, _batch, _ctx, _splits

RESNET_SOURCE = """
from collections import OrderedDict

import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + (x if self.down is None else self.down(x)))


def tiny_resnet(num_classes=10, width=8):
    w = width
    return nn.Sequential(OrderedDict(
        stem=nn.Sequential(nn.Conv2d(3, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU()),
        layer1=nn.Sequential(Block(w, w), Block(w, w), Block(w, w)),
        layer2=nn.Sequential(Block(w, 2 * w, 2), Block(2 * w, 2 * w), Block(2 * w, 2 * w)),
        pool=nn.AdaptiveAvgPool2d(1), flat=nn.Flatten(), fc=nn.Linear(2 * w, num_classes),
    ))
"""
CANDIDATES = ["layer1.0", "layer1.1", "layer1.2", "layer2.1", "layer2.2"]


def _resnet(tmp_path, width: int = 8) -> Artifact:
    path = tmp_path / "tiny_resnet.py"
    path.write_text(RESNET_SOURCE)
    spec = ModelSpec("python:tiny_resnet.py:tiny_resnet", {"width": width}, tmp_path)
    torch.manual_seed(0)
    module = spec.build().eval()
    art = Artifact(kind="torch", digest=f"resnet{width}", module=module, model_spec=spec)
    art.meta["macs"], art.meta["params"] = count_macs_params(module, IMAGE_SHAPE)
    return art


@pytest.fixture
def resnet(tmp_path) -> Artifact:
    return _resnet(tmp_path)


def _removed(module) -> list[str]:
    return [n for n, m in module.named_modules() if isinstance(m, RemovedBlock)]


def test_candidates_are_the_blocks_that_keep_their_shape(resnet):
    plan = find_candidates(resnet.module, ["layer*.*"], IMAGE_SHAPE)
    assert plan.candidates == CANDIDATES
    assert "changes the shape" in plan.skipped["layer2.0"]  # the downsampling block stays


@pytest.mark.parametrize("importance", BLOCK_CRITERIA)
def test_every_block_criterion_removes_blocks_and_the_model_still_runs(importance, tmp_path, resnet):
    out = prune(resnet, PruneConfig(granularity="blocks", blocks=["layer*.*"], importance=importance,
                                    ratio=0.4), _ctx(tmp_path, resnet))
    pr = out.meta["pruning"]
    assert len(pr["removed_blocks"]) == 2 and set(pr["removed_blocks"]) <= set(CANDIDATES)
    assert sorted(_removed(out.module)) == sorted(pr["removed_blocks"])
    assert set(pr["block_scores"]) == set(CANDIDATES)
    assert pr["macs_after"] < pr["macs_before"]
    with torch.inference_mode():
        assert out.module(_batch()).shape == (4, 10)


@pytest.mark.parametrize("importance", ["l2", "taylor"])
def test_a_block_that_does_nothing_is_removed_first(importance, tmp_path, resnet):
    block = resnet.module.get_submodule("layer1.1")
    with torch.no_grad():
        block.conv1.weight.zero_()  # the residual branch now adds nothing: the block is the identity
        block.conv2.weight.zero_()
        block.bn2.bias.zero_()
    out = prune(resnet, PruneConfig(granularity="blocks", blocks=["layer*.*"], importance=importance,
                                    ratio=0.2), _ctx(tmp_path, resnet))
    assert out.meta["pruning"]["removed_blocks"] == ["layer1.1"]


def test_random_block_importance_is_seeded(tmp_path, resnet):
    cfg = PruneConfig(granularity="blocks", blocks=["layer*.*"], importance="random", ratio=0.6)
    a = prune(resnet, cfg, _ctx(tmp_path, resnet)).meta["pruning"]["removed_blocks"]
    b = prune(resnet, cfg, _ctx(tmp_path, resnet)).meta["pruning"]["removed_blocks"]
    assert a == b and len(a) == 3


@pytest.mark.parametrize("budget", [0.8, 0.6])
def test_macs_budget_removes_the_fewest_blocks_that_meet_it(budget, tmp_path, resnet):
    out = prune(resnet, PruneConfig(granularity="blocks", blocks=["layer*.*"], macs_budget=budget),
                _ctx(tmp_path, resnet))
    pr = out.meta["pruning"]
    limit = budget * pr["baseline_macs"]
    assert pr["macs_after"] <= limit
    trace = pr["search"]
    assert trace[-1]["blocks_removed"] == len(pr["removed_blocks"])
    assert all(t["macs"] > limit for t in trace[:-1])  # one block fewer would not have met it


def test_macs_budget_below_what_removing_blocks_allows_is_a_clear_error(tmp_path, resnet):
    cfg = PruneConfig(granularity="blocks", blocks=["layer1.*"], macs_budget=0.2)
    with pytest.raises(StepError, match="below what removing blocks allows.*all 3 candidate"):
        prune(resnet, cfg, _ctx(tmp_path, resnet))


def test_macs_budget_already_met_is_a_noop_with_a_note(tmp_path, resnet):
    ctx = _ctx(tmp_path, resnet)
    resnet.meta["macs"] *= 4  # the baseline was four times bigger: this model is within budget
    out = prune(resnet, PruneConfig(granularity="blocks", blocks=["layer*.*"], macs_budget=0.5), ctx)
    assert out.meta["pruning"]["removed_blocks"] == [] and out.meta["pruning"]["ratio"] is None
    assert any("nothing pruned" in n for n in ctx.notes)


def test_latency_budget_removes_blocks_until_the_target_measures_it(tmp_path):
    base = _resnet(tmp_path, width=32)
    shape = (3, 32, 32)
    cfg = PruneConfig(granularity="blocks", blocks=["layer*.*"], latency_budget={
        "target": "cpu", "batch_size": 8, "max_fraction": 0.85, "ratio_step": 0.4, "max_ratio": 0.8,
        "rounds": 3})
    ctx = _ctx(tmp_path, base, _splits(shape=shape), shape=shape, targets=[CPU1])
    out = prune(base, cfg, ctx)
    pr = out.meta["pruning"]
    trace = pr["search"]
    assert trace[-1]["ok"] and trace[-1]["fraction"] <= 0.85
    assert all(not t["ok"] for t in trace[:-1])
    assert len(pr["removed_blocks"]) == round(trace[-1]["ratio"] * len(CANDIDATES))


def test_iterative_block_removal_fine_tunes_between_steps(tmp_path, resnet):
    cfg = PruneConfig(granularity="blocks", blocks=["layer*.*"], ratio=0.8, iterative_steps=2,
                      importance="taylor", finetune={"epochs": 1, "lr": 0.05})
    out = prune(resnet, cfg, _ctx(tmp_path, resnet))
    pr = out.meta["pruning"]
    assert len(pr["removed_blocks"]) == 4 and len(pr["finetune"]) == 2
    assert {"top1_unpruned", "top1_pruned", "top1_recovered"} <= set(pr)


def test_block_pruned_model_saves_reloads_and_matches(tmp_path, resnet):
    out = prune(resnet, PruneConfig(granularity="blocks", blocks=["layer*.*"], ratio=0.4),
                _ctx(tmp_path, resnet))
    cache = Cache(tmp_path / "cache")
    out.digest = "pruned"  # the key compress.run.build gives it
    cache.put(out)
    again = cache.get(out.digest, resnet.model_spec)
    x = _batch()
    with torch.inference_mode():
        assert torch.equal(out.module(x), again.module(x))
    assert sorted(_removed(again.module)) == sorted(out.meta["pruning"]["removed_blocks"])
    state = torch.load(again.path, weights_only=True)  # a plain state_dict, no pickled code
    for name in out.meta["pruning"]["removed_blocks"]:
        assert f"{name}.compress_removed_block" in state
        assert not any(k.startswith(f"{name}.conv1") for k in state)


def test_patterns_that_match_no_module_or_no_candidate_are_clear_errors(tmp_path, resnet):
    with pytest.raises(StepError, match=r"'block\*' matches no module name"):
        prune(resnet, PruneConfig(granularity="blocks", blocks=["block*"]), _ctx(tmp_path, resnet))
    with pytest.raises(StepError, match="no matched module can be replaced by the identity.*layer2.0: changes"):
        prune(resnet, PruneConfig(granularity="blocks", blocks=["layer2.0"]), _ctx(tmp_path, resnet))


@pytest.mark.parametrize("bad, message", [
    ({"granularity": "blocks"}, "granularity: blocks needs blocks"),
    ({"blocks": ["layer*.*"]}, "blocks is for granularity: blocks"),
    ({"granularity": "blocks", "blocks": ["layer*.*"], "importance": "bn"}, "for blocks use one of l1, l2, taylor, random"),
    ({"granularity": "blocks", "blocks": ["layer*.*"], "round_to": 8}, "round_to only apply to granularity: channels"),
])
def test_block_options_are_checked_when_the_recipe_loads(bad, message):
    with pytest.raises(ValidationError, match=message):
        PruneConfig(**bad)



def _stage_gap(student, teacher, x) -> float:
    from compress.training import FeatureTaps

    with FeatureTaps(student, teacher, ["layer1", "layer2"]) as taps, torch.no_grad():
        student(x)
        teacher(x)
        return float(taps.loss())


def test_feature_distillation_pulls_the_stage_outputs_toward_the_teacher(tmp_path, resnet):
    x = torch.from_numpy(_ctx(tmp_path, resnet).splits["train"].inputs(list(range(32)))["pixel_values"])
    gaps = {}
    for weight in (None, 10.0):
        distill = {"alpha": 0.5}
        if weight:
            distill.update(features=["layer1", "layer2"], feature_weight=weight)
        cfg = PruneConfig(granularity="blocks", blocks=["layer*.*"], ratio=0.6, importance="l2",
                          finetune={"epochs": 8, "lr": 0.02, "distill": distill})
        tuned = prune(resnet, cfg, _ctx(tmp_path, resnet))
        gaps[weight] = _stage_gap(tuned.module, resnet.module, x)
    # the same cut and fine-tuning, with and without the feature term
    assert gaps[10.0] < 0.5 * gaps[None]


def test_feature_distillation_on_modules_whose_shapes_differ_is_a_clear_error(tmp_path, resnet):
    cfg = PruneConfig(ratio=0.5, finetune={"epochs": 1, "distill": {"features": ["layer1.0.conv1"]}})
    with pytest.raises(StepError, match=r"'layer1.0.conv1' outputs \(4, 8, 8\) in the student and \(8, 8, 8\)"):
        prune(resnet, cfg, _ctx(tmp_path, resnet))
    cfg = PruneConfig(ratio=0.5, finetune={"epochs": 1, "distill": {"features": ["nope"]}})
    with pytest.raises(StepError, match="distill.features names no module of the student: nope"):
        prune(resnet, cfg, _ctx(tmp_path, resnet))
