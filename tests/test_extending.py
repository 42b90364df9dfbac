"""docs/extending.md's worked example is true: its code blocks, run as the files they name, register
a new step and a new runtime that pass the declarations' checks and run a tiny recipe end to end."""

from __future__ import annotations

import json
import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from compress.cli import app
from compress.runtimes import RUNTIMES
from compress.steps import STEPS

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "extending.md").read_text()
FILES = re.findall(r"```python\n(# file: (\S+)\n.*?)```", DOC, flags=re.S)  # (code, path)


@pytest.fixture
def plugins(monkeypatch) -> dict[str, types.ModuleType]:
    """The doc's files, executed as the modules they name, registered in copies of the registries
    (restored after the test)."""
    monkeypatch.setattr(STEPS, "_items", dict(STEPS._items))
    monkeypatch.setattr(RUNTIMES, "_items", dict(RUNTIMES._items))
    modules = {}
    for code, path in FILES:
        name = path.removesuffix(".py").replace("/", ".")
        assert not (ROOT / path).exists(), f"{path} exists: the example must be a new file"
        module = types.ModuleType(name)
        module.__file__ = str(ROOT / path)
        monkeypatch.setitem(sys.modules, name, module)
        exec(compile(code, path, "exec"), module.__dict__)  # noqa: S102  (our own docs)
        modules[name] = module
    return modules


def test_the_doc_adds_one_step_and_one_runtime_with_one_import_line_each():
    assert [p for _, p in FILES] == ["compress/steps/recalibrate_bn.py", "compress/runtimes/reference.py"]
    for package, new in (("steps", "recalibrate_bn"), ("runtimes", "reference")):
        init = (ROOT / "compress" / package / "__init__.py").read_text()
        (line,) = [ln for ln in init.splitlines() if ln.startswith(f"from compress.{package} import ")]
        names = line.split(" import ")[1].split("  #")[0].split(", ")
        with_new = ", ".join(sorted([*names, new]))
        assert f"from compress.{package} import {with_new}  # noqa: F401" in DOC, (
            f"docs/extending.md's registration line for {new} is not compress/{package}/__init__.py's plus {new}"
        )


def test_the_new_step_is_declared_and_does_what_it_says(plugins, make_ctx_for_doc):
    spec = STEPS.get("recalibrate_bn")
    cfg = spec.config(**spec.example)
    assert set(spec.roles(cfg)) == {"calibration"} and spec.accepts == {"torch"}
    art, ctx = make_ctx_for_doc
    before = {k: v.clone() for k, v in art.module.state_dict().items()}
    out = spec.apply(art, cfg, ctx)
    assert all(torch.equal(v, art.module.state_dict()[k]) for k, v in before.items()), "input modified"
    assert ctx.consumed == {"calibration"} and out.lineage[-1] == "recalibrate_bn(2 batches)"
    # the first BatchNorm's running mean is now the mean of its input over the calibration batches
    split = ctx.splits["calibration"]
    batch_means = []
    with torch.no_grad():
        for inputs, _ in list(split.batches(cfg.batch_size))[: cfg.batches]:
            (x,) = inputs.values()
            batch_means.append(art.module[0](torch.from_numpy(x)).mean(dim=(0, 2, 3)))
    np.testing.assert_allclose(out.module[1].running_mean.numpy(), torch.stack(batch_means).mean(0).numpy(),
                               rtol=1e-4, atol=1e-5)


def test_the_new_runtime_matches_torch(plugins, tiny_module, tmp_path):
    from compress.artifacts import Artifact
    from compress.recipe import TargetConfig
    from compress.steps.export import export_onnx

    path = tmp_path / "model.onnx"
    export_onnx(tiny_module, (3, 8, 8), path, opset=17, dynamic_batch=True)
    spec = RUNTIMES.get("reference")
    session = spec.load(Artifact(kind="onnx", digest="t", path=path),
                        TargetConfig(name="ref", runtime="reference", options=spec.example))
    x = np.random.default_rng(0).standard_normal((3, 3, 8, 8)).astype(np.float32)
    with torch.inference_mode():
        want = tiny_module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(session.run({"pixel_values": x}), want, rtol=1e-4, atol=1e-4)
    assert session.info["runtime"] == "reference"


def _recipe(recipe_dict: dict) -> dict:
    recipe_dict["variants"]["bn"] = {
        "steps": [{"recalibrate_bn": {"batches": 2, "batch_size": 8}}, {"export": {"format": "onnx"}}],
    }
    recipe_dict["variants"]["int8"]["targets"] = ["cpu"]
    recipe_dict["targets"].append({"name": "ref", "runtime": "reference", "options": {"verbose": 0}})
    return recipe_dict


def test_a_recipe_with_the_new_plugins_validates_and_runs(plugins, cli, write_recipe, recipe_dict, tmp_path):
    recipe = _recipe(recipe_dict)
    result = cli.invoke(app, ["validate", str(write_recipe(recipe))])
    assert result.exit_code == 0, result.output
    assert "bn: recalibrate_bn → export ⇒ onnx" in result.stdout

    result = cli.invoke(app, ["run", str(write_recipe(recipe)), "--out", str(tmp_path / "runs"), "--quiet"])
    assert result.exit_code == 0, result.output
    (run_dir,) = [p for p in (tmp_path / "runs").iterdir() if p.is_dir() and not p.name.startswith(".")]
    results = json.loads((run_dir / "results.json").read_text())
    bn = results["variants"]["bn"]
    assert bn["runtime_info"]["ref"]["runtime"] == "reference"
    assert "recalibrate_bn(2 batches)" in json.dumps(bn)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r["data"]["split"].update(calibration=0),
         "variants.bn.steps[0].recalibrate_bn: re-estimates the BatchNorm statistics on the calibration "
         "split, and the data has none; set data.split.calibration"),
        (lambda r: r["targets"][1]["options"].update(verbose=9),
         "targets[1].options.verbose: unknown verbose 9; valid: 0, 1, 2, 3"),
        (lambda r: r["targets"][1].update(device="cuda"),
         "targets[1]: runtime 'reference' cannot run on device 'cuda'; its devices: cpu"),
    ],
    ids=["no-calibration", "bad-option", "bad-device"],
)
def test_the_new_plugins_declarations_are_checked_by_validate(plugins, cli, write_recipe, recipe_dict,
                                                              change, message):
    recipe = _recipe(recipe_dict)
    change(recipe)
    result = cli.invoke(app, ["validate", str(write_recipe(recipe))])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.stderr.split())


@pytest.fixture
def make_ctx_for_doc(tiny_npz, tiny_model_file, tmp_path):
    from compress.artifacts import Artifact
    from compress.recipe import DataConfig
    from compress.sources.data import make_splits
    from compress.sources.models import ModelSpec
    from compress.steps import StepContext

    spec = ModelSpec(f"python:{tiny_model_file}:tiny_cnn", {}, Path("."))
    module = spec.build().eval()
    splits = make_splits(DataConfig(source=f"npz:{tiny_npz}"), Path("."), seed=0)
    ctx = StepContext(splits=splits, model_spec=spec, input_shape=(3, 8, 8), seed=0, workdir=tmp_path,
                      log=lambda _m: None)
    return Artifact(kind="torch", digest="tiny", module=module, model_spec=spec, lineage=["baseline"]), ctx
