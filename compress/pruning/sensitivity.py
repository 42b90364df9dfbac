"""Sensitivity scan: cut one prunable layer at a time by each ratio, measure top-1 on a small slice
of non-held-out data, and suggest per-layer ratios (the deepest cut each layer takes within a
tolerated drop). Layers that barely notice a cut can give more channels than sensitive ones."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from compress.pruning.channels import (
    ChannelPlan,
    copy_with_grads,
    count_macs_params,
    make_pruner,
    prunable_layers,
)


@dataclass
class SensitivityScan:
    ratios: list[float]
    unpruned_top1: float
    split: str
    n: int
    layers: dict[str, list[float]] = field(default_factory=dict)  # name -> top-1 per ratio
    layer_macs_saved: dict[str, list[int]] = field(default_factory=dict)  # name -> MACs removed per ratio

    def suggest(self, max_drop_points: float) -> dict[str, float]:
        """The largest scanned ratio per layer whose drop stays within ``max_drop_points`` (layers
        that cannot take the smallest ratio get 0: keep them whole)."""
        out = {}
        for name, accs in self.layers.items():
            ok = [r for r, a in zip(self.ratios, accs, strict=True) if self.unpruned_top1 - a <= max_drop_points]
            out[name] = max(ok) if ok else 0.0
        return out

    def to_dict(self, max_drop_points: float) -> dict:
        return {"ratios": self.ratios, "unpruned_top1": self.unpruned_top1, "split": self.split, "n": self.n,
                "layers": self.layers, "layer_macs_saved": self.layer_macs_saved,
                "max_drop_points": max_drop_points, "suggested_layer_ratios": self.suggest(max_drop_points)}


def scan(module, plan: ChannelPlan, input_spec, num_classes: int, split, *, ratios: list[float],
         split_name: str, seed: int = 0, log=lambda _m: None) -> SensitivityScan:
    """Top-1 on ``split`` after cutting each prunable layer alone to each ratio (on copies)."""
    import torch

    from compress.training import accuracy

    module = module.eval()
    base = accuracy(module, split)
    macs0 = count_macs_params(module, input_spec)[0]
    result = SensitivityScan(ratios=list(ratios), unpruned_top1=base, split=split_name, n=len(split))
    names = [name for name, _ in prunable_layers(module, plan, input_spec, num_classes)]
    for i, name in enumerate(names):
        accs, saved = [], []
        for r in ratios:
            trial = copy_with_grads(module)
            layer = trial.get_submodule(name)
            single = ChannelPlan(importance=plan.importance, ratio=0.0, round_to=plan.round_to,
                                 ignore=plan.ignore, layer_ratios={})
            torch.manual_seed(seed)
            pruner = make_pruner(trial, single, input_spec, num_classes, iterative_steps=1)
            pruner.pruning_ratio_dict = {}  # only this layer's group is cut
            _cut_only(pruner, layer, r)
            accs.append(accuracy(trial, split))
            saved.append(macs0 - count_macs_params(trial, input_spec)[0])
        result.layers[name], result.layer_macs_saved[name] = accs, saved
        log(f"sensitivity {i + 1}/{len(names)} {name}: " + ", ".join(f"{r:g}: {a:.1f}%" for r, a in zip(ratios, accs, strict=True)))
    return result


def _cut_only(pruner, layer, ratio: float) -> None:
    """Remove the ``ratio`` least important output channels of ``layer``'s group, nothing else."""
    group = None
    for g in pruner.DG.get_all_groups(ignored_layers=pruner.ignored_layers,
                                      root_module_types=pruner.root_module_types):
        if g[0].dep.target.module is layer:
            group = g
            break
    if group is None:
        raise ValueError("layer is not the root of a prunable group")
    scores = pruner.importance(group)
    n = len(scores)
    k = min(n - 1, int(round(n * ratio)))
    if pruner.round_to:
        keep = max(pruner.round_to, ((n - k) // pruner.round_to) * pruner.round_to)
        k = max(0, n - keep)
    if k <= 0:
        return
    idxs = scores.argsort()[:k].tolist()
    pruner.DG.get_pruning_group(layer, pruner.DG.get_pruner_of_module(layer).prune_out_channels, idxs).prune()


def plot(result: SensitivityScan, path: Path) -> Path:
    """Top-1 vs ratio, one line per layer, saved as a PNG (matplotlib's Agg backend: no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for name, accs in result.layers.items():
        ax.plot(result.ratios, accs, marker="o", linewidth=1, label=name)
    ax.axhline(result.unpruned_top1, color="black", linestyle="--", linewidth=1, label="unpruned")
    ax.set_xlabel("fraction of the layer's channels removed")
    ax.set_ylabel(f"top-1 on {result.split} (n={result.n}), %")
    ax.set_title("Per-layer pruning sensitivity")
    if len(result.layers) <= 16:
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def prune_config_of(recipe, variant: str | None):
    """The prune step settings (criterion, ignore, round_to) the scan should mirror."""
    from compress.errors import InputError
    from compress.steps.prune import PruneConfig

    names = [variant] if variant else list(recipe.variant_order())
    if variant and variant not in recipe.variants:
        raise InputError(f"--variant {variant!r} is not in the recipe; valid: {', '.join(recipe.variants)}")
    for name in names:
        for step, cfg in recipe.variants[name].step_list():
            if step == "prune" and cfg.granularity != "channels":
                if variant:
                    what = ("removes whole blocks; the sensitivity scan cuts channels. Its block ranking is in "
                            "results.json (pruning.block_scores)" if cfg.granularity == "blocks" else
                            "removes attention heads and FFN neurons; the sensitivity scan cuts channels")
                    raise InputError(f"variant {variant!r} {what}; pick a channel-pruning variant")
                continue
            if step == "prune":
                return name, cfg
    if variant:
        raise InputError(f"variant {variant!r} has no prune step; pick one that prunes, or leave --variant out")
    return None, PruneConfig()


def run_for_recipe(recipe, recipe_path: Path, out_dir: Path, *, variant: str | None = None,
                   ratios: list[float], samples: int, max_drop_points: float, log=print) -> dict:
    """Scan the recipe's baseline on a slice of calibration (else train) data; write
    sensitivity.json and sensitivity.png under ``out_dir``; return the JSON document."""
    import json

    import numpy as np

    from compress.artifacts import Cache
    from compress.errors import InputError
    from compress.pruning.importance import NEEDS_GRADIENTS, accumulate_gradients
    from compress.run.build import build_baseline, input_spec_for
    from compress.sources.data import make_splits

    if recipe.model.source.startswith("onnx:"):
        raise InputError("the sensitivity scan prunes a torch model; an onnx: model source cannot be pruned")
    splits = make_splits(recipe.data, recipe_path.parent, recipe.seed, recipe.model)
    role = "calibration" if "calibration" in splits else "train"
    if role not in splits:
        raise InputError("the sensitivity scan needs a calibration or train split (never held-out)")
    split = splits[role]
    if len(split) > samples:
        idx = np.sort(np.random.default_rng(recipe.seed).choice(len(split), samples, replace=False))
        split = split.subset(idx)
    baseline, _ = build_baseline(recipe, recipe_path.parent, splits, Cache(None), log=log)
    vname, cfg = prune_config_of(recipe, variant)
    module = baseline.load_module().eval()
    if cfg.importance in NEEDS_GRADIENTS:
        accumulate_gradients(module, splits.get("train", split), cfg.taylor_batches)
    log(f"scanning with {cfg.importance} importance" + (f" (settings of variant {vname})" if vname else ""))
    result = scan(module, cfg.plan(0.5), input_spec_for(recipe, splits), splits.num_classes, split,
                  ratios=ratios, split_name=role, seed=recipe.seed, log=log)
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = result.to_dict(max_drop_points)
    doc.update(importance=cfg.importance, variant=vname, recipe=str(recipe_path))
    (out_dir / "sensitivity.json").write_text(json.dumps(doc, indent=1))
    plot(result, out_dir / "sensitivity.png")
    return doc
