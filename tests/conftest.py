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


@pytest.fixture
def tiny_model_file(tmp_path: Path) -> Path:
    """tiny_model.py with factories ``tiny_cnn`` and ``conv_only`` (for python:FILE.py:FACTORY)."""
    path = tmp_path / "tiny_model.py"
    path.write_text(TINY_MODEL_SOURCE)
    return path


@pytest.fixture
def tiny_module(tiny_model_file: Path):
    """An eval-mode tiny CNN with non-trivial batch-norm statistics."""
    import torch

    from compress.sources.models import ModelSpec

    torch.manual_seed(0)
    module = ModelSpec(f"python:{tiny_model_file.name}:tiny_cnn", {}, tiny_model_file.parent).build()
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return module.eval()


@pytest.fixture
def tiny_npz(tmp_path: Path) -> Path:
    """tiny.npz: 200 learnable 3x8x8 uint8 images (NCHW) with 10 balanced classes."""
    images, labels = learnable_images()
    path = tmp_path / "tiny.npz"
    np.savez(path, images=images, labels=labels)
    return path


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
        "profile": {"batch_sizes": [1, 4], "rounds": 2, "warmup": 1, "min_round_s": 0.01},
        "gate": {"max_accuracy_drop": 100.0, "reference": "onnx-fp32"},
    }
    return recipe


@pytest.fixture
def recipe_dict() -> dict:
    """A fresh, valid tiny recipe (as parsed YAML) that tests may mutate."""
    return _tiny_recipe()


@pytest.fixture
def write_recipe(tmp_path: Path, tiny_model_file: Path, tiny_npz: Path) -> Callable[..., Path]:
    """``write_recipe(data, name="recipe.yaml") -> path``: the recipe beside the tiny model and data."""

    def write(data: dict, name: str = "recipe.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    return write


@pytest.fixture
def cli() -> CliRunner:
    return CliRunner()
