"""Building blocks of eval/bench_transformers.py: export, ORT fusion and quantization, NNCF, pruning.

Each builder takes a file (or a torch module) and writes one variant; the runners give every
variant the same ``run(mapping of named arrays) -> logits`` interface for accuracy and timing.
ORT sessions never busy-wait (``session.intra_op.allow_spinning=0``): on a shared 2-core machine
spinning threads steal the cores the other variants and jobs need.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import numpy as np

# --- export --------------------------------------------------------------------------------------


class Logits:
    """Wraps a Hugging Face classifier so that forward(**inputs) returns the logits tensor."""

    def __new__(cls, model):
        import torch

        class _Logits(torch.nn.Module):
            def __init__(self, inner):
                super().__init__()
                self.inner = inner

            def forward(self, input_ids, attention_mask, token_type_ids=None):
                return self.inner(input_ids=input_ids, attention_mask=attention_mask,
                                  token_type_ids=token_type_ids).logits

        return _Logits(model)


def export(module, example: Mapping[str, np.ndarray], path: Path, dynamic_axes: dict, opset: int = 17) -> Path:
    """Legacy (TorchScript) export: named inputs, output ``logits``, the given dynamic axes."""
    import torch

    from compress.sources.inputs import to_torch

    path.parent.mkdir(parents=True, exist_ok=True)
    names = list(example)
    tensors = to_torch(example)
    args = tuple(tensors[n] for n in names)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), args, str(path), input_names=names, output_names=["logits"],
                          dynamic_axes={**dynamic_axes, "logits": {0: "batch"}}, opset_version=opset,
                          dynamo=False, do_constant_folding=True)
    return path


# --- ONNX Runtime --------------------------------------------------------------------------------


def fuse(src: Path, out: Path, model_type: str, num_heads: int, hidden_size: int) -> tuple[Path, dict]:
    """ORT's transformer optimizer (Attention / SkipLayerNorm / Gelu fusions); returns the fused op counts."""
    from onnxruntime.transformers.optimizer import optimize_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = optimize_model(str(src), model_type=model_type, num_heads=num_heads, hidden_size=hidden_size,
                           opt_level=0)
    fused = {k: v for k, v in m.get_fused_operator_statistics().items() if v}
    m.save_model_to_file(str(out))
    return out, fused


def quantize_dynamic(src: Path, out: Path, *, fused: bool = False, **kwargs) -> Path:
    """``onnxruntime.quantization.quantize_dynamic``; with no kwargs, its defaults (Optimum's dynamic path).

    ``fused``: the input came from ORT's transformer optimizer, whose com.microsoft ops ONNX shape
    inference cannot type; tensors it leaves untyped are float (``DefaultTensorType``)."""
    import onnx
    from onnxruntime.quantization import quantize_dynamic as qd

    if fused:
        kwargs["extra_options"] = {"DefaultTensorType": onnx.TensorProto.FLOAT, **kwargs.get("extra_options", {})}

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qd(str(src), str(out), **kwargs)
    return out


def quantize_static_qdq(src: Path, out: Path, batches: list[dict], *, activation: str = "int8",
                        per_channel: bool = True, preprocess: bool = True) -> Path:
    """Static QDQ int8 of the MatMuls through compress's ORT path (S8S8 per-channel MinMax by default)."""
    from compress.quantization.ort import (
        BatchReader,
        StaticSettings,
        input_names,
        quantize_static_file,
    )
    from compress.quantization.ort import preprocess as pre

    if preprocess:
        src = pre(src, out.with_suffix(".pre.onnx"))  # skip_symbolic_shape=True: the ViT's Reshape
    settings = StaticSettings(format="qdq", activation_type=activation, weight_type="int8",
                              per_channel=per_channel, symmetric_activations=activation == "int8",
                              symmetric_weights=True, reduce_range=False, calibration="minmax",
                              op_types=("MatMul",))
    return quantize_static_file(src, out, settings, reader=BatchReader(batches, input_names(src)))


class OrtRun:
    """A CPU ONNX Runtime session (compress's session options) that does not spin."""

    def __init__(self, path: Path, threads: int):
        import onnxruntime as ort

        from compress.runtimes.onnxruntime import make_session_options

        so = make_session_options(threads)
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.path = Path(path)
        self.sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        self.names = [i.name for i in self.sess.get_inputs()]

    def run(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        return self.sess.run(None, {n: inputs[n] for n in self.names})[0]


def executed_ops(path: Path) -> Counter:
    """Op types of the graph ORT executes (after its own optimisation): which fusions and int8 ops ran."""
    from compress.quantization.coverage import optimized_op_counts

    return optimized_op_counts(path)


# --- OpenVINO / NNCF ---------------------------------------------------------------------------


class OvRun:
    """OpenVINO on the CPU. Each input shape is compiled static once (faster than dynamic shapes).

    ``hint`` LATENCY runs one synchronous request. THROUGHPUT times ``requests`` concurrent
    requests of the whole batch and divides by their number (``time_run_ms``), as compress's
    openvino runtime does: the time per batch of a saturated server.
    """

    def __init__(self, path: Path, threads: int, hint: str = "LATENCY", requests: int = 2):
        import openvino as ov

        self.ov, self.core = ov, ov.Core()
        self.model = self.core.read_model(str(path))
        self.names = [i.get_any_name() for i in self.model.inputs]
        self.config = {"PERFORMANCE_HINT": hint, "INFERENCE_NUM_THREADS": threads}
        self.hint, self.requests = hint, requests
        self._compiled: dict = {}
        self._pools: dict = {}  # input shapes -> THROUGHPUT infer requests
        if hint == "THROUGHPUT":
            self.time_run_ms = self._time_concurrent_ms

    def _get(self, feed: Mapping[str, np.ndarray]):
        key = tuple(feed[n].shape for n in self.names)
        if key not in self._compiled:
            model = self.model.clone()
            model.reshape({port: self.ov.PartialShape(list(feed[n].shape))
                           for port, n in zip(model.inputs, self.names, strict=True)})
            self._compiled[key] = self.core.compile_model(model, "CPU", self.config)
        return self._compiled[key]

    def run(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        feed = {n: inputs[n] for n in self.names}
        return np.asarray(self._get(feed)(feed)[0])

    def run_dynamic(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """Any shape through one dynamic-shape compilation (accuracy over variable-length batches)."""
        if "dynamic" not in self._compiled:
            self._compiled["dynamic"] = self.core.compile_model(self.model, "CPU", self.config)
        return np.asarray(self._compiled["dynamic"]({n: inputs[n] for n in self.names})[0])

    def _time_concurrent_ms(self, inputs: Mapping[str, np.ndarray]) -> float:
        import time

        feed = {n: inputs[n] for n in self.names}
        key = tuple(feed[n].shape for n in self.names)
        if key not in self._pools:
            compiled = self._get(feed)
            self._pools[key] = [compiled.create_infer_request() for _ in range(self.requests)]
        pool = self._pools[key]
        t0 = time.perf_counter()
        for req in pool:
            req.start_async(feed)
        for req in pool:
            req.wait()
        return (time.perf_counter() - t0) * 1e3 / len(pool)


def nncf_int8(src: Path, out: Path, samples: Iterable[Mapping[str, np.ndarray]], *,
              transformer: bool = False, reuse: bool = False) -> tuple[Path, dict]:
    """``nncf.quantize`` on the OpenVINO model read from ``src`` with its defaults (optionally
    ``model_type=TRANSFORMER``); saves IR, returns its int8 / float op counts. ``reuse``: an IR
    already at ``out`` (an earlier run on the same work directory) is read instead."""
    import nncf
    import openvino as ov

    if reuse and out.is_file():
        fq = Counter(op.get_type_name() for op in ov.Core().read_model(str(out)).get_ordered_ops())
        return out, {"FakeQuantize": fq.get("FakeQuantize", 0), "MatMul": fq.get("MatMul", 0), "reused": True}

    model = ov.Core().read_model(str(src))
    names = [i.get_any_name() for i in model.inputs]
    items = [{n: s[n] for n in names} for s in samples]
    kwargs = {"model_type": nncf.ModelType.TRANSFORMER} if transformer else {}
    q = nncf.quantize(model, nncf.Dataset(items), subset_size=len(items), **kwargs)
    ov.save_model(q, str(out), compress_to_fp16=False)
    fq = Counter(op.get_type_name() for op in q.get_ordered_ops())
    return out, {"FakeQuantize": fq.get("FakeQuantize", 0), "MatMul": fq.get("MatMul", 0)}


# --- pruning and distillation -------------------------------------------------------------------


def _keep_rows(linear, rows) -> None:
    import torch

    with torch.no_grad():
        linear.weight = torch.nn.Parameter(linear.weight[rows].clone())
        if linear.bias is not None:
            linear.bias = torch.nn.Parameter(linear.bias[rows].clone())
    linear.out_features = len(rows)


def _keep_cols(linear, cols) -> None:
    import torch

    with torch.no_grad():
        linear.weight = torch.nn.Parameter(linear.weight[:, cols].clone())
    linear.in_features = len(cols)


def prune_ffn(pairs: list[tuple[object, object]], keep_fraction: float) -> int:
    """Keep the FFN neurons with the largest ||W_in row|| * ||W_out column|| in each (in, out)
    Linear pair; returns the neurons kept per layer."""
    import torch

    kept = 0
    for up, down in pairs:
        score = up.weight.detach().norm(dim=1) * down.weight.detach().norm(dim=0)
        kept = max(1, round(keep_fraction * score.numel()))
        rows = torch.sort(torch.topk(score, kept).indices).values
        _keep_rows(up, rows)
        _keep_cols(down, rows)
    return kept


def prune_bert(model, ffn_keep: float = 1.0, layers: list[int] | None = None):
    """FFN neurons and whole encoder layers of a HF BERT classifier; the config follows."""
    import torch

    enc = model.bert.encoder
    if layers is not None:
        enc.layer = torch.nn.ModuleList([enc.layer[i] for i in layers])
        model.config.num_hidden_layers = len(layers)
    if ffn_keep < 1.0:
        model.config.intermediate_size = prune_ffn(
            [(lay.intermediate.dense, lay.output.dense) for lay in enc.layer], ffn_keep)
    return model


def prune_vit(model, ffn_keep: float = 1.0, layers: list[int] | None = None):
    """FFN neurons and whole encoder layers of eval/vit_cifar.py's ViT (torch TransformerEncoder)."""
    import torch

    enc = model.transformer
    if layers is not None:
        enc.layers = torch.nn.ModuleList([enc.layers[i] for i in layers])
        enc.num_layers = len(layers)
    if ffn_keep < 1.0:
        prune_ffn([(lay.linear1, lay.linear2) for lay in enc.layers], ffn_keep)
    return model


def distill(student, teacher, batches: Callable[[int], Iterable], call: Callable, *, epochs: int,
            lr: float, temperature: float = 2.0, alpha: float = 0.7, max_steps: int | None = None,
            log=print) -> None:
    """Fine-tune ``student`` on ``alpha`` x KL(teacher || student at ``temperature``) + (1 - alpha) x CE,
    for ``epochs`` or ``max_steps`` steps, whichever ends first.

    ``batches(epoch)`` yields (inputs, labels); ``call(module, inputs)`` returns logits."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    steps = sum(1 for _ in batches(0)) * epochs
    steps = min(steps, max_steps) if max_steps else steps
    opt = torch.optim.AdamW(student.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1 - s / steps))
    teacher.eval()
    student.train()
    step = 0
    for epoch in range(epochs):
        for inputs, labels in batches(epoch):
            with torch.no_grad():
                soft = F.softmax(call(teacher, inputs) / temperature, dim=-1)
            logits = call(student, inputs)
            kd = F.kl_div(F.log_softmax(logits / temperature, dim=-1), soft, reduction="batchmean")
            loss = alpha * temperature**2 * kd + (1 - alpha) * F.cross_entropy(logits, labels)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            if step >= steps:
                break
        log(f"  distill epoch {epoch + 1}/{epochs}: {step} steps, last loss {loss.item():.3f}")
    student.eval()
