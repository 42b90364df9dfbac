"""The ``prune`` step: structured pruning (channels, residual blocks or transformer layers, attention
heads and FFN neurons) toward one target, then recovery.

Targets (one of): ``ratio`` (fraction of channels removed per layer), ``macs_budget`` (fraction of
the baseline's MACs kept; the ratio is found by bisection on copies), or ``latency_budget`` (a
target of the recipe: copies are cut in steps, exported and timed against the unpruned model on
that target's runtime, and the first ratio that meets the budget is used). The cut itself, the
criteria and the searches live in ``compress.pruning``; this module only orchestrates.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from compress.artifacts import Artifact
from compress.errors import StepError
from compress.pruning.channels import ChannelPlan, check_patterns, count_macs_params, make_pruner
from compress.pruning.importance import (
    BLOCK_CRITERIA,
    HEAD_CRITERIA,
    NEEDS_GRADIENTS,
    accumulate_gradients,
)
from compress.steps.base import StepConfig, StepContext, register_step
from compress.steps.finetune import FinetuneConfig, run_finetune

__all__ = ["LatencyBudget", "PruneConfig", "count_macs_params"]


class LatencyBudget(StepConfig):
    target: str = Field(description="Name of a recipe target; its runtime measures the candidates")
    batch_size: int = Field(1, ge=1, description="Batch size the budget applies to")
    max_fraction: float | None = Field(
        None, gt=0, lt=1, description="Latency kept, as a fraction of the unpruned model's (same run)"
    )
    max_ms: float | None = Field(None, gt=0, description="Or an absolute median latency, in ms")
    ratio_step: float = Field(0.1, gt=0, lt=1, description="Candidates are ratio_step, 2*ratio_step, ...")
    max_ratio: float = Field(0.9, gt=0, lt=1, description="The largest channel ratio tried")
    rounds: int = Field(5, ge=1, description="Interleaved timing rounds per candidate")

    @model_validator(mode="after")
    def _one(self):
        if (self.max_fraction is None) == (self.max_ms is None):
            raise ValueError("latency_budget needs exactly one of max_fraction or max_ms")
        return self


class PruneConfig(StepConfig):
    ratio: float | None = Field(
        None, description="Fraction of channels removed from each prunable layer, in (0, 1); "
        "0.5 when no target is given"
    )
    macs_budget: float | None = Field(
        None, gt=0, lt=1, description="Or: keep at most this fraction of the baseline's MACs"
    )
    latency_budget: LatencyBudget | None = Field(None, description="Or: prune until a target's latency meets this")
    granularity: Literal["channels", "blocks", "heads"] = Field(
        "channels", description="channels: thin layers with Torch-Pruning; blocks: remove whole residual "
        "blocks or transformer layers (named by `blocks`); heads: remove a transformer's attention heads "
        "(head_ratio) and FFN neurons (ffn_ratio), keeping its width"
    )
    blocks: list[str] = Field(
        default_factory=list, description="granularity blocks: module-name patterns of the residual blocks "
        "that may be removed (e.g. 'layer*.*'; a transformer's layers: '*encoder.layer.*' or '*layers.*'); "
        "matches whose output shape differs from their input's are kept"
    )
    head_ratio: float | None = Field(
        None, ge=0, lt=1, description="granularity heads: fraction of each attention module's heads removed "
        "(rounded up; at least one head stays); defaults to ratio, or follows the searched ratio of a budget"
    )
    ffn_ratio: float | None = Field(
        None, ge=0, lt=1, description="granularity heads: fraction of each feed-forward block's neurons "
        "removed; defaults to ratio, or follows the searched ratio of a budget"
    )
    importance: Literal["l1", "l2", "bn", "lamp", "taylor", "random"] = Field(
        "l2", description="How channels (or blocks: l1, l2, taylor, random) are ranked; the lowest go"
    )
    global_pruning: bool = Field(False, description="Rank channels across layers instead of per layer")
    max_layer_ratio: float = Field(1.0, gt=0, le=1, description="Cap on any one layer's pruned fraction")
    round_to: int | None = Field(None, ge=1, description="Keep channel counts multiples of this")
    ignore: list[str] = Field(default_factory=list, description="Module-name patterns never pruned")
    layer_ratios: dict[str, float] = Field(
        default_factory=dict, description="Per-layer ratios by module-name pattern (e.g. from "
        "`compress sensitivity`); they override ratio for those layers"
    )
    iterative_steps: int = Field(1, ge=1, description="Prune in this many steps (fine-tuning between)")
    taylor_batches: int = Field(4, ge=1, description="Train batches used to score Taylor importance")
    finetune: FinetuneConfig | None = Field(None, description="Recover accuracy after pruning")

    @field_validator("ratio")
    @classmethod
    def _ratio(cls, v):
        if v is not None and not 0 < v < 1:
            raise ValueError(f"ratio must be in (0, 1), got {v}: it is the fraction of channels removed")
        return v

    @field_validator("layer_ratios")
    @classmethod
    def _layer_ratios(cls, v):
        for pattern, r in v.items():
            if not 0 <= r < 1:
                raise ValueError(f"layer_ratios[{pattern!r}] must be in [0, 1), got {r}")
        return v

    @model_validator(mode="after")
    def _one_target(self):
        given = [k for k in ("ratio", "macs_budget", "latency_budget") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(
                f"prune takes one target, got {' and '.join(given)}: keep ratio, macs_budget or "
                "latency_budget"
            )
        return self

    @model_validator(mode="after")
    def _granularity(self):
        explicit = [k for k in ("head_ratio", "ffn_ratio") if getattr(self, k) is not None]
        if self.granularity != "heads" and explicit:
            raise ValueError(f"{' and '.join(explicit)} apply to granularity: heads; set granularity: heads "
                             "or drop them")
        if self.granularity == "heads":
            return self._heads(explicit)
        if self.granularity == "channels":
            if self.blocks:
                raise ValueError("blocks is for granularity: blocks; set granularity: blocks or drop blocks")
            return self
        if not self.blocks:
            raise ValueError("granularity: blocks needs blocks: module-name patterns of the residual blocks "
                             "that may be removed, e.g. ['layer*.*']")
        if self.importance not in BLOCK_CRITERIA:
            raise ValueError(f"importance {self.importance!r} ranks channels; for blocks use one of "
                             f"{', '.join(BLOCK_CRITERIA)}")
        channel_only = {"global_pruning": False, "max_layer_ratio": 1.0, "round_to": None, "ignore": [],
                        "layer_ratios": {}}
        given = [k for k, default in channel_only.items() if getattr(self, k) != default]
        if given:
            raise ValueError(f"{', '.join(given)} only apply to granularity: channels; with blocks, choose "
                             "the blocks by their patterns")
        return self

    def _heads(self, explicit: list[str]):
        if self.blocks:
            raise ValueError("blocks is for granularity: blocks; with heads, drop blocks (remove layers in a "
                             "second prune step with granularity: blocks)")
        if self.importance not in HEAD_CRITERIA:
            raise ValueError(f"importance {self.importance!r} ranks channels; for heads use one of "
                             f"{', '.join(HEAD_CRITERIA)}")
        if explicit and self.target_kind != "ratio":
            raise ValueError(f"{' and '.join(explicit)} fix the cut, and {self.target_kind} searches it: keep "
                             "one (with a budget, heads and FFN neurons share the searched ratio)")
        if explicit and self.ratio is not None and len(explicit) == 2:
            raise ValueError("ratio is unused when head_ratio and ffn_ratio are both given; drop ratio")
        if (self.head_ratio, self.ffn_ratio) == (0, 0):
            raise ValueError("head_ratio and ffn_ratio are both 0: nothing would be pruned")
        channel_only = {"global_pruning": False, "max_layer_ratio": 1.0, "layer_ratios": {}}
        given = [k for k, default in channel_only.items() if getattr(self, k) != default]
        if given:
            raise ValueError(f"{', '.join(given)} only apply to granularity: channels; with heads, every "
                             "attention module loses the same share of heads (head_ratio), every FFN the same "
                             "share of neurons (ffn_ratio)")
        return self

    @property
    def target_kind(self) -> str:
        if self.macs_budget is not None:
            return "macs_budget"
        if self.latency_budget is not None:
            return "latency_budget"
        return "ratio"

    def plan(self, ratio: float) -> ChannelPlan:
        return ChannelPlan(
            importance=self.importance, ratio=ratio, global_pruning=self.global_pruning,
            max_layer_ratio=self.max_layer_ratio, round_to=self.round_to, ignore=list(self.ignore),
            layer_ratios=dict(self.layer_ratios), iterative_steps=self.iterative_steps,
        )


def _slice_top1(module, ctx: StepContext) -> tuple[str, float] | None:
    """Top-1 on the calibration (or tuning) split: not trained on, never held-out."""
    from compress.training import accuracy

    for role in ("calibration", "tuning"):
        if role in ctx.splits:
            return role, accuracy(module, ctx.data(role))
    return None


def _recovery_summary(h: dict) -> dict:
    """The part of a fine-tuning history the report shows (results.json drops the full one)."""
    keys = ("epochs", "epochs_run", "best_epoch", "seconds", "distilled", "stopped_early", "validation_n")
    return {k: h[k] for k in keys if k in h}


def _resolve_ratio(module, cfg: PruneConfig, ctx: StepContext, macs0: int, reference_macs: int,
                   blocks=None, heads=None) -> tuple[float | None, dict]:
    """The ratio that meets the config's target (None: the target is already met): the fraction of
    channels removed per layer, with blocks the fraction of candidate blocks removed, with heads the
    fraction of heads and FFN neurons removed."""
    from compress.pruning import budget
    from compress.pruning.channels import prune_once

    num_classes = ctx.splits.num_classes
    if blocks is not None:
        cut = blocks.cut_copy
    elif heads is not None:
        cut = heads.cut_copy
    else:
        def cut(m, ratio):
            prune_once(m, cfg.plan(0.5), ctx.input_spec, num_classes, ratio, seed=ctx.seed)
    if cfg.target_kind == "ratio":
        return (cfg.ratio if cfg.ratio is not None else 0.5), {}
    if cfg.target_kind == "macs_budget":
        limit = int(cfg.macs_budget * reference_macs)
        if macs0 <= limit:
            return None, {"note": f"the model already has {macs0 / reference_macs:.1%} of the baseline's "
                                  f"MACs, within macs_budget {cfg.macs_budget:.0%}: nothing pruned"}
        if blocks is not None:
            from compress.pruning.blocks import count_for_macs

            k, trace = count_for_macs(
                module, blocks.order, ctx.input_spec, limit,
                lambda m: count_macs_params(m, ctx.input_spec)[0])
            return k / len(blocks.order), {"search": trace}
        found = budget.search_macs_budget(module, cfg.plan(0.5), ctx.input_spec, num_classes,
                                          budget_macs=limit, reference_macs=reference_macs, seed=ctx.seed,
                                          cut=heads.cut_copy if heads else None,
                                          top=heads.max_ratio if heads else None)
        return found.ratio, {"search": found.trace}
    from compress.pruning.latency import LatencyProbe

    lb = cfg.latency_budget
    target = ctx.target(lb.target)
    probe = LatencyProbe(module, target, ctx.input_spec, ctx.workdir / "latency-search",
                         batch_size=lb.batch_size, rounds=lb.rounds, seed=ctx.seed)
    try:
        if lb.max_ms is not None:
            unpruned_ms = probe.measure_reference()
            if unpruned_ms <= lb.max_ms:
                return None, {"note": f"the unpruned model already meets latency_budget.max_ms {lb.max_ms:g} "
                                      f"on {target.name} (median {unpruned_ms:.3g} ms at batch "
                                      f"{lb.batch_size}): nothing pruned", "unpruned_ms": unpruned_ms}

        def meets(candidate) -> dict:
            m = probe.measure(candidate)
            ok = m["latency_ms"] <= lb.max_ms if lb.max_ms is not None else m["fraction"] <= lb.max_fraction
            ctx.log(f"latency search: {m['latency_ms']:.3g} ms ({m['fraction']:.2f}x unpruned)"
                    + (" meets the budget" if ok else ""))
            return {**m, "ok": ok}

        found = budget.search_latency_budget(
            module, cut, ctx.input_spec, ratios=budget.ratio_schedule(lb.ratio_step, lb.max_ratio), meets=meets,
        )
    finally:
        probe.close()
    return found.ratio, {"search": found.trace, "target": target.name, "batch_size": lb.batch_size}


def _roles(cfg: PruneConfig) -> dict[str, str]:
    """Taylor importance and fine-tuning read the train split."""
    if cfg.finetune is not None:
        return {"train": "finetune: fine-tuning trains"}
    if cfg.importance in NEEDS_GRADIENTS:
        what = {"blocks": "blocks", "heads": "heads and FFN neurons"}.get(cfg.granularity, "channels")
        return {"train": f"importance {cfg.importance} scores {what}"}
    return {}


def _targets(cfg: PruneConfig) -> dict[str, str]:
    return {"latency_budget.target": cfg.latency_budget.target} if cfg.latency_budget else {}


@register_step(
    "prune", config=PruneConfig, accepts={"torch"}, roles=_roles, targets=_targets,
    # taylor scores on train, and the budget names a target (the tiny test model meets it unpruned)
    example={"latency_budget": {"target": "cpu", "max_ms": 1000, "rounds": 1}, "importance": "taylor",
             "finetune": {"epochs": 1}},
)
def apply(art: Artifact, cfg: PruneConfig, ctx: StepContext) -> Artifact:
    """Remove channels (Torch-Pruning), whole residual blocks or transformer layers, or attention heads
    and FFN neurons toward a ratio, MACs or latency target, then optionally fine-tune."""
    import torch

    from compress.pruning import transformers

    module = art.load_module().eval()
    check_patterns(module, cfg.ignore, "prune.ignore")
    check_patterns(module, list(cfg.layer_ratios), "prune.layer_ratios")
    if cfg.granularity == "channels" and transformers.attention_modules(module):
        raise StepError("prune granularity: channels would cut this transformer's width and head dimensions; "
                        "use granularity: heads (attention heads and FFN neurons) or blocks (whole layers)")
    num_classes = ctx.splits.num_classes
    shape0 = transformers.shape_summary(module) if transformers.is_transformer(module) else None
    macs0, params0 = count_macs_params(module, ctx.input_spec)
    reference_macs = macs0
    if ctx.baseline is not None and ctx.baseline.meta.get("macs"):
        reference_macs = int(ctx.baseline.meta["macs"])
    before = _slice_top1(module, ctx)
    blocks = None
    if cfg.granularity == "blocks":
        from compress.pruning.blocks import BlockCut

        blocks = BlockCut(module, cfg.blocks, cfg.importance, ctx.input_spec, seed=ctx.seed,
                          train=lambda: ctx.data("train"), taylor_batches=cfg.taylor_batches)
    heads = None
    if cfg.granularity == "heads":
        heads = transformers.HeadCut(
            module, head_ratio=cfg.head_ratio, ffn_ratio=cfg.ffn_ratio, importance=cfg.importance,
            input_spec=ctx.input_spec, num_classes=num_classes, ignore=cfg.ignore, round_to=cfg.round_to,
            seed=ctx.seed)
    if blocks is None and cfg.importance in NEEDS_GRADIENTS:
        accumulate_gradients(module, ctx.data("train"), cfg.taylor_batches)
    ratio, search = _resolve_ratio(module, cfg, ctx, macs0, reference_macs, blocks, heads)
    pruning = {
        "target": cfg.target_kind, "granularity": cfg.granularity, "importance": cfg.importance,
        "ratio": ratio, "global_pruning": cfg.global_pruning, "round_to": cfg.round_to,
        "iterative_steps": cfg.iterative_steps, "macs_budget": cfg.macs_budget,
        "latency_budget": cfg.latency_budget.model_dump() if cfg.latency_budget else None,
        "macs_before": macs0, "params_before": params0, "baseline_macs": reference_macs, **search,
    }
    history = []
    if ratio is None:  # the target is already met: a clear no-op
        ctx.notes.append(f"prune: {search['note']}")
        module.zero_grad(set_to_none=True)
        macs1, params1 = macs0, params0
    else:
        torch.manual_seed(ctx.seed)
        if blocks is None and heads is None:
            pruner = make_pruner(module, cfg.plan(ratio), ctx.input_spec, num_classes)
        for step in range(cfg.iterative_steps):
            if blocks is not None:
                blocks.cut_step(module, ratio, step, cfg.iterative_steps)
            else:
                if step > 0 and cfg.importance in NEEDS_GRADIENTS:
                    accumulate_gradients(module, ctx.data("train"), cfg.taylor_batches)
                if heads is not None:
                    heads.cut_step(module, ratio, step, cfg.iterative_steps)
                else:
                    pruner.step()
            module.zero_grad(set_to_none=True)
            if step == cfg.iterative_steps - 1 and before is not None:
                pruning["top1_pruned"] = _slice_top1(module, ctx)[1]
            if cfg.finetune is not None:
                label = f"fine-tuning {step + 1}/{cfg.iterative_steps}" if cfg.iterative_steps > 1 else "fine-tuning"
                history.append(run_finetune(module, cfg.finetune, ctx, label))
        macs1, params1 = count_macs_params(module, ctx.input_spec)
        if macs1 >= macs0:
            raise StepError(
                "pruning removed nothing: every prunable layer is ignored or already at its minimum width"
            )
        if cfg.macs_budget is not None and macs1 > cfg.macs_budget * reference_macs:
            ctx.notes.append(
                f"prune: the iterative cut kept {macs1 / reference_macs:.1%} of the baseline's MACs, "
                f"above macs_budget {cfg.macs_budget:.0%} (re-scoring between steps moved channels)"
            )
    if blocks is not None:
        pruning.update(blocks.facts())
    if heads is not None and ratio is not None:
        pruning["head_ratio"], pruning["ffn_ratio"] = heads.ratios(ratio)
    if shape0 is not None:  # heads, FFN neurons and layers before and after; what the HF config now says
        pruning["transformer"] = {"before": shape0, "after": transformers.shape_summary(module),
                                  "config": transformers.sync_configs(module)}
    if before is not None:
        pruning.update(top1_split=before[0], top1_unpruned=before[1])
        if cfg.finetune is not None and ratio is not None:
            pruning["top1_recovered"] = _slice_top1(module, ctx)[1]
    pruning.update(macs_after=macs1, params_after=params1, mac_ratio=macs1 / macs0,
                   baseline_mac_ratio=macs1 / reference_macs, finetune=history,
                   recovery=[_recovery_summary(h) for h in history])
    meta = dict(art.meta)
    meta.update(macs=macs1, params=params1, pruning=pruning)
    what = "no-op" if ratio is None else f"ratio {ratio:.3g}"
    if blocks is not None and ratio is not None:
        what = f"{len(blocks.removed)} of {len(blocks.order)} blocks removed"
    if heads is not None and ratio is not None:
        what = "heads {:.2g}, FFN {:.2g}".format(*heads.ratios(ratio))
    if cfg.macs_budget is not None:
        what = f"MACs <= {cfg.macs_budget:.0%}, {what}"
    elif cfg.latency_budget is not None:
        what = f"latency budget on {cfg.latency_budget.target}, {what}"
    return Artifact(
        kind="torch", module=module, model_spec=art.model_spec,
        lineage=[*art.lineage, f"prune({cfg.importance}{'' if cfg.granularity == 'channels' else ' ' + cfg.granularity}, "
                 f"{what})" + (" + finetune" if cfg.finetune else "")],
        meta=meta,
    )
