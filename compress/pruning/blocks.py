"""Block (depth) pruning: remove whole residual blocks, replacing each with the identity.

Channel pruning keeps every layer and thins it; on a CPU runtime the many small layers left can
cost nearly as much as wide ones (docs/results/pruning.md). Removing a residual block removes its
layers outright: latency falls about as its MACs do. A residual block computes ``x + F(x)``, so
dropping it leaves ``x``: the network stays whole and fine-tuning starts from a working model.

Candidates are the modules the user names by pattern (``prune.blocks``, e.g. ``layer*.*``) whose
output has its input's shape on a traced forward pass; the others (a block that downsamples) are
reported and kept. A removed block becomes :class:`RemovedBlock`, an identity whose one buffer marks
it in the state_dict, so a pruned model reloads from its state_dict alone
(:func:`restore_removed_blocks`). A block that is an item of an ``nn.ModuleList`` (a transformer's
layers, e.g. ``*encoder.layer.*``) is deleted from the list instead: the list's buffer
``compress_kept_layers`` records the original indices it still holds (reload and hidden-state
distillation read it) and a Hugging Face config's ``num_hidden_layers`` follows. Such a layer may take
more than one input (a mask); its first input must have its output's shape. Import it lazily: it
imports torch.

Criteria rank blocks, lowest removed first:

- ``l1`` / ``l2``: mean absolute / root-mean-square of the block's weights (data-free);
- ``taylor``: first-order estimate of the loss change when the block's output ``f(x)`` is replaced
  by its input ``x``: ``|sum(dL/df * (x - f(x)))|`` per batch, averaged over ``taylor_batches`` train
  batches;
- ``random``: a seeded control.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from compress.errors import StepError
from compress.pruning.importance import BLOCK_CRITERIA
from compress.sources.inputs import call_module, example_inputs, to_torch

MARKER = "compress_removed_block"


class RemovedBlock(nn.Module):
    """The identity, standing where a residual block was removed. Its one-element buffer records
    the removal in the state_dict (the exported graph does not use it)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer(MARKER, torch.ones(1))

    def forward(self, x, *_args, **_kwargs):
        return x


@dataclass
class BlockPlan:
    """The blocks that may go, and the matched modules that may not (with the reason)."""

    patterns: list[str]
    candidates: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # name -> why it is not a candidate


def _set_submodule(module, name: str, new) -> None:
    parent, _, child = name.rpartition(".")
    setattr(module.get_submodule(parent) if parent else module, child, new)


def _in_list(module, name: str) -> bool:
    """Is ``name`` an item of an ``nn.ModuleList`` (removed by deletion, not by the identity)?"""
    parent, _, child = name.rpartition(".")
    return child.isdigit() and isinstance(module.get_submodule(parent) if parent else module, nn.ModuleList)


def find_candidates(module, patterns: list[str], input_spec) -> BlockPlan:
    """The modules matching ``patterns`` whose output keeps their input's shape (traced on one
    zero sample). Nested matches keep the outermost. Raises when no module qualifies."""
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(n, pattern) for n, _ in module.named_modules() if n):
            names = [n for n, _ in module.named_modules() if n]
            raise StepError(f"prune.blocks pattern {pattern!r} matches no module name of this model; "
                            f"names look like {', '.join(names[:6])}")
    matched = [n for n, _ in module.named_modules()
               if n and any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    matched = [n for n in matched if not any(n.startswith(m + ".") for m in matched if m != n)]
    shapes: dict[str, tuple] = {}
    hooks = []
    for name in matched:
        layer = _in_list(module, name)  # a transformer layer also takes a mask: its first input counts

        def hook(mod, inp, out, name=name, layer=layer):
            ok = ((len(inp) == 1 or (layer and len(inp) > 1)) and isinstance(inp[0], torch.Tensor)
                  and isinstance(out, torch.Tensor))
            shapes[name] = (tuple(inp[0].shape), tuple(out.shape)) if ok else None
        hooks.append(module.get_submodule(name).register_forward_hook(hook))
    was_training = module.training
    try:
        with torch.no_grad():
            call_module(module.eval(), to_torch(example_inputs(input_spec)))
    finally:
        for h in hooks:
            h.remove()
        module.train(was_training)
    plan = BlockPlan(patterns=list(patterns))
    for name in matched:
        s = shapes.get(name, "not called")
        if s == "not called":
            plan.skipped[name] = "not called in the forward pass"
        elif s is None:
            plan.skipped[name] = "takes or returns something other than one tensor"
        elif s[0] != s[1]:
            plan.skipped[name] = f"changes the shape {s[0][1:]} -> {s[1][1:]} (the identity cannot replace it)"
        elif isinstance(module.get_submodule(name), RemovedBlock):
            plan.skipped[name] = "already removed"
        else:
            plan.candidates.append(name)
    if not plan.candidates:
        why = "; ".join(f"{n}: {w}" for n, w in list(plan.skipped.items())[:4])
        raise StepError(f"prune.blocks: no matched module can be replaced by the identity ({why}). Name "
                        "residual blocks whose output has their input's shape, e.g. 'layer*.*' for a ResNet")
    return plan


def score_blocks(module, names: list[str], criterion: str, *, batches=None, seed: int = 0) -> dict[str, float]:
    """Importance of each named block (higher = keep). ``batches``: (x, y) numpy train batches,
    needed by ``taylor``."""
    import numpy as np
    import torch.nn.functional as F

    if criterion not in BLOCK_CRITERIA:
        raise StepError(f"importance {criterion!r} is not defined for blocks; valid: {', '.join(BLOCK_CRITERIA)}")
    if criterion == "random":
        rng = np.random.default_rng(seed)
        return {n: float(v) for n, v in zip(names, rng.random(len(names)), strict=True)}
    if criterion in ("l1", "l2"):
        p = 1 if criterion == "l1" else 2
        out = {}
        for n in names:
            weights = [w.detach().flatten() for k, w in module.get_submodule(n).named_parameters()
                       if k.endswith("weight") and w.dim() > 1]
            if not weights:
                out[n] = 0.0
                continue
            w = torch.cat(weights)
            out[n] = float(w.abs().pow(p).mean().pow(1 / p))
        return out
    if batches is None:
        raise StepError("taylor block importance needs train batches")
    totals = dict.fromkeys(names, 0.0)
    current = dict.fromkeys(names, 0.0)
    hooks = []
    for n in names:
        def fwd(mod, inp, out, n=n):
            delta = (inp[0] - out).detach()

            def grad_hook(g, n=n, delta=delta):
                current[n] += float((g * delta).sum())
            out.register_hook(grad_hook)
        hooks.append(module.get_submodule(n).register_forward_hook(fwd))
    was_training = module.training
    module.eval()  # scoring must not move batch-norm statistics
    count = 0
    try:
        for x, y in batches:
            current.update(dict.fromkeys(names, 0.0))
            module.zero_grad(set_to_none=True)
            F.cross_entropy(call_module(module, to_torch(x)), torch.from_numpy(y)).backward()
            for n in names:
                totals[n] += abs(current[n])
            count += 1
    finally:
        for h in hooks:
            h.remove()
        module.zero_grad(set_to_none=True)
        module.train(was_training)
    if count == 0:
        raise StepError("taylor block importance got no train batches")
    return {n: v / count for n, v in totals.items()}


def removal_order(scores: dict[str, float]) -> list[str]:
    """Lowest importance first; ties broken by name so the order is reproducible."""
    return sorted(scores, key=lambda n: (scores[n], n))


def remove_blocks(module, names: list[str]) -> dict[str, str]:
    """Remove the named blocks in place: an item of an ``nn.ModuleList`` is deleted from it, any other
    block is replaced by the identity. Returns {old name: new name} of the list items that moved."""
    lists: dict[str, list[int]] = {}
    for n in names:
        if _in_list(module, n):
            parent, _, child = n.rpartition(".")
            lists.setdefault(parent, []).append(int(child))
        else:
            _set_submodule(module, n, RemovedBlock())
    moved = {}
    for name, drop in lists.items():
        moved.update(_delete_layers(module, name, sorted(set(drop))))
    if lists:
        from compress.pruning.transformers import sync_configs

        sync_configs(module)
    return moved


def _delete_layers(module, name: str, drop: list[int]) -> dict[str, str]:
    from compress.pruning.transformers import KEPT_LAYERS

    lst = module.get_submodule(name) if name else module
    if len(drop) >= len(lst):
        raise StepError(f"prune.blocks: removing every layer of {name or 'the model'} leaves nothing to run")
    previous = getattr(lst, KEPT_LAYERS, None)
    origin = previous.tolist() if previous is not None else list(range(len(lst)))
    stay = [i for i in range(len(lst)) if i not in drop]
    for i in reversed(drop):
        del lst[i]  # the list renumbers its items
    kept = torch.tensor([origin[i] for i in stay], dtype=torch.int64)
    if previous is not None:
        setattr(lst, KEPT_LAYERS, kept)
    else:
        lst.register_buffer(KEPT_LAYERS, kept)
    prefix = f"{name}." if name else ""
    return {f"{prefix}{old}": f"{prefix}{new}" for new, old in enumerate(stay) if old != new}


def count_to_remove(n_candidates: int, ratio: float) -> int:
    """How many of ``n_candidates`` blocks a ratio removes: at least one, never all."""
    return max(1, min(n_candidates - 1, round(ratio * n_candidates)))


def count_for_macs(module, order: list[str], input_spec, budget_macs: int,
                   count_macs: Callable) -> tuple[int, list[dict]]:
    """The fewest blocks, taken in ``order``, whose removal keeps at most ``budget_macs`` MACs,
    measured on copies. Raises when removing every candidate is not enough."""
    import copy

    trace = []
    for k in range(1, len(order) + 1):
        trial = copy.deepcopy(module)  # a fresh copy: removing a layer renames the ones after it
        remove_blocks(trial, order[:k])
        macs = count_macs(trial)
        trace.append({"blocks_removed": k, "macs": macs})
        if macs <= budget_macs:
            return k, trace
    raise StepError(
        f"prune.macs_budget is below what removing blocks allows: with all {len(order)} candidate "
        f"blocks removed the model keeps {trace[-1]['macs']} MACs (budget {budget_macs}). Raise "
        "macs_budget, name more blocks in prune.blocks, or prune channels instead"
    )


def restore_removed_blocks(module, state_dict: dict) -> None:
    """Put :class:`RemovedBlock` wherever ``state_dict`` marks a removed block, so a block-pruned
    model reloads from its state_dict (called before loading it)."""
    suffix = "." + MARKER
    for key in state_dict:
        if key.endswith(suffix):
            name = key[: -len(suffix)]
            try:
                current = module.get_submodule(name)
            except AttributeError:
                continue  # the loader reports the unexpected key with the others
            if not isinstance(current, RemovedBlock):
                _set_submodule(module, name, RemovedBlock())


class BlockCut:
    """Block pruning as the prune step runs it: the candidates, their ranking, cuts of copies for the
    budget searches, and the real cut in one or more steps. ``train()`` gives the train split (Taylor)."""

    def __init__(self, module, patterns: list[str], importance: str, input_spec, *, seed: int = 0,
                 train: Callable | None = None, taylor_batches: int = 4):
        self.importance, self.seed, self.train, self.taylor_batches = importance, seed, train, taylor_batches
        self.plan = find_candidates(module, patterns, input_spec)
        # original name -> name in the module being cut (removing a transformer layer renames the later ones)
        self.current = {n: n for n in self.plan.candidates}
        self.scores = self.score(module, self.plan.candidates)
        self.order = removal_order(self.scores)
        self.removed: list[str] = []

    def score(self, module, names: list[str]) -> dict[str, float]:
        import itertools

        import numpy as np

        batches = None
        if self.importance == "taylor":
            train = self.train()
            rows = np.arange(min(len(train), 32 * self.taylor_batches))  # read only what is used
            batches = itertools.islice(train.batches(32, rows), self.taylor_batches)
        scores = score_blocks(module, [self.current[n] for n in names], self.importance, batches=batches,
                              seed=self.seed)
        return {n: scores[self.current[n]] for n in names}

    def count(self, ratio: float) -> int:
        return count_to_remove(len(self.order), ratio)

    def cut_copy(self, module, ratio: float) -> None:
        remove_blocks(module, self.order[: self.count(ratio)])

    def cut_step(self, module, ratio: float, step: int, steps: int) -> None:
        """Remove this step's share of the blocks; after the first step the remaining candidates
        are ranked again on the (fine-tuned) model."""
        total = self.count(ratio)
        goal = round(total * (step + 1) / steps)
        left = [n for n in self.plan.candidates if n not in self.removed]
        order = self.order if step == 0 else removal_order(self.score(module, left))
        order = [n for n in order if n not in self.removed]
        take = order[: max(0, goal - len(self.removed))]
        moved = remove_blocks(module, [self.current.pop(n) for n in take])
        self.current = {n: moved.get(now, now) for n, now in self.current.items()}
        self.removed += take

    def facts(self) -> dict:
        return {"block_candidates": list(self.plan.candidates), "blocks_skipped": dict(self.plan.skipped),
                "block_scores": dict(self.scores), "removed_blocks": list(self.removed)}
