"""TensorRT: the engine step, the tensorrt runtime and the engine fingerprint.

The pure parts (fingerprint comparison, option checks, recipe rules, the missing-package error) run
everywhere. Building and running engines needs TensorRT 10 and an NVIDIA GPU: those tests are marked
``tensorrt`` and skip with the reason. They have not run yet (docs/tensorrt.md).
"""

from __future__ import annotations

import importlib.util
import re

import numpy as np
import pytest
from pydantic import ValidationError

from compress.engine.tensorrt import check_fingerprint, compare_fingerprints
from compress.errors import MissingDependency, RecipeError, RuntimeFailure, StepError, install_hint
from compress.steps.engine import EngineConfig
from compress.steps.engine import apply as build

IMAGE_SHAPE = (3, 8, 8)
HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None

FP = {"tensorrt": "10.3.0", "cuda": "12.4", "cuda_major": "12", "driver": "550.54",
      "gpu": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}


def requires_tensorrt():
    if not HAS_TENSORRT:
        pytest.skip("needs the tensorrt package (the tensorrt extra), not installed here")
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs an NVIDIA GPU with CUDA; torch sees none")


# --------------------------------------------------------------------------- fingerprint (pure)


def test_same_fingerprint_is_fresh():
    assert compare_fingerprints(FP, dict(FP)) == ([], [])


@pytest.mark.parametrize("field", ["tensorrt", "gpu", "compute_capability", "cuda_major"])
def test_a_strict_field_makes_the_engine_stale(field):
    current = dict(FP, **{field: "other"})
    with pytest.raises(RuntimeFailure, match=f"engine /c/abc/engine.plan is stale: {field}: built "
                                             f"with '{FP[field]}', this machine has 'other'.*rebuild"):
        check_fingerprint(FP, current, "/c/abc/engine.plan")


@pytest.mark.parametrize("field", ["driver", "cuda"])
def test_driver_or_cuda_minor_change_is_a_warning(field):
    warnings = check_fingerprint(FP, dict(FP, **{field: "x"}), "engine.plan")
    assert warnings == [f"{field}: built with '{FP[field]}', this machine has 'x'"]


def test_an_engine_without_fingerprint_is_refused():
    with pytest.raises(RuntimeFailure, match="has no fingerprint"):
        check_fingerprint(None, FP, "engine.plan")


# --------------------------------------------------------------------------- options and recipe rules


def test_batch_profile_must_be_ordered():
    with pytest.raises(ValidationError, match="batch_min <= batch_opt <= batch_max"):
        EngineConfig(batch_min=8, batch_opt=4, batch_max=16)
    with pytest.raises(ValidationError, match="'fp32', 'fp16', 'int8-qdq' or 'int8-calibrate'"):
        EngineConfig(precision="int4")


def test_int8_qdq_needs_a_quantized_model(tiny_onnx_artifact, tiny_step_ctx):
    with pytest.raises(StepError, match=r"int8-qdq needs a QDQ model: put `- quantize: \{target: tensorrt\}`"):
        build(tiny_onnx_artifact, EngineConfig(precision="int8-qdq"), tiny_step_ctx)


@pytest.mark.skipif(HAS_TENSORRT, reason="tensorrt is installed here")
def test_missing_tensorrt_names_the_extra(tiny_onnx_artifact, tiny_step_ctx):
    with pytest.raises(MissingDependency, match=re.escape(install_hint("tensorrt"))):
        build(tiny_onnx_artifact, EngineConfig(precision="fp16"), tiny_step_ctx)
    assert tiny_step_ctx.consumed == set()  # nothing read before the dependency check


def _trt_recipe(recipe_dict, runtime: str) -> dict:
    recipe_dict["variants"]["trt"] = {"from": "onnx-fp32", "steps": [{"engine": {"precision": "fp16"}}]}
    recipe_dict["targets"] = [{"name": "gpu", "runtime": runtime, "device": "cuda"}]
    return recipe_dict


def test_recipe_with_an_engine_needs_a_tensorrt_target(recipe_dict):
    from compress.recipe import parse_recipe

    with pytest.raises(RecipeError, match="variants.trt: ends with a tensorrt model, which no target can run"):
        parse_recipe(_trt_recipe(recipe_dict, "onnxruntime"))


def test_engine_after_export_is_a_valid_chain(recipe_dict):
    from compress.recipe import parse_recipe

    recipe = _trt_recipe(recipe_dict, "tensorrt")
    recipe["targets"].append({"name": "cpu", "runtime": "onnxruntime", "device": "cpu"})
    assert parse_recipe(recipe).final_kinds()["trt"] == "tensorrt"


# --------------------------------------------------------------------------- on a GPU with TensorRT


@pytest.mark.tensorrt
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8-calibrate"])
def test_engine_builds_runs_and_matches_onnxruntime(tiny_onnx_artifact, tiny_step_ctx, precision):
    requires_tensorrt()
    from compress.quantization.ort import OrtRunner
    from compress.recipe import TargetConfig
    from compress.runtimes import RUNTIMES

    art = build(tiny_onnx_artifact, EngineConfig(precision=precision, batch_opt=4, batch_max=8,
                                        calibration_batch_size=8, calibration_samples=16), tiny_step_ctx)
    assert art.kind == "tensorrt" and art.path.is_file()
    assert art.meta["tensorrt"]["fingerprint"]["gpu"]
    sess = RUNTIMES.get("tensorrt").load(art, TargetConfig(name="gpu", runtime="tensorrt", device="cuda"))
    x = tiny_step_ctx.splits["heldout"].inputs(np.arange(5))  # a batch size inside the profile, not its opt
    got, ref = sess.run(x), OrtRunner(tiny_onnx_artifact.path).logits(x)
    tol = {"fp32": 1e-3, "fp16": 2e-2, "int8-calibrate": 0.2}[precision]
    assert np.abs(got - ref).max() <= tol * np.ptp(ref)


@pytest.mark.tensorrt
def test_engine_from_a_tensorrt_qdq_model(tiny_onnx_artifact, tiny_step_ctx):
    requires_tensorrt()
    from compress.steps.quantize import QuantizeConfig
    from compress.steps.quantize import apply as quantize

    qdq = quantize(tiny_onnx_artifact, QuantizeConfig(target="tensorrt"), tiny_step_ctx)
    art = build(qdq, EngineConfig(precision="int8-qdq", batch_opt=4, batch_max=8), tiny_step_ctx)
    assert art.meta["tensorrt"]["precision"] == "int8-qdq"


@pytest.mark.tensorrt
def test_a_stale_engine_is_refused_at_load(tiny_onnx_artifact, tiny_step_ctx):
    requires_tensorrt()
    from compress.recipe import TargetConfig
    from compress.runtimes import RUNTIMES

    art = build(tiny_onnx_artifact, EngineConfig(precision="fp16", batch_opt=4, batch_max=8), tiny_step_ctx)
    art.meta["tensorrt"]["fingerprint"]["tensorrt"] = "9.0.0"
    with pytest.raises(RuntimeFailure, match="is stale: tensorrt: built with '9.0.0'"):
        RUNTIMES.get("tensorrt").load(art, TargetConfig(name="gpu", runtime="tensorrt", device="cuda"))
