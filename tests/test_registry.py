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
