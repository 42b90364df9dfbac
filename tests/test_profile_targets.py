"""Targets: what each runtime accepts, which targets cannot run a model (and why), bad input, and
the `compress profile` command."""

from __future__ import annotations

import json

import numpy as np
import pytest

from compress.cli import app
from compress.errors import RecipeError
from compress.recipe import parse_recipe
from compress.run.profile_model import parse_target, profile_model
from compress.runtimes.onnxruntime import provider_list


def make_onnx(path, in_features: int = 48, out_features: int = 10, seed: int = 0):
    """Flatten -> MatMul: an input [N, 3, 4, 4] and a weight [48, out_features] (float32)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(seed).standard_normal((in_features, out_features)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["x"], ["f"], axis=1), helper.make_node("MatMul", ["f", "w"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", out_features])],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture
def tiny_onnx(tmp_path):
    return make_onnx(tmp_path / "tiny.onnx")


QUICK = {"rounds": 1, "min_round_s": 0.005, "warmup": 1, "warmup_max_s": 0.0, "max_extra_rounds": 0}


# ---------------------------------------------------------------- target specs and bad input


def test_target_spec_sets_keys_and_runtime_options():
    t = parse_target("onnxruntime:cpu,threads=2,graph_optimization=basic,name=fast")
    assert (t.name, t.runtime, t.device, t.threads) == ("fast", "onnxruntime", "cpu", 2)
    assert t.options.graph_optimization == "basic"  # the runtime's typed options
    assert t.model_dump()["options"] == {"graph_optimization": "basic"}  # recorded as given


def test_instance_sets_the_price_from_the_table_and_usd_per_hour_overrides_it():
    from compress.measure.cost import PRICES

    assert parse_target("onnxruntime:cpu,instance=c7i.large").usd_per_hour == PRICES["c7i.large"].usd_per_hour
    assert parse_target("onnxruntime:cpu,instance=c7i.large,usd_per_hour=0.5").usd_per_hour == 0.5


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("onnxruntime:cpu,execution_provider=rocm",
         r"unknown execution provider 'rocm'; valid: cpu, cuda, tensorrt"),
        ("onnxruntime:cpu,execution_provider=tensorrt", r"runs on cuda, but the target's device is cpu"),
        ("onnxruntime:cpu,usd_per_hour=-0.17", r"usd_per_hour: Input should be greater than or equal to 0"),
        ("onnxruntime:cpu,instance=c9z.huge", r"no built-in price for instance 'c9z.huge'; valid names: .*c7i.large"),
        ("onnxruntime:cpu,graph_optimizaton=all", r"unknown option\(s\) \['graph_optimizaton'\]"),
        ("onnxruntime:cpu,device_id=1", r"device_id is for GPUs"),
        ("torch:cpu,dtype=int4", r"options.dtype: unknown dtype 'int4'; valid: fp32, fp16, bf16"),
        ("torch:cpu,channels_last=maybe", r"options.channels_last: Input should be a valid boolean"),
        ("onnxruntime:tpu", r"device"),
        ("onnxruntime:cpu,threads", r"'threads' must look like KEY=VALUE"),
    ],
)
def test_bad_target_gives_a_clear_error(spec, message):
    with pytest.raises(RecipeError, match=message):
        parse_target(spec)


def test_unknown_execution_provider_in_a_recipe_fails_at_load_with_its_key_path(recipe_dict):
    recipe_dict["targets"][0]["options"] = {"execution_provider": "rocm"}
    with pytest.raises(RecipeError, match=r"targets\[0\].*unknown execution provider 'rocm'"):
        parse_recipe(recipe_dict)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("targets", 0, "usd_per_hour"), -1.0, r"targets\[0\].usd_per_hour: Input should be greater than or equal to 0"),
        (("profile", "batch_sizes"), [0, 1], r"profile.batch_sizes: batch_sizes must be positive integers, got \[0, 1\]"),
        (("profile", "max_cv"), 0, r"profile.max_cv: Input should be greater than 0"),
        (("profile", "requests_per_day"), -5, r"profile.requests_per_day: Input should be greater than or equal to 0"),
        (("targets", 0, "instance"), "nope.large", r"targets\[0\]: .*no built-in price for instance 'nope.large'"),
    ],
)
def test_bad_profile_and_price_keys_fail_at_load(recipe_dict, path, value, message):
    node = recipe_dict
    for key in path[:-1]:
        node = node.setdefault(key, {}) if isinstance(key, str) else node[key]
    node[path[-1]] = value
    with pytest.raises(RecipeError, match=message):
        parse_recipe(recipe_dict)


def test_tensorrt_provider_list_falls_back_to_cuda_then_cpu_on_the_same_gpu():
    providers = provider_list("tensorrt", 1, {"trt_fp16_enable": True})
    assert providers == [
        ("TensorrtExecutionProvider", {"device_id": 1, "trt_fp16_enable": True}),
        ("CUDAExecutionProvider", {"device_id": 1}),
        "CPUExecutionProvider",
    ]
    assert provider_list("cuda", 0, {}) == [("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"]
    assert provider_list("cpu", 0, {}) == ["CPUExecutionProvider"]


# ---------------------------------------------------------------- targets that cannot run a model


def _load(tiny_onnx):
    from compress.run.profile_model import load_model

    return load_model(str(tiny_onnx), None)


def test_a_target_that_cannot_run_the_model_is_skipped_with_the_reason(tiny_onnx):
    art, shape = _load(tiny_onnx)
    assert shape == (3, 4, 4)  # read from the file
    targets = [parse_target("onnxruntime:cpu,threads=1"), parse_target("torch:cpu")]
    out = profile_model(art, shape, targets, [1, 2], plan=QUICK, memory=False, log=lambda m: None)
    assert set(out["targets"]["onnxruntime-cpu"]["latency"]) == {"1", "2"}
    assert out["targets"]["torch-cpu"]["not_profiled"] == "torch cannot run a onnx model"
    assert "latency" not in out["targets"]["torch-cpu"]


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.skipif(_has_cuda(), reason="this machine has a CUDA GPU: the CUDA target would run")
@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("onnxruntime:cuda", r"(no CUDAExecutionProvider here|fell back to CPUExecutionProvider)"),
        ("onnxruntime:cuda,execution_provider=tensorrt",
         r"(no TensorrtExecutionProvider here|fell back to CPUExecutionProvider|could not load)"),
    ],
)
def test_a_gpu_target_without_a_gpu_is_skipped_with_the_reason(tiny_onnx, spec, message):
    art, shape = _load(tiny_onnx)
    out = profile_model(art, shape, [parse_target(spec)], [1], plan=QUICK, memory=False, log=lambda m: None)
    (entry,) = out["targets"].values()
    assert "latency" not in entry
    assert __import__("re").search(message, entry["not_profiled"]), entry["not_profiled"]


@pytest.mark.skipif(_has_cuda(), reason="this machine has a CUDA GPU: the CUDA target would run")
def test_torch_cuda_target_without_a_gpu_is_skipped_with_the_reason(tiny_model_file):
    from compress.run.profile_model import load_model

    art, shape = load_model(f"python:{tiny_model_file}:tiny_cnn", (3, 8, 8))
    out = profile_model(art, shape, [parse_target("torch:cuda,dtype=fp16")], [1], plan=QUICK,
                        memory=False, log=lambda m: None)
    assert "torch sees no CUDA GPU" in out["targets"]["torch-cuda"]["not_profiled"]


def test_torch_cpu_target_runs_with_bf16_autocast_and_channels_last(tiny_model_file):
    from compress.run.profile_model import load_model

    art, shape = load_model(f"python:{tiny_model_file}:tiny_cnn", (3, 8, 8))
    target = parse_target("torch:cpu,dtype=bf16,channels_last=true,threads=1")
    out = profile_model(art, shape, [target], [2], plan=QUICK, memory=False, log=lambda m: None)
    entry = out["targets"]["torch-cpu"]
    assert entry["runtime_info"]["precision"] == "bf16 autocast"
    assert entry["runtime_info"]["channels_last"] is True
    assert entry["latency"]["2"]["p50_ms"] > 0


def test_a_torch_model_on_an_onnx_target_is_exported_verified_and_profiled(tiny_model_file):
    """As a run's export step does: the ONNX Runtime target times the verified ONNX export, the
    torch target the module itself, in one interleaved loop."""
    from compress.run.profile_model import load_model

    art, shape = load_model(f"python:{tiny_model_file}:tiny_cnn", (3, 8, 8))
    targets = [parse_target("onnxruntime:cpu,threads=1"), parse_target("torch:cpu,threads=1")]
    out = profile_model(art, shape, targets, [1, 2], plan=QUICK, memory=False, log=lambda m: None)
    ort_entry, torch_entry = out["targets"]["onnxruntime-cpu"], out["targets"]["torch-cpu"]
    assert "not_profiled" not in ort_entry and set(ort_entry["latency"]) == {"1", "2"}
    assert ort_entry["ran"].endswith("export(onnx)") and ort_entry["runtime_info"]["runtime"] == "onnxruntime"
    assert "ran" not in torch_entry and torch_entry["latency"]["2"]["p50_ms"] > 0
    assert out["onnx_export"]["opset"] == 17 and out["onnx_export"]["export_max_rel_error"] < 1e-3


def test_a_torch_model_whose_export_disagrees_is_not_profiled_on_onnx(tiny_model_file, monkeypatch):
    from compress.errors import StepError
    from compress.run.profile_model import load_model

    def wrong(module, path, inputs, atol):
        raise StepError("the exported ONNX model disagrees with torch: max relative error 1.0e+00")

    monkeypatch.setattr("compress.steps.export.verify_onnx", wrong)
    art, shape = load_model(f"python:{tiny_model_file}:tiny_cnn", (3, 8, 8))
    with pytest.raises(StepError, match="disagrees with torch"):
        profile_model(art, shape, [parse_target("onnxruntime:cpu")], [1], plan=QUICK, memory=False,
                      log=lambda m: None)


# ---------------------------------------------------------------- the command


def test_profile_command_prints_the_table_and_writes_json(cli, tiny_onnx, tmp_path):
    out_json = tmp_path / "p.json"
    result = cli.invoke(app, [
        "profile", str(tiny_onnx), "--target", "onnxruntime:cpu,threads=1,usd_per_hour=0.17",
        "-b", "1", "-b", "2", "--rounds", "1", "--min-round-s", "0.01", "--no-memory",
        "--requests-per-day", "1000000", "--json", str(out_json),
    ])
    assert result.exit_code == 0, result.output
    assert "p50 ms [95% CI]" in result.output and "$ / month at 1,000,000 req/day" in result.output
    data = json.loads(out_json.read_text())
    m = data["targets"]["onnxruntime-cpu"]["latency"]["2"]
    assert m["usd_per_1m"] == pytest.approx(0.17 / 3600 / m["throughput_per_s"] * 1e6)
    assert m["monthly_usd"] == pytest.approx(30 * m["usd_per_1m"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--target", "onnxruntime:cpu,execution_provider=rocm"], "unknown execution provider 'rocm'"),
        (["-b", "0"], r"batch sizes must be positive integers, got \[0\]"),
        (["--target", "onnxruntime:cpu,usd_per_hour=-1"], "greater than or equal to 0"),
    ],
)
def test_profile_command_rejects_bad_input_with_exit_2(cli, tiny_onnx, args, message):
    result = cli.invoke(app, ["profile", str(tiny_onnx), "--no-memory", *args])
    assert result.exit_code == 2, result.output
    assert __import__("re").search(message, " ".join(result.output.split())), result.output


def test_profile_command_exits_3_when_no_target_can_run_the_model(cli, tiny_onnx):
    result = cli.invoke(app, ["profile", str(tiny_onnx), "--target", "torch:cpu", "--no-memory"])
    assert result.exit_code == 3
    assert "torch cannot run a onnx model" in result.output


def test_profile_command_missing_file_exits_2(cli, tmp_path):
    result = cli.invoke(app, ["profile", str(tmp_path / "nope.onnx")])
    assert result.exit_code == 2 and "does not exist" in " ".join(result.output.split())


# ---------------------------------------------------------------- on a GPU (skipped without one)

requires_gpu = pytest.mark.skipif(not _has_cuda(), reason="needs an NVIDIA GPU with CUDA; none here")


@pytest.mark.gpu
@requires_gpu
@pytest.mark.parametrize("dtype", ["fp32", "fp16", "bf16"])
def test_torch_cuda_times_itself_with_cuda_events(tiny_model_file, dtype):
    from compress.run.profile_model import load_model

    art, shape = load_model(f"python:{tiny_model_file}:tiny_cnn", (3, 8, 8))
    target = parse_target(f"torch:cuda,dtype={dtype}")
    out = profile_model(art, shape, [target], [1, 8], plan=QUICK, memory=True, log=lambda m: None)
    entry = out["targets"]["torch-cuda"]
    assert entry["runtime_info"]["device"] == "cuda:0"
    assert entry["latency"]["8"]["p50_ms"] > 0
    assert entry["memory"]["device_peak_bytes"] > 0


@pytest.mark.gpu
@requires_gpu
def test_onnxruntime_cuda_runs_on_the_gpu(tiny_onnx):
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime here has no CUDAExecutionProvider (install onnxruntime-gpu)")
    art, shape = _load(tiny_onnx)
    out = profile_model(art, shape, [parse_target("onnxruntime:cuda")], [1], plan=QUICK,
                        memory=False, log=lambda m: None)
    entry = out["targets"]["onnxruntime-cuda"]
    assert entry["runtime_info"]["providers"][0] == "CUDAExecutionProvider", entry
