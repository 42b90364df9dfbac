"""ONNX Runtime's TensorRT execution provider: the engine cache, timing cache and profile shapes it
gets, and batches split to its profile. The GPU test is marked ``gpu`` and skips with the reason."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

IMAGE_SHAPE = (3, 8, 8)


def _ort_target(**options):
    from compress.recipe import TargetConfig

    return TargetConfig(name="ort-trt", runtime="onnxruntime", device="cuda",
                        options={"execution_provider": "tensorrt", **options})


def test_the_tensorrt_provider_gets_engine_cache_timing_cache_and_profile_shapes(tiny_onnx_artifact, tmp_path):
    from compress.runtimes.onnxruntime import provider_list, tensorrt_options

    target = _ort_target(trt_cache_dir=str(tmp_path / "trt"), batch_max=64)
    opts = tensorrt_options(str(tiny_onnx_artifact.path), target)
    name = onnx.load(str(tiny_onnx_artifact.path)).graph.input[0].name
    assert opts["trt_profile_min_shapes"] == f"{name}:1x3x8x8"
    assert opts["trt_profile_opt_shapes"] == f"{name}:32x3x8x8"
    assert opts["trt_profile_max_shapes"] == f"{name}:64x3x8x8"
    assert opts["trt_engine_cache_enable"] is True and opts["trt_timing_cache_enable"] is True
    engines = tmp_path / "trt" / "engines"
    assert opts["trt_timing_cache_path"] == str(tmp_path / "trt")
    assert opts["trt_engine_cache_path"].startswith(str(engines)) and engines.is_dir()
    first = provider_list("tensorrt", 0, opts)[0]
    assert first == ("TensorrtExecutionProvider", {"device_id": 0, **opts})


def test_tensorrt_provider_options_are_checked(recipe_dict):
    from compress.recipe import TargetConfig

    with pytest.raises(ValueError, match="options: batch_max is for execution_provider: tensorrt"):
        TargetConfig(name="c", runtime="onnxruntime", device="cuda", options={"batch_max": 8})
    with pytest.raises(ValueError, match=r"batch_min <= batch_opt <= batch_max must hold, got \[1, 32, 16\]"):
        _ort_target(batch_max=16)
    with pytest.raises(ValueError, match=r"batch_max: Input should be greater than or equal to 1"):
        _ort_target(batch_max=0)
    assert _ort_target(batch_min=1, batch_opt=8, batch_max=16).options.batch_max == 16


def test_the_onnxruntime_session_splits_batches_beyond_the_profile(tiny_onnx_artifact):
    from compress.runtimes.onnxruntime import OrtSession

    x = np.random.default_rng(0).standard_normal((9, *IMAGE_SHAPE)).astype(np.float32)
    whole = OrtSession(str(tiny_onnx_artifact.path), "cpu", 1, "all", {})
    split = OrtSession(str(tiny_onnx_artifact.path), "cpu", 1, "all", {}, batch=(2, 4))
    calls_seen = []
    run = split.sess.run
    split.sess = type("Spy", (), {"run": lambda _s, out, feed: calls_seen.append(len(next(iter(feed.values()))))
                                  or run(out, feed)})()
    np.testing.assert_allclose(split.run({"pixel_values": x}), whole.run({"pixel_values": x}), rtol=1e-5, atol=1e-6)
    assert calls_seen == [4, 4, 2]


@pytest.mark.gpu
def test_onnxruntime_tensorrt_provider_caches_its_engine(tiny_onnx_artifact, tmp_path):
    import onnxruntime as ort
    import torch

    from compress.runtimes import RUNTIMES

    if not torch.cuda.is_available():
        pytest.skip("needs an NVIDIA GPU with CUDA; torch sees none")
    if "TensorrtExecutionProvider" not in ort.get_available_providers():
        pytest.skip("needs onnxruntime-gpu with the TensorRT provider; not installed here")
    target = _ort_target(trt_cache_dir=str(tmp_path / "trt"), batch_opt=4, batch_max=8)
    x = np.random.default_rng(0).standard_normal((11, *IMAGE_SHAPE)).astype(np.float32)
    got = RUNTIMES.get("onnxruntime").load(tiny_onnx_artifact, target).run({"pixel_values": x})  # 11 > batch_max: split
    ref = ort.InferenceSession(str(tiny_onnx_artifact.path), providers=["CPUExecutionProvider"])
    want = ref.run(None, {ref.get_inputs()[0].name: x})[0]
    assert np.abs(got - want).max() <= 1e-3 * np.ptp(want)
    assert list((tmp_path / "trt" / "engines").rglob("*.engine"))  # the next session loads it
