"""Thin, typed wrappers over ONNX Runtime's quantization API, shared by the step, mixed precision
and the benchmark. Calibration runs once per model: its tensor ranges are cached in a JSON file
and every later re-quantization (mixed precision tries many) reuses them.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from compress.errors import StepError
from compress.sources.inputs import batch_size as batch_size_of
from compress.sources.inputs import bind, take

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
QUANTIZABLE_COMPUTE = ("Conv", "MatMul", "Gemm")  # what static QDQ quantizes and mixed precision ranks
#: attention ops of ORT's transformer fusions: a graph with one is a transformer
ATTENTION_OPS = ("Attention", "MultiHeadAttention")


@dataclass(frozen=True)
class StaticSettings:
    """Everything quantize_static needs besides the data, in compress's vocabulary."""

    format: str = "qdq"
    activation_type: str = "uint8"
    weight_type: str = "int8"
    per_channel: bool = True
    symmetric_activations: bool = False
    symmetric_weights: bool = True
    reduce_range: bool = False
    calibration: str = "minmax"
    percentile: float = 99.999
    exclude_nodes: tuple[str, ...] = ()
    op_types: tuple[str, ...] | None = None  # None: every op type ORT can quantize
    # also quantize MatMuls of two activations (attention scores and probabilities x values)
    activation_matmuls: bool = True
    # graph rewrites the quantize step applies before quantize_static (compress/quantization/rewrite.py)
    pad_channels: int = 0
    channel_pads_as_convs: bool = False
    extra: dict = field(default_factory=dict)


def qtype(name: str):
    from onnxruntime.quantization import QuantType

    return {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}[name]


def calibration_method(name: str):
    from onnxruntime.quantization import CalibrationMethod

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    if name not in methods:
        raise StepError(f"unknown calibration method {name!r}; valid: {', '.join(methods)}")
    return methods[name]


class BatchReader:
    """Feeds calibration batches of named inputs to ORT's calibrator (its CalibrationDataReader
    protocol), reading each batch only when the calibrator asks for it."""

    def __init__(self, batches: Iterable[Mapping[str, np.ndarray]], input_names: Sequence[str],
                 advance: Callable[[], None] | None = None, pad_to: int | None = None):
        self._batches = batches  # re-iterable (Split.stream): rewind reads the data again
        self._it = iter(self._batches)
        self._names = list(input_names)
        self._advance = advance
        self._pad_to = pad_to

    def get_next(self):
        batch = next(self._it, None)
        if batch is None:
            return None
        if self._advance is not None:
            self._advance()
        if self._pad_to is not None:
            batch = pad_sequences(batch, self._pad_to)
        return bind(batch, self._names, "the model being calibrated")

    def rewind(self):
        self._it = iter(self._batches)

    def __len__(self) -> int:
        return len(self._batches)


def pad_sequences(batch: Mapping[str, np.ndarray], length: int) -> dict[str, np.ndarray]:
    """Text inputs (2-D integer arrays: batch x sequence) right-padded with 0 to ``length`` tokens.

    ORT's histogram calibrators (entropy, percentile) stack every batch's activations into one
    array, which fails when batches have different sequence lengths; the zero attention mask keeps
    the padded positions out of the real tokens' attention (they still add their own activations
    to the histograms). Other inputs are returned as they are.
    """
    out = {}
    for name, value in batch.items():
        if value.ndim == 2 and np.issubdtype(value.dtype, np.integer) and value.shape[1] < length:
            value = np.pad(value, ((0, 0), (0, length - value.shape[1])))
        out[name] = value
    return out


def quantizable_op_types(mode: str) -> set[str]:
    """The op types ONNX Runtime's quantizer has a rule for in this mode (what quantize_static
    and quantize_dynamic take when op_types_to_quantize is left unset)."""
    from onnxruntime.quantization.registry import (
        IntegerOpsRegistry,
        QDQRegistry,
        QLinearOpsRegistry,
    )

    if mode == "dynamic":  # quantize_dynamic rewrites Gemm as MatMul + Add, then quantizes the MatMul
        return set(IntegerOpsRegistry) | {"Gemm"}
    return set(QLinearOpsRegistry) | set(QDQRegistry)


def default_op_types(mode: str, transformer: bool, ops: Mapping[str, int]) -> list[str] | None:
    """What the quantize step quantizes unless told. Dynamic: MatMul, Gemm and fused Attention
    (QAttention). Static, transformer: MatMul only: int8 Softmax, LayerNorm, Add or the embeddings'
    Gather cost accuracy and add quantize/dequantize pairs, and its Gemms are the pooler and the
    classifier (little compute; a static QDQ Gemm also clips the logits to the calibrated range:
    on a tiny random BERT (tests) they moved them 8x more than all its MatMuls). Static, otherwise:
    None, every op type ORT quantizes (conv nets: Conv, Add, pooling all run in int8)."""
    if mode == "dynamic":
        return ["MatMul", "Gemm"] + (["Attention"] if ops.get("Attention") else [])
    return ["MatMul"] if transformer else None


def is_transformer(path: Path) -> bool:
    """A graph with attention: a fused Attention op, or a MatMul of two computed tensors (scores
    or probabilities x values) feeding or fed by a Softmax."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    ops = {n.op_type for n in model.graph.node}
    if ops & set(ATTENTION_OPS):
        return True
    return "Softmax" in ops and bool(activation_matmuls(model))


def contrib_ops(path: Path) -> list[str]:
    """Op types from ONNX Runtime's own domain (com.microsoft: fused Attention, SkipLayerNormalization,
    ...), which only ONNX Runtime runs."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return sorted({n.op_type for n in model.graph.node if n.domain == "com.microsoft"})


def activation_matmuls(model) -> list[str]:
    """Names of the MatMuls whose inputs are both computed (no weight): attention's."""
    consts = {i.name for i in model.graph.initializer}
    consts |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    return [n.name for n in model.graph.node
            if n.op_type == "MatMul" and not any(i in consts for i in n.input)]


def input_names(path: Path) -> list[str]:
    """The graph inputs that are not initializers: what a feed must name."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in inits]


def compute_nodes(path: Path) -> list[tuple[str, str]]:
    """(name, op_type) of the Conv/MatMul/Gemm nodes, in graph order: what mixed precision ranks."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return [(n.name, n.op_type) for n in model.graph.node if n.op_type in QUANTIZABLE_COMPUTE]


def preprocess(src: Path, out: Path) -> Path:
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(src), str(out), skip_symbolic_shape=True)
    except Exception as err:
        raise StepError(f"quant_pre_process failed ({err}); set quantize.preprocess: false") from err
    return out


def quantize_static_file(src: Path, out: Path, s: StaticSettings, *, reader=None,
                         cache_path: Path | None = None) -> Path:
    """quantize_static with settings ``s``; ``cache_path`` stores/reuses the calibration ranges."""
    import onnx
    from onnxruntime.quantization import QuantFormat, quantize_static

    extra = {"ActivationSymmetric": s.symmetric_activations, "WeightSymmetric": s.symmetric_weights,
             "MatMulConstBOnly": not s.activation_matmuls,
             # ORT's contrib ops (fused Attention, SkipLayerNormalization) have no ONNX shape
             # inference: their outputs are float
             "DefaultTensorType": onnx.TensorProto.FLOAT, **s.extra}
    if s.calibration == "percentile":
        extra["CalibPercentile"] = s.percentile
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            quantize_static(
                str(src), str(out), reader,
                quant_format=QuantFormat.QDQ if s.format == "qdq" else QuantFormat.QOperator,
                op_types_to_quantize=list(s.op_types) if s.op_types is not None else None,
                per_channel=s.per_channel, reduce_range=s.reduce_range,
                activation_type=qtype(s.activation_type), weight_type=qtype(s.weight_type),
                nodes_to_exclude=list(s.exclude_nodes) or None,
                calibrate_method=calibration_method(s.calibration), extra_options=extra,
                calibration_cache_path=str(cache_path) if cache_path is not None else None,
            )
        except StepError:
            raise
        except Exception as err:
            raise StepError(f"ONNX Runtime quantize_static failed: {type(err).__name__}: {err}") from err
    return out


def quantize_dynamic_file(src: Path, out: Path, s: StaticSettings) -> Path:
    """quantize_dynamic of ``s.op_types`` (default MatMul, Gemm) with the weight settings of ``s``."""
    import onnx
    from onnxruntime.quantization import quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            quantize_dynamic(
                str(src), str(out), weight_type=qtype(s.weight_type), per_channel=s.per_channel,
                reduce_range=s.reduce_range, op_types_to_quantize=list(s.op_types or ("MatMul", "Gemm")),
                nodes_to_exclude=list(s.exclude_nodes) or None,
                extra_options={"WeightSymmetric": s.symmetric_weights,
                               "MatMulConstBOnly": not s.activation_matmuls,
                               "DefaultTensorType": onnx.TensorProto.FLOAT},
            )
        except Exception as err:
            raise StepError(f"ONNX Runtime quantize_dynamic failed: {type(err).__name__}: {err}") from err
    return out


class OrtRunner:
    """A CPU ONNX Runtime session for the build machine's own measurements (tuning accuracy)."""

    def __init__(self, path: Path, threads: int | None = None):
        import onnxruntime as ort

        from compress.runtimes.onnxruntime import make_session_options

        self.sess = ort.InferenceSession(str(path), make_session_options(threads),
                                         providers=["CPUExecutionProvider"])
        self.names = [i.name for i in self.sess.get_inputs()]

    def run(self, inputs: Mapping[str, np.ndarray]):
        return self.sess.run(None, bind(inputs, self.names, "this ONNX model"))

    def logits(self, x: Mapping[str, np.ndarray], batch_size: int = 64) -> np.ndarray:
        n = batch_size_of(x)
        outs = [self.run(take(x, slice(i, i + batch_size)))[0] for i in range(0, n, batch_size)]
        return np.concatenate(outs).astype(np.float32)
