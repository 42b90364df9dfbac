"""Peak memory is measured in a fresh subprocess: a bigger model measures bigger, by about its size."""

from __future__ import annotations

from pathlib import Path

import pytest

from compress.artifacts import Artifact
from compress.measure.memory import measure_memory
from compress.recipe import TargetConfig
from tests.test_profile_targets import make_onnx

CPU = TargetConfig(name="cpu", runtime="onnxruntime", device="cpu", threads=1)


def _onnx(path: Path) -> Artifact:
    return Artifact(kind="onnx", digest=path.stem, path=path)


def test_peak_memory_grows_with_the_weights(tmp_path):
    small = measure_memory(_onnx(make_onnx(tmp_path / "small.onnx", out_features=10)), CPU, (3, 4, 4), [1, 4])
    # 48 x 200,000 float32 weights = 38.4 MB more than the small model
    big = measure_memory(_onnx(make_onnx(tmp_path / "big.onnx", out_features=200_000)), CPU, (3, 4, 4), [1, 4])
    for m in (small, big):
        assert m["measured"] is True, m
        assert m["peak_rss_bytes"] >= m["rss_before_load_bytes"] > 0
        assert m["session_peak_bytes"] == m["peak_rss_bytes"] - m["rss_before_load_bytes"]
    grown = big["session_peak_bytes"] - small["session_peak_bytes"]
    assert grown >= 38.4e6 * 0.9, (small, big)
    assert small["session_peak_bytes"] < 38.4e6


def test_a_model_the_runtime_cannot_load_is_not_measured_with_the_reason(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx file")
    m = measure_memory(_onnx(bad), CPU, (3, 4, 4), [1])
    assert m["measured"] is False
    assert "the memory probe failed: RuntimeFailure: ONNX Runtime could not load" in m["reason"]


@pytest.mark.slow
def test_a_torch_model_is_rebuilt_in_the_subprocess(tiny_module, tiny_model_file):
    from compress.sources.models import ModelSpec

    spec = ModelSpec(f"python:{tiny_model_file.name}:tiny_cnn", {}, tiny_model_file.parent)
    art = Artifact(kind="torch", digest="t", module=tiny_module, model_spec=spec)
    target = TargetConfig(name="t", runtime="torch", device="cpu", threads=1)
    m = measure_memory(art, target, (3, 8, 8), [2])
    assert m["measured"] is True, m
    assert m["session_peak_bytes"] > 0


def test_a_torch_model_without_an_architecture_is_not_measured():
    art = Artifact(kind="torch", digest="t", module=object(), model_spec=None)
    target = TargetConfig(name="t", runtime="torch", device="cpu")
    assert measure_memory(art, target, (3, 8, 8), [1]) == {
        "measured": False, "reason": "the torch model has no architecture to rebuild"}


@pytest.mark.parametrize("timeout_s", [0.001])
def test_a_probe_that_runs_too_long_is_reported_not_raised(tmp_path, timeout_s):
    m = measure_memory(_onnx(make_onnx(tmp_path / "m.onnx")), CPU, (3, 4, 4), [1], timeout_s=timeout_s)
    assert m == {"measured": False, "reason": "the memory probe took more than 0 s"}
