"""Transformers through the export step: a tiny Hugging Face BERT with dynamic batch and sequence
axes, verified on padded batches of real lengths, ONNX Runtime's transformer fusions recorded and
re-verified; a hand-written ViT through the image path; TensorRT profiles and peak memory for text."""

from __future__ import annotations

import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from compress.artifacts import Artifact
from compress.errors import InputError, StepError
from compress.report.markdown import variant_details, warnings_for
from compress.sources.data import Splits
from compress.sources.inputs import InputSpec, call_module, to_torch
from compress.sources.text import Encoded, pad_batch
from compress.steps.base import StepContext
from compress.steps.export import ExportConfig
from compress.steps.export import apply as export
from tests import fake_tensorrt

transformers = pytest.importorskip("transformers")

VOCAB, MAX_LEN = 100, 24
NAMES = ("input_ids", "attention_mask", "token_type_ids")


class Logits(torch.nn.Module):
    """A HF classifier called with keywords, returning the logits tensor (as the hf: source wraps it)."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.config = model.config

    def forward(self, **inputs):
        return self.model(**inputs).logits


def tiny_bert(attention: str = "eager", layers: int = 2) -> Logits:
    torch.manual_seed(0)
    config = transformers.BertConfig(hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
                                     intermediate_size=64, vocab_size=VOCAB, attn_implementation=attention)
    return Logits(transformers.BertForSequenceClassification(config).eval())


class TokenSplit:
    """A calibration split of token sequences of varying lengths, padded per batch (TextSplit's contract)."""

    role = "calibration"

    def __init__(self, n: int = 40, seed: int = 0):
        rng = np.random.default_rng(seed)
        lengths = rng.integers(3, MAX_LEN + 1, n)
        ids = [[2, *rng.integers(5, VOCAB, k - 2).tolist(), 3] for k in lengths]
        self.encoded = Encoded({"input_ids": ids, "token_type_ids": [[0] * len(i) for i in ids],
                                "attention_mask": [[1] * len(i) for i in ids]}, pad_token_id=0)
        self.input_spec = InputSpec.text(NAMES, MAX_LEN, VOCAB)

    def __len__(self):
        return len(self.encoded.features["input_ids"])

    def lengths(self):
        return self.encoded.lengths

    def inputs(self, idx):
        return pad_batch(self.encoded, np.asarray(idx)).inputs


def _ctx(tmp_path, split, spec, log=lambda _m: None):
    splits = Splits(calibration=split)
    return StepContext(splits=splits, model_spec=None, input_spec=spec, seed=0, workdir=tmp_path, log=log)


def _torch_artifact(module):
    return Artifact(kind="torch", digest="bert", module=module, lineage=["baseline"])


@pytest.fixture(scope="module")
def bert_export(tmp_path_factory):
    """The tiny BERT exported twice: plain (the default, optimize: none) and with fusions (auto)."""
    module, split = tiny_bert(), TokenSplit()
    plain_dir, fused_dir = tmp_path_factory.mktemp("plain"), tmp_path_factory.mktemp("fused")
    plain = export(_torch_artifact(module), ExportConfig(optimize="none"), _ctx(plain_dir, split, split.input_spec))
    logged = []
    fused = export(_torch_artifact(module), ExportConfig(optimize="auto"), _ctx(fused_dir, split, split.input_spec, logged.append))
    return module, split, plain, fused, logged


def _run_at(path, module, batch):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, batch)[0]
    with torch.inference_mode():
        want = call_module(module, to_torch(batch)).numpy()
    return got, want


@pytest.mark.parametrize("which", ["plain", "fused"])
def test_text_export_runs_at_two_batch_sizes_and_two_lengths(bert_export, which):
    module, split, plain, fused, _ = bert_export
    art = plain if which == "plain" else fused
    graph = onnx.load(str(art.path)).graph
    assert [i.name for i in graph.input] == list(NAMES)  # the spec's order
    assert [o.name for o in graph.output] == ["logits"]
    for i in graph.input:
        assert [d.dim_param for d in i.type.tensor_type.shape.dim] == ["batch", "sequence"]
    order = np.argsort(split.lengths(), kind="stable")
    shapes = set()
    for idx in (order[:3], order[-7:]):  # 3 short sentences, 7 long ones
        batch = split.inputs(np.sort(idx))
        shapes.add(batch["input_ids"].shape)
        got, want = _run_at(art.path, module, batch)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert len({s[0] for s in shapes}) == 2 and len({s[1] for s in shapes}) == 2, shapes


def test_the_step_verifies_on_two_padded_batches_of_different_shapes(bert_export):
    _, split, plain, _, _ = bert_export
    shapes = plain.meta["export_verified_shapes"]
    assert len(shapes) == 2 and shapes[0][0] != shapes[1][0] and shapes[0][1] < shapes[1][1]
    assert shapes[1][1] == int(np.sort(split.lengths()[:64])[-1])  # padded to the longest, not max_length
    assert plain.meta["export_max_rel_error"] < 1e-4
    assert "transformer_fusions" not in plain.meta


def test_fusions_happen_by_default_for_text_and_are_recorded(bert_export):
    _, _, _, fused, logged = bert_export
    facts = fused.meta["transformer_fusions"]
    assert facts["model_type"] == "bert" and facts["num_heads"] == 2 and facts["hidden_size"] == 32
    assert facts["fused"]["Attention"] == facts["attention_layers"] == 2  # eager attention: every layer
    assert facts["fused"]["SkipLayerNormalization"] == 4 and facts["fused"]["EmbedLayerNormalization"] == 1
    assert facts["max_rel_error"] < 1e-3
    ops = {n.op_type for n in onnx.load(str(fused.path)).graph.node}
    assert {"Attention", "SkipLayerNormalization"} <= ops  # the file written is the fused one
    assert any("Attention 2 of 2 layers" in m for m in logged)
    entry = {"artifact": {"lineage": ["baseline", "export(onnx)"], "facts": fused.meta}}
    assert "ONNX Runtime transformer fusions: Attention 2 of 2 layers, EmbedLayerNormalization 1" in (
        variant_details("v", entry, "baseline"))
    assert warnings_for("v", entry, "baseline") == []


def test_sdpa_attention_fuses_no_attention_and_the_report_says_so(tmp_path):
    split = TokenSplit(n=12)
    art = export(_torch_artifact(tiny_bert("sdpa")), ExportConfig(optimize="auto"), _ctx(tmp_path, split, split.input_spec))
    facts = art.meta["transformer_fusions"]
    assert facts["fused"].get("Attention", 0) == 0 and facts["attention_implementation"] == "sdpa"
    entry = {"artifact": {"facts": art.meta}}
    (warning,) = warnings_for("v", entry, "baseline")
    assert "fused no Attention (0 of 2 layers, sdpa attention)" in warning and 'attn_implementation="eager"' in warning


def test_a_fused_model_that_disagrees_with_torch_is_refused(tmp_path, monkeypatch):
    import compress.steps.export as export_mod

    real = export_mod.fuse_transformer

    def fuse_then_break(src, out, settings):
        counts = real(src, out, settings)
        model = onnx.load(str(out))
        bias = next(i for i in model.graph.initializer if i.name.endswith("classifier.bias"))
        values = onnx.numpy_helper.to_array(bias) + 1.0
        bias.CopyFrom(onnx.numpy_helper.from_array(values.astype(np.float32), bias.name))
        onnx.save(model, str(out))
        return counts

    monkeypatch.setattr(export_mod, "fuse_transformer", fuse_then_break)
    split = TokenSplit(n=12)
    with pytest.raises(StepError, match="the ONNX model after transformer fusions disagrees with torch"):
        export(_torch_artifact(tiny_bert()), ExportConfig(optimize="auto"), _ctx(tmp_path, split, split.input_spec))


def test_transformer_fusions_are_refused_for_openvino():
    with pytest.raises(ValueError, match="OpenVINO cannot read"):
        ExportConfig(format="openvino", optimize="transformer")


class HandViT(torch.nn.Module):
    """A ViT written by hand: patches, a class token, nn.TransformerEncoder, a linear head."""

    def __init__(self, dim: int = 32, patch: int = 4, size: int = 16, classes: int = 10):
        super().__init__()
        self.patches = torch.nn.Conv2d(3, dim, patch, stride=patch)
        self.cls = torch.nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = torch.nn.Parameter(torch.randn(1, (size // patch) ** 2 + 1, dim) * 0.02)
        layer = torch.nn.TransformerEncoderLayer(dim, 2, 64, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = torch.nn.Linear(dim, classes)

    def forward(self, x):
        x = self.patches(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
        return self.head(self.encoder(x)[:, 0])


class ImageSplit:
    role = "calibration"

    def __init__(self, n=10):
        self.x = np.random.default_rng(0).standard_normal((n, 3, 16, 16)).astype(np.float32)

    def __len__(self):
        return len(self.x)

    def inputs(self, idx):
        return {"pixel_values": self.x[idx]}


def test_a_hand_written_vit_exports_through_the_image_path_and_preprocesses(tmp_path):
    from compress.quantization.ort import preprocess

    torch.manual_seed(0)
    module = HandViT().eval()
    ctx = StepContext(splits=Splits(calibration=ImageSplit()), model_spec=None, input_shape=(3, 16, 16),
                      seed=0, workdir=tmp_path, log=lambda _m: None)
    art = export(Artifact(kind="torch", digest="vit", module=module, lineage=["vit"]), ExportConfig(), ctx)
    assert "transformer_fusions" not in art.meta  # auto: image models are left as exported
    assert art.meta["export_max_rel_error"] < 1e-4
    (inp,) = onnx.load(str(art.path)).graph.input
    assert inp.name == "pixel_values"
    assert [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim] == ["batch", 3, 16, 16]
    # compress's quant_pre_process call skips symbolic shape inference (which asserts on this Reshape)
    out = preprocess(art.path, tmp_path / "pre.onnx")
    x = np.random.default_rng(1).standard_normal((5, 3, 16, 16)).astype(np.float32)
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"pixel_values": x})[0]
    with torch.inference_mode():
        np.testing.assert_allclose(got, module(torch.from_numpy(x)).numpy(), rtol=1e-4, atol=1e-4)


@pytest.fixture
def text_trt(monkeypatch):
    """The fake tensorrt module (NOT TensorRT) parsing networks with the text inputs, on a fake GPU."""
    import compress.engine.tensorrt as engine_mod

    monkeypatch.setattr(engine_mod, "gpu_identity", lambda device=0: {"gpu": "G", "compute_capability": "9.0"})
    monkeypatch.setattr(engine_mod, "driver_version", lambda: "550.54")
    monkeypatch.setattr(engine_mod, "tensorrt_cuda_major", lambda: "12")
    trt = fake_tensorrt.make("10.13.0", inputs=NAMES)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    return trt


def test_engine_profile_covers_batch_and_sequence_of_every_text_input(tmp_path, bert_export, text_trt):
    from compress.engine.tensorrt import build_engine

    trt = text_trt
    _, split, plain, _, _ = bert_export
    build_engine(plain.path, tmp_path / "e.plan", precision="fp32", input_spec=split.input_spec,
                 batch_min=1, batch_opt=4, batch_max=8, seq=(2, 16, MAX_LEN), workspace_bytes=1 << 20,
                 log=lambda _m: None, trt=trt)
    shapes = [c[1:] for c in trt.calls if c[0] == "set_shape"]
    assert shapes == [(n, (1, 2), (4, 16), (8, MAX_LEN)) for n in NAMES]
    assert sum(c[0] == "add_optimization_profile" for c in trt.calls) == 1


def test_engine_step_sets_sequence_range_from_max_length_and_refuses_fused_models(tmp_path, bert_export, text_trt):
    from compress.steps.engine import EngineConfig
    from compress.steps.engine import apply as engine

    trt = text_trt
    _, split, plain, fused, _ = bert_export
    ctx = _ctx(tmp_path, split, split.input_spec)
    out = engine(plain, EngineConfig(precision="fp32", batch_opt=4, batch_max=8, seq_opt=16), ctx)
    assert out.meta["tensorrt"]["sequence_profile"] == [1, 16, MAX_LEN]
    assert ("set_shape", "attention_mask", (1, 1), (4, 16), (8, MAX_LEN)) in trt.calls
    with pytest.raises(StepError, match="fused transformer ops .* TensorRT cannot parse: export it with optimize: none"):
        engine(fused, EngineConfig(precision="fp32"), ctx)
    with pytest.raises(StepError, match="seq_min <= seq_opt <= seq_max; with data.text.max_length 24"):
        engine(plain, EngineConfig(precision="fp32", seq_opt=30), ctx)


def test_peak_memory_of_a_text_model_is_measured_on_token_batches(bert_export):
    from compress.measure.memory import measure_memory
    from compress.recipe import TargetConfig

    _, split, plain, _, _ = bert_export
    cpu = TargetConfig(name="cpu", runtime="onnxruntime", device="cpu", threads=1)
    m = measure_memory(plain, cpu, split.input_spec, [1, 4], repeats=1)
    assert m["measured"] is True, m  # the subprocess fed input_ids/attention_mask/token_type_ids
    assert m["session_peak_bytes"] > 0


def test_input_spec_round_trips_through_json():
    import json

    for spec in (InputSpec.image((3, 8, 8)), InputSpec.text(["attention_mask", "input_ids"], 16, 50)):
        assert InputSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    with pytest.raises(ValueError, match="image or text"):
        InputSpec.from_dict({"kind": "audio"})


def test_step_context_takes_a_spec_or_an_image_shape():
    ctx = StepContext(splits=Splits(), model_spec=None, input_shape=(3, 8, 8), seed=0, workdir=".")
    assert ctx.input_spec == InputSpec.image((3, 8, 8))
    with pytest.raises(AttributeError, match="use ctx.input_spec"):
        ctx.input_shape  # noqa: B018
    with pytest.raises(TypeError, match="exactly one"):
        StepContext(splits=Splits(), model_spec=None, seed=0, workdir=".")


def test_input_spec_for_takes_a_text_split_spec_and_checks_image_shapes():
    from types import SimpleNamespace

    from compress.run.build import input_spec_for

    text = TokenSplit(n=4)
    recipe = SimpleNamespace(model=SimpleNamespace(input_shape=(3, 8, 8)))
    assert input_spec_for(recipe, {"heldout": text}) == text.input_spec
    images = SimpleNamespace(sample_shape=(3, 8, 8))
    assert input_spec_for(recipe, {"heldout": images}) == InputSpec.image((3, 8, 8))
    with pytest.raises(InputError, match=r"model.input_shape \[3, 8, 8\] does not match the data's samples \[3, 4, 4\]"):
        input_spec_for(recipe, {"heldout": SimpleNamespace(sample_shape=(3, 4, 4))})
