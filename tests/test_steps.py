"""Steps: every registered step honours the step contract; each step does what it promises."""

from __future__ import annotations

import copy
import hashlib
import re
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from pydantic import ValidationError

import compress.steps.export as export_step
from compress.artifacts import FILENAMES, Artifact, load_torch, save_torch
from compress.errors import MissingDependency, StepError
from compress.recipe import DataConfig, TargetConfig
from compress.sources.data import make_splits
from compress.sources.models import ModelSpec
from compress.steps import STEPS, StepContext
from compress.steps.base import STEP_ROLES
from compress.steps.export import ExportConfig
from compress.steps.prune import PruneConfig
from compress.steps.quantize import QuantizeConfig

KINDS = set(FILENAMES)


@pytest.fixture
def splits(tiny_npz):
    data = DataConfig(
        source=f"npz:{tiny_npz}", split={"train": 0.6, "calibration": 0.1, "heldout": 0.3}
    )
    return make_splits(data, Path("."), seed=0)


@pytest.fixture
def make_ctx(splits, tmp_path, tiny_model_file):
    spec = ModelSpec(f"python:{tiny_model_file}:tiny_cnn", {}, Path("."))
    counter = iter(range(1000))

    def make(baseline: Artifact | None = None) -> StepContext:
        workdir = tmp_path / f"work-{next(counter)}"
        workdir.mkdir()
        return StepContext(
            splits=splits,
            model_spec=spec,
            input_shape=(3, 8, 8),
            seed=0,
            workdir=workdir,
            baseline=baseline,
            log=lambda _msg: None,
            targets=[TargetConfig(name="cpu", runtime="onnxruntime", threads=1)],  # the tiny recipe's
        )

    return make


@pytest.fixture
def torch_artifact(tiny_module, tiny_model_file) -> Artifact:
    spec = ModelSpec(f"python:{tiny_model_file}:tiny_cnn", {}, Path("."))
    return Artifact(
        kind="torch", digest="tiny", module=tiny_module, model_spec=spec, lineage=["baseline"]
    )


@pytest.fixture
def onnx_artifact(torch_artifact, make_ctx) -> Artifact:
    return STEPS.get("export").apply(torch_artifact, ExportConfig(), make_ctx())


def _snapshot(art: Artifact):
    """Everything a step could change in its input artifact."""
    if art.kind == "torch":
        return str(art.module), {k: v.clone() for k, v in art.module.state_dict().items()}
    return hashlib.sha256(art.path.read_bytes()).hexdigest()


def _same(a, b) -> bool:
    if isinstance(a, tuple):
        return (
            a[0] == b[0]
            and a[1].keys() == b[1].keys()
            and all(torch.equal(a[1][k], b[1][k]) for k in a[1])
        )
    return a == b


def _ort_logits(path: Path, x: dict[str, np.ndarray]) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, x)[0]  # the export step names the file's input after the data's


# --------------------------------------------------------------------------- the contract


def _config(spec):
    """The step's example config (every plug-in declares one), else its defaults."""
    return spec.config(**spec.example)


@pytest.mark.parametrize("name", STEPS.names())
def test_step_conformance(name, torch_artifact, onnx_artifact, make_ctx):
    spec = STEPS.get(name)
    # the config's fields are the YAML keys, and nothing else is accepted, at any depth
    assert spec.config.model_config.get("extra") == "forbid"
    schema = spec.config.model_json_schema()
    objects = [schema, *schema.get("$defs", {}).values()]
    assert all(o.get("additionalProperties") is False for o in objects if o.get("type") == "object")
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        spec.config(no_such_key=1)
    assert spec.summary and spec.summary != name, "the step's docstring is its one-line summary"
    assert spec.accepts and spec.accepts <= KINDS
    assert spec.example, f"{name} declares no example config"
    cfg = _config(spec)  # the example is valid, also where the config has required fields
    for c in (cfg, *([spec.config()] if not _required(spec) else [])):
        assert set(spec.roles(c)) <= set(STEP_ROLES), f"{name} declares a role a step may not use"
        named = spec.targets(c)
        assert all(isinstance(t, str) for t in (named.values() if isinstance(named, dict) else named))
        assert spec.produces(c, min(spec.accepts)) in KINDS

    inputs = {"torch": torch_artifact, "onnx": onnx_artifact}
    kind = next((k for k in sorted(spec.accepts) if k in inputs), None)
    if kind is None:
        pytest.skip(f"{name} accepts {sorted(spec.accepts)}, which these tests cannot build")
    art = inputs[kind]
    before = _snapshot(art)
    ctx = make_ctx(baseline=torch_artifact)
    try:
        out = spec.apply(art, cfg, ctx)
    except MissingDependency as err:  # e.g. engine without tensorrt: the error names the extra
        pytest.skip(f"{name}: {err}")

    assert out.kind == spec.produces(cfg, kind)
    assert out.digest == ""  # steps never key their output: compress.run.build.step_key does
    assert (
        out.lineage[: len(art.lineage)] == art.lineage and len(out.lineage) == len(art.lineage) + 1
    )
    assert _same(_snapshot(art), before), f"{name} modified its input artifact"
    assert "heldout" not in ctx.consumed
    assert set(spec.roles(cfg)) <= ctx.consumed, f"{name} declares roles it did not read"
    if out.kind == "torch":
        assert out.module is not None
    else:
        assert out.path is not None and out.path.is_file()


def _required(spec) -> list[str]:
    return [f for f, info in spec.config.model_fields.items() if info.is_required()]


def _recipe_with(name: str, recipe: dict) -> dict:
    """The tiny recipe with a variant ``x`` that runs step ``name`` with its example config."""
    spec = STEPS.get(name)
    cfg = _config(spec)
    step = {name: copy.deepcopy(spec.example)}
    if "torch" in spec.accepts:
        steps = [step] + ([{"export": {}}] if spec.produces(cfg, "torch") == "torch" else [])
        recipe["variants"]["x"] = {"steps": steps}
    elif "onnx" in spec.accepts:
        recipe["variants"]["x"] = {"from": "onnx-fp32", "steps": [step]}
    else:
        pytest.skip(f"{name} accepts {sorted(spec.accepts)}; the tiny recipe cannot make that kind")
    produced = spec.produces(cfg, "torch" if "torch" in spec.accepts else "onnx")
    if produced not in ("torch", "onnx"):  # a target that runs what the step makes
        from compress.runtimes import RUNTIMES

        runtime, rspec = next((n, r) for n, r in RUNTIMES.items() if produced in r.accepts)
        recipe["targets"].append({"name": "extra", "runtime": runtime, "device": min(rspec.devices)})
    return recipe


@pytest.mark.parametrize("name", STEPS.names())
def test_step_declarations_are_what_the_recipe_checks(name, recipe_dict):
    """Each declared role is required by `compress validate` at the step's key path; each declared
    target exists in the example recipe and an unknown one is refused."""
    from compress.errors import RecipeError
    from compress.recipe import parse_recipe

    spec = STEPS.get(name)
    recipe = _recipe_with(name, copy.deepcopy(recipe_dict))
    recipe["data"]["split"] = {"train": 0.5, "calibration": 0.1, "tuning": 0.1, "heldout": 0.3}
    parse_recipe(copy.deepcopy(recipe))  # the example is valid in a recipe that has every role
    cfg = _config(spec)
    where = re.escape("variants.x.steps[0]." + name)
    for role in spec.roles(cfg):
        without = copy.deepcopy(recipe)
        without["data"]["split"][role] = 0
        with pytest.raises(RecipeError) as info:
            parse_recipe(without)
        assert any(re.match(rf"{where}\S*: .* the {role} split, and the data has none; set data.split.{role}", p)
                   for p in info.value.problems), info.value.problems
    named = spec.targets(cfg)
    assert isinstance(named, dict) or not named, f"{name}: declare targets as config key -> name"
    for key, target in named.items() if named else []:
        assert target in {t["name"] for t in recipe["targets"]}  # the example names a real target
        unknown = copy.deepcopy(recipe)
        node = unknown["variants"]["x"]["steps"][0][name]
        *parents, last = key.split(".")
        for part in parents:
            node = node[part]
        node[last] = "no-such-target"
        with pytest.raises(RecipeError) as info:
            parse_recipe(unknown)
        assert any(p.startswith(f"variants.x.steps[0].{name}.{key}: unknown target 'no-such-target'")
                   for p in info.value.problems), info.value.problems


def test_steps_never_see_heldout(make_ctx):
    ctx = make_ctx()
    for role in ("heldout", "drift", "production"):
        with pytest.raises(ValueError, match=f"never .{role}."):
            ctx.data(role)
    assert ctx.data("train") is ctx.splits["train"] and ctx.consumed == {"train"}


def test_a_split_the_data_lacks_is_a_step_error_not_a_keyerror(make_ctx):
    ctx = make_ctx()
    assert "tuning" not in ctx.splits
    with pytest.raises(StepError, match="needs the tuning split, and the data has none; set data.split.tuning"):
        ctx.data("tuning")
    assert "tuning" not in ctx.consumed


# --------------------------------------------------------------------------- export


def test_export_matches_torch_at_any_batch_size(onnx_artifact, tiny_module):
    model = onnx.load(str(onnx_artifact.path))
    onnx.checker.check_model(model)
    assert onnx_artifact.meta["export_max_rel_error"] <= ExportConfig().atol
    rng = np.random.default_rng(0)
    for batch in (1, 5):
        x = rng.standard_normal((batch, 3, 8, 8)).astype(np.float32)
        with torch.inference_mode():
            want = tiny_module(torch.from_numpy(x)).numpy()
        got = _ort_logits(onnx_artifact.path, {"pixel_values": x})  # the file's input has the data's name
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_export_verification_catches_a_wrong_file(torch_artifact, make_ctx, monkeypatch):
    real_export = export_step.export_onnx

    def export_wrong_model(module, *args, **kwargs):
        wrong = copy.deepcopy(module)
        with torch.no_grad():
            wrong[8].bias += 1.0
        real_export(wrong, *args, **kwargs)

    monkeypatch.setattr(export_step, "export_onnx", export_wrong_model)
    with pytest.raises(
        StepError, match="exported ONNX model disagrees with torch: max relative error"
    ):
        STEPS.get("export").apply(torch_artifact, ExportConfig(), make_ctx())
    # without verification, the same file goes through: verify is what catches it
    out = STEPS.get("export").apply(torch_artifact, ExportConfig(verify=False), make_ctx())
    assert "export_max_rel_error" not in out.meta


# --------------------------------------------------------------------------- quantize


def _zero_point_type(model: onnx.ModelProto, node: onnx.NodeProto) -> int:
    inits = {i.name: i for i in model.graph.initializer}
    return inits[node.input[2]].data_type


def test_static_quantize_is_u8s8_per_channel_qdq(onnx_artifact, make_ctx):
    ctx = make_ctx()
    out = STEPS.get("quantize").apply(onnx_artifact, QuantizeConfig(mode="static"), ctx)
    model = onnx.load(str(out.path))
    inits = {i.name for i in model.graph.initializer}
    quantize = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    weights = [
        n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits
    ]
    # biases are int32; the rest are the weights
    weights = [n for n in weights if _zero_point_type(model, n) != onnx.TensorProto.INT32]
    assert quantize and weights
    # activations: uint8 (what x86 VNNI kernels fuse); weights: int8, one scale per output channel
    assert {_zero_point_type(model, n) for n in quantize} == {onnx.TensorProto.UINT8}
    assert {_zero_point_type(model, n) for n in weights} == {onnx.TensorProto.INT8}
    assert all(any(a.name == "axis" for a in n.attribute) for n in weights)
    inits_by_name = {i.name: i for i in model.graph.initializer}
    conv_scales = [
        inits_by_name[n.input[1]] for n in weights if len(inits_by_name[n.input[1]].dims)
    ]
    assert conv_scales and all(s.dims[0] > 1 for s in conv_scales)

    coverage = out.meta["int8_coverage"]
    assert coverage["int8"]["Conv"] == coverage["total"]["Conv"] == 2
    assert "Conv 2/2" in coverage["summary"]
    assert out.meta["calibration_samples"] == len(ctx.splits["calibration"])
    assert ctx.consumed == {"calibration"}


def test_static_quantize_stays_close_to_fp32(onnx_artifact, make_ctx, splits):
    out = STEPS.get("quantize").apply(onnx_artifact, QuantizeConfig(), make_ctx())
    x = splits["train"].inputs(slice(0, 32))
    fp32, int8 = _ort_logits(onnx_artifact.path, x), _ort_logits(out.path, x)
    assert np.abs(int8 - fp32).max() < 0.1 * np.abs(fp32).max()


def test_dynamic_quantize_refuses_a_conv_only_model(tiny_model_file, make_ctx):
    spec = ModelSpec(f"python:{tiny_model_file}:conv_only", {}, Path("."))
    art = Artifact(kind="torch", digest="conv-only", module=spec.build().eval(), model_spec=spec)
    exported = STEPS.get("export").apply(art, ExportConfig(), make_ctx())
    with pytest.raises(
        StepError, match="quantizes MatMul/Gemm/Attention only, and this model has none; use mode: static"
    ):
        STEPS.get("quantize").apply(exported, QuantizeConfig(mode="dynamic"), make_ctx())


def test_dynamic_quantize_notes_that_convs_stay_float(onnx_artifact, make_ctx):
    ctx = make_ctx()
    out = STEPS.get("quantize").apply(onnx_artifact, QuantizeConfig(mode="dynamic"), ctx)
    assert out.meta["int8_coverage"]["int8"]["MatMul/Gemm"] == 1
    assert out.meta["int8_coverage"]["int8"].get("Conv", 0) == 0
    assert any("2 Conv ops stay float" in note for note in ctx.notes)
    assert "calibration" not in ctx.consumed


# --------------------------------------------------------------------------- prune


def test_prune_reduces_macs_and_keeps_the_classifier(torch_artifact, make_ctx):
    out = STEPS.get("prune").apply(torch_artifact, PruneConfig(ratio=0.5), make_ctx())
    pruning = out.meta["pruning"]
    assert pruning["macs_after"] < pruning["macs_before"]
    assert out.meta["macs"] == pruning["macs_after"]
    assert out.module[0].out_channels == 4 and out.module[3].out_channels == 8
    assert out.module[8].out_features == 10
    assert out.module(torch.zeros(2, 3, 8, 8)).shape == (2, 10)


def test_pruned_model_reloads_from_a_state_dict(torch_artifact, make_ctx, tmp_path):
    out = STEPS.get("prune").apply(torch_artifact, PruneConfig(ratio=0.5), make_ctx())
    path = tmp_path / "pruned.pt"
    save_torch(out.module, path)
    assert all(isinstance(v, torch.Tensor) for v in torch.load(path, weights_only=True).values())
    reloaded = load_torch(path, torch_artifact.model_spec)
    x = torch.rand(3, 3, 8, 8)
    with torch.inference_mode():
        torch.testing.assert_close(reloaded(x), out.module.eval()(x), rtol=0, atol=0)


def test_prune_ignore_keeps_the_named_layer(torch_artifact, make_ctx):
    out = STEPS.get("prune").apply(torch_artifact, PruneConfig(ratio=0.5, ignore=["0"]), make_ctx())
    assert out.module[0].out_channels == 8
    assert out.module[3].out_channels == 8


def test_prune_ignore_pattern_that_matches_nothing(torch_artifact, make_ctx):
    with pytest.raises(StepError, match=r"prune\.ignore pattern 'layer\*' matches no module name"):
        STEPS.get("prune").apply(torch_artifact, PruneConfig(ignore=["layer*"]), make_ctx())
