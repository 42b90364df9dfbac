"""ONNX Runtime int8 quantization: static (calibrated) for conv nets, dynamic for MatMul/Gemm models.

Defaults are the settings that are fast on x86 CPUs with ONNX Runtime: QDQ with *uint8* activations
and per-channel *int8* weights (U8S8). ORT's own defaults (int8 activations) leave most convolutions
unfused on x86 and make ResNet-18 slower than fp32 (docs/quantization.md has the measurements).
"""

from __future__ import annotations

import warnings
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from compress.artifacts import Artifact, digest_of
from compress.errors import StepError
from compress.onnx_inspect import int8_coverage, source_op_counts
from compress.progress import track
from compress.steps.base import StepConfig, StepContext, register_step


class CalibrationConfig(StepConfig):
    method: Literal["minmax", "entropy", "percentile"] = "minmax"
    percentile: float = Field(99.999, description="For method: percentile; in (0, 100]")
    samples: int = Field(256, ge=1, description="Calibration images drawn from the calibration split")
    batch_size: int = Field(32, ge=1)

    @model_validator(mode="after")
    def _pct(self):
        if not 0 < self.percentile <= 100:
            raise ValueError(f"percentile must be in (0, 100], got {self.percentile}")
        return self


class QuantizeConfig(StepConfig):
    mode: Literal["static", "dynamic"] = "static"
    format: Literal["qdq", "qoperator"] = "qdq"
    activation_type: Literal["uint8", "int8"] = Field(
        "uint8", description="uint8 (U8S8) is what x86 VNNI kernels fuse; int8 is for GPUs/TensorRT"
    )
    weight_type: Literal["int8", "uint8"] = "int8"
    per_channel: bool = True
    symmetric_activations: bool = False
    symmetric_weights: bool = True
    reduce_range: bool = Field(False, description="7-bit weights, for CPUs without VNNI")
    calibration: CalibrationConfig = Field(default_factory=CalibrationConfig)
    preprocess: bool = Field(True, description="Run ORT's quant_pre_process (shape inference, fusions)")
    exclude_nodes: list[str] = Field(default_factory=list, description="Node names kept in float")
    exclude_op_types: list[str] = Field(default_factory=list, description="Op types kept in float")


def _qtype(name: str):
    from onnxruntime.quantization import QuantType

    return {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}[name]


class _Reader:
    """Feeds calibration batches to ORT's calibrator."""

    def __init__(self, batches, input_name: str, advance):
        self._it = iter(batches)
        self._name = input_name
        self._advance = advance

    def get_next(self):
        batch = next(self._it, None)
        if batch is None:
            return None
        self._advance()
        return {self._name: batch}

    def rewind(self):  # pragma: no cover - ORT calls it only for some calibrators
        pass


def _input_name(path) -> str:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    return next(i.name for i in model.graph.input if i.name not in inits)


@register_step("quantize", config=QuantizeConfig, accepts={"onnx"}, produces="onnx")
def apply(art: Artifact, cfg: QuantizeConfig, ctx: StepContext) -> Artifact:
    """Quantize an ONNX model to int8 with ONNX Runtime and count what really runs in int8."""
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        quantize_dynamic,
        quantize_static,
    )

    src = art.path
    ops = source_op_counts(src)
    if cfg.preprocess:
        from onnxruntime.quantization.shape_inference import quant_pre_process

        pre = ctx.workdir / "preprocessed.onnx"
        try:
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        except Exception as err:
            raise StepError(f"quant_pre_process failed ({err}); set quantize.preprocess: false") from err
        src = pre
    out = ctx.workdir / "model.onnx"
    extra = {
        "ActivationSymmetric": cfg.symmetric_activations,
        "WeightSymmetric": cfg.symmetric_weights,
    }
    meta = dict(art.meta)
    if cfg.mode == "dynamic":
        n_mm = ops.get("MatMul", 0) + ops.get("Gemm", 0)
        if n_mm == 0:
            raise StepError(
                "quantize mode 'dynamic' quantizes MatMul/Gemm only, and this model has none; "
                "use mode: static for convolutional models"
            )
        if ops.get("Conv", 0):
            ctx.notes.append(
                f"dynamic quantization applied to MatMul/Gemm only; the {ops['Conv']} Conv ops stay "
                "float (dynamic ConvInteger is about 5x slower than fp32 on x86: use mode: static)"
            )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_dynamic(
                str(src), str(out), weight_type=_qtype(cfg.weight_type), per_channel=cfg.per_channel,
                reduce_range=cfg.reduce_range, op_types_to_quantize=["MatMul", "Gemm"],
                nodes_to_exclude=cfg.exclude_nodes or None, extra_options=extra,
            )
    else:
        split = ctx.data("calibration")
        rng = np.random.default_rng(ctx.seed)
        n = min(cfg.calibration.samples, len(split))
        idx = np.sort(rng.choice(len(split), size=n, replace=False))
        bs = cfg.calibration.batch_size
        batches = [split.inputs(idx[i : i + bs]) for i in range(0, n, bs)]
        method = {
            "minmax": CalibrationMethod.MinMax,
            "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile,
        }[cfg.calibration.method]
        if cfg.calibration.method == "percentile":
            extra["CalibPercentile"] = cfg.calibration.percentile
        op_types = None
        if cfg.exclude_op_types:
            present = set(ops)
            op_types = sorted(present - set(cfg.exclude_op_types))
        with track(ctx.progress, "calibrating", len(batches)) as advance, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                quantize_static(
                    str(src), str(out), _Reader(batches, _input_name(src), advance),
                    quant_format=QuantFormat.QDQ if cfg.format == "qdq" else QuantFormat.QOperator,
                    op_types_to_quantize=op_types, per_channel=cfg.per_channel,
                    reduce_range=cfg.reduce_range, activation_type=_qtype(cfg.activation_type),
                    weight_type=_qtype(cfg.weight_type), nodes_to_exclude=cfg.exclude_nodes or None,
                    calibrate_method=method, extra_options=extra,
                )
            except Exception as err:
                raise StepError(f"ONNX Runtime quantize_static failed: {type(err).__name__}: {err}") from err
        meta["calibration_samples"] = n
    coverage = int8_coverage(out)
    if not coverage.int8 or not any(coverage.int8.values()):
        raise StepError(
            "quantization produced no int8 operator (coverage: " + coverage.summary() + "); the "
            "model has no op ONNX Runtime can quantize, or every one was excluded"
        )
    meta["int8_coverage"] = coverage.to_dict()
    meta["quantization"] = {
        "mode": cfg.mode, "format": cfg.format, "activations": cfg.activation_type,
        "weights": cfg.weight_type, "per_channel": cfg.per_channel,
        "calibration": cfg.calibration.method if cfg.mode == "static" else None,
    }
    label = f"quantize({cfg.mode}, {'U' if cfg.activation_type == 'uint8' else 'S'}8"
    label += f"{'U' if cfg.weight_type == 'uint8' else 'S'}8)"
    return Artifact(
        kind="onnx",
        digest=digest_of(art.digest, "quantize", cfg.model_dump(), ctx.seed,
                         ctx.splits["calibration"].fingerprint() if cfg.mode == "static" else None),
        path=out, lineage=[*art.lineage, label], meta=meta,
    )
