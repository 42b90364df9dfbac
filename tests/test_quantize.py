"""The quantize step: every option reaches ONNX Runtime (asserted on the produced graph), target
defaults, the int8 coverage counter, and clear errors for bad options."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from compress.artifacts import Artifact
from compress.errors import StepError
from compress.quantization.targets import DEFAULTS, detect_target, resolve_target
from compress.steps.base import StepContext
from compress.steps.quantize import QuantizeConfig, apply, resolve_settings

IMAGE_SHAPE = (3, 8, 8)  # the shape of conftest.py's tiny images

# --------------------------------------------------------------------------- fixtures and helpers


@pytest.fixture
def splits(tmp_path: Path, tiny_npz: Path):
    from compress.recipe import DataConfig
    from compress.sources.data import make_splits

    cfg = DataConfig(source=f"npz:{tiny_npz}",
                     split={"train": 0.4, "calibration": 0.2, "tuning": 0.2, "heldout": 0.2})
    return make_splits(cfg, tmp_path, seed=0)


@pytest.fixture
def run_quantize(tmp_path: Path, tiny_onnx_artifact: Artifact, splits):
    """``run_quantize(**config) -> (artifact, graph, ctx)``; each call in its own work dir."""
    import onnx

    calls = iter(range(1000))

    def run(art: Artifact | None = None, **config):
        workdir = tmp_path / f"work{next(calls)}"
        workdir.mkdir()
        ctx = StepContext(splits=splits, model_spec=None, input_shape=IMAGE_SHAPE, seed=0,
                          workdir=workdir, log=lambda _msg: None)
        out = apply(art or tiny_onnx_artifact, QuantizeConfig(**config), ctx)
        return out, onnx.load(str(out.path)), ctx

    return run


def _inits(graph) -> dict:
    from onnx import numpy_helper

    return {i.name: numpy_helper.to_array(i) for i in graph.graph.initializer}


def _input_quantizer(graph):
    """The QuantizeLinear of the model's input (of the padded input when the stem was padded)."""
    return next(n for n in graph.graph.node
                if n.op_type == "QuantizeLinear" and n.input[0] in ("pixel_values", "pixel_values_padded"))


def _input_zero_point(graph) -> np.ndarray:
    """Zero point of the QuantizeLinear applied to the model's input (an activation)."""
    return _inits(graph)[_input_quantizer(graph).input[2]]


def _conv_weight_dq(graph, conv_index: int = 0):
    """(quantized weight, scale, zero point, axis) feeding the conv_index-th Conv's weight."""
    inits = _inits(graph)
    convs = [n for n in graph.graph.node if n.op_type == "Conv"]
    producer = {o: n for n in graph.graph.node for o in n.output}
    dq = producer[convs[conv_index].input[1]]
    assert dq.op_type == "DequantizeLinear"
    axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
    return inits[dq.input[0]], inits[dq.input[1]], inits[dq.input[2]], axis


def _op_types(graph) -> set[str]:
    return {n.op_type for n in graph.graph.node}


# --------------------------------------------------------------------------- options reach the graph


def test_x86_defaults_are_u8s8_per_channel_qdq(run_quantize):
    art, g, ctx = run_quantize(target="x86-vnni")
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= _op_types(g)  # QDQ, not QLinearConv
    assert _input_zero_point(g).dtype == np.uint8
    w, scale, zp, axis = _conv_weight_dq(g)
    assert w.dtype == np.int8 and zp.dtype == np.int8
    assert scale.shape == (8,) and axis == 0  # one scale per output channel of the first conv
    assert not zp.any()  # symmetric weights
    assert art.meta["quantization"]["target"] == "x86-vnni"
    assert ctx.consumed == {"calibration"}


def test_int8_symmetric_activations(run_quantize):
    _, g, _ = run_quantize(activation_type="int8", symmetric_activations=True)
    zp = _input_zero_point(g)
    assert zp.dtype == np.int8 and zp == 0


def test_asymmetric_uint8_weights(run_quantize):
    _, g, _ = run_quantize(weight_type="uint8", symmetric_weights=False)
    w, _, zp, _ = _conv_weight_dq(g)
    assert w.dtype == np.uint8 and zp.dtype == np.uint8
    assert zp.any()  # an asymmetric range has non-zero zero points


def test_per_tensor_weights(run_quantize):
    _, g, _ = run_quantize(per_channel=False)
    _, scale, _, _ = _conv_weight_dq(g)
    assert scale.size == 1


def test_reduce_range_gives_7_bit_weights(run_quantize):
    _, g_full, _ = run_quantize(reduce_range=False)
    _, g_7bit, _ = run_quantize(reduce_range=True)
    full, seven = _conv_weight_dq(g_full)[0], _conv_weight_dq(g_7bit)[0]
    assert np.abs(full.astype(int)).max() == 127
    assert np.abs(seven.astype(int)).max() <= 64


def test_qoperator_format(run_quantize):
    _, g, _ = run_quantize(format="qoperator")
    assert "QLinearConv" in _op_types(g) and "Conv" not in _op_types(g)


@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_calibration_method_changes_the_ranges(run_quantize, method):
    _, g_minmax, _ = run_quantize(calibration={"method": "minmax"})
    _, g_other, _ = run_quantize(calibration={"method": method, "percentile": 90.0})
    scale = lambda g: {n.input[1]: _inits(g)[n.input[1]] for n in g.graph.node  # noqa: E731
                       if n.op_type == "QuantizeLinear"}
    a, b = scale(g_minmax), scale(g_other)
    assert a.keys() == b.keys()
    assert any(not np.allclose(a[k], b[k]) for k in a)


def test_percentile_narrows_the_input_range(run_quantize):
    def input_scale(pct):
        _, g, _ = run_quantize(calibration={"method": "percentile", "percentile": pct})
        return float(_inits(g)[_input_quantizer(g).input[1]])

    assert input_scale(50.0) < input_scale(100.0)


def test_calibration_samples_are_recorded(run_quantize, splits):
    art, _, _ = run_quantize(calibration={"samples": 7, "batch_size": 3})
    assert art.meta["calibration_samples"] == 7
    art, _, _ = run_quantize(calibration={"samples": 10_000})
    assert art.meta["calibration_samples"] == len(splits["calibration"])


def test_exclude_nodes_keeps_that_node_float_and_says_when_ort_requantizes_it(run_quantize):
    art, g, ctx = run_quantize(exclude_nodes=["/3/Conv"])
    conv = next(n for n in g.graph.node if n.name == "/3/Conv")
    assert conv.input[1] in _inits(g) and _inits(g)[conv.input[1]].dtype == np.float32
    # its input and output are still int8, so ORT fuses it into QLinearConv at load time anyway:
    # the coverage counts what ORT runs, and the step says so instead of claiming a float layer
    cov = art.meta["int8_coverage"]
    assert cov["total"]["Conv"] == 2
    assert art.meta["quantization"]["float_layers_requantized_by_ort"] == (
        ["/3/Conv"] if cov["int8"]["Conv"] == 2 else [])
    if cov["int8"]["Conv"] == 2:
        assert any("WeightBiasQuantization" in n for n in ctx.notes)


def test_int8_node_names_known_answer(run_quantize, tiny_onnx_artifact):
    from compress.quantization.coverage import int8_node_names

    assert int8_node_names(tiny_onnx_artifact.path) == set()
    art, _, _ = run_quantize()
    assert int8_node_names(art.path) >= {"/0/Conv", "/3/Conv", "/8/Gemm"}


def test_exclude_op_types(run_quantize):
    art, g, _ = run_quantize(exclude_op_types=["Gemm"])
    gemm = next(n for n in g.graph.node if n.op_type == "Gemm")
    assert _inits(g)[gemm.input[1]].dtype == np.float32
    assert art.meta["int8_coverage"]["int8"]["MatMul/Gemm"] == 0


def test_preprocess_switch(run_quantize):
    art, _, ctx = run_quantize(preprocess=True)
    assert (ctx.workdir / "preprocessed.onnx").is_file()
    art, _, ctx = run_quantize(preprocess=False)
    assert not (ctx.workdir / "preprocessed.onnx").exists()


@pytest.mark.parametrize("target", ["tensorrt", "arm", "cuda"])
def test_symmetric_int8_targets(run_quantize, target):
    art, g, _ = run_quantize(target=target)
    zp = _input_zero_point(g)
    assert zp.dtype == np.int8 and zp == 0
    assert art.meta["quantization"]["target"] == target


def test_explicit_field_overrides_the_target_default():
    target, s = resolve_settings(QuantizeConfig(target="x86", reduce_range=False, per_channel=False))
    assert target == "x86" and s.reduce_range is False and s.per_channel is False
    assert s.activation_type == DEFAULTS["x86"].activation_type


def test_dynamic_quantizes_matmul_gemm_only(run_quantize):
    art, g, ctx = run_quantize(mode="dynamic")
    ops = _op_types(g)
    assert "ConvInteger" not in ops and "Conv" in ops
    assert ops & {"MatMulInteger", "DynamicQuantizeLinear"}
    assert any("dynamic quantization applied" in n for n in ctx.notes)
    assert ctx.consumed == set()  # no calibration data


# --------------------------------------------------------------------------- targets


@pytest.mark.parametrize(
    ("machine", "flags", "expected"),
    [
        ("x86_64", {"avx2", "avx512f", "avx512_vnni"}, "x86-vnni"),
        ("x86_64", {"avx2", "avx_vnni"}, "x86-vnni"),
        ("x86_64", {"avx2", "amx_int8"}, "x86-vnni"),
        ("x86_64", {"avx2"}, "x86"),
        ("aarch64", {"asimd"}, "arm"),
        ("arm64", set(), "arm"),
    ],
)
def test_detect_target(machine, flags, expected):
    assert detect_target(machine, flags) == expected


def test_auto_resolves_to_a_cpu_target():
    assert resolve_target("auto") in {"x86-vnni", "x86", "arm"}
    with pytest.raises(ValueError, match="valid: auto, x86-vnni"):
        resolve_target("gpu")


def test_the_documented_defaults_table_is_the_code_s():
    from compress.quantization.targets import defaults_table_markdown

    doc = (Path(__file__).parents[1] / "docs" / "steps" / "quantize.md").read_text()
    assert defaults_table_markdown() in doc, (
        "docs/steps/quantize.md is stale: paste compress.quantization.targets.defaults_table_markdown()"
    )
    assert set(DEFAULTS) == {"x86-vnni", "x86", "arm", "cuda", "tensorrt"}


# --------------------------------------------------------------------------- coverage


def test_coverage_known_answer(tmp_path, tiny_onnx_artifact, run_quantize):
    from compress.quantization.coverage import int8_coverage

    fp32 = int8_coverage(tiny_onnx_artifact.path)
    assert fp32.int8 == {"Conv": 0, "MatMul/Gemm": 0, "GlobalAveragePool": 0}
    assert fp32.compute_fraction == 0
    art, _, _ = run_quantize()
    cov = art.meta["int8_coverage"]
    assert cov["int8"] == {"Conv": 2, "MatMul/Gemm": 1, "GlobalAveragePool": 1}
    assert cov["compute_fraction"] == 1.0
    assert cov["summary"] == "Conv 2/2, MatMul/Gemm 1/1, GlobalAveragePool 1/1"
    art, _, _ = run_quantize(exclude_nodes=["/0/Conv"])
    assert art.meta["int8_coverage"]["compute_fraction"] == pytest.approx(2 / 3)


# --------------------------------------------------------------------------- bad options


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"calibration": {"method": "kl"}}, "'minmax', 'entropy' or 'percentile'"),
        ({"calibration": {"method": "percentile", "percentile": 0}}, r"percentile must be in \(0, 100\]"),
        ({"calibration": {"method": "percentile", "percentile": 100.5}}, r"percentile must be in \(0, 100\]"),
        ({"target": "gpu"}, "'auto', 'x86-vnni', 'x86', 'arm', 'cuda' or 'tensorrt'"),
        ({"target": "tensorrt", "activation_type": "uint8"}, "TensorRT runs only int8"),
        ({"target": "tensorrt", "symmetric_activations": False}, "zero points of 0"),
        ({"mode": "dynamic", "mixed_precision": {}}, "mixed_precision needs mode: static"),
        ({"calibrate": {}}, "Extra inputs are not permitted"),
    ],
)
def test_bad_options(config, message):
    with pytest.raises(ValidationError, match=message):
        QuantizeConfig(**config)


def _onnx_without_compute(path: Path) -> Artifact:
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", *IMAGE_SHAPE])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", *IMAGE_SHAPE])
    g = helper.make_graph([helper.make_node("Relu", ["input"], ["logits"])], "relu", [x], [y])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return Artifact(kind="onnx", digest="relu", path=path)


def test_no_quantizable_op_is_a_clear_error(tmp_path, run_quantize):
    with pytest.raises(StepError, match="needs Conv, MatMul or Gemm ops.*its ops: Relu"):
        run_quantize(_onnx_without_compute(tmp_path / "relu.onnx"))


def test_dynamic_on_a_conv_only_model_is_refused(tmp_path, tiny_model_file, run_quantize):
    from compress.sources.models import ModelSpec
    from compress.steps.export import export_onnx

    path = tmp_path / "conv_only.onnx"
    module = ModelSpec(f"python:{tiny_model_file.name}:conv_only", {}, tiny_model_file.parent).build()
    export_onnx(module.eval(), IMAGE_SHAPE, path, opset=17, dynamic_batch=True)
    with pytest.raises(StepError, match="use mode: static for convolutional models"):
        run_quantize(Artifact(kind="onnx", digest="c", path=path), mode="dynamic")


def test_stale_calibration_cache_is_never_reused(run_quantize, tmp_path):
    """Two calls in the same work dir with different calibration data give different ranges."""
    a1, g1, ctx = run_quantize(calibration={"samples": 2})
    (ctx.workdir / "calibration.json").write_text("{}")  # what an older run could have left
    ctx2 = StepContext(splits=ctx.splits, model_spec=None, input_shape=IMAGE_SHAPE, seed=0,
                       workdir=ctx.workdir, log=lambda _m: None)
    art = apply(Artifact(kind="onnx", digest="fp32", path=tmp_path / "fp32.onnx"),
                QuantizeConfig(calibration={"samples": 40}), ctx2)
    assert art.meta["calibration_samples"] == 40


# --------------------------------------------------------------------------- input-channel padding


def _logits(path: Path, x: np.ndarray) -> np.ndarray:
    from compress.quantization.ort import OrtRunner

    return OrtRunner(path, threads=1).logits(x)


def test_pad_channels_pads_the_rgb_stem_before_quantizing_and_changes_no_output(run_quantize, splits):
    padded, g, _ = run_quantize(target="x86-vnni")  # the row whose default is 4
    plain, _, _ = run_quantize(target="x86-vnni", pad_channels=0)
    pads = padded.meta["quantization"]["padded_channels"]
    assert [(p["conv"], p["channels"], p["padded_to"]) for p in pads] == [("/0/Conv", 3, 4)]
    assert plain.meta["quantization"]["padded_channels"] == []
    # the Pad stays float and reads the raw input; the QuantizeLinear comes after it
    pad = next(n for n in g.graph.node if n.op_type == "Pad")
    assert pad.name == pads[0]["pad_node"] and pad.input[0] == "pixel_values"
    assert any(n.op_type == "QuantizeLinear" and n.input[0] == pad.output[0] for n in g.graph.node)
    w, _, _, _ = _conv_weight_dq(g)
    assert w.shape[1] == 4 and not w[:, 3].any()  # the added channel's weights are zero
    x = splits["heldout"].inputs()
    np.testing.assert_allclose(_logits(padded.path, x), _logits(plain.path, x), atol=1e-6)


def test_pad_channels_target_defaults_and_override():
    assert resolve_settings(QuantizeConfig(target="x86-vnni"))[1].pad_channels == 4
    for target in ("x86", "arm", "cuda", "tensorrt"):  # not measured there: off
        assert resolve_settings(QuantizeConfig(target=target))[1].pad_channels == 0
    assert resolve_settings(QuantizeConfig(target="tensorrt", pad_channels=8))[1].pad_channels == 8
    with pytest.raises(ValidationError, match="pad_channels"):
        QuantizeConfig(pad_channels=-1)
