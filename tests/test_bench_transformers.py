"""The building blocks of eval/bench_transformers.py on tiny models (no shared data, no downloads)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("onnxruntime")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "eval"))

import transformer_variants as tv  # noqa: E402
from transformer_setups import TEXT_INPUTS, EagerViTLayer, _pad_to  # noqa: E402

from compress.sources.text import Encoded  # noqa: E402


def tiny_bert(layers: int = 2):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=16, num_labels=3,
                        attn_implementation="eager")
    return BertForSequenceClassification(config).eval()


def text_batch(batch: int = 4, seq: int = 8) -> dict:
    rng = np.random.default_rng(0)
    mask = np.ones((batch, seq), dtype=np.int64)
    mask[-1, seq // 2:] = 0
    return {"input_ids": rng.integers(1, 50, (batch, seq)).astype(np.int64), "attention_mask": mask,
            "token_type_ids": np.zeros((batch, seq), dtype=np.int64)}


def torch_logits(module, batch) -> np.ndarray:
    with torch.no_grad():
        return module(*[torch.from_numpy(batch[n]) for n in TEXT_INPUTS]).numpy()


AXES = {n: {0: "batch", 1: "sequence"} for n in TEXT_INPUTS}


@pytest.mark.slow  # ORT's transformer optimizer and two quantizations: ~30 s on the loaded 2-core machine
def test_export_fuse_and_dynamic_quantize_a_tiny_bert(tmp_path):
    module = tv.Logits(tiny_bert())
    batch = text_batch()
    fp32 = tv.export(module, batch, tmp_path / "fp32.onnx", AXES)
    want = torch_logits(module, batch)
    # dynamic batch and sequence axes: a longer, larger batch runs too
    other = text_batch(batch=6, seq=12)
    np.testing.assert_allclose(tv.OrtRun(fp32, 1).run(other), torch_logits(module, other), atol=1e-4)
    fused, ops = tv.fuse(fp32, tmp_path / "fused.onnx", "bert", 2, 32)
    assert ops.get("Attention") == 2, ops  # eager attention: one fused Attention per layer
    assert ops.get("SkipLayerNormalization", 0) >= 2, ops
    np.testing.assert_allclose(tv.OrtRun(fused, 1).run(batch), want, atol=1e-4)
    dyn = tv.quantize_dynamic(fused, tmp_path / "dyn.onnx", fused=True)
    executed = tv.executed_ops(dyn)
    assert executed.get("QAttention", 0) == 2, executed  # the fused attention runs in int8
    got = tv.OrtRun(dyn, 1).run(batch)
    assert got.shape == want.shape and np.abs(got - want).max() < 0.5


@pytest.mark.slow  # ~26 s on the loaded 2-core machine
def test_static_qdq_quantizes_the_matmuls(tmp_path):
    module = tv.Logits(tiny_bert(layers=1))
    fp32 = tv.export(module, text_batch(), tmp_path / "fp32.onnx", AXES)
    cal = [text_batch(batch=1, seq=8) for _ in range(4)]
    out = tv.quantize_static_qdq(fp32, tmp_path / "qdq.onnx", cal, preprocess=False)
    import onnx

    ops = [n.op_type for n in onnx.load(str(out)).graph.node]
    assert ops.count("QuantizeLinear") > 0 and ops.count("MatMul") > 0
    assert tv.OrtRun(out, 1).run(text_batch()).shape == (4, 3)


def test_prune_ffn_drops_the_weakest_neurons_first():
    up, down = torch.nn.Linear(4, 6), torch.nn.Linear(6, 4)
    with torch.no_grad():
        up.weight[[1, 4]] = 0  # two dead neurons: nothing reaches them
        up.bias[[1, 4]] = -1  # ReLU(-1) = 0: they contribute nothing
    x = torch.randn(5, 4)
    before = down(torch.relu(up(x)))
    kept = tv.prune_ffn([(up, down)], 4 / 6)
    assert kept == 4 and up.weight.shape == (4, 4) and down.weight.shape == (4, 4)
    torch.testing.assert_close(down(torch.relu(up(x))), before)  # only the dead ones went


def test_prune_bert_layers_and_ffn_follow_the_config():
    model = tiny_bert(layers=3)
    tv.prune_bert(model, ffn_keep=0.5, layers=[0, 2])
    assert model.config.num_hidden_layers == 2 and len(model.bert.encoder.layer) == 2
    assert model.config.intermediate_size == 32
    assert all(lay.intermediate.dense.out_features == 32 for lay in model.bert.encoder.layer)
    assert torch_logits(tv.Logits(model), text_batch()).shape == (4, 3)


@pytest.mark.slow  # ~27 s on the loaded 2-core machine
def test_distill_moves_the_student_toward_the_teacher():
    teacher = tv.Logits(tiny_bert())
    with torch.no_grad():
        teacher.inner.classifier.weight.mul_(100)  # confident teacher logits, far from the student's
    student = tv.Logits(tv.prune_bert(tiny_bert(), ffn_keep=0.25))
    batch = {k: torch.from_numpy(v) for k, v in text_batch(batch=8).items()}
    labels = torch.zeros(8, dtype=torch.long)

    def call(m, x):
        return m(*[x[n] for n in TEXT_INPUTS])

    def gap():
        with torch.no_grad():
            return float((call(student, batch) - call(teacher, batch)).abs().mean())

    before = gap()
    tv.distill(student, teacher, lambda _e: [(batch, labels)] * 10, call, epochs=2, lr=1e-2, alpha=1.0,
               log=lambda _m: None)
    assert gap() < 0.75 * before


def test_eager_vit_layer_matches_torch_encoder_layer():
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(d_model=16, nhead=4, dim_feedforward=32, batch_first=True).eval()
    x = torch.randn(3, 5, 16)
    with torch.no_grad():
        torch.testing.assert_close(EagerViTLayer(layer).eval()(x), layer(x), atol=1e-5, rtol=1e-5)


def test_pad_to_keeps_tokens_and_masks_padding():
    enc = Encoded(features={"input_ids": [[2, 7, 3], [2, 3]], "attention_mask": [[1, 1, 1], [1, 1]]},
                  pad_token_id=0)
    out = _pad_to(enc, np.array([0, 1]), 6)
    assert out["input_ids"].tolist() == [[2, 7, 3, 0, 0, 0], [2, 3, 0, 0, 0, 0]]
    assert out["attention_mask"].sum(1).tolist() == [3, 2]
    assert out["token_type_ids"].shape == (2, 6) and not out["token_type_ids"].any()


def test_openvino_static_and_dynamic_shapes_agree(tmp_path):
    pytest.importorskip("openvino")
    module = tv.Logits(tiny_bert(layers=1))
    batch = text_batch()
    fp32 = tv.export(module, batch, tmp_path / "fp32.onnx", AXES)
    run = tv.OvRun(fp32, 1)
    np.testing.assert_allclose(run.run(batch), torch_logits(module, batch), atol=1e-3)
    np.testing.assert_allclose(run.run_dynamic(batch), torch_logits(module, batch), atol=1e-3)
    assert run.run(text_batch(batch=2, seq=5)).shape == (2, 3)  # a new shape compiles once more
