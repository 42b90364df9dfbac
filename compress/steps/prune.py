"""Structured channel pruning with Torch-Pruning: the dependency graph decides what must shrink
together, an importance criterion ranks channels, and the pruner removes the lowest-ranked ones.

The classifier (every Linear layer producing the class logits) is always kept, as are modules the
recipe names in ``ignore`` (fnmatch patterns on module names, e.g. ``layer*.conv2``).
"""

from __future__ import annotations

import fnmatch
from typing import Literal

from pydantic import Field, field_validator

from compress.artifacts import Artifact, digest_of
from compress.errors import StepError
from compress.steps.base import StepConfig, StepContext, register_step
from compress.steps.finetune import FinetuneConfig, run_finetune

IMPORTANCE = ("l1", "l2", "bn", "lamp", "taylor", "random")


class PruneConfig(StepConfig):
    ratio: float = Field(0.5, description="Fraction of channels removed from each prunable layer, in (0, 1)")
    importance: Literal["l1", "l2", "bn", "lamp", "taylor", "random"] = "l2"
    global_pruning: bool = Field(False, description="Rank channels across layers instead of per layer")
    max_layer_ratio: float = Field(1.0, gt=0, le=1, description="Cap on any one layer's pruned fraction")
    round_to: int | None = Field(None, ge=1, description="Keep channel counts multiples of this")
    ignore: list[str] = Field(default_factory=list, description="Module-name patterns never pruned")
    iterative_steps: int = Field(1, ge=1, description="Prune in this many steps (fine-tuning between)")
    taylor_batches: int = Field(4, ge=1, description="Train batches used to score Taylor importance")
    finetune: FinetuneConfig | None = Field(None, description="Recover accuracy after pruning")

    @field_validator("ratio")
    @classmethod
    def _ratio(cls, v):
        if not 0 < v < 1:
            raise ValueError(f"ratio must be in (0, 1), got {v}: it is the fraction of channels removed")
        return v


def make_importance(name: str):
    import torch_pruning as tp

    return {
        "l1": lambda: tp.importance.GroupMagnitudeImportance(p=1),
        "l2": lambda: tp.importance.GroupMagnitudeImportance(p=2),
        "bn": lambda: tp.importance.BNScaleImportance(),
        "lamp": lambda: tp.importance.LAMPImportance(p=2),
        "taylor": lambda: tp.importance.GroupTaylorImportance(),
        "random": lambda: tp.importance.RandomImportance(),
    }[name]()


def kept_layers(module, num_classes: int, patterns: list[str]):
    """The classifier and every module whose name matches a pattern."""
    from torch import nn

    kept = []
    for name, m in module.named_modules():
        if isinstance(m, nn.Linear) and m.out_features == num_classes:
            kept.append(m)
        elif name and any(fnmatch.fnmatchcase(name, p) for p in patterns):
            kept.append(m)
    return kept


def count_macs_params(module, input_shape) -> tuple[int, int]:
    import torch
    import torch_pruning as tp

    example = torch.zeros((1, *input_shape))
    macs, params = tp.utils.count_ops_and_params(module.eval(), example)
    return int(macs), int(params)


def _taylor_scores(module, ctx: StepContext, batches: int) -> None:
    """Accumulate gradients on a few train batches (Taylor importance reads weight * grad)."""
    import torch
    import torch.nn.functional as F

    split = ctx.data("train")
    module.zero_grad()
    module.train()
    for i, (x, y) in enumerate(split.batches(32)):
        if i >= batches:
            break
        F.cross_entropy(module(torch.from_numpy(x)), torch.from_numpy(y)).backward()
    module.eval()


@register_step("prune", config=PruneConfig, accepts={"torch"})
def apply(art: Artifact, cfg: PruneConfig, ctx: StepContext) -> Artifact:
    """Remove channels with Torch-Pruning, then optionally fine-tune to recover accuracy."""
    import torch
    import torch_pruning as tp

    module = art.load_module().eval()
    ignored = kept_layers(module, ctx.splits.num_classes, cfg.ignore)
    for pattern in cfg.ignore:
        if not any(fnmatch.fnmatchcase(n, pattern) for n, _ in module.named_modules()):
            raise StepError(f"prune.ignore pattern {pattern!r} matches no module name of this model")
    macs0, params0 = count_macs_params(module, ctx.input_shape)
    example = torch.zeros((1, *ctx.input_shape))
    try:
        pruner = tp.pruner.BasePruner(
            module, example, importance=make_importance(cfg.importance),
            global_pruning=cfg.global_pruning, pruning_ratio=cfg.ratio,
            max_pruning_ratio=cfg.max_layer_ratio, iterative_steps=cfg.iterative_steps,
            ignored_layers=ignored, round_to=cfg.round_to,
        )
    except Exception as err:
        raise StepError(f"Torch-Pruning could not trace this model: {type(err).__name__}: {err}") from err
    history = []
    for step in range(cfg.iterative_steps):
        if cfg.importance == "taylor":
            _taylor_scores(module, ctx, cfg.taylor_batches)
        pruner.step()
        module.zero_grad(set_to_none=True)
        if cfg.finetune is not None:
            label = f"fine-tuning {step + 1}/{cfg.iterative_steps}" if cfg.iterative_steps > 1 else "fine-tuning"
            history.append(run_finetune(module, cfg.finetune, ctx, label))
    macs1, params1 = count_macs_params(module, ctx.input_shape)
    if macs1 >= macs0:
        raise StepError(
            "pruning removed nothing: every prunable layer is ignored or already at its minimum width"
        )
    meta = dict(art.meta)
    meta.update(
        macs=macs1, params=params1,
        pruning={
            "ratio": cfg.ratio, "importance": cfg.importance, "macs_before": macs0,
            "macs_after": macs1, "params_before": params0, "params_after": params1,
            "mac_ratio": macs1 / macs0, "finetune": history,
        },
    )
    data_fp = ctx.splits["train"].fingerprint() if (cfg.finetune or cfg.importance == "taylor") else None
    return Artifact(
        kind="torch", digest=digest_of(art.digest, "prune", cfg.model_dump(), ctx.seed, data_fp),
        module=module, model_spec=art.model_spec,
        lineage=[*art.lineage, f"prune({cfg.importance}, {cfg.ratio:g})" + (" + finetune" if cfg.finetune else "")],
        meta=meta,
    )
