"""Structured channel pruning with Torch-Pruning: the dependency graph decides which layers must
shrink together, the importance criterion ranks their channels, and the pruner cuts the lowest.

The classifier (every Linear producing the class logits) is always kept, as are modules matched by
the user's ``ignore`` patterns (fnmatch on module names, e.g. ``layer*.conv2``).
"""

from __future__ import annotations

import contextlib
import fnmatch
import io
from dataclasses import dataclass, field

from compress.errors import StepError
from compress.sources.inputs import torch_example


@dataclass
class ChannelPlan:
    """How to cut: the criterion, a ratio (uniform, or global ranking with a per-layer cap),
    per-layer overrides and rounding. The ratio is the fraction of channels removed."""

    importance: str = "l2"
    ratio: float = 0.5
    global_pruning: bool = False
    max_layer_ratio: float = 1.0
    round_to: int | None = None
    ignore: list[str] = field(default_factory=list)
    layer_ratios: dict[str, float] = field(default_factory=dict)  # fnmatch pattern -> ratio
    iterative_steps: int = 1


def check_patterns(module, patterns: list[str], key: str) -> None:
    names = [n for n, _ in module.named_modules() if n]
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
            raise StepError(
                f"{key} pattern {pattern!r} matches no module name of this model; names look like "
                f"{', '.join(names[:6])}"
            )


def kept_layers(module, num_classes: int, patterns: list[str]) -> list:
    """The classifier and every module whose name matches a pattern. The classifier is every Linear
    with one output per class, and the last Conv/Linear of the model (a 1x1-conv head counts)."""
    from torch import nn

    layers = [m for m in module.modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))]
    kept = layers[-1:]
    for name, m in module.named_modules():
        if m in kept:
            continue
        is_classifier = isinstance(m, nn.Linear) and m.out_features == num_classes
        if is_classifier or (name and any(fnmatch.fnmatchcase(name, p) for p in patterns)):
            kept.append(m)
    return kept


def count_macs_params(module, input_spec) -> tuple[int, int]:
    """Multiply-accumulates of one sample's forward pass, and the parameter count."""
    import torch_pruning as tp

    was_training = module.training
    example = torch_example(input_spec)
    # it prints a warning for modules called with keywords only (every transformers layer): not news
    with contextlib.redirect_stdout(io.StringIO()):
        macs, params = tp.utils.count_ops_and_params(module.eval(), example)
    module.train(was_training)
    return int(macs), int(params)


CUSTOM_LAYER_METHODS = ("get_in_channels", "get_out_channels", "prune_in_channels", "prune_out_channels")


def is_custom_prunable(m) -> bool:
    """Does ``m`` implement compress's custom-layer pruning protocol (docs/steps/prune.md)?"""
    return all(callable(getattr(m, name, None)) for name in CUSTOM_LAYER_METHODS)


def custom_pruners(module) -> dict:
    """Torch-Pruning pruners for every custom layer class in ``module`` that implements the protocol:
    a layer Torch-Pruning cannot see through (e.g. a shortcut that pads channels) tells it how its
    input and output channels are cut. In and out channels are independent, as for a convolution."""
    import torch_pruning as tp

    class ModulePruner(tp.pruner.function.BasePruningFunc):
        def prune_out_channels(self, layer, idxs):
            layer.prune_out_channels(sorted(int(i) for i in idxs))
            return layer

        def prune_in_channels(self, layer, idxs):
            layer.prune_in_channels(sorted(int(i) for i in idxs))
            return layer

        def get_out_channels(self, layer):
            return layer.get_out_channels()

        def get_in_channels(self, layer):
            return layer.get_in_channels()

    return {type(m): ModulePruner() for m in module.modules() if is_custom_prunable(m)}


def make_pruner(module, plan: ChannelPlan, input_spec, num_classes: int, ratio: float | None = None,
                iterative_steps: int | None = None):
    """A Torch-Pruning ``BasePruner`` for ``module`` following ``plan`` (``ratio`` and
    ``iterative_steps`` override the plan's)."""
    import torch_pruning as tp

    from compress.pruning.importance import make_importance

    ratio = plan.ratio if ratio is None else ratio
    ignored = kept_layers(module, num_classes, plan.ignore)
    per_layer = {}
    for name, m in module.named_modules():
        for pattern, r in plan.layer_ratios.items():
            if name and fnmatch.fnmatchcase(name, pattern) and m not in ignored and _is_root(m):
                per_layer[m] = r
    example = torch_example(input_spec)
    try:
        return tp.pruner.BasePruner(
            module, example, importance=make_importance(plan.importance),
            global_pruning=plan.global_pruning, pruning_ratio=ratio,
            pruning_ratio_dict=per_layer or None, max_pruning_ratio=plan.max_layer_ratio,
            iterative_steps=iterative_steps or plan.iterative_steps, ignored_layers=ignored, round_to=plan.round_to,
            customized_pruners=custom_pruners(module) or None,
        )
    except Exception as err:
        raise StepError(f"Torch-Pruning could not trace this model: {type(err).__name__}: {err}") from err


def _is_root(m) -> bool:
    from torch import nn

    return isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))


def prunable_layers(module, plan: ChannelPlan, input_spec, num_classes: int) -> list[tuple[str, object]]:
    """(name, module) of every layer whose output channels this plan may remove: the root of each
    Torch-Pruning group that contains no kept layer."""
    pruner = make_pruner(module, plan, input_spec, num_classes)
    names = {m: n for n, m in module.named_modules()}
    out = []
    for group in pruner.DG.get_all_groups(ignored_layers=pruner.ignored_layers,
                                          root_module_types=pruner.root_module_types):
        root = group[0].dep.target.module
        out.append((names[root], root))
    order = {m: i for i, (_, m) in enumerate(module.named_modules())}
    return sorted(out, key=lambda item: order[item[1]])


def copy_with_grads(module):
    """A deep copy that also carries the parameters' gradients (``copy.deepcopy`` drops them), so
    a gradient-based criterion scores the copy exactly as it would the original."""
    import copy

    dup = copy.deepcopy(module)
    for p, q in zip(module.parameters(), dup.parameters(), strict=True):
        if p.grad is not None:
            q.grad = p.grad.detach().clone()
    return dup


def prune_once(module, plan: ChannelPlan, input_spec, num_classes: int, ratio: float | None = None,
               *, seed: int = 0) -> None:
    """Cut ``module`` in place to ``ratio`` in one step (gradients must already be on it for Taylor)."""
    import torch

    torch.manual_seed(seed)  # random importance: the same cut every time
    make_pruner(module, plan, input_spec, num_classes, ratio, iterative_steps=1).step()
    module.zero_grad(set_to_none=True)
