"""The fp16 step: float16 weights and compute, I/O types as configured, checked against float32."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from compress.errors import StepError
from compress.steps.fp16 import Fp16Config, apply

IMAGE_SHAPE = (3, 8, 8)


def _io_types(path: Path) -> tuple[int, int]:
    import onnx

    g = onnx.load(str(path)).graph
    return g.input[0].type.tensor_type.elem_type, g.output[0].type.tensor_type.elem_type


def _weight_types(path: Path) -> set[int]:
    import onnx

    return {i.data_type for i in onnx.load(str(path)).graph.initializer if len(i.dims) > 1}


def test_keep_io_types_gives_float32_io_and_float16_weights(tiny_onnx_artifact, tiny_step_ctx):
    from onnx import TensorProto

    art = apply(tiny_onnx_artifact, Fp16Config(), tiny_step_ctx)
    assert _io_types(art.path) == (TensorProto.FLOAT, TensorProto.FLOAT)
    assert _weight_types(art.path) == {TensorProto.FLOAT16}
    assert art.meta["precision"] == {"weights": "float16", "io": "float32"}
    assert art.meta["fp16_max_rel_error"] < 0.01  # measured against the float32 model
    assert tiny_step_ctx.consumed == {"calibration"}


def test_float16_io(tiny_onnx_artifact, tiny_step_ctx):
    import onnxruntime as ort
    from onnx import TensorProto

    art = apply(tiny_onnx_artifact, Fp16Config(keep_io_types=False), tiny_step_ctx)
    assert _io_types(art.path) == (TensorProto.FLOAT16, TensorProto.FLOAT16)
    sess = ort.InferenceSession(str(art.path), providers=["CPUExecutionProvider"])
    out = sess.run(None, {sess.get_inputs()[0].name: np.zeros((2, *IMAGE_SHAPE), np.float16)})[0]
    assert out.dtype == np.float16 and art.lineage[-1] == "fp16(fp16 I/O)"


def test_op_block_list_keeps_those_ops_float32(tiny_onnx_artifact, tiny_step_ctx):
    import onnx
    from onnx import TensorProto

    art = apply(tiny_onnx_artifact, Fp16Config(op_block_list=["Gemm"]), tiny_step_ctx)
    g = onnx.load(str(art.path)).graph
    gemm = next(n for n in g.node if n.op_type == "Gemm")
    weights = {i.name: i.data_type for i in g.initializer}
    assert weights[gemm.input[1]] == TensorProto.FLOAT
    conv = next(n for n in g.node if n.op_type == "Conv")
    assert weights[conv.input[1]] == TensorProto.FLOAT16


def test_verification_fails_loudly(tiny_onnx_artifact, tiny_step_ctx):
    with pytest.raises(StepError, match="differs from float32 by .* of the logits' range"):
        apply(tiny_onnx_artifact, Fp16Config(max_rel_error=1e-9), tiny_step_ctx)


def test_bad_options():
    with pytest.raises(ValidationError, match="greater than 0"):
        Fp16Config(max_rel_error=0)
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        Fp16Config(keep_io=True)
