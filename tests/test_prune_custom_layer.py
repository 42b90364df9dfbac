"""Custom layers Torch-Pruning cannot see through (a channel-padding shortcut) tell the prune step
how to cut them, through compress's custom-layer protocol; the eval CIFAR ResNet's option-A
shortcut is one, so the residual stream of those ResNets can be pruned."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from compress.artifacts import Artifact, Cache
from compress.errors import InputError
from compress.pruning.channels import count_macs_params, is_custom_prunable
from compress.sources.models import ModelSpec, load_state_dict_checked
from compress.steps.prune import PruneConfig
from compress.steps.prune import apply as prune
from eval.cifar_resnet import PRUNING_IGNORE, CifarResNet, PadShortcut
from tests.test_prune import _ctx as prune_ctx
from tests.test_prune import _splits

SHAPE = (3, 16, 16)
SOURCE = """
from eval.cifar_resnet import CifarResNet


def resnet8(num_classes=10):
    return CifarResNet(8, num_classes)
"""


@pytest.fixture
def base(tmp_path) -> Artifact:
    path = tmp_path / "resnet8.py"
    path.write_text(SOURCE)
    spec = ModelSpec("python:resnet8.py:resnet8", {}, tmp_path)
    torch.manual_seed(0)
    module = spec.build().eval()
    art = Artifact(kind="torch", digest="r8", module=module, model_spec=spec)
    art.meta["macs"], art.meta["params"] = count_macs_params(module, SHAPE)
    return art


def _ctx(tmp_path, base):
    return prune_ctx(tmp_path, base, _splits(shape=SHAPE), SHAPE)


def _x(n: int = 4) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(0).standard_normal((n, *SHAPE)).astype(np.float32))


def test_the_shortcut_implements_the_protocol_and_plain_layers_do_not():
    assert is_custom_prunable(PadShortcut(16, 32))
    assert not is_custom_prunable(nn.Conv2d(3, 8, 3)) and not is_custom_prunable(nn.Identity())


def test_pruned_shortcut_keeps_the_channel_mapping():
    sc = PadShortcut(4, 8)  # output = [0, 0, in0, in1, in2, in3, 0, 0]
    x = torch.randn(2, 4, 6, 6)
    full = sc(x)
    sc.prune_in_channels([1])
    sc.prune_out_channels([0, 3])
    expected = full.clone()
    expected[:, 3] = 0  # input 1 (output 3) is gone: its output is zero now
    expected = expected[:, [1, 2, 4, 5, 6, 7]]
    assert sc.get_in_channels() == 3 and sc.get_out_channels() == 6 and not sc.is_padding
    assert torch.equal(sc(x[:, [0, 2, 3]]), expected)


def test_an_unpruned_checkpoint_without_the_shortcut_buffers_loads_strictly():
    model = CifarResNet(8)
    state = {k: v for k, v in model.state_dict().items() if not k.endswith(("shortcut.index", "shortcut.in_channels"))}
    fresh = CifarResNet(8)
    # akamaster's files have no shortcut buffers: compress's strict checked load lets the module
    # fill them in, and still names a key that really is missing
    load_state_dict_checked(fresh, state, "akamaster-style.th")
    assert fresh.layer2[0].shortcut.is_padding
    with pytest.raises(InputError, match=r"missing: conv1.weight"):
        load_state_dict_checked(CifarResNet(8), {k: v for k, v in state.items() if k != "conv1.weight"}, "x")


def test_pruning_cuts_the_residual_stream_through_the_shortcut(tmp_path, base):
    inner_only = prune(base, PruneConfig(ratio=0.5, ignore=list(PRUNING_IGNORE)), _ctx(tmp_path / "a", base))
    stream = prune(base, PruneConfig(ratio=0.5, ignore=["linear"]), _ctx(tmp_path / "b", base))
    m = stream.module
    assert m.conv1.out_channels < 16 and m.layer3[0].conv2.out_channels < 64  # the stream is cut
    assert inner_only.module.conv1.out_channels == 16
    assert m.layer2[0].shortcut.get_out_channels() == m.layer2[0].conv2.out_channels
    assert m.layer2[0].shortcut.get_in_channels() == m.layer1[0].conv2.out_channels
    assert stream.meta["pruning"]["macs_after"] < inner_only.meta["pruning"]["macs_after"]
    with torch.inference_mode():
        assert m(_x()).shape == (4, 10)


def test_iterative_pruning_cuts_an_already_pruned_shortcut_again(tmp_path, base):
    out = prune(base, PruneConfig(ratio=0.5, ignore=["linear"], iterative_steps=2), _ctx(tmp_path, base))
    with torch.inference_mode():
        assert out.module(_x()).shape == (4, 10)
    assert out.module.conv1.out_channels == 8


def test_a_model_pruned_through_the_shortcut_reloads_and_exports_identically(tmp_path, base):
    import onnxruntime as ort

    from compress.steps.export import export_onnx

    out = prune(base, PruneConfig(ratio=0.5, ignore=["linear"]), _ctx(tmp_path, base))
    cache = Cache(tmp_path / "cache")
    out.digest = "pruned"  # the key compress.run.build gives it
    cache.put(out)
    again = cache.get(out.digest, base.model_spec)
    x = _x()
    with torch.inference_mode():
        y = out.module(x)
        assert torch.equal(again.module(x), y)
    assert not again.module.layer2[0].shortcut.is_padding
    path = tmp_path / "pruned.onnx"
    export_onnx(out.module, SHAPE, path, opset=17, dynamic_batch=True)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(got, y.numpy(), atol=1e-4)
