"""Executors without a cluster: the default imports no Ray, a missing Ray names its extra, the Ray
executor's placement checks (targets, GPUs) refuse a recipe before anything is built, and targets
that one node provides are timed together. The real two-node cluster is tests/test_ray.py."""

from __future__ import annotations

import subprocess
import sys
import types
from types import SimpleNamespace

import pytest

from compress.cli import app
from compress.errors import InputError, MissingDependency, RecipeError
from compress.recipe import parse_recipe
from compress.run.executor import EXECUTORS, InProcess, make_executor


def test_the_default_executor_is_in_process_and_imports_no_ray():
    code = ("import sys; from compress.run.executor import make_executor; import compress.cli, compress.run.pipeline; "
            "e = make_executor(); assert e.name == 'in-process', e; assert 'ray' not in sys.modules, 'ray imported'")
    got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert got.returncode == 0, got.stderr


@pytest.mark.parametrize("name", EXECUTORS.names())
def test_executor_conformance(name):
    """Every registered executor has the whole interface and says its registered name."""
    if name == "ray":
        pytest.importorskip("ray", reason="needs the ray extra")
    ex = EXECUTORS.get(name)(address=None, log=lambda _m: None)
    assert ex.name == name and isinstance(ex.shared_store, bool)
    for method in ("check", "build_variants", "evaluate_models", "profile_pairs", "map", "slots", "close"):
        assert callable(getattr(ex, method)), f"{name} has no {method}"
    with ex:  # a context manager that closes what it started (nothing yet)
        pass


def test_an_unknown_executor_lists_the_known_ones():
    with pytest.raises(RecipeError, match="unknown executor 'dask'; valid executors: in-process, ray"):
        EXECUTORS.get("dask")


def test_run_with_ray_but_no_ray_installed_names_the_extra(cli, monkeypatch, write_recipe, recipe_dict, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    result = cli.invoke(app, ["run", str(write_recipe(recipe_dict)), "--ray", "--quiet", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "'ray' package" in result.stderr and "[ray]" in result.stderr
    assert not (tmp_path / "o").exists()


def test_in_process_map_keeps_order_and_returns_a_failure_in_its_place():
    got = InProcess().map(lambda x: 10 // x, [5, 0, 2])
    assert got[0] == 2 and isinstance(got[1], ZeroDivisionError) and got[2] == 5


@pytest.fixture
def fake_ray(monkeypatch):
    """A ``ray`` module whose cluster is the given nodes' resources (no Ray started)."""
    module = types.ModuleType("ray")
    module.nodes_resources = []
    module.is_initialized = lambda: True
    module.nodes = lambda: [{"Alive": True, "Resources": r} for r in module.nodes_resources]
    monkeypatch.setitem(sys.modules, "ray", module)
    return module


def _recipe(recipe_dict, targets, variants=None):
    recipe_dict["targets"] = targets
    recipe_dict["variants"].update(variants or {})
    return parse_recipe(recipe_dict)


CPU = {"name": "cpu", "runtime": "onnxruntime", "device": "cpu", "threads": 1}
OV = {"name": "cpu-openvino", "runtime": "onnxruntime", "device": "cpu", "threads": 1}


def test_a_target_no_node_provides_is_an_input_error_naming_the_resource(fake_ray, recipe_dict):
    fake_ray.nodes_resources = [{"CPU": 2.0, "target:cpu": 1.0}]
    ex = make_executor(ray_address="10.0.0.1:6379", log=lambda _m: None)
    with pytest.raises(InputError, match=r"provides target\(s\) \['cpu-openvino'\].*"
                                         r"ray start --address 10.0.0.1:6379 --resources '\{\"target:cpu-openvino\": 1\}'"):
        ex.check(_recipe(recipe_dict, [CPU, OV]))


def test_a_cluster_that_cannot_be_joined_is_an_input_error(fake_ray, recipe_dict):
    def refuse(**_kw):
        raise ConnectionError("no GCS at 10.0.0.9:6379")

    fake_ray.is_initialized = lambda: False
    fake_ray.init = refuse
    with pytest.raises(InputError, match=r"could not join the Ray cluster at 10.0.0.9:6379 .*ray start --head"):
        make_executor(ray_address="10.0.0.9:6379", log=lambda _m: None).check(_recipe(recipe_dict, [CPU]))


def test_a_tensorrt_variant_needs_a_gpu_node(fake_ray, recipe_dict):
    gpu = {"name": "gpu", "runtime": "tensorrt", "device": "cuda"}
    recipe = _recipe(recipe_dict, [CPU, gpu], {"trt": {"steps": [{"export": {}}, {"engine": {}}], "targets": ["gpu"]}})
    fake_ray.nodes_resources = [{"CPU": 2.0, "target:cpu": 1.0, "target:gpu": 1.0}]
    ex = make_executor(ray_address="head:6379", log=lambda _m: None)
    with pytest.raises(InputError, match=r"variants \['trt'\] need a GPU to build"):
        ex.check(recipe)
    fake_ray.nodes_resources[0]["GPU"] = 1.0
    ex.check(recipe)  # now placeable


def test_targets_one_node_provides_are_timed_together(fake_ray, recipe_dict):
    from compress.run.ray_executor import profile_groups

    a, b, c = (SimpleNamespace(name=n) for n in ("a", "b", "c"))
    nodes = [{"target:a": 1, "target:c": 1}, {"target:b": 1}]
    assert [[t.name for t in g] for g in profile_groups([a, b, c], nodes)] == [["a", "c"], ["b"]]
    both = [{"target:a": 1, "target:b": 1, "target:c": 1}]
    assert [[t.name for t in g] for g in profile_groups([a, b, c], both)] == [["a", "b", "c"]]


def test_missing_ray_is_a_missing_dependency(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(MissingDependency, match=r"pip install .*\[ray\]"):
        make_executor(ray=True)


# --- the store Ray workers share ------------------------------------------------------------------


def test_a_second_writer_of_a_digest_leaves_the_first_complete_entry_in_place(tmp_path):
    from compress.artifacts import Artifact, Cache

    cache = Cache(tmp_path / "store")
    first, second = tmp_path / "a" / "model.onnx", tmp_path / "b" / "model.onnx"
    for path, text in ((first, b"first"), (second, b"second")):
        path.parent.mkdir()
        path.write_bytes(text)
    cache.put(Artifact(kind="onnx", digest="d1", path=first, lineage=["a"]))
    reader = cache.get("d1")
    # a worker that built the same digest stores it after the first: its rename loses, quietly
    stored = cache.put(Artifact(kind="onnx", digest="d1", path=second, lineage=["a"]))
    assert stored.path == reader.path and reader.path.read_bytes() == b"first"
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == ["d1"]  # no temp dir left


def test_a_damaged_entry_is_replaced(tmp_path):
    from compress.artifacts import Artifact, Cache

    (tmp_path / "store" / "d1").mkdir(parents=True)  # no artifact.json: not an entry
    (tmp_path / "model.onnx").write_bytes(b"x")
    Cache(tmp_path / "store").put(Artifact(kind="onnx", digest="d1", path=tmp_path / "model.onnx"))
    assert Cache(tmp_path / "store").get("d1").path.read_bytes() == b"x"
