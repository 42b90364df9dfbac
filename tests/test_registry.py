"""Registries fail fast: a duplicate is an error, an unknown name lists the valid ones, and every
registered plug-in's module imports (heavy and optional libraries only when a model is loaded)."""

from __future__ import annotations

import importlib
import pkgutil
import re
import subprocess
import sys
import textwrap

import pytest

import compress.runtimes
import compress.steps
from compress.errors import MissingDependency, RecipeError, install_hint
from compress.registry import Registry
from compress.runtimes import RUNTIMES
from compress.steps import STEPS

OPTIONAL = ("openvino", "nncf", "tensorrt", "pycuda")


def test_duplicate_registration_is_an_error():
    reg: Registry[int] = Registry("widget")
    reg.add("a", 1)
    with pytest.raises(ValueError, match="widget 'a' is registered twice"):
        reg.add("a", 2)
    assert reg.get("a") == 1


def test_register_decorator_returns_the_plugin():
    reg: Registry = Registry("widget")

    @reg.register("f")
    def f():
        return 42

    assert f() == 42 and reg.get("f") is f
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("f")(lambda: 0)


def test_unknown_name_lists_the_valid_ones():
    reg: Registry[int] = Registry("widget")
    reg.add("zeta", 1)
    reg.add("alpha", 2)
    with pytest.raises(RecipeError, match="unknown widget 'beta'; valid widgets: alpha, zeta"):
        reg.get("beta")
    assert reg.names() == ["alpha", "zeta"] and list(reg) == ["alpha", "zeta"]
    assert "alpha" in reg and "beta" not in reg


@pytest.mark.parametrize(("registry", "known"), [(STEPS, "export"), (RUNTIMES, "onnxruntime")])
def test_real_registries_list_names_on_a_miss(registry, known):
    with pytest.raises(RecipeError, match=f"valid {registry.kind}s: .*{known}"):
        registry.get("no-such-plugin")


def _registered_modules() -> list[tuple[str, str]]:
    steps = [(f"step {n}", spec.apply.__module__) for n, spec in STEPS.items()]
    runtimes = [(f"runtime {n}", spec.loader.__module__) for n, spec in RUNTIMES.items()]
    return steps + runtimes


@pytest.mark.parametrize(("plugin", "module"), _registered_modules(), ids=lambda v: str(v))
def test_every_registered_module_imports(plugin, module):
    imported = importlib.import_module(module)
    package = "compress.steps" if plugin.startswith("step") else "compress.runtimes"
    assert module.startswith(package + "."), f"{plugin} lives outside {package}"
    assert imported is sys.modules[module]


@pytest.mark.parametrize("package", [compress.steps, compress.runtimes], ids=lambda p: p.__name__)
def test_every_module_of_a_plugin_package_imports(package):
    names = [m.name for m in pkgutil.iter_modules(package.__path__)]
    assert names
    for name in names:
        importlib.import_module(f"{package.__name__}.{name}")


def test_plugins_register_without_optional_libraries():
    """With every optional library missing, the package still imports and lists every plug-in."""
    code = textwrap.dedent(
        f"""
        import sys
        for name in {OPTIONAL!r}:
            sys.modules[name] = None  # makes `import name` raise ImportError
        import compress.cli, compress.run.pipeline, compress.recipe
        from compress.runtimes import RUNTIMES
        from compress.steps import STEPS
        print(",".join(RUNTIMES.names()))
        print(",".join(STEPS.names()))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    runtimes, steps = out.stdout.split()
    assert runtimes.split(",") == RUNTIMES.names()
    assert steps.split(",") == STEPS.names()


@pytest.mark.parametrize("name", [n for n, s in RUNTIMES.items() if s.extra])
def test_missing_extra_names_the_install_command(name, monkeypatch, tiny_module, tmp_path):
    from compress.artifacts import Artifact
    from compress.recipe import TargetConfig
    from compress.steps.export import export_onnx

    spec = RUNTIMES.get(name)
    if "onnx" not in spec.accepts:
        pytest.skip(f"runtime {name} does not run ONNX files, the kind this test builds")
    for lib in OPTIONAL:
        monkeypatch.setitem(sys.modules, lib, None)
    path = tmp_path / "model.onnx"
    export_onnx(tiny_module, (3, 8, 8), path, opset=17, dynamic_batch=True)
    device = "cpu" if "cpu" in spec.devices else sorted(spec.devices)[0]
    target = TargetConfig(name="t", runtime=name, device=device)
    with pytest.raises(MissingDependency, match=re.escape(install_hint(spec.extra))):
        spec.load(Artifact(kind="onnx", digest="x", path=path), target)


@pytest.mark.parametrize(
    ("plugin", "spec"),
    [*((f"step {n}", s) for n, s in STEPS.items()), *((f"runtime {n}", s) for n, s in RUNTIMES.items())],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_every_plugin_declares_a_valid_example(plugin, spec):
    """The conformance tests run each plug-in with its example: it must be what its config accepts."""
    model = spec.config if plugin.startswith("step") else spec.options
    if plugin.startswith("step"):
        assert spec.example, f"{plugin} declares no example config"
    assert model.model_validate(spec.example) is not None
    assert set(spec.example) <= set(model.model_fields), f"{plugin}'s example has keys its config lacks"


def test_a_plugin_registered_after_the_recipe_schema_is_usable_in_a_recipe(monkeypatch, recipe_dict):
    """The recipe validates steps against the registry as it is when a recipe loads."""
    from compress.recipe import parse_recipe
    from compress.steps import StepConfig, register_step

    monkeypatch.setattr(STEPS, "_items", dict(STEPS._items))

    class NoopConfig(StepConfig):
        pass

    @register_step("noop", config=NoopConfig, accepts={"onnx"}, example={})
    def noop(art, cfg, ctx):
        """Return the input unchanged (a test plug-in)."""
        return art

    recipe_dict["variants"]["n"] = {"from": "onnx-fp32", "steps": ["noop"]}
    assert [s for s, _ in parse_recipe(recipe_dict).variants["n"].step_list()] == ["noop"]
    recipe_dict["variants"]["n"]["steps"] = [{"noop": {"x": 1}}]
    with pytest.raises(RecipeError, match=r"variants.n.steps\[0\].noop.x: unknown key"):
        parse_recipe(recipe_dict)
