"""The CIFAR-10 ResNets of He et al. 2015 (arXiv:1512.03385, section 4.2), written from the paper.

Three stages of 16/32/64 channels at 32x32/16x16/8x8, n BasicBlocks per stage with n = (depth-2)/6,
3x3 convolutions, option-A shortcuts (parameter-free: subsample by 2 and zero-pad the new channels),
global average pooling and a 64->10 `linear` layer. Module names match the akamaster checkpoints
(github.com/akamaster/pytorch_resnet_cifar10), so `load_pretrained` reads them without renaming.

Used by the compress eval suite as a `python:eval/cifar_resnet.py:resnet56`-style model source.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

DEPTHS = (20, 32, 44, 56)

# Layers kept at full width when pruning the way the first benchmarks did (only each block's inner
# conv1 -> bn1 -> conv2-input channels), as fnmatch patterns over `model.named_modules()` names:
# the stem conv1 and every block's conv2 write the residual stream, and `linear` keeps its 10
# class outputs. Since PadShortcut is prunable (below), the residual stream can be pruned too:
# ignore only ["linear"] (see STRUCTURES in eval/bench_pruning.py).
PRUNING_IGNORE = ["conv1", "layer*.*.conv2", "linear"]


class PadShortcut(nn.Module):
    """Option-A shortcut: take every other pixel, then zero-pad the channels from `in_planes` to
    `planes`, split evenly on both sides (akamaster pads planes // 4 each side).

    A module rather than a lambda so the model pickles, exports to ONNX (Slice + Pad) and shows up
    by name in the module tree.

    Prunable: output channel j is input channel ``index[j]``, or zeros where ``index[j] == -1``.
    The module implements compress's custom-layer pruning protocol (``get_in_channels``,
    ``get_out_channels``, ``prune_in_channels``, ``prune_out_channels``; docs/steps/prune.md), so
    Torch-Pruning can cut the residual stream on both sides of a stage boundary. While the mapping
    is the original one the forward pass is the plain Slice + Pad; once pruned it is a Gather.
    """

    def __init__(self, in_planes: int, planes: int) -> None:
        super().__init__()
        if (planes - in_planes) % 2:
            raise ValueError(f"PadShortcut needs an even channel increase: {in_planes}->{planes}")
        self.register_buffer("in_channels", torch.tensor(in_planes))
        self.register_buffer("index", self._padded_index(in_planes, planes))
        self.register_load_state_dict_post_hook(lambda module, _keys: module._refresh())
        self._refresh()

    @staticmethod
    def _padded_index(in_planes: int, planes: int) -> torch.Tensor:
        p = (planes - in_planes) // 2
        index = torch.full((planes,), -1, dtype=torch.long)
        index[p:p + in_planes] = torch.arange(in_planes)
        return index

    def _refresh(self) -> None:
        """Recompute the Python-side view of the buffers (after pruning or loading a state_dict)."""
        self.in_planes = int(self.in_channels)
        planes = self.index.numel()
        self.pad_each_side = (planes - self.in_planes) // 2
        self.is_padding = planes >= self.in_planes and (planes - self.in_planes) % 2 == 0 and torch.equal(
            self.index, self._padded_index(self.in_planes, planes))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Checkpoints of the unpruned model (akamaster's) carry no buffers: they are the padding.
        for name in ("in_channels", "index"):
            key = prefix + name
            if key not in state_dict:
                state_dict[key] = getattr(self, name).clone()
            elif state_dict[key].shape != getattr(self, name).shape:  # a pruned model's state_dict
                setattr(self, name, torch.empty_like(state_dict[key]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, ::2, ::2]
        if self.is_padding:
            p = self.pad_each_side
            # F.pad's tuple runs from the last dim backwards: (W left, W right, H top, H bottom, C, C).
            return F.pad(x, (0, 0, 0, 0, p, p), mode="constant", value=0.0)
        # append one zero channel; -1 in index picks it (Python's -1 % (C + 1) == C)
        x = F.pad(x, (0, 0, 0, 0, 0, 1), mode="constant", value=0.0)
        return torch.index_select(x, 1, self.index.remainder(x.shape[1]))

    # compress's custom-layer pruning protocol ------------------------------------------------
    def get_in_channels(self) -> int:
        return self.in_planes

    def get_out_channels(self) -> int:
        return self.index.numel()

    def prune_out_channels(self, idxs: list[int]) -> None:
        keep = torch.ones(self.index.numel(), dtype=torch.bool)
        keep[list(idxs)] = False
        self.index = self.index[keep].clone()
        self._refresh()

    def prune_in_channels(self, idxs: list[int]) -> None:
        removed = torch.zeros(self.in_planes, dtype=torch.bool)
        removed[list(idxs)] = True
        # new number of each kept input channel: its old number minus the removed ones before it
        renumber = torch.cumsum(~removed, 0) - 1
        index = self.index.clone()
        data = index >= 0
        gone = data & removed[index.clamp(min=0)]
        index[data] = renumber[index[data]]
        index[gone] = -1
        self.in_channels = torch.tensor(self.in_planes - int(removed.sum()))
        self.index = index
        self._refresh()

    def extra_repr(self) -> str:
        return f"{self.in_planes}->{self.index.numel()}, stride=2" + ("" if self.is_padding else ", pruned")


class BasicBlock(nn.Module):
    """conv3x3-bn-relu-conv3x3-bn, plus the shortcut, then relu."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        if stride != 1 or in_planes != planes:
            if stride != 2:
                raise ValueError("option-A shortcuts subsample by exactly 2")
            self.shortcut: nn.Module = PadShortcut(in_planes, planes)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 inputs."""

    def __init__(self, depth: int, num_classes: int = 10) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(
                f"CIFAR ResNet depth must be 6n+2 with n >= 1 (20, 32, 44, 56, ...), got {depth}"
            )
        n = (depth - 2) // 6
        self.depth = depth
        self.conv1 = nn.Conv2d(3, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._stage(16, 16, n, stride=1)
        self.layer2 = self._stage(16, 32, n, stride=2)
        self.layer3 = self._stage(32, 64, n, stride=2)
        self.linear = nn.Linear(64, num_classes)
        self._init_weights()

    @staticmethod
    def _stage(in_planes: int, planes: int, n: int, stride: int) -> nn.Sequential:
        blocks = [BasicBlock(in_planes, planes, stride)]
        blocks += [BasicBlock(planes, planes, 1) for _ in range(n - 1)]
        return nn.Sequential(*blocks)

    def _init_weights(self) -> None:
        # He (kaiming) normal init for convolutions and the classifier, as in the paper.
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


def resnet20(num_classes: int = 10) -> CifarResNet:
    return CifarResNet(20, num_classes)


def resnet32(num_classes: int = 10) -> CifarResNet:
    return CifarResNet(32, num_classes)


def resnet44(num_classes: int = 10) -> CifarResNet:
    return CifarResNet(44, num_classes)


def resnet56(num_classes: int = 10) -> CifarResNet:
    return CifarResNet(56, num_classes)


def pruning_ignored_layers(model: nn.Module, patterns: list[str] | None = None) -> list[nn.Module]:
    """The modules of `model` whose names match `patterns` (default `PRUNING_IGNORE`).

    Pass the result as torch-pruning's `ignored_layers`. Raises if a pattern matches nothing, so a
    renamed layer cannot silently become prunable.
    """
    patterns = PRUNING_IGNORE if patterns is None else patterns
    named = list(model.named_modules())
    ignored: list[nn.Module] = []
    for pattern in patterns:
        hits = [m for name, m in named if name and fnmatch.fnmatchcase(name, pattern)]
        if not hits:
            raise ValueError(f"pruning-ignore pattern {pattern!r} matches no module of the model")
        ignored.extend(hits)
    return ignored


def checkpoint_path(depth: int, weights_dir: str | Path) -> Path:
    """The akamaster file for `depth` in `weights_dir` (named resnet<depth>-<sha256 prefix>.th)."""
    if depth not in DEPTHS:
        raise ValueError(f"no pretrained CIFAR ResNet-{depth}; choose one of {list(DEPTHS)}")
    matches = sorted(Path(weights_dir).glob(f"resnet{depth}-*.th"))
    if not matches:
        raise FileNotFoundError(f"no resnet{depth}-*.th in {weights_dir}")
    return matches[0]


def load_pretrained(depth: int, weights_dir: str | Path) -> CifarResNet:
    """ResNet-`depth` with the akamaster CIFAR-10 weights, in eval mode.

    The files are `{'state_dict': ..., 'best_prec1': ...}` saved from a DataParallel wrapper, so the
    keys carry a `module.` prefix, which is stripped. Loading is strict: a key mismatch raises.
    """
    path = checkpoint_path(depth, weights_dir)
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    state = ckpt.get("state_dict", ckpt)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    model = CifarResNet(depth)
    model.load_state_dict(state, strict=True)
    return model.eval()
