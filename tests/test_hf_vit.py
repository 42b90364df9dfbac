"""A saved Hugging Face ViTForImageClassification directory (hf:DIR, tiny config written here) through
the image path of a recipe: pixel_values in, its saved weights exported and verified, ONNX Runtime's
transformer fusions on request, dynamic int8."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("compress.sources.hf", reason="the hf: model source is not in this checkout")
transformers = pytest.importorskip("transformers")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import torch  # noqa: E402

import compress  # noqa: E402

PROFILE = {"batch_sizes": [1, 4], "rounds": 2, "warmup": 1, "min_round_s": 0.01, "warmup_max_s": 0.0,
           "max_extra_rounds": 0, "memory": False}


@pytest.fixture(scope="module")
def hf_vit_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hfvit")
    config = transformers.ViTConfig(
        image_size=8, patch_size=4, num_channels=3, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, num_labels=10, architectures=["ViTForImageClassification"])
    torch.manual_seed(0)
    model = transformers.ViTForImageClassification(config).eval()
    model.save_pretrained(str(folder / "vit"))
    rng = np.random.default_rng(0)
    np.savez(folder / "images.npz", images=rng.integers(0, 255, (120, 3, 8, 8), dtype=np.uint8),
             labels=np.arange(120) % 10)
    recipe = {
        "name": "hf-vit", "seed": 0,
        "model": {"source": "hf:vit", "input_shape": [3, 8, 8]},
        "data": {"source": "npz:images.npz", "split": {"train": 0.6, "calibration": 0.1, "heldout": 0.3},
                 "transform": {"normalize": [[0.5], [0.5]]}},
        "variants": {
            "onnx-fp32": {"steps": [{"export": {"format": "onnx"}}]},
            "onnx-fused": {"steps": [{"export": {"format": "onnx", "optimize": "transformer"}}]},
            "dynamic-int8": {"from": "onnx-fp32", "steps": [{"quantize": {"mode": "dynamic"}}]},
        },
        "targets": [{"name": "cpu", "runtime": "onnxruntime", "device": "cpu", "threads": 1}],
        "profile": PROFILE,
        "evaluate": {"bootstrap_resamples": 200, "robustness": {"when": "never"}},
        "gate": {"max_accuracy_drop": 100.0, "reference": "onnx-fp32"},
    }
    results = compress.run(recipe, base_dir=folder, out_dir=folder / "runs", log=None)
    return results, model


def _onnx(results, name: str) -> Path:
    return Path(results.run.run_dir) / "artifacts" / name / "model.onnx"


@pytest.mark.slow
def test_hf_vit_variants_build_and_the_export_takes_pixel_values(hf_vit_run):
    results, model = hf_vit_run
    assert {n: v.status for n, v in results.variants.items()} == {
        "onnx-fp32": "ok", "onnx-fused": "ok", "dynamic-int8": "ok"}, {
        n: v.error for n, v in results.variants.items()}
    session = ort.InferenceSession(str(_onnx(results, "onnx-fp32")), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["pixel_values"]
    x = np.random.default_rng(1).standard_normal((3, 3, 8, 8)).astype(np.float32)
    (got,) = session.run(None, {"pixel_values": x})
    with torch.no_grad():  # the saved weights, not a fresh initialisation
        np.testing.assert_allclose(got, model(pixel_values=torch.from_numpy(x)).logits.numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_hf_vit_fuses_only_on_request_and_quantizes_its_matmuls(hf_vit_run):
    results, _ = hf_vit_run
    assert results.variants["onnx-fp32"].artifact.facts.model_dump().get("transformer_fusions") is None
    fused_ops = {n.op_type for n in onnx.load(_onnx(results, "onnx-fused")).graph.node}
    assert fused_ops & {"Attention", "MultiHeadAttention", "SkipLayerNormalization", "LayerNormalization"}
    int8_ops = {n.op_type for n in onnx.load(_onnx(results, "dynamic-int8")).graph.node}
    assert "MatMulInteger" in int8_ops or "DynamicQuantizeMatMul" in int8_ops
