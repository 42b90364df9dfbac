"""Graph rewrites before int8 (compress/quantization/rewrite.py): each keeps the float function
exactly, and the quantize step records and applies it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from compress.artifacts import Artifact
from compress.quantization.rewrite import rewrite_for_int8


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def _shortcut_graph(slice_start: int = 0, pads=(0, 2, 0, 0, 0, 2, 0, 0), value: float = 0.0,
                    mode: str = "constant", slice_also_read: bool = False, axes=None):
    """x(1,4,6,6) -> Slice H ::2 -> Slice W ::2 -> Pad -> y, as torch exports an option-A shortcut
    after quant_pre_process (pads and slice bounds as initializers, shapes inferred)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def ints(name, values):
        return numpy_helper.from_array(np.array(values, np.int64), name)

    end = np.iinfo(np.int64).max
    inits = [ints("s0", [slice_start]), ints("e", [end]), ints("ax_h", [2]), ints("ax_w", [3]),
             ints("two", [2]), ints("pads", list(pads)),
             numpy_helper.from_array(np.array(value, np.float32), "value")]
    pad_inputs = ["hw", "pads", "value"]
    if axes is not None:  # opset 18: pads for the listed axes only
        inits.append(ints("axes", list(axes)))
        pad_inputs.append("axes")
    nodes = [
        helper.make_node("Slice", ["x", "s0", "e", "ax_h", "two"], ["h"], name="slice_h"),
        helper.make_node("Slice", ["h", "s0", "e", "ax_w", "two"], ["hw"], name="slice_w"),
        helper.make_node("Pad", pad_inputs, ["y"], name="pad", mode=mode),
    ]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    if slice_also_read:
        nodes.append(helper.make_node("Relu", ["h"], ["h_relu"], name="relu"))
        outputs.append(helper.make_tensor_value_info("h_relu", TensorProto.FLOAT, None))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 6, 6])],
                              outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18 if axes is not None else 17)])
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model)


def _save(tmp_path: Path, model) -> Path:
    import onnx

    path = tmp_path / "src.onnx"
    onnx.save(model, str(path))
    return path


def _pads_as_convs(src: Path, out: Path):
    path, done, padded = rewrite_for_int8(src, out, pads_as_convs=True)
    assert padded == [] and path == (out if done else src)
    return done


X = np.random.default_rng(0).standard_normal((1, 4, 6, 6)).astype(np.float32)


def test_option_a_shortcut_becomes_one_strided_1x1_conv_with_the_same_output(tmp_path):
    import onnx

    src, out = _save(tmp_path, _shortcut_graph()), tmp_path / "out.onnx"
    done = _pads_as_convs(src, out)
    assert [(d.pad_node, d.slices, d.channels, d.padded_to, d.stride) for d in done] == [
        ("pad", ("slice_h", "slice_w"), 4, 8, (2, 2))]
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    assert [n.op_type for n in model.graph.node] == ["Conv"]
    assert {i.name for i in model.graph.initializer} == {"pad/as_conv_weight"}  # the orphans went
    np.testing.assert_array_equal(_run(out, X), _run(src, X))


def test_a_slice_that_does_not_start_at_zero_stays_and_the_pad_still_becomes_a_conv(tmp_path):
    src, out = _save(tmp_path, _shortcut_graph(slice_start=1)), tmp_path / "out.onnx"
    (done,) = _pads_as_convs(src, out)
    assert done.slices == () and done.stride == (1, 1)
    np.testing.assert_array_equal(_run(out, X), _run(src, X))


def test_a_slice_read_elsewhere_is_not_folded(tmp_path):
    src, out = _save(tmp_path, _shortcut_graph(slice_also_read=True)), tmp_path / "out.onnx"
    (done,) = _pads_as_convs(src, out)
    assert done.slices == ("slice_w",) and done.stride == (1, 2)
    np.testing.assert_array_equal(_run(out, X), _run(src, X))


@pytest.mark.parametrize("kwargs", [
    {"pads": (0, 0, 1, 0, 0, 0, 1, 0)},  # spatial padding
    {"value": 1.0},  # not a zero pad
    {"mode": "reflect", "pads": (0, 0, 1, 1, 0, 0, 1, 1)},
    # opset 18's axes input reorders the pads: this one pads the batch axis, not the channels
    {"axes": (1, 0, 2, 3), "pads": (0, 2, 0, 0, 0, 2, 0, 0)},
], ids=["spatial", "nonzero-value", "reflect", "axes-input"])
def test_other_pads_are_left_alone(tmp_path, kwargs):
    src, out = _save(tmp_path, _shortcut_graph(**kwargs)), tmp_path / "out.onnx"
    assert _pads_as_convs(src, out) == [] and not out.exists()


def test_quantize_step_runs_the_shortcut_in_int8(tmp_path, tiny_step_ctx):
    """A tiny residual net with an option-A shortcut through the quantize step: the shortcut's
    float Slice/Pad are gone from the graph ORT executes, and its outputs stay close to the int8
    model without the rewrite."""
    import torch
    import torch.nn.functional as F

    from compress.quantization.coverage import optimized_op_counts
    from compress.steps.export import export_onnx
    from compress.steps.quantize import QuantizeConfig, apply

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = torch.nn.Conv2d(3, 4, 3, padding=1)
            self.down = torch.nn.Conv2d(4, 8, 3, stride=2, padding=1)
            self.head = torch.nn.Linear(8, 10)

        def forward(self, x):
            x = F.relu(self.stem(x))
            shortcut = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 2, 2))
            x = F.relu(self.down(x) + shortcut)
            return self.head(x.mean((2, 3)))

    torch.manual_seed(0)
    path = tmp_path / "net.onnx"
    export_onnx(Net().eval(), (3, 8, 8), path, opset=17, dynamic_batch=True)
    art = Artifact(kind="onnx", digest="net", path=path, lineage=["baseline"])
    kept = apply(art, QuantizeConfig(target="x86-vnni", pad_channels=0, channel_pads_as_convs=False), tiny_step_ctx)
    (tiny_step_ctx.workdir / "rewritten").mkdir()
    tiny_step_ctx.workdir = tiny_step_ctx.workdir / "rewritten"
    out = apply(art, QuantizeConfig(target="x86-vnni", pad_channels=0), tiny_step_ctx)
    (done,) = out.meta["quantization"]["channel_pads_as_convs"]
    assert done["channels"] == 4 and done["padded_to"] == 8 and done["stride"] == [2, 2]
    assert kept.meta["quantization"]["channel_pads_as_convs"] == []
    assert {"Pad", "Slice"} & set(optimized_op_counts(kept.path))  # the float shortcut, before
    ops = optimized_op_counts(out.path)
    assert not {"Pad", "Slice"} & set(ops) and ops["QLinearConv"] == 3
    x = tiny_step_ctx.data("calibration").inputs()["pixel_values"]
    np.testing.assert_allclose(_run(out.path, x), _run(kept.path, x), atol=0.1)
    # without quant_pre_process the exported pads are not constants: nothing to rewrite, and a note says why
    (tiny_step_ctx.workdir / "raw").mkdir()
    tiny_step_ctx.workdir = tiny_step_ctx.workdir / "raw"
    raw = apply(art, QuantizeConfig(target="x86-vnni", pad_channels=0, preprocess=False), tiny_step_ctx)
    assert raw.meta["quantization"]["channel_pads_as_convs"] == []
    assert any("preprocess: true" in n for n in tiny_step_ctx.notes)


# --------------------------------------------------------------------------- pad_channels


def _conv_graph(opset: int):
    """x(1,3,5,5) -> two convs sharing one 3-channel weight, + a depthwise conv, summed."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    dw = numpy_helper.from_array(rng.standard_normal((3, 1, 3, 3)).astype(np.float32), "dw")
    w4 = numpy_helper.from_array(rng.standard_normal((3, 4, 1, 1)).astype(np.float32), "w4")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["a"], name="a", pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["x", "w"], ["b"], name="b", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["a", "b"], ["ab"], name="add"),
        helper.make_node("Conv", ["ab", "w4"], ["c"], name="c"),  # 4 input channels: kept as is
        helper.make_node("Conv", ["x", "dw"], ["d"], name="depthwise", group=3, pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c", "d"], ["y"], name="out"),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 5, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 5, 5])], [w, dw, w4])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7
    onnx.checker.check_model(model)
    return model


@pytest.mark.parametrize("opset", [10, 17])  # Pad's pads: an attribute before opset 11, an input after
def test_pad_conv_channels_keeps_float_outputs_exactly(tmp_path, opset):
    import onnx

    src, out = _save(tmp_path, _conv_graph(opset)), tmp_path / "out.onnx"
    path, _, done = rewrite_for_int8(src, out, pad_channels=4)
    assert path == out
    assert sorted((d.conv, d.channels, d.padded_to) for d in done) == [("a", 3, 4), ("b", 3, 4)]
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    convs = {n.name: n for n in model.graph.node if n.op_type == "Conv"}
    assert convs["depthwise"].input == ["x", "dw"] and convs["c"].input[0] == "ab"  # untouched
    x = np.random.default_rng(1).standard_normal((1, 3, 5, 5)).astype(np.float32)
    np.testing.assert_allclose(_run(out, x), _run(src, x), rtol=1e-6, atol=1e-6)


def test_rewrites_off_or_finding_nothing_write_nothing(tmp_path):
    src, out = _save(tmp_path, _conv_graph(17)), tmp_path / "out.onnx"
    for off in (0, 1):
        assert rewrite_for_int8(src, out, pad_channels=off) == (src, [], []) and not out.exists()
    assert rewrite_for_int8(src, out, pads_as_convs=True) == (src, [], [])  # no Pad in this graph
    assert not out.exists()
    path, _, done = rewrite_for_int8(src, out, pad_channels=4)
    assert path == out and [d.conv for d in done] == ["a", "b"]
    again = tmp_path / "again.onnx"
    assert rewrite_for_int8(out, again, pad_channels=4) == (out, [], [])  # every Conv a multiple now
    assert not again.exists()
