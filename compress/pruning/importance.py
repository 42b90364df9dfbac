"""Importance criteria: how Torch-Pruning ranks channels, chosen by name in the recipe."""

from __future__ import annotations

import numpy as np

CRITERIA = ("l1", "l2", "bn", "lamp", "taylor", "random")
BLOCK_CRITERIA = ("l1", "l2", "taylor", "random")  # what compress.pruning.blocks can rank blocks by
HEAD_CRITERIA = ("l1", "l2", "taylor", "random")  # what ranks attention heads and FFN neurons

# Criteria that read gradients: a few train batches are back-propagated before scoring.
NEEDS_GRADIENTS = frozenset({"taylor"})


def make_importance(name: str):
    """A fresh ``tp.importance`` object for criterion ``name`` (one of ``CRITERIA``)."""
    import torch_pruning as tp

    factories = {
        "l1": lambda: tp.importance.GroupMagnitudeImportance(p=1),
        "l2": lambda: tp.importance.GroupMagnitudeImportance(p=2),
        "bn": lambda: tp.importance.BNScaleImportance(),
        "lamp": lambda: tp.importance.LAMPImportance(p=2),
        "taylor": lambda: tp.importance.GroupTaylorImportance(),
        "random": lambda: tp.importance.RandomImportance(),
    }
    if name not in factories:
        raise ValueError(f"unknown importance criterion {name!r}; valid: {', '.join(CRITERIA)}")
    return factories[name]()


def accumulate_gradients(module, split, batches: int, batch_size: int = 32) -> None:
    """Back-propagate cross-entropy over the first ``batches`` batches of ``split`` (train data),
    leaving the summed gradients on the parameters for first-order Taylor importance.

    The module stays in eval mode: scoring must not move batch-norm running statistics."""
    import torch
    import torch.nn.functional as F

    from compress.sources.inputs import call_module, to_torch

    module.eval()
    module.zero_grad()
    rows = np.arange(min(len(split), batches * batch_size))  # read only the batches used
    for x, y in split.batches(batch_size, rows):
        F.cross_entropy(call_module(module, to_torch(x)), torch.from_numpy(y)).backward()
