"""Runtimes: every registered runtime computes what torch computes, at any batch size, and says
clearly when a target cannot work."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from compress.artifacts import Artifact
from compress.errors import MissingDependency, RecipeError, RuntimeFailure
from compress.recipe import TargetConfig, parse_recipe
from compress.runtimes import RUNTIMES
from compress.steps.export import export_onnx

HAS_GPU = torch.cuda.is_available()


@pytest.fixture
def artifacts(tiny_module, tmp_path) -> dict[str, Artifact]:
    """The tiny model as every kind of artifact these tests can build without extras."""
    path = tmp_path / "model.onnx"
    export_onnx(tiny_module, (3, 8, 8), path, opset=17, dynamic_batch=True)
    return {
        "torch": Artifact(kind="torch", digest="tiny", module=tiny_module),
        "onnx": Artifact(kind="onnx", digest="tiny-onnx", path=path),
    }


def _artifact_for(name: str, artifacts: dict[str, Artifact]) -> Artifact:
    spec = RUNTIMES.get(name)
    kind = next((k for k in sorted(spec.accepts) if k in artifacts), None)
    if kind is None:
        pytest.skip(
            f"runtime {name} accepts {sorted(spec.accepts)}; these tests cannot build that kind"
        )
    return artifacts[kind]


def _load(name: str, artifact: Artifact, target: TargetConfig):
    """Load, skipping (with the reason) when the runtime's optional extra is not installed."""
    try:
        return RUNTIMES.get(name).load(artifact, target)
    except MissingDependency as err:
        pytest.skip(str(err))


@pytest.mark.parametrize("name", RUNTIMES.names())
def test_runtime_matches_torch(name, artifacts, tiny_module):
    artifact = _artifact_for(name, artifacts)
    target = TargetConfig(name="t", runtime=name, device="cpu", threads=1)
    session = _load(name, artifact, target)
    assert session.info["runtime"] == name
    rng = np.random.default_rng(0)
    try:
        # back to 1 at the end: a runtime that caches per-shape state must not mix them up
        for batch in (1, 3, 1):
            x = rng.standard_normal((batch, 3, 8, 8)).astype(np.float32)
            with torch.inference_mode():
                want = tiny_module(torch.from_numpy(x)).numpy()
            got = session.run({"pixel_values": x})
            assert got.shape == (batch, 10) and got.dtype == np.float32
            # loose enough for a runtime that picks bf16 on its own (OpenVINO on AMX CPUs)
            tol = 5e-2 if session.info.get("precision") in ("bf16", "f16") else 1e-4
            np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
    finally:
        session.close()


@pytest.mark.parametrize("name", RUNTIMES.names())
def test_unknown_target_option_fails_when_the_recipe_loads(name, recipe_dict):
    device = "cpu" if "cpu" in RUNTIMES.get(name).devices else sorted(RUNTIMES.get(name).devices)[0]
    recipe_dict["targets"].append(
        {"name": "odd", "runtime": name, "device": device, "options": {"no_such_option": 1}}
    )
    with pytest.raises(RecipeError, match=r"unknown option\(s\) \['no_such_option'\] for runtime"):
        parse_recipe(recipe_dict)


@pytest.mark.parametrize("name", RUNTIMES.names())
def test_unknown_target_option_fails_when_loading(name, artifacts):
    artifact = _artifact_for(name, artifacts)
    # a target that skipped recipe validation (built in code) still cannot pass a typo
    target = TargetConfig.model_construct(
        name="t",
        runtime=name,
        device="cpu",
        threads=1,
        usd_per_hour=None,
        instance=None,
        options={"no_such_option": 1},
    )
    with pytest.raises(RecipeError, match=r"unknown option\(s\) \['no_such_option'\]"):
        _load(name, artifact, target)


@pytest.mark.skipif(HAS_GPU, reason="this machine has a GPU; the no-GPU message cannot be checked")
@pytest.mark.parametrize("name", [n for n in RUNTIMES.names() if "cuda" in RUNTIMES.get(n).devices])
def test_cuda_target_without_a_gpu_fails_clearly(name, artifacts):
    artifact = _artifact_for(name, artifacts)
    target = TargetConfig(name="gpu", runtime=name, device="cuda")
    with pytest.raises(RuntimeFailure, match=r"(?i)cuda") as info:
        _load(name, artifact, target)
    message = str(info.value)
    assert "gpu" in message.lower() or "install" in message.lower()


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="needs an NVIDIA GPU with CUDA")
@pytest.mark.parametrize("name", [n for n in RUNTIMES.names() if "cuda" in RUNTIMES.get(n).devices])
def test_runtime_on_cuda_matches_torch(name, artifacts, tiny_module):
    artifact = _artifact_for(name, artifacts)
    session = _load(name, artifact, TargetConfig(name="gpu", runtime=name, device="cuda"))
    x = np.random.default_rng(0).standard_normal((3, 3, 8, 8)).astype(np.float32)
    with torch.inference_mode():
        want = tiny_module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(session.run({"pixel_values": x}), want, rtol=1e-3, atol=1e-3)
    session.close()


class TwoInputs(torch.nn.Module):
    """A text-model-shaped toy: token ids and an attention mask in, logits out (keywords)."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(20, 4)
        self.head = torch.nn.Linear(4, 3)

    def forward(self, input_ids, attention_mask):
        mask = attention_mask.unsqueeze(-1).float()
        return self.head((self.embed(input_ids) * mask).sum(1) / mask.sum(1).clamp(min=1))


def _two_input_batch(n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(n)
    mask = np.ones((n, 5), np.int64)
    mask[:, 3:] = 0
    return {"input_ids": rng.integers(0, 20, (n, 5)), "attention_mask": mask}


@pytest.mark.parametrize("name", RUNTIMES.names())
def test_runtime_feeds_several_named_inputs_by_name(name, tmp_path):
    torch.manual_seed(0)
    module = TwoInputs().eval()
    path = tmp_path / "two.onnx"
    export_onnx(module, _two_input_batch(2), path, opset=17, dynamic_batch=True)
    artifacts = {"torch": Artifact(kind="torch", digest="two", module=module),
                 "onnx": Artifact(kind="onnx", digest="two-onnx", path=path)}
    session = _load(name, _artifact_for(name, artifacts), TargetConfig(name="t", runtime=name, device="cpu"))
    try:
        for n in (1, 4):
            x = _two_input_batch(n)
            with torch.inference_mode():
                want = module(**{k: torch.from_numpy(v) for k, v in x.items()}).numpy()
            # the mapping's order is not the model's: inputs are matched by name
            got = session.run({"attention_mask": x["attention_mask"], "input_ids": x["input_ids"]})
            tol = 5e-2 if session.info.get("precision") in ("bf16", "f16") else 1e-4
            np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
        if name != "torch":  # torch passes keywords: a wrong name is torch's own TypeError
            with pytest.raises(ValueError, match=r"inputs \['attention_mask', 'input_ids'\] but the data "
                                                 r"gives \['input_ids', 'mask'\]"):
                session.run({"input_ids": x["input_ids"], "mask": x["attention_mask"]})
    finally:
        session.close()


def test_a_single_input_model_is_fed_whatever_its_input_is_called(tiny_module, tmp_path):
    """An onnx: file exported elsewhere (input named ``input``) takes the data's ``pixel_values``."""
    path = tmp_path / "elsewhere.onnx"
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    export_onnx(tiny_module, {"input": x}, path, opset=17, dynamic_batch=True)
    target = TargetConfig(name="t", runtime="onnxruntime", device="cpu", threads=1)
    session = RUNTIMES.get("onnxruntime").load(Artifact(kind="onnx", digest="e", path=path), target)
    with torch.inference_mode():
        want = tiny_module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(session.run({"pixel_values": x}), want, rtol=1e-4, atol=1e-4)
    with pytest.raises(TypeError, match="takes a mapping of named input arrays, got ndarray"):
        session.run(x)


def test_every_runtime_declares_what_it_runs():
    for name, spec in RUNTIMES.items():
        assert spec.accepts, f"{name} accepts no artifact kind"
        assert spec.devices, f"{name} runs on no device"
        assert spec.summary, f"{name} has no summary"


# --------------------------------------------------------------------------- declarations


def _literal_fields(model) -> list[str]:
    import typing

    def has_literal(tp) -> bool:
        return typing.get_origin(tp) is typing.Literal or any(has_literal(a) for a in typing.get_args(tp))

    return [name for name, f in model.model_fields.items() if has_literal(f.annotation)]


@pytest.mark.parametrize("name", RUNTIMES.names())
def test_runtime_declarations_are_what_the_recipe_checks(name, recipe_dict):
    """Every runtime's typed options refuse unknown keys and values outside their choices when the
    recipe loads, with the key path; its example options are valid; its devices are target devices."""
    import importlib.util

    from compress.runtimes.base import RuntimeOptions

    spec = RUNTIMES.get(name)
    assert issubclass(spec.options, RuntimeOptions)
    assert spec.options.model_config.get("extra") == "forbid"
    assert spec.devices and all(isinstance(d, str) and d.islower() for d in spec.devices)
    for module in spec.imports:  # what the memory probe imports first: real modules (or the extra's)
        assert spec.extra or importlib.util.find_spec(module) is not None, module
    device = "cpu" if "cpu" in spec.devices else min(spec.devices)
    target = {"name": "t", "runtime": name, "device": device, "options": dict(spec.example)}
    recipe_dict["targets"].append(target)
    recipe = parse_recipe(recipe_dict)
    assert isinstance(recipe.targets[1].options, spec.options)
    assert recipe.targets[1].model_dump()["options"] == spec.example  # recorded as given
    for field in _literal_fields(spec.options):
        target["options"] = {field: "no-such-choice"}
        with pytest.raises(RecipeError) as info:
            parse_recipe(recipe_dict)
        key = f"targets[1].options.{field}: unknown {field.replace('_', ' ')} 'no-such-choice'; valid: "
        # (openvino's hint is case-insensitive, so its message quotes the value upper-cased)
        assert any(p.lower().startswith(key.lower()) for p in info.value.problems), info.value.problems


def test_memory_probe_imports_what_the_runtime_declares(monkeypatch):
    """The probe's child imports the declared modules before it measures (none of its own list)."""
    import importlib

    from compress.measure import memory

    imported = []
    real = importlib.import_module
    monkeypatch.setattr(importlib, "import_module", lambda m, *a: imported.append(m) or real(m, *a))
    with pytest.raises(RuntimeFailure, match="could not load"):  # stops after the imports: no file
        memory._child({"target": {"name": "t", "runtime": "onnxruntime"}, "kind": "onnx",
                       "path": "/nonexistent.onnx", "input_shape": [3, 8, 8], "batch_sizes": [1],
                       "repeats": 1})
    assert imported[: len(RUNTIMES.get("onnxruntime").imports)] == list(RUNTIMES.get("onnxruntime").imports)


def test_torch_runtime_threads_apply_to_its_calls_only(tiny_module):
    """torch's thread count is process-global: a torch target's `threads` must not leak into the
    process (a training after profiling would run with, and give a model of, other threads)."""
    from compress.runtimes.torch import TorchSession

    torch.set_num_threads(2)
    session = TorchSession(tiny_module, "cpu", threads=1, dtype="fp32", channels_last=False)
    seen = []
    session.module = torch.nn.Sequential(_ThreadProbe(seen), tiny_module)
    session.run({"pixel_values": np.zeros((2, 3, 8, 8), np.float32)})
    assert seen == [1] and torch.get_num_threads() == 2


class _ThreadProbe(torch.nn.Module):
    def __init__(self, seen):
        super().__init__()
        self.seen = seen

    def forward(self, x):
        self.seen.append(torch.get_num_threads())
        return x
