"""Tiny things to test with: a CNN factory file, learnable random images, an image folder, recipes.

Everything here builds in milliseconds, so a whole recipe runs end to end in a few seconds.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

NUM_CLASSES = 10
IMAGE_SHAPE = (3, 8, 8)

TINY_MODEL_SOURCE = textwrap.dedent(
    """
    from torch import nn


    def tiny_cnn(num_classes=10, in_channels=3):
        return nn.Sequential(
            nn.Conv2d(in_channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, num_classes),
        )


    def conv_only(num_classes=10, in_channels=3):
        # no MatMul/Gemm anywhere: a 1x1 conv plays the classifier
        return nn.Sequential(
            nn.Conv2d(in_channels, 8, 3, padding=1), nn.ReLU(),
            nn.Conv2d(8, num_classes, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )


    def not_a_module():
        return "a string"
    """
)


def learnable_images(n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 NCHW images: a fixed random template per class plus noise, balanced labels."""
    rng = np.random.default_rng(seed)
    templates = rng.uniform(0, 1, size=(NUM_CLASSES, *IMAGE_SHAPE))
    labels = np.arange(n) % NUM_CLASSES
    rng.shuffle(labels)
    noise = rng.uniform(0, 1, size=(n, *IMAGE_SHAPE))
    images = 0.75 * templates[labels] + 0.25 * noise
    return (images * 255).round().astype(np.uint8), labels.astype(np.int64)


def _write_tiny_project(folder: Path) -> Path:
    """tiny_model.py and tiny.npz in ``folder``, where the tiny recipe's relative paths point."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tiny_model.py").write_text(TINY_MODEL_SOURCE)
    images, labels = learnable_images()
    np.savez(folder / "tiny.npz", images=images, labels=labels)
    return folder


@pytest.fixture(scope="session")
def tiny_project() -> Callable[[Path], Path]:
    """``tiny_project(folder)`` writes the tiny model file and data there (for any fixture scope)."""
    return _write_tiny_project


@pytest.fixture
def tiny_model_file(tmp_path: Path) -> Path:
    """tiny_model.py with factories ``tiny_cnn`` and ``conv_only`` (for python:FILE.py:FACTORY)."""
    return _write_tiny_project(tmp_path) / "tiny_model.py"


@pytest.fixture
def tiny_module(tiny_model_file: Path):
    """An eval-mode tiny CNN with non-trivial batch-norm statistics."""
    import torch

    from compress.sources.models import ModelSpec

    torch.manual_seed(0)
    module = ModelSpec(
        f"python:{tiny_model_file.name}:tiny_cnn", {}, tiny_model_file.parent
    ).build()
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return module.eval()


@pytest.fixture
def tiny_onnx_artifact(tmp_path: Path, tiny_module):
    """``tiny_module`` exported to ONNX fp32 (opset 17, dynamic batch), as the onnx Artifact a step gets."""
    from compress.artifacts import Artifact
    from compress.steps.export import export_onnx

    path = tmp_path / "fp32.onnx"
    export_onnx(tiny_module, IMAGE_SHAPE, path, opset=17, dynamic_batch=True)
    return Artifact(kind="onnx", digest="fp32", path=path, lineage=["baseline"])


@pytest.fixture
def tiny_step_ctx(tmp_path: Path, tiny_npz: Path):
    """A StepContext over the tiny npz data (default splits), working in tmp_path/work."""
    from compress.recipe import DataConfig
    from compress.sources.data import make_splits
    from compress.steps.base import StepContext

    splits = make_splits(DataConfig(source=f"npz:{tiny_npz}"), tmp_path, seed=0)
    workdir = tmp_path / "work"
    workdir.mkdir()
    return StepContext(splits=splits, model_spec=None, input_shape=IMAGE_SHAPE, seed=0,
                       workdir=workdir, log=lambda _m: None)


@pytest.fixture
def tiny_npz(tmp_path: Path) -> Path:
    """tiny.npz: 200 learnable 3x8x8 uint8 images (NCHW) with 10 balanced classes."""
    return _write_tiny_project(tmp_path) / "tiny.npz"


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """DIR/<class>/<image>.png with classes created out of alphabetical order, 3 images each."""
    from PIL import Image

    root = tmp_path / "images"
    rng = np.random.default_rng(0)
    for cls in ("zebra", "ant", "moose"):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            pixels = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / cls / f"{i}.png")
    (root / "ant" / "notes.txt").write_text("not an image")
    return root


@pytest.fixture
def empty_image_folder(tmp_path: Path) -> Path:
    root = tmp_path / "empty_images"
    (root / "cats").mkdir(parents=True)
    (root / "cats" / "readme.txt").write_text("no images here")
    return root


def _tiny_recipe() -> dict:
    """A recipe whose run takes seconds: tiny CNN, tiny npz, 1-thread target, short profiling.

    Paths are relative to the recipe file, which ``write_recipe`` puts beside the tiny files.
    """
    recipe = {
        "name": "tiny",
        "seed": 0,
        "model": {
            "source": "python:tiny_model.py:tiny_cnn",
            "kwargs": {"num_classes": NUM_CLASSES},
            "input_shape": list(IMAGE_SHAPE),
        },
        "data": {
            "source": "npz:tiny.npz",
            "split": {"train": 0.6, "calibration": 0.1, "heldout": 0.3},
        },
        "baseline": {"train": {"epochs": 5, "lr": 0.1, "batch_size": 8}},
        "variants": {
            "onnx-fp32": {"steps": [{"export": {"format": "onnx"}}]},
            "int8": {"from": "onnx-fp32", "steps": [{"quantize": {"mode": "static"}}]},
        },
        "targets": [{"name": "cpu", "runtime": "onnxruntime", "device": "cpu", "threads": 1}],
        # short profiling; no memory subprocesses, no extra rounds: the run must take seconds
        "profile": {
            "batch_sizes": [1, 4],
            "rounds": 2,
            "warmup": 1,
            "min_round_s": 0.01,
            "warmup_max_s": 0.0,
            "max_extra_rounds": 0,
            "memory": False,
        },
        "evaluate": {"bootstrap_resamples": 200, "robustness": {"when": "never"}},
        "gate": {"max_accuracy_drop": 100.0, "reference": "onnx-fp32"},
    }
    return recipe


@pytest.fixture(scope="session")
def new_tiny_recipe() -> Callable[[], dict]:
    """``new_tiny_recipe()`` -> a fresh tiny recipe dict (for fixtures of any scope)."""
    return _tiny_recipe


@pytest.fixture
def recipe_dict() -> dict:
    """A fresh, valid tiny recipe (as parsed YAML) that tests may mutate."""
    return _tiny_recipe()


@pytest.fixture
def write_recipe(tmp_path: Path, tiny_model_file: Path) -> Callable[..., Path]:
    """``write_recipe(data, name="recipe.yaml") -> path``: the recipe beside the tiny model and data."""

    def write(data: dict, name: str = "recipe.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    return write


@pytest.fixture
def cli() -> CliRunner:
    return CliRunner()


def _hand_made_latency(p50_ms: float, batch_size: int) -> dict:
    """One latency entry as the profiler writes it, from made-up timed calls around ``p50_ms``."""
    from compress.measure.stats import summarize_timings

    samples = [p50_ms * f for f in (0.98, 0.99, 1.0, 1.0, 1.01, 1.03, 1.1)]
    return {
        **summarize_timings(samples).to_dict(),
        "batch_size": batch_size,
        "throughput_per_s": batch_size / (p50_ms / 1e3),
        "usd_per_1m": 0.17 / 3600 * (p50_ms / 1e3) / batch_size * 1e6,
        "energy": {"measured": False, "meter": "none", "reason": "hand-made results"},
        "samples_ms": samples,
    }


def _hand_made_variant(
    change: float | None = 0.0,
    speedup: float | dict[str, float] | None = 2.0,
    *,
    status: str = "ok",
    gated: bool = True,
    error: str | None = None,
    p50_ms: float = 5.0,
) -> dict:
    """One variant's entry of results.json, as the pipeline writes it (the fields gate and
    report read). ``speedup`` is one value for every batch size, or {batch size: value}."""
    if status == "failed":
        return {
            "status": "failed",
            "error": error,
            "from": None,
            "description": None,
            "gated": gated,
            "steps": [],
            "notes": [],
            "consumed_splits": [],
        }
    sizes = ["1", "32"]
    per_bs = speedup if isinstance(speedup, dict) else dict.fromkeys(sizes, speedup)
    v = {
        "status": "ok",
        "error": None,
        "from": None,
        "description": None,
        "gated": gated,
        "steps": [
            {
                "step": "export",
                "config": {},
                "seconds": 0.1,
                "compute_seconds": 0.1,
                "cached": False,
            }
        ],
        "notes": [],
        "consumed_splits": ["calibration"],
        "evaluated_on": "cpu",
        "artifact": {
            "kind": "onnx",
            "lineage": ["baseline(trained)", "export(onnx)"],
            "size_bytes": 4096,
            "facts": {"params": 1000, "macs": 20000},
        },
        "latency": {"cpu": {bs: _hand_made_latency(p50_ms * int(bs), int(bs)) for bs in sizes}},
    }
    if change is not None:
        v["accuracy"] = {
            "heldout": {"split": "heldout", "n": 500, "top1": 90.0 + change, "top5": None},
            "change_points": change,
            "agreement": 98.0,
        }
    if speedup is not None:
        v["speedup"] = {
            "cpu": {
                bs: {"estimate": s, "low": s * 0.9, "high": s * 1.1, "confidence": 0.95}
                for bs, s in per_bs.items()
            }
        }
    return v


def _hand_made_results(variants: dict[str, dict], gate: dict | None = None) -> dict:
    """A results dict shaped like results.json (before the gate is applied)."""
    gate = {"reference": "baseline", **(gate or {})}
    return {
        "schema_version": 1,
        "compress_version": "0.1.0",
        "recipe": {
            "name": "hand-made",
            "gate": gate,
            "profile": {"batch_sizes": [1, 32]},
            "variants": {name: {} for name in variants},
        },
        "run": {
            "recipe_path": "recipe.yaml",
            "started": "2026-01-01T00:00:00+00:00",
            "wall_s": 12.0,
        },
        "data": {
            "splits": {
                "train": {"n": 1000, "source": "npz:d.npz", "fingerprint": "f"},
                "heldout": {"n": 500, "source": "npz:d.npz", "fingerprint": "h"},
            },
            "classes": [str(i) for i in range(10)],
        },
        "targets": [
            {
                "name": "cpu",
                "runtime": "onnxruntime",
                "device": "cpu",
                "threads": 1,
                "usd_per_hour": 0.17,
            }
        ],
        "baseline": {
            "status": "ok",
            "info": {"source": "python:m.py:f", "trained": True},
            "artifact": {
                "kind": "torch",
                "lineage": ["baseline(trained)"],
                "size_bytes": 8192,
                "facts": {"params": 1000, "macs": 20000},
            },
            "accuracy": {"heldout": {"split": "heldout", "n": 500, "top1": 90.0, "top5": None}},
            "evaluated_on": "cpu",
        },
        "variants": variants,
    }


@pytest.fixture
def make_variant() -> Callable[..., dict]:
    return _hand_made_variant


@pytest.fixture
def make_results() -> Callable[..., dict]:
    return _hand_made_results


def pytest_addoption(parser):
    parser.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="Rewrite tests/golden/ expected outputs from the current code (or set UPDATE_GOLDEN=1); "
        "review the diff before committing.",
    )


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory):
    """A real local Ray cluster (tests/ray_cluster.py): a head (1 CPU, no target) and a worker node
    (1 CPU, targets cpu and torch), shared by the tests that run on Ray."""
    pytest.importorskip("ray", reason="needs the ray extra (pip install -e '.[ray]')")
    from tests.ray_cluster import LocalCluster

    c = LocalCluster(tmp_path_factory.mktemp("ray"), pythonpath=Path(__file__).resolve().parent.parent)
    try:
        yield c.start([{}, {"target:cpu": 1, "target:torch": 1}])
    finally:
        c.stop()


@pytest.fixture(autouse=True)
def _torch_threads_restored():
    """Torch's thread count is process-global: a test (or an eval helper it calls) that sets it must
    not change how later tests train (a model trained with 1 thread differs from one with 2)."""
    import sys

    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    yield
    torch = sys.modules.get("torch")
    if torch is not None and before is not None and torch.get_num_threads() != before:
        torch.set_num_threads(before)
