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

# Layers whose output channels must keep their width when pruning, as fnmatch patterns over the
# qualified names of `model.named_modules()`. The residual stream (stem conv1, every block's conv2,
# and the option-A zero-pad shortcuts between stages) must stay intact: torch-pruning's dependency
# graph cannot map channels through F.pad channel padding, and an identity shortcut ties every
# conv2 of a stage together. So only each block's inner conv1 -> bn1 -> conv2-input channels are
# pruned, the standard practice for CIFAR ResNets. `linear` keeps its 10 class outputs.
PRUNING_IGNORE = ["conv1", "layer*.*.conv2", "linear"]


class PadShortcut(nn.Module):
    """Option-A shortcut: take every other pixel, then zero-pad the channels from `in_planes` to
    `planes`, split evenly on both sides (akamaster pads planes // 4 each side).

    A module rather than a lambda so the model pickles, exports to ONNX (Slice + Pad) and shows up
    by name in the module tree, where pruning tools can find and skip it.
    """

    def __init__(self, in_planes: int, planes: int) -> None:
        super().__init__()
        if (planes - in_planes) % 2:
            raise ValueError(f"PadShortcut needs an even channel increase: {in_planes}->{planes}")
        self.in_planes = in_planes
        self.planes = planes
        self.pad_each_side = (planes - in_planes) // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, ::2, ::2]
        p = self.pad_each_side
        # F.pad's tuple runs from the last dim backwards: (W left, W right, H top, H bottom, C, C).
        return F.pad(x, (0, 0, 0, 0, p, p), mode="constant", value=0.0)

    def extra_repr(self) -> str:
        return f"{self.in_planes}->{self.planes}, stride=2"


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
