"""A hand-written ViT (eval/vit_cifar.py, nn.TransformerEncoder) through a whole recipe: the python:
factory at tiny sizes, its weights from model.checkpoint, ONNX export, dynamic and static int8, FFN
pruning with distillation; and a timm ViT through python: (skipped without timm)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import compress
from eval.vit_cifar import build

REPO = Path(__file__).resolve().parents[1]
TINY = {"image_size": 8, "patch_size": 4, "dim": 16, "depth": 2, "heads": 2, "mlp_dim": 32}
PROFILE = {"batch_sizes": [1], "rounds": 1, "warmup": 1, "min_round_s": 0.01, "warmup_max_s": 0.0,
           "max_extra_rounds": 0, "memory": False}


def _recipe(source: str, kwargs: dict, variants: dict, checkpoint: str | None = None) -> dict:
    return {
        "name": "vit-tiny", "seed": 0,
        "model": {"source": source, "kwargs": kwargs, "checkpoint": checkpoint, "input_shape": [3, 8, 8]},
        "data": {"source": "npz:images.npz", "split": {"train": 0.6, "calibration": 0.1, "heldout": 0.3},
                 "transform": {"normalize": [[0.5], [0.25]]}},
        "variants": variants,
        "targets": [{"name": "cpu", "runtime": "onnxruntime", "device": "cpu", "threads": 1}],
        "profile": PROFILE,
        "evaluate": {"bootstrap_resamples": 200, "robustness": {"when": "never"}},
        "gate": {"max_accuracy_drop": 100.0, "reference": "onnx-fp32"},
    }


def _run(folder: Path, variants: dict):
    recipe = _recipe(f"python:{REPO / 'eval' / 'vit_cifar.py'}:build", TINY, variants, "vit.pt")
    recipe["gate"]["reference"] = "onnx-fp32" if "onnx-fp32" in variants else "baseline"
    return compress.run(recipe, base_dir=folder, out_dir=folder / "runs", log=None)


@pytest.fixture(scope="module")
def vit_project(tmp_path_factory):
    """Images and a checkpoint of the tiny ViT (written here: no shared data)."""
    folder = tmp_path_factory.mktemp("vit")
    rng = np.random.default_rng(0)
    labels = np.arange(160) % 10
    images = (rng.uniform(0, 1, (10, 3, 8, 8))[labels] * 200 + rng.uniform(0, 55, (160, 3, 8, 8)))
    np.savez(folder / "images.npz", images=images.astype(np.uint8), labels=labels)
    torch.manual_seed(1)
    trained = build(**TINY).eval()  # stands for trained weights: anything but build()'s own init
    torch.save(trained.state_dict(), folder / "vit.pt")
    return folder, trained


@pytest.fixture(scope="module")
def vit_run(vit_project):
    """The tiny ViT from its checkpoint, exported, then dynamic and static int8."""
    folder, trained = vit_project
    return _run(folder, {
        "onnx-fp32": {"steps": [{"export": {"format": "onnx"}}]},
        "dynamic-int8": {"from": "onnx-fp32", "steps": [{"quantize": {"mode": "dynamic"}}]},
        "static-int8": {"from": "onnx-fp32", "steps": [{"quantize": {"mode": "static"}}]},
    }), trained


def _onnx(results, name: str) -> Path:
    return Path(results.run.run_dir) / "artifacts" / name / "model.onnx"


def test_every_vit_variant_builds_and_is_judged(vit_run):
    results, _ = vit_run
    assert {n: v.status for n, v in results.variants.items()} == {
        "onnx-fp32": "ok", "dynamic-int8": "ok", "static-int8": "ok"}
    assert results.verdict.exit_code == 0


def test_the_export_runs_the_checkpoint_weights_not_a_fresh_init(vit_run):
    results, trained = vit_run
    path = _onnx(results, "onnx-fp32")
    x = np.random.default_rng(2).standard_normal((3, 3, 8, 8)).astype(np.float32)
    (got,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"pixel_values": x})
    with torch.no_grad():
        np.testing.assert_allclose(got, trained(torch.from_numpy(x)).numpy(), rtol=1e-4, atol=1e-4)


def test_int8_variants_run_their_matmuls_in_int8(vit_run):
    results, _ = vit_run
    for name, int8_op in (("dynamic-int8", "MatMulInteger"), ("static-int8", "QuantizeLinear")):
        ops = {n.op_type for n in onnx.load(_onnx(results, name)).graph.node}
        assert int8_op in ops, (name, sorted(ops))


@pytest.mark.slow
def test_ffn_pruning_halves_the_ffn_and_keeps_the_residual_width(vit_project):
    results = _run(vit_project[0], {"pruned-ffn": {"steps": [
        {"prune": {"ratio": 0.5, "ignore": ["patch_embed.proj", "transformer.layers.*.self_attn*",
                                            "transformer.layers.*.linear2", "mlp_head*"],
                   "finetune": {"epochs": 1, "lr": 0.001, "distill": {}}}},
        {"export": {"format": "onnx"}}]}})
    assert results.variants["pruned-ffn"].status == "ok", results.variants["pruned-ffn"].error
    model = onnx.load(_onnx(results, "pruned-ffn"))
    shapes = [tuple(t.dims) for t in model.graph.initializer if len(t.dims) == 2]
    assert (16, 16) in shapes and (16, 48) in shapes  # attention (out proj, in proj) untouched: d_model 16
    assert not any(32 in s for s in shapes)  # FFN 32 -> 16 in both layers
    pruning = results.variants["pruned-ffn"].artifact.facts.pruning
    assert pruning["params_after"] < pruning["params_before"], pruning


TIMM_FACTORY = textwrap.dedent(
    """
    import timm


    def vit(num_classes=10, **kwargs):
        return timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=num_classes, **kwargs)
    """
)


@pytest.mark.slow
def test_a_timm_vit_through_python_source(tmp_path, tiny_project):
    pytest.importorskip("timm")
    folder = tiny_project(tmp_path)
    (folder / "timm_vit.py").write_text(TIMM_FACTORY)
    rng = np.random.default_rng(0)
    np.savez(folder / "images.npz", images=rng.integers(0, 255, (120, 3, 8, 8), dtype=np.uint8),
             labels=np.arange(120) % 10)
    variants = {"onnx-fp32": {"steps": [{"export": {"format": "onnx"}}]},
                "dynamic-int8": {"from": "onnx-fp32", "steps": [{"quantize": {"mode": "dynamic"}}]}}
    kwargs = {"img_size": 8, "patch_size": 4, "depth": 1}
    recipe = _recipe("python:timm_vit.py:vit", kwargs, variants)
    recipe["baseline"] = {"train": {"epochs": 1, "batch_size": 16, "lr": 0.001}}
    results = compress.run(recipe, base_dir=folder, out_dir=folder / "runs", log=None)
    assert {n: v.status for n, v in results.variants.items()} == {"onnx-fp32": "ok", "dynamic-int8": "ok"}
    ops = {n.op_type for n in onnx.load(_onnx(results, "dynamic-int8")).graph.node}
    assert "MatMulInteger" in ops


def test_the_eval_recipe_parses_and_its_patterns_name_modules_of_the_vit():
    import fnmatch

    import yaml

    from compress.recipe import parse_recipe

    recipe = parse_recipe(yaml.safe_load((REPO / "eval" / "vit.yaml").read_text()), origin="eval/vit.yaml")
    names = [n for n, _ in build().named_modules() if n]
    for name, variant in recipe.variants.items():
        for step, cfg in variant.step_list():
            if step != "prune":
                continue
            for pattern in [*cfg.ignore, *cfg.blocks]:
                assert any(fnmatch.fnmatchcase(n, pattern) for n in names), (name, pattern)
    layers = [n for n in names if fnmatch.fnmatchcase(n, "transformer.layers.[1-5]")]
    assert layers == [f"transformer.layers.{i}" for i in range(1, 6)]
