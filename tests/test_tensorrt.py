"""TensorRT: the engine step, the tensorrt runtime, the engine fingerprint and ONNX Runtime's
TensorRT provider.

Everything that can be checked without a GPU runs everywhere against tests/fake_tensorrt.py, a
stand-in for the tensorrt module (NOT TensorRT: it records the calls compress makes). Building and
running real engines needs TensorRT and an NVIDIA GPU: those tests are marked ``tensorrt`` and skip
with the reason. They have not run yet (docs/tensorrt.md).
"""

from __future__ import annotations

import importlib.util
import re
import sys

import numpy as np
import onnx
import pytest
from pydantic import ValidationError

import compress.engine.tensorrt as engine_mod
from compress.artifacts import Artifact, Cache
from compress.engine.tensorrt import (
    build_engine,
    build_plan,
    check_fingerprint,
    compare_fingerprints,
    import_tensorrt,
    split_batch,
)
from compress.errors import MissingDependency, RecipeError, RuntimeFailure, StepError, install_hint
from compress.runtimes.tensorrt import EngineSession, TensorRTSession
from compress.steps.engine import EngineConfig
from compress.steps.engine import apply as build
from tests import fake_tensorrt
from tests.fake_tensorrt import FakeBuffers

IMAGE_SHAPE = (3, 8, 8)
HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None

FP = {"tensorrt": "10.13.0", "tensorrt_cuda": "12", "driver": "550.54",
      "gpu": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}


def requires_tensorrt():
    if not HAS_TENSORRT:
        pytest.skip("needs the tensorrt package (the tensorrt extra), not installed here")
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs an NVIDIA GPU with CUDA; torch sees none")


@pytest.fixture
def fake_gpu(monkeypatch):
    """This machine's GPU, as the fingerprint sees it (there is none here)."""
    gpu = {"gpu": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}
    monkeypatch.setattr(engine_mod, "gpu_identity", lambda device=0: dict(gpu))
    monkeypatch.setattr(engine_mod, "driver_version", lambda: "550.54")
    monkeypatch.setattr(engine_mod, "tensorrt_cuda_major", lambda: "12")
    return gpu


@pytest.fixture(params=["10.13.0", "11.4.0"])
def trt(request, monkeypatch, fake_gpu):
    """The fake tensorrt module of each supported major, installed as ``tensorrt``."""
    module = fake_tensorrt.make(request.param)
    monkeypatch.setitem(sys.modules, "tensorrt", module)
    return module


def trt_of(version, monkeypatch, **kw):
    module = fake_tensorrt.make(version, **kw)
    monkeypatch.setitem(sys.modules, "tensorrt", module)
    return module


def calls(trt, name):
    return [c[1:] for c in trt.calls if c[0] == name]


# --------------------------------------------------------------------------- fingerprint (pure)


def test_same_fingerprint_is_fresh():
    assert compare_fingerprints(FP, dict(FP)) == ([], [])


@pytest.mark.parametrize("field", ["tensorrt", "tensorrt_cuda", "gpu", "compute_capability"])
def test_a_strict_field_makes_the_engine_stale(field):
    current = dict(FP, **{field: "other"})
    with pytest.raises(RuntimeFailure, match=f"engine /c/abc/engine.plan is stale: {field}: built "
                                             f"with '{FP[field]}', this machine has 'other'.*rebuild"):
        check_fingerprint(FP, current, "/c/abc/engine.plan")


def test_a_driver_change_is_a_warning():
    warnings = check_fingerprint(FP, dict(FP, driver="x"), "engine.plan")
    assert warnings == [f"driver: built with '{FP['driver']}', this machine has 'x'"]


def test_an_engine_without_fingerprint_is_refused():
    with pytest.raises(RuntimeFailure, match="has no fingerprint"):
        check_fingerprint(None, FP, "engine.plan")


def test_the_fingerprint_records_the_cuda_of_the_tensorrt_wheel(monkeypatch):
    from importlib import metadata

    class Dist:
        def __init__(self, name):
            self.metadata = {"Name": name}

    monkeypatch.setattr(metadata, "distributions", lambda: [Dist("torch"), Dist("tensorrt_cu13_libs")])
    engine_mod.tensorrt_cuda_major.cache_clear()  # cached: it scans every installed distribution
    assert engine_mod.tensorrt_cuda_major() == "13"
    monkeypatch.setattr(metadata, "distributions", lambda: [Dist("torch")])
    engine_mod.tensorrt_cuda_major.cache_clear()
    assert engine_mod.tensorrt_cuda_major() is None
    engine_mod.tensorrt_cuda_major.cache_clear()


# --------------------------------------------------------------------------- version dispatch


@pytest.mark.parametrize("version", ["9.3.0", "12.0.0"])
def test_an_unsupported_major_is_refused(version, monkeypatch):
    trt_of(version, monkeypatch)
    with pytest.raises(RuntimeFailure, match=f"TensorRT {version} is installed, compress supports TensorRT 10 and 11"):
        import_tensorrt("the engine step")


def test_tensorrt_10_uses_precision_flags_and_strong_typing_for_qdq(monkeypatch):
    trt = trt_of("10.13.0", monkeypatch)
    strongly = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    assert build_plan(trt, "fp32") == engine_mod.BuildPlan(0, (), ("TF32",), False, False, False)
    assert build_plan(trt, "fp16").set_flags == ("FP16",)
    qdq = build_plan(trt, "int8-qdq")
    assert (qdq.network_flags, qdq.set_flags, qdq.strongly_typed) == (strongly, (), True)
    cal = build_plan(trt, "int8-calibrate")
    assert (cal.set_flags, cal.calibrate) == (("FP16", "INT8"), True)


def test_tensorrt_11_is_strongly_typed_and_has_no_calibrator(monkeypatch):
    trt = trt_of("11.4.0", monkeypatch)
    for precision in ("fp32", "fp16", "int8-qdq"):
        plan = build_plan(trt, precision)
        assert (plan.network_flags, plan.set_flags, plan.strongly_typed) == (0, (), True)
    assert build_plan(trt, "fp16").convert_fp16 and not build_plan(trt, "fp32").convert_fp16
    with pytest.raises(StepError, match=r"int8-calibrate .* TensorRT 11.4.0 removed.*precision: int8-qdq"):
        build_plan(trt, "int8-calibrate")


def test_fp32_clears_tf32_unless_asked(trt):
    assert build_plan(trt, "fp32").clear_flags == ("TF32",)
    assert build_plan(trt, "fp32", tf32=True).clear_flags == ()


def _build(trt, onnx_art, tmp_path, precision="fp16", **kw):
    out = tmp_path / "engine.plan"
    args = {"batch_min": 1, "batch_opt": 4, "batch_max": 8, **kw}
    fp = build_engine(onnx_art.path, out, precision=precision, input_shape=IMAGE_SHAPE,
                      workspace_bytes=1 << 20, log=lambda _m: None, trt=trt, **args)
    return out, fp


def test_build_sends_the_profile_and_writes_the_fingerprint_beside_the_plan(trt, tiny_onnx_artifact, tmp_path):
    out, fp = _build(trt, tiny_onnx_artifact, tmp_path, "fp32")
    assert calls(trt, "set_shape") == [("input", (1, *IMAGE_SHAPE), (4, *IMAGE_SHAPE), (8, *IMAGE_SHAPE))]
    assert calls(trt, "clear_flag") == [("TF32",)] and calls(trt, "set_flag") == []
    assert out.read_bytes() == trt.plan
    assert engine_mod.read_fingerprint(out) == fp == {
        "tensorrt": trt.__version__, "tensorrt_cuda": "12", "gpu": "NVIDIA H100 80GB HBM3",
        "compute_capability": "9.0", "driver": "550.54"}


def test_fp16_on_tensorrt_11_builds_a_float16_model(monkeypatch, fake_gpu, tiny_onnx_artifact, tmp_path):
    trt = trt_of("11.4.0", monkeypatch)
    _build(trt, tiny_onnx_artifact, tmp_path, "fp16")
    (parsed,) = calls(trt, "parse_from_file")
    model = onnx.load(parsed[0])
    assert parsed[0].endswith("model.fp16.onnx") and calls(trt, "set_flag") == []
    assert {i.data_type for i in model.graph.initializer} >= {onnx.TensorProto.FLOAT16}
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # I/O stays float32


def test_fp16_on_tensorrt_10_sets_the_flag(monkeypatch, fake_gpu, tiny_onnx_artifact, tmp_path):
    trt = trt_of("10.13.0", monkeypatch)
    _build(trt, tiny_onnx_artifact, tmp_path, "fp16")
    assert calls(trt, "set_flag") == [("FP16",)]
    assert calls(trt, "parse_from_file") == [(str(tiny_onnx_artifact.path),)]


@pytest.mark.parametrize("failing, message", [
    ("parse_from_file", "could not parse"), ("set_shape", "rejected the profile shapes"),
    ("add_optimization_profile", "rejected the optimisation profile"),
    ("build_serialized_network", "failed to build the engine"),
])
def test_a_failing_builder_call_is_an_error(trt, tiny_onnx_artifact, tmp_path, failing, message):
    trt.fail = {failing}
    with pytest.raises(StepError, match=message):
        _build(trt, tiny_onnx_artifact, tmp_path)
    assert not (tmp_path / "engine.plan").exists()


# --------------------------------------------------------------------------- the engine step


def test_calibration_batches_have_the_profiles_opt_shape(monkeypatch, fake_gpu, tiny_onnx_artifact, tiny_step_ctx):
    trt = trt_of("10.13.0", monkeypatch)
    seen = []
    monkeypatch.setattr(engine_mod, "entropy_calibrator",
                        lambda _trt, batches, _cache, _dev: seen.extend(b.shape for b in batches) or "calibrator")
    build(tiny_onnx_artifact, EngineConfig(precision="int8-calibrate", batch_opt=4, batch_max=8,
                                           calibration_samples=16), tiny_step_ctx)
    assert seen == [(4, *IMAGE_SHAPE)] * 4
    assert calls(trt, "int8_calibrator") == [("calibrator",)] and calls(trt, "set_calibration_profile") == [()]
    assert tiny_step_ctx.consumed == {"calibration"}


def test_calibration_batch_size_must_be_the_opt_batch():
    with pytest.raises(ValidationError, match="calibration_batch_size 8 differs from batch_opt 4"):
        EngineConfig(precision="int8-calibrate", batch_opt=4, batch_max=8, calibration_batch_size=8)
    assert EngineConfig(batch_opt=4, batch_max=8, calibration_batch_size=4).calibration_batch_size == 4


def test_int8_calibrate_on_tensorrt_11_is_refused_before_reading_data(monkeypatch, fake_gpu,
                                                                      tiny_onnx_artifact, tiny_step_ctx):
    trt_of("11.4.0", monkeypatch)
    with pytest.raises(StepError, match="removed"):
        build(tiny_onnx_artifact, EngineConfig(precision="int8-calibrate"), tiny_step_ctx)
    assert tiny_step_ctx.consumed == set()


def test_the_fingerprint_travels_through_the_cache(trt, tiny_onnx_artifact, tiny_step_ctx, tmp_path):
    art = build(tiny_onnx_artifact, EngineConfig(precision="fp16", batch_opt=4, batch_max=8), tiny_step_ctx)
    cache = Cache(tmp_path / "cache")
    art.digest = "k1"
    cache.put(art)
    cached = cache.get("k1")
    assert (cached.path.parent / "engine.plan.fingerprint.json").is_file()
    # the memory probe loads the plan from its path alone, without the artifact's metadata
    bare = Artifact(kind="tensorrt", digest="memory", path=cached.path)
    sess = TensorRTSession(bare, trt=trt, buffers=FakeBuffers(trt.memory))
    assert sess.info["fingerprint_warnings"] == [] and sess.info["engine_device_memory_bytes"] == 4096


def test_the_engine_step_declares_its_cache_key_roles_and_check(monkeypatch, fake_gpu):
    from compress.steps.base import STEPS

    spec = STEPS.get("engine")
    trt_of("10.13.0", monkeypatch)
    key = spec.cache_key(EngineConfig(), None)
    assert key == {"tensorrt": "10.13.0", "tensorrt_cuda": "12", "gpu": "NVIDIA H100 80GB HBM3",
                   "compute_capability": "9.0"}  # the driver does not invalidate an engine
    fake_gpu["gpu"] = "NVIDIA L4"
    assert spec.cache_key(EngineConfig(), None)["gpu"] == "NVIDIA L4"
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # not installed
    # the kind of failure only: the hint names this checkout's path, and the key must not move with it
    assert spec.cache_key(EngineConfig(), None) == {"unavailable": "MissingDependency"}
    assert set(spec.roles(EngineConfig(precision="int8-calibrate"))) == {"calibration"}
    assert not spec.roles(EngineConfig(precision="fp16"))


def test_an_engine_for_another_gpu_or_tensorrt_has_another_cache_key(monkeypatch, fake_gpu, tiny_onnx_artifact,
                                                                    tiny_step_ctx):
    from compress.run.build import step_key
    from compress.steps.base import STEPS

    spec = STEPS.get("engine")
    trt_of("10.13.0", monkeypatch)

    def key():
        return step_key(tiny_onnx_artifact, spec, EngineConfig(), tiny_step_ctx, {})

    first = key()
    assert key() == first
    monkeypatch.setattr(engine_mod, "driver_version", lambda: "999.1")
    assert key() == first  # a driver update keeps the cached engine
    fake_gpu["gpu"] = "NVIDIA L4"
    assert key() != first
    fake_gpu["gpu"] = "NVIDIA H100 80GB HBM3"
    trt_of("11.4.0", monkeypatch)
    assert key() != first


def test_the_check_names_profile_batch_sizes_outside_the_engines_profile(recipe_dict):
    from compress.recipe import parse_recipe
    from compress.steps.base import STEPS

    data = _trt_recipe(recipe_dict, "tensorrt")
    data["targets"].append({"name": "cpu", "runtime": "onnxruntime", "device": "cpu"})
    recipe = parse_recipe(data)
    check = STEPS.get("engine").check
    recipe.profile.batch_sizes = [1, 32]
    assert check(EngineConfig(batch_opt=32, batch_max=64), recipe) == []
    recipe.profile.batch_sizes = [1, 32, 128]
    (problem,) = check(EngineConfig(batch_min=2, batch_opt=32, batch_max=64), recipe)
    assert "profile.batch_sizes [1, 128] outside the engine's profile batch_min..batch_max (2..64)" in problem
    assert "set batch_min: 1 and batch_max: 128" in problem


def test_validate_refuses_profile_batch_sizes_outside_an_engines_profile(recipe_dict, write_recipe):
    """Through the recipe's generic rules: the engine step's declared check, at its key path."""
    from typer.testing import CliRunner

    from compress.cli import app
    from compress.recipe import parse_recipe

    data = _trt_recipe(recipe_dict, "tensorrt")
    data["targets"].append({"name": "cpu", "runtime": "onnxruntime", "device": "cpu"})
    data["variants"]["trt"]["steps"][0]["engine"]["batch_max"] = 64
    data["profile"] = {"batch_sizes": [1, 128]}
    with pytest.raises(RecipeError, match=r"variants\.trt\.steps\[0\]\.engine: profile\.batch_sizes \[128\] "
                                          r"outside the engine's profile"):
        parse_recipe(data)
    result = CliRunner().invoke(app, ["validate", str(write_recipe(data))])
    assert result.exit_code == 2 and "batch_max: 128" in result.output
    data["variants"]["trt"]["steps"][0]["engine"]["batch_max"] = 128
    parse_recipe(data)


# --------------------------------------------------------------------------- the runtime


def test_split_batch_keeps_every_chunk_inside_the_profile():
    assert split_batch(9, 1, 4) == [(0, 4, 4), (4, 8, 4), (8, 9, 1)]
    assert split_batch(9, 2, 4) == [(0, 4, 4), (4, 8, 4), (8, 9, 2)]  # the last row is padded to batch_min
    assert split_batch(3, 1, 64) == [(0, 3, 3)]
    with pytest.raises(ValueError):
        split_batch(0, 1, 4)


def _session(trt, tmp_path, stored=None):
    plan = tmp_path / "engine.plan"
    plan.write_bytes(trt.plan)
    stored = stored or engine_mod.current_fingerprint(0, trt)
    return EngineSession(plan, stored, trt=trt, buffers=FakeBuffers(trt.memory))


def test_a_batch_larger_than_the_profile_is_split_and_padded(monkeypatch, fake_gpu, tmp_path):
    trt = trt_of("10.13.0", monkeypatch, profile=((2, 3, 8, 8), (4, 3, 8, 8), (4, 3, 8, 8)))
    x = np.random.default_rng(0).standard_normal((9, *IMAGE_SHAPE)).astype(np.float32)
    got = _session(trt, tmp_path).run(x)
    assert [s[1][0] for s in calls(trt, "set_input_shape")] == [4, 4, 2]
    np.testing.assert_array_equal(got, x.reshape(9, -1)[:, :10])  # padding dropped, order kept
    assert len(calls(trt, "execute_async_v3")) == 3


def test_run_accepts_a_mapping_of_named_inputs(trt, tmp_path):
    x = np.ones((3, *IMAGE_SHAPE), np.float32)
    assert _session(trt, tmp_path).run({"input": x}).shape == (3, 10)
    with pytest.raises(RuntimeFailure, match=r"missing engine input\(s\) \['input'\]"):
        _session(trt, tmp_path).run({"image": x})


@pytest.mark.parametrize("failing, message", [
    ("set_input_shape", "refused input shape"), ("set_tensor_address", "refused the device address"),
    ("execute_async_v3", "execute_async_v3 failed"), ("deserialize_cuda_engine", "could not deserialise"),
])
def test_every_failing_runtime_call_is_an_error(trt, tmp_path, failing, message):
    trt.fail = {failing}
    with pytest.raises(RuntimeFailure, match=message):
        _session(trt, tmp_path).run(np.ones((2, *IMAGE_SHAPE), np.float32))


def test_a_stale_engine_is_refused_by_the_runtime(trt, tmp_path):
    with pytest.raises(RuntimeFailure, match="is stale: tensorrt: built with '9.0.0'"):
        _session(trt, tmp_path, stored=dict(engine_mod.current_fingerprint(0, trt), tensorrt="9.0.0"))


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

    with pytest.raises(RecipeError, match="variants.trt: ends with a TensorRT model, which no target can run"):
        parse_recipe(_trt_recipe(recipe_dict, "onnxruntime"))


def test_engine_after_export_is_a_valid_chain(recipe_dict):
    from compress.recipe import parse_recipe

    recipe = _trt_recipe(recipe_dict, "tensorrt")
    recipe["targets"].append({"name": "cpu", "runtime": "onnxruntime", "device": "cpu"})
    assert parse_recipe(recipe).final_kinds()["trt"] == "tensorrt"


def test_the_tensorrt_quantization_target_keeps_biases_in_float(tiny_onnx_artifact, tiny_step_ctx):
    """int32-bias DequantizeLinear nodes are what TensorRT's ONNX parser rejected (onnx-tensorrt #850)."""
    from compress.steps.quantize import QuantizeConfig, resolve_settings
    from compress.steps.quantize import apply as quantize

    assert resolve_settings(QuantizeConfig(target="tensorrt"))[1].extra == {"QuantizeBias": False}
    qdq = quantize(tiny_onnx_artifact, QuantizeConfig(target="tensorrt"), tiny_step_ctx)
    model = onnx.load(str(qdq.path))
    int32 = {i.name for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT32}
    dq_inputs = {n.input[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    assert dq_inputs and not (dq_inputs & int32)
    assert any(n.op_type == "Conv" and len(n.input) == 3 for n in model.graph.node)  # biases still there


# --------------------------------------------------------------------------- on a GPU with TensorRT


@pytest.mark.tensorrt
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8-calibrate"])
def test_engine_builds_runs_and_matches_onnxruntime(tiny_onnx_artifact, tiny_step_ctx, precision):
    requires_tensorrt()
    from compress.quantization.ort import OrtRunner
    from compress.recipe import TargetConfig
    from compress.runtimes import RUNTIMES

    art = build(tiny_onnx_artifact, EngineConfig(precision=precision, batch_opt=4, batch_max=8,
                                                 calibration_samples=16), tiny_step_ctx)
    assert art.kind == "tensorrt" and art.path.is_file()
    assert art.meta["tensorrt"]["fingerprint"]["gpu"]
    sess = RUNTIMES.get("tensorrt").load(art, TargetConfig(name="gpu", runtime="tensorrt", device="cuda"))
    x = tiny_step_ctx.splits["heldout"].inputs(np.arange(11))  # larger than batch_max: split in two
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
