"""`compress run --ray-address` on a real two-node Ray cluster started on this machine: the same
artifacts (digests), accuracies and verdict as the in-process run; a worker killed mid-build is
retried, and one that always dies fails its variant (exit 3); a target no node provides is refused
before anything is built (exit 2)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import yaml

pytest.importorskip("ray", reason="needs the ray extra (pip install -e '.[ray]')")
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent

# The tiny CNN of conftest, which (built in the Ray task named in crash-in.txt) kills its own worker
# process: once, or on every attempt when crash-always is there. A task builds it when it reads a
# torch artifact from the store (here: "build pruned-onnx" reads pruned's).
CRASHING_MODEL = textwrap.dedent(
    """
    import os
    from pathlib import Path

    from torch import nn

    HERE = Path(__file__).parent


    def _maybe_die():
        import ray

        in_task = ray.is_initialized() and ray.get_runtime_context().worker.mode == ray.WORKER_MODE
        task = ray.get_runtime_context().get_task_name() if in_task else None
        wanted = (HERE / "crash-in.txt").read_text().strip() if (HERE / "crash-in.txt").exists() else None
        if task is None or task != wanted:
            return
        if (HERE / "crash-always").exists() or not (HERE / "crashed").exists():
            with open(HERE / "crashed", "a") as f:
                f.write(f"{os.getpid()}\\n")
            os._exit(1)


    def tiny_cnn(num_classes=10, in_channels=3):
        _maybe_die()
        return nn.Sequential(
            nn.Conv2d(in_channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, num_classes),
        )
    """
)


@pytest.fixture
def cluster(ray_cluster):
    """conftest's two-node cluster: a head (1 CPU, no target) and a worker (1 CPU, targets cpu and torch)."""
    return ray_cluster


TARGETS = [{"name": "cpu", "runtime": "onnxruntime", "device": "cpu", "threads": 1},
           {"name": "torch", "runtime": "torch", "device": "cpu", "threads": 1}]


def _digits_recipe(folder: Path, new_tiny_recipe, *, targets=TARGETS) -> Path:
    """The tiny CNN on scikit-learn's digits (3x8x8): two independent branches, each with a child."""
    (folder / "crashing_model.py").write_text(CRASHING_MODEL)
    recipe = new_tiny_recipe()
    recipe["model"]["source"] = "python:crashing_model.py:tiny_cnn"
    recipe["data"] = {"source": "sklearn:digits", "transform": {"channels": 3},
                      "split": {"train": 0.6, "calibration": 0.1, "heldout": 0.3}}
    recipe["baseline"]["train"]["epochs"] = 2
    recipe["variants"]["pruned"] = {"steps": [{"prune": {"ratio": 0.5, "finetune": {"epochs": 1}}}]}
    recipe["variants"]["pruned-onnx"] = {"from": "pruned", "steps": [{"export": {"format": "onnx"}}]}
    recipe["gate"] = {"max_accuracy_drop": 100.0, "reference": "onnx-fp32"}  # no noisy speed-up rule
    recipe["targets"] = targets
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def _results(out: Path) -> dict:
    (run,) = [p for p in out.iterdir() if (p / "results.json").is_file()]
    return json.loads((run / "results.json").read_text())


def _answer(results: dict) -> dict:
    """What must not depend on where a run ran: lineage, accuracies and paired changes, verdict."""
    models = {"baseline": results["baseline"], **results["variants"]}
    return {
        "models": {n: (m["status"], m.get("artifact", {}).get("lineage"),
                       {r: a["top1"] for r, a in m.get("accuracy", {}).items() if isinstance(a, dict) and "top1" in a},
                       m.get("accuracy", {}).get("change_points"))
                   for n, m in models.items()},
        "verdict": (results["verdict"]["exit_code"],
                    {n: v["gate"]["verdict"] for n, v in results["variants"].items() if "gate" in v}),
    }


def _digests(out: Path) -> set[str]:
    return {p.name for p in (out / ".cache").iterdir() if (p / "artifact.json").is_file()}


def test_a_run_on_two_nodes_matches_the_in_process_run_and_survives_a_killed_worker(
        cluster, tmp_path, new_tiny_recipe):
    import compress

    recipe = _digits_recipe(tmp_path, new_tiny_recipe)
    local = compress.run(recipe, out_dir=tmp_path / "local", log=None)
    (tmp_path / "crash-in.txt").write_text("build pruned-onnx")  # its first worker dies mid-build
    got = cluster.compress_run(recipe, tmp_path / "ray")
    assert got.returncode == local.verdict.exit_code == 0, got.stderr[-3000:]
    assert len((tmp_path / "crashed").read_text().split()) == 1  # it did die, once, and was retried
    on_ray = _results(tmp_path / "ray")
    assert _answer(on_ray) == _answer(_results(tmp_path / "local"))
    assert _digests(tmp_path / "ray") == _digests(tmp_path / "local")
    assert set(on_ray["variants"]) == {"onnx-fp32", "int8", "pruned", "pruned-onnx"}
    assert on_ray["variants"]["int8"]["latency"]["cpu"]["1"]["p50_ms"] > 0  # timed on the target node


def test_a_worker_that_always_dies_fails_its_variant_and_the_run(cluster, tmp_path, new_tiny_recipe):
    recipe = _digits_recipe(tmp_path, new_tiny_recipe)
    (tmp_path / "crash-in.txt").write_text("build pruned-onnx")
    (tmp_path / "crash-always").write_text("")
    got = cluster.compress_run(recipe, tmp_path / "ray")
    assert got.returncode == 3, got.stderr[-3000:]
    results = _results(tmp_path / "ray")
    failed = results["variants"]["pruned-onnx"]
    assert failed["status"] == "failed" and "build on Ray failed" in failed["error"], failed["error"]
    assert len((tmp_path / "crashed").read_text().split()) == 3  # the first try and two retries
    assert {n: v["status"] for n, v in results["variants"].items() if n != "pruned-onnx"} == dict.fromkeys(
        ["onnx-fp32", "int8", "pruned"], "ok")


def test_a_target_no_node_provides_is_refused_before_anything_is_built(cluster, tmp_path, new_tiny_recipe):
    targets = [*TARGETS, {"name": "cpu-openvino", "runtime": "onnxruntime", "device": "cpu", "threads": 1}]
    recipe = _digits_recipe(tmp_path, new_tiny_recipe, targets=targets)
    got = cluster.compress_run(recipe, tmp_path / "ray")
    assert got.returncode == 2, got.stderr[-3000:]
    message = " ".join(got.stderr.split())  # as one line, however the console wrapped it
    assert "provides target(s) ['cpu-openvino']" in message
    assert '"target:cpu-openvino": 1' in message
    assert not (tmp_path / "ray").exists()  # nothing built, no run directory


MAP_SCRIPT = textwrap.dedent(
    """
    import sys
    from compress.run.ray_executor import RayExecutor


    def trial(x):
        if x == 0:
            raise ValueError("no trial at zero")
        return 12 // x


    with RayExecutor(address=sys.argv[1], log=lambda _m: None) as ex:
        got = ex.map(trial, [3, 0, 4])
    print(repr(got[0]), type(got[1]).__name__, repr(str(got[1])), repr(got[2]))
    """
)


def test_map_runs_each_item_as_a_task_and_returns_a_failure_in_its_place(cluster):
    """The hook for search trials: results in order, a failed item's error in its place (run in a
    fresh process, as a driver joining with the cluster's token)."""
    import subprocess
    import sys

    got = subprocess.run([sys.executable, "-c", MAP_SCRIPT, cluster.address], env=cluster.env,
                         capture_output=True, text=True, timeout=600)
    assert got.returncode == 0, got.stderr[-3000:]
    assert got.stdout.split("\n")[-2] == "4 RuntimeError 'ValueError: no trial at zero' 3"
