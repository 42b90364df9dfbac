"""Quantization of transformers: dynamic and static int8 of a tiny BERT (2 layers, hidden 32, eager
attention, exported with dynamic batch and sequence axes), the int8 coverage of its MatMuls and
fused Attention, NNCF's transformer model type, and the recipe errors for precisions a target
cannot run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from compress.artifacts import Artifact
from compress.errors import RecipeError
from compress.quantization.coverage import int8_coverage, optimized_op_counts
from compress.sources.data import Splits
from compress.sources.inputs import InputSpec
from compress.steps.base import StepContext
from compress.steps.quantize import NNCFConfig, QuantizeConfig, apply
from tests.text_fixtures import VOCAB, StandInTextSplit, export_tiny_bert

HIDDEN, HEADS = 32, 2
TEXT_SPEC = InputSpec.text(["input_ids", "attention_mask"], 24, VOCAB)


class TokenSplit(StandInTextSplit):
    """A text split of ``n`` samples of 4..23 tokens, batches padded to their own longest sample."""

    def __init__(self, role: str, n: int, seed: int):
        super().__init__(np.random.default_rng(seed).integers(4, 24, n), seed)
        self.role = role


@pytest.fixture(scope="module")
def bert_onnx(tmp_path_factory) -> Path:
    """A 2-layer BERT of hidden 32 (random weights), eager attention, exported with input_ids and
    attention_mask dynamic in batch and sequence."""
    pytest.importorskip("transformers")
    return export_tiny_bert(tmp_path_factory.mktemp("bert") / "bert.onnx", trained_like=True)


@pytest.fixture(scope="module")
def fused_bert_onnx(bert_onnx, tmp_path_factory) -> Path:
    """The same model after ONNX Runtime's transformer optimizer (fused Attention)."""
    from onnxruntime.transformers.optimizer import optimize_model

    opt = optimize_model(str(bert_onnx), model_type="bert", num_heads=HEADS, hidden_size=HIDDEN)
    assert opt.get_fused_operator_statistics()["Attention"] == 2
    path = tmp_path_factory.mktemp("fused") / "bert-fused.onnx"
    opt.save_model_to_file(str(path))
    return path


@pytest.fixture
def text_splits() -> Splits:
    return Splits(calibration=TokenSplit("calibration", 24, 1), tuning=TokenSplit("tuning", 24, 2))


@pytest.fixture
def quantize(tmp_path, text_splits):
    """``quantize(path, **config) -> (artifact, ctx)``, each call in its own work dir."""
    calls = iter(range(100))

    def run(path: Path, **config):
        workdir = tmp_path / f"work{next(calls)}"
        workdir.mkdir()
        ctx = StepContext(splits=text_splits, model_spec=None, input_spec=TEXT_SPEC, seed=0,
                          workdir=workdir, log=lambda _m: None)
        return apply(Artifact(kind="onnx", digest=path.stem, path=path), QuantizeConfig(**config), ctx), ctx

    return run


def _logits(path: Path, batch: dict) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, batch)[0]


def _close_on_two_lengths(fp32: Path, int8: Path) -> None:
    """The int8 model runs at two sequence lengths (and batch sizes) and stays near float."""
    for batch, seq in ((3, 7), (2, 19)):
        x = TokenSplit("heldout", batch, seq).inputs(np.arange(batch))
        x = {k: np.resize(v, (batch, seq)) for k, v in x.items()}
        ref, got = _logits(fp32, x), _logits(int8, x)
        assert got.shape == (batch, 2)
        assert np.abs(got - ref).max() < 0.1 * max(float(np.abs(ref).max()), 1e-3)


# --------------------------------------------------------------------------- dynamic


def test_dynamic_int8_runs_matmuls_in_int8_at_any_length(bert_onnx, quantize):
    art, ctx = quantize(bert_onnx, mode="dynamic")
    ops = optimized_op_counts(art.path)
    assert ops["DynamicQuantizeMatMul"] + ops["MatMulIntegerToFloat"] + ops["MatMulInteger"] > 0
    cov = art.meta["int8_coverage"]
    # the attention MatMuls (scores, probabilities x values) too: every MatMul/Gemm is int8
    assert cov["int8"]["MatMul/Gemm"] == cov["total"]["MatMul/Gemm"] > 0
    q = art.meta["quantization"]
    assert q["transformer"] is True and q["op_types"] == ["MatMul", "Gemm"]
    assert ctx.consumed == set()  # no calibration
    _close_on_two_lengths(bert_onnx, art.path)


def test_weight_only_matmuls_leave_attention_float(bert_onnx, quantize):
    art, _ = quantize(bert_onnx, mode="dynamic", activation_matmuls=False)
    cov = art.meta["int8_coverage"]
    # 2 layers x (scores, probabilities x values) stay float
    assert cov["total"]["MatMul/Gemm"] - cov["int8"]["MatMul/Gemm"] == 4
    assert art.meta["quantization"]["activation_matmuls"] is False


def test_dynamic_on_fused_attention_gives_qattention(fused_bert_onnx, quantize):
    art, _ = quantize(fused_bert_onnx, mode="dynamic")
    cov = art.meta["int8_coverage"]
    assert cov["int8"]["Attention"] == cov["total"]["Attention"] == 2
    assert "Attention" in art.meta["quantization"]["op_types"]
    assert "Attention 2/2" in cov["summary"]
    _close_on_two_lengths(fused_bert_onnx, art.path)


def test_static_on_fused_attention_says_what_stays_float(fused_bert_onnx, quantize):
    art, ctx = quantize(fused_bert_onnx, mode="static", calibration={"samples": 8})
    cov = art.meta["int8_coverage"]
    assert cov["int8"]["Attention"] == 0 and cov["total"]["Attention"] == 2
    assert cov["int8"]["MatMul/Gemm"] > 0
    assert any("2 fused Attention op(s) float" in n and "optimize: none" in n for n in ctx.notes)


def test_nncf_refuses_onnx_runtime_fused_ops(fused_bert_onnx, quantize):
    pytest.importorskip("nncf")
    from compress.errors import StepError

    with pytest.raises(StepError, match=r"cannot run ONNX Runtime's fused ops \(Attention, .*optimize: none"):
        quantize(fused_bert_onnx, backend="nncf")


def test_fused_attention_left_float_counts_as_float(fused_bert_onnx):
    cov = int8_coverage(fused_bert_onnx)
    assert cov.int8["Attention"] == 0 and cov.total["Attention"] == 2
    assert cov.compute_fraction == 0


# --------------------------------------------------------------------------- static


@pytest.mark.parametrize("method", ["minmax", "entropy"])
def test_static_qdq_quantizes_the_matmuls_only(bert_onnx, quantize, method):
    import onnx

    art, ctx = quantize(bert_onnx, mode="static", calibration={"method": method, "samples": 16,
                                                                 "batch_size": 4})
    assert ctx.consumed == {"calibration"}
    from onnx import TensorProto

    # calibrated on batches of different lengths; only MatMul/Gemm weights are int8 (the embedding
    # tables, LayerNorm scales and biases stay float) and ORT runs no other op in int8
    g = onnx.load(str(art.path)).graph
    int8_weights = {i.name for i in g.initializer
                    if i.data_type in (TensorProto.INT8, TensorProto.UINT8) and len(i.dims) > 1}
    dq_of_weight = {n.output[0] for n in g.node if n.op_type == "DequantizeLinear" and n.input[0] in int8_weights}
    readers = {n.op_type for n in g.node if set(n.input) & dq_of_weight}
    assert readers == {"MatMul"}  # the pooler's and classifier's Gemms stay float
    assert {i.name for i in g.initializer if "embeddings" in i.name and i.name.endswith("weight")} <= {
        i.name for i in g.initializer if i.data_type == TensorProto.FLOAT}
    ops = optimized_op_counts(art.path)
    assert {op for op in ops if op.startswith("QLinear") or op in ("QGemm", "QGather", "QAttention")} == {
        "QLinearMatMul"}
    cov = art.meta["int8_coverage"]
    assert cov["int8"]["MatMul/Gemm"] == cov["total"]["MatMul/Gemm"] - 2 > 0  # all but 2 Gemms
    assert ops["QLinearMatMul"] == cov["int8"]["MatMul/Gemm"]
    assert art.meta["quantization"]["op_types"] == ["MatMul"]
    _close_on_two_lengths(bert_onnx, art.path)


def test_explicit_op_types_win(bert_onnx, quantize):
    from compress.quantization.coverage import source_op_counts

    art, _ = quantize(bert_onnx, mode="static", op_types=["Gemm"], calibration={"samples": 8})
    cov = art.meta["int8_coverage"]
    # the pooler's and the classifier's Gemm; the encoder's MatMuls stay float
    assert cov["int8"]["MatMul/Gemm"] == source_op_counts(bert_onnx)["Gemm"] == 2
    assert cov["total"]["MatMul/Gemm"] > 2


# --------------------------------------------------------------------------- NNCF


@pytest.mark.slow
def test_nncf_transformer_type_gives_an_openvino_model_that_runs(bert_onnx, quantize):
    ov = pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    art, _ = quantize(bert_onnx, backend="nncf", nncf={"subset_size": 24})
    assert art.kind == "openvino"
    q = art.meta["quantization"]
    assert q["model_type"] == "transformer" and q["preset"] == "mixed"  # auto: the graph has attention
    assert q["fake_quantize_nodes"] > 0 and q["matmuls"] > 0
    compiled = ov.Core().compile_model(str(art.path), "CPU")
    for batch, seq in ((3, 7), (2, 19)):
        x = TokenSplit("heldout", batch, seq).inputs(np.arange(batch))
        x = {k: np.resize(v, (batch, seq)) for k, v in x.items()}
        got = np.asarray(compiled(x)[0])
        ref = _logits(bert_onnx, x)
        assert got.shape == (batch, 2)
        # on this tiny random BERT NNCF's transformer settings (mixed preset, SmoothQuant) move the
        # logits by 0.26 of the largest (its default type: 0.13); on the 4 x 256 BERT of
        # eval/bench_transformer_quant.py both stay under 0.01
        assert np.abs(got - ref).max() < 0.35 * max(float(np.abs(ref).max()), 1e-3)


@pytest.mark.slow
def test_nncf_accuracy_control_with_the_transformer_type(bert_onnx, quantize):
    pytest.importorskip("nncf")
    art, ctx = quantize(bert_onnx, backend="nncf",
                        nncf={"subset_size": 16, "accuracy_control": {"max_drop": 50}})
    q = art.meta["quantization"]
    assert art.kind == "openvino" and q["model_type"] == "transformer"
    assert q["accuracy_control"]["split"] == "tuning" and q["accuracy_control"]["max_drop_points"] == 50
    assert ctx.consumed == {"calibration", "tuning"}  # validated on tuning text batches


def test_nncf_detects_attention_in_onnx_and_openvino(bert_onnx, tmp_path, tiny_onnx_artifact):
    ov = pytest.importorskip("openvino")
    from compress.quantization.nncf import has_attention

    assert has_attention(bert_onnx, "onnx") and not has_attention(tiny_onnx_artifact.path, "onnx")
    ov.save_model(ov.Core().read_model(str(bert_onnx)), str(tmp_path / "bert.xml"))
    ov.save_model(ov.Core().read_model(str(tiny_onnx_artifact.path)), str(tmp_path / "cnn.xml"))
    assert has_attention(tmp_path / "bert.xml", "openvino")
    assert not has_attention(tmp_path / "cnn.xml", "openvino")


# --------------------------------------------------------------------------- bad options


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"mode": "dynamic", "op_types": ["Softmax"]}, "op_types: 'Softmax' is not an op type ONNX "
         "Runtime quantizes in mode dynamic; valid: Attention, Conv"),
        ({"op_types": ["Matmul"]}, "op_types: 'Matmul' is not an op type"),
        ({"op_types": []}, "op_types: an empty list"),
        ({"activation_matmul": True}, "Extra inputs are not permitted"),
        ({"mode": "dynamic", "target": "tensorrt"}, "TensorRT has no dynamic quantization"),
    ],
)
def test_bad_quantize_options(config, message):
    with pytest.raises(ValidationError, match=message):
        QuantizeConfig(**config)


def test_bad_nncf_model_type():
    with pytest.raises(ValidationError, match="model_type"):
        NNCFConfig(model_type="bert")


def _with_step(recipe: dict, step: dict, **target) -> dict:
    recipe["variants"]["half"] = {"from": "onnx-fp32", "steps": [step]}
    if target:
        recipe["targets"].append(target)
    return recipe


@pytest.mark.parametrize(
    ("step", "target", "message"),
    [
        ({"fp16": {"precision": "bfloat16"}}, {}, "variants.half.steps[0].fp16: precision: bfloat16: "
         "ONNX Runtime's CPU EP has no bfloat16 kernels"),
        ({"fp16": {"target": "cpu"}}, {}, "variants.half.steps[0].fp16: target: cpu is ONNX Runtime "
         "on cpu"),
        ({"fp16": {"target": "ov"}}, {"name": "ov", "runtime": "openvino"},
         "target: ov is openvino, where float16 is a run-time option"),
        ({"fp16": {"target": "gpu0"}}, {}, "variants.half.steps[0].fp16.target: unknown target 'gpu0'"),
        ({"quantize": {"op_types": ["Conv", "Relux"]}}, {},
         "variants.half.steps[0].quantize: op_types: 'Relux' is not an op type"),
    ],
)
def test_recipe_refuses_what_the_target_cannot_run(recipe_dict, step, target, message):
    from compress.recipe import parse_recipe

    with pytest.raises(RecipeError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_recipe(_with_step(recipe_dict, step, **target))


def test_fp16_for_a_cuda_target_is_valid(recipe_dict):
    from compress.recipe import parse_recipe

    parse_recipe(_with_step(recipe_dict, {"fp16": {"target": "gpu"}}, name="gpu", runtime="onnxruntime",
                            device="cuda"))


def test_openvino_bf16_on_a_cpu_without_bf16_exits_2(recipe_dict, write_recipe, cli, monkeypatch):
    from compress.cli import app
    from compress.quantization import targets

    monkeypatch.setattr(targets, "cpu_flags", lambda: {"avx2", "avx512f"})
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    recipe_dict["targets"].append({"name": "ov", "runtime": "openvino", "options": {"precision": "bf16"}})
    result = cli.invoke(app, ["validate", str(write_recipe(recipe_dict))])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "targets[1].options: precision: bf16 needs a CPU with avx512_bf16 or amx_bf16" in text
    monkeypatch.setattr(targets, "cpu_flags", lambda: {"avx512_bf16"})
    assert cli.invoke(app, ["validate", str(write_recipe(recipe_dict))]).exit_code == 0


# --------------------------------------------------------------------------- a whole text run


@pytest.mark.slow
def test_text_recipe_with_int8_variants_runs_end_to_end(tmp_path):
    """hf: BERT trained on a csv, then dynamic and static int8 in ONNX Runtime and NNCF for
    OpenVINO, each judged on held-out text: the calibration reads real text batches of varying
    length; the fused export (the default) takes dynamic int8 as QAttention."""

    from test_hf_text import run_text_recipe, text_recipe, write_bert, write_reviews


    pytest.importorskip("nncf")
    write_bert(tmp_path / "bert")
    write_reviews(tmp_path / "reviews.csv")
    recipe = text_recipe()
    recipe["variants"] = {
        "onnx": {"steps": [{"export": {"optimize": "transformer"}}]},
        "dynamic": {"from": "onnx", "steps": [{"quantize": {"mode": "dynamic"}}]},
        "plain": {"steps": [{"export": {"optimize": "none"}}]},
        "static": {"from": "plain", "steps": [{"quantize": {"calibration": {"samples": 32, "batch_size": 8}}}],
                   "targets": ["ort-cpu"]},
        "nncf": {"from": "plain", "steps": [{"quantize": {"backend": "nncf", "nncf": {"subset_size": 32}}}]},
    }
    recipe["targets"].append({"name": "ov-cpu", "runtime": "openvino", "device": "cpu"})
    recipe["evaluate"] = {"robustness": {"when": "never"}}
    run_dir, results = run_text_recipe(recipe, tmp_path)
    base = results["baseline"]["accuracy"]["heldout"]["top1"]
    facts = {name: v["artifact"]["facts"] for name, v in results["variants"].items()}
    for name in ("dynamic", "static", "nncf"):
        v = results["variants"][name]
        assert v["status"] == "ok", (name, v.get("error"))
        assert abs(v["accuracy"]["heldout"]["top1"] - base) <= 5, name
    assert facts["dynamic"]["int8_coverage"]["int8"]["Attention"] == 2  # fused by the export: QAttention
    assert facts["static"]["int8_coverage"]["compute_fraction"] > 0.8
    assert facts["static"]["quantization"]["op_types"] == ["MatMul"]
    assert facts["nncf"]["quantization"]["model_type"] == "transformer"


@pytest.mark.parametrize(
    ("quantization", "coverage", "cause"),
    [
        ({"mode": "static", "transformer": True, "activation_matmuls": True},
         {"int8": {"MatMul/Gemm": 8, "Attention": 0}, "total": {"MatMul/Gemm": 10, "Attention": 4}},
         "static QDQ leaves ONNX Runtime's fused Attention ops"),
        ({"mode": "dynamic", "transformer": True, "activation_matmuls": False},
         {"int8": {"MatMul/Gemm": 26}, "total": {"MatMul/Gemm": 34}},
         "activation_matmuls: false leaves attention's MatMuls"),
    ],
)
def test_the_report_names_why_a_transformer_s_coverage_is_low(quantization, coverage, cause):
    from compress.report.markdown import warnings_for

    tot = sum(coverage["total"].values())
    cov = {**coverage, "compute_fraction": sum(coverage["int8"].values()) / tot, "summary": "s"}
    (warning,) = warnings_for("int8", {"artifact": {"facts": {"int8_coverage": cov, "quantization": quantization}}},
                              "baseline")
    assert cause in warning
