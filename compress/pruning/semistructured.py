"""2:4 semi-structured sparsity: in every group of four consecutive weights along a layer's input
dimension, the two smallest in magnitude are zeroed. Shapes do not change; only hardware with
sparse kernels (e.g. NVIDIA Ampere+ sparse tensor cores) can turn the zeros into speed.

For a Conv2d the groups run along the input channels at each (output channel, kernel position),
the layout sparse GEMM kernels read in NHWC; for a Linear, along ``in_features``.
"""

from __future__ import annotations

import fnmatch

N_ZEROS, GROUP = 2, 4


def mask_2of4(weight):
    """A {0, 1} mask of ``weight``'s shape keeping the 2 largest |w| of every 4 along the input dim."""
    import torch

    if weight.dim() == 2:  # Linear [out, in]
        w = weight.detach().abs()
    elif weight.dim() == 4:  # Conv [out, in, kh, kw] -> [out, kh, kw, in]
        w = weight.detach().abs().permute(0, 2, 3, 1)
    else:
        raise ValueError(f"2:4 masks need a Linear or Conv2d weight, got shape {tuple(weight.shape)}")
    if w.shape[-1] % GROUP:
        raise ValueError(f"input dim {w.shape[-1]} is not a multiple of {GROUP}")
    groups = w.reshape(-1, GROUP)
    drop = groups.topk(N_ZEROS, dim=1, largest=False).indices
    mask = torch.ones_like(groups)
    mask.scatter_(1, drop, 0.0)
    mask = mask.reshape(w.shape)
    if weight.dim() == 4:
        mask = mask.permute(0, 3, 1, 2)
    return mask.contiguous()


def eligible_layers(module, num_classes: int, ignore: list[str]) -> tuple[list[tuple[str, object]], list[str]]:
    """(name, layer) of every Conv2d (groups=1) / Linear whose input dim is a multiple of 4, minus
    the classifier and ignored names; and the names skipped for their shape."""
    from torch import nn

    chosen, skipped = [], []
    for name, m in module.named_modules():
        if not isinstance(m, (nn.Conv2d, nn.Linear)) or any(fnmatch.fnmatchcase(name, p) for p in ignore):
            continue
        if isinstance(m, nn.Linear) and m.out_features == num_classes:
            continue  # the classifier is kept dense, as in channel pruning
        fan_in = m.in_features if isinstance(m, nn.Linear) else m.in_channels
        if (isinstance(m, nn.Conv2d) and m.groups != 1) or fan_in % GROUP:
            skipped.append(name)
            continue
        chosen.append((name, m))
    return chosen, skipped


def apply_masks(layers: list[tuple[str, object]]) -> None:
    """Attach a 2:4 mask to each layer with torch.nn.utils.prune (so fine-tuning keeps the zeros)."""
    from torch.nn.utils import prune

    for _, m in layers:
        prune.custom_from_mask(m, "weight", mask_2of4(m.weight))


def make_permanent(layers: list[tuple[str, object]]) -> None:
    """Fold each mask into its weight and drop the pruning hooks (a plain state_dict again)."""
    from torch.nn.utils import prune

    for _, m in layers:
        prune.remove(m, "weight")


def zero_fraction(layers: list[tuple[str, object]]) -> float:
    total = sum(m.weight.numel() for _, m in layers)
    zeros = sum(int((m.weight == 0).sum()) for _, m in layers)
    return zeros / max(1, total)
