"""ONNX Runtime int8 quantization: static (calibrated) QDQ, or dynamic (weights int8, activations
quantized at run time) for MatMul/Attention models such as transformers.

Settings left unset come from the ``target``'s row in compress/quantization/targets.py (``auto``:
the build machine's CPU). On x86 that is QDQ with *uint8* activations and per-channel *int8*
weights (U8S8): ORT's own defaults (int8 activations) leave most convolutions unfused on x86 and
make ResNet-18 slower than fp32 (docs/steps/quantize.md has the table and the measurements).
After quantizing, the step counts which ops ORT really runs in int8, and with ``mixed_precision``
it keeps the layers that cost accuracy on the tuning split in float.
"""

from __future__ import annotations

import dataclasses
from typing import Literal, get_args

import numpy as np
from pydantic import Field, model_validator

from compress.artifacts import Artifact
from compress.errors import StepError
from compress.quantization.coverage import int8_coverage, int8_node_names, source_op_counts
from compress.quantization.nncf import NNCFConfig, quantize_nncf
from compress.quantization.ort import (
    QUANTIZABLE_COMPUTE,
    BatchReader,
    StaticSettings,
    compute_nodes,
    default_op_types,
    input_names,
    is_transformer,
    preprocess,
    quantizable_op_types,
    quantize_dynamic_file,
    quantize_static_file,
)
from compress.quantization.rewrite import rewrite_for_int8
from compress.quantization.targets import DEFAULTS, TARGET_NAMES, resolve_target
from compress.run.progress import track
from compress.sources.data import Batches
from compress.steps.base import StepConfig, StepContext, register_step

Target = Literal["auto", "x86-vnni", "x86", "arm", "cuda", "tensorrt"]
assert set(get_args(Target)) == set(TARGET_NAMES), "Target and targets.TARGET_NAMES must agree"


class CalibrationConfig(StepConfig):
    method: Literal["minmax", "entropy", "percentile"] = "minmax"
    percentile: float = Field(99.999, description="For method: percentile; in (0, 100]")
    samples: int = Field(256, ge=1, description="Calibration images drawn from the calibration split")
    batch_size: int = Field(32, ge=1)

    @model_validator(mode="after")
    def _pct(self):
        if not 0 < self.percentile <= 100:
            raise ValueError(f"calibration.percentile must be in (0, 100], got {self.percentile}")
        return self


class MixedPrecisionConfig(StepConfig):
    """Keep the most accuracy-sensitive layers in float until the tuning split is within tolerance."""

    max_drop_points: float = Field(
        0.5, ge=0, description="Tolerated top-1 drop (points) on the tuning split against the float model"
    )
    max_float_layers: int = Field(8, ge=1, description="At most this many Conv/MatMul/Gemm stay in float")
    tuning_samples: int = Field(1000, ge=1, description="Tuning images used (drawn from the tuning split)")
    sensitivity_samples: int = Field(256, ge=1, description="Tuning images used to rank the layers")
    latency_batch_size: int = Field(32, ge=1, description="Batch at which the float layers' latency cost is measured")


class QuantizeConfig(StepConfig):
    mode: Literal["static", "dynamic"] = "static"
    backend: Literal["onnxruntime", "nncf"] = Field(
        "onnxruntime", description="onnxruntime (ORT quantize_static/dynamic) or nncf (OpenVINO's NNCF)"
    )
    nncf: NNCFConfig | None = Field(None, description="Settings of backend: nncf")
    target: Target = Field(
        "auto", description="Hardware the int8 model is for; unset fields below come from its defaults "
        "(auto: this machine's CPU: x86-vnni, x86 or arm)"
    )
    format: Literal["qdq", "qoperator"] | None = None
    activation_type: Literal["uint8", "int8"] | None = Field(
        None, description="uint8 (U8S8) is what x86 kernels fuse; int8 for ARM, GPUs and TensorRT"
    )
    weight_type: Literal["int8", "uint8"] | None = None
    per_channel: bool | None = None
    symmetric_activations: bool | None = None
    symmetric_weights: bool | None = None
    reduce_range: bool | None = Field(None, description="7-bit weights, for x86 CPUs without VNNI")
    pad_channels: int | None = Field(
        None, ge=0, description="Zero-pad the input channels of each Conv to a multiple of this "
        "before quantizing (an RGB stem: 3 -> 4); the outputs are unchanged. 0: off; unset: the "
        "target's default (x86-vnni: 4, where ORT's int8 conv with 3 input channels is 2-3x slower than with 4)",
    )
    calibration: CalibrationConfig = Field(default_factory=CalibrationConfig)
    preprocess: bool = Field(True, description="Run ORT's quant_pre_process (shape inference, fusions)")
    exclude_nodes: list[str] = Field(default_factory=list, description="Node names kept in float")
    exclude_op_types: list[str] = Field(default_factory=list, description="Op types kept in float")
    op_types: list[str] | None = Field(
        None, description="Op types to quantize. Unset: mode dynamic: MatMul, Gemm and fused Attention "
        "(QAttention); mode static: MatMul for a transformer (a graph with attention), "
        "every op type ORT quantizes otherwise",
    )
    activation_matmuls: bool = Field(
        True, description="Also quantize MatMuls of two activations (attention's scores and "
        "probabilities x values), not only those with a weight (ORT's MatMulConstBOnly: false)",
    )
    channel_pads_as_convs: bool | None = Field(
        None, description="Run each zero Pad of the channel axis (with the strided Slices before "
        "it: option-A ResNet shortcuts) as a 1x1 Conv with 0/1 weights, which ORT runs in int8; "
        "the float function is unchanged. Unset: the target's default (x86-vnni: true)",
    )
    mixed_precision: MixedPrecisionConfig | None = Field(
        None, description="Accuracy-aware mixed precision on the tuning split (static mode only)"
    )

    @model_validator(mode="after")
    def _rules(self):
        if self.target == "auto":
            # resolved when the recipe is loaded, so the recipe as run and the cache key name the
            # target that was used (a cache shared with another kind of machine cannot mix them up)
            self.target = resolve_target("auto")
        if self.backend == "nncf" and self.mode != "static":
            raise ValueError("backend nncf does post-training static quantization; use mode: static")
        if self.nncf is not None and self.backend != "nncf":
            raise ValueError("the nncf settings need backend: nncf")
        if self.op_types is not None:
            valid = quantizable_op_types(self.mode)
            unknown = [t for t in self.op_types if t not in valid]
            if unknown or not self.op_types:
                raise ValueError(
                    f"op_types: {', '.join(map(repr, unknown)) or 'an empty list'} is not an op type "
                    f"ONNX Runtime quantizes in mode {self.mode}; valid: {', '.join(sorted(valid))}"
                )
        if self.mixed_precision is not None and self.mode != "static":
            raise ValueError("mixed_precision needs mode: static (it re-uses the calibration ranges)")
        if self.target == "tensorrt":
            if self.activation_type == "uint8" or self.weight_type == "uint8":
                raise ValueError("target tensorrt: TensorRT runs only int8 (symmetric) QDQ; "
                                 "remove activation_type/weight_type: uint8")
            if self.symmetric_activations is False or self.symmetric_weights is False:
                raise ValueError("target tensorrt: TensorRT needs zero points of 0; remove "
                                 "symmetric_activations/symmetric_weights: false")
            if self.format == "qoperator":
                raise ValueError("target tensorrt: TensorRT reads QDQ models; use format: qdq")
            if self.mode == "dynamic":
                raise ValueError("target tensorrt: TensorRT has no dynamic quantization (it reads "
                                 "calibrated QDQ models); use mode: static")
        return self


def resolve_settings(cfg: QuantizeConfig) -> tuple[str, StaticSettings]:
    """The target this config resolves to, and every quantize_static setting, explicit ones winning."""
    target = resolve_target(cfg.target)
    d = DEFAULTS[target].settings()
    for key in d:
        value = getattr(cfg, key, None)  # ``extra`` (quantize_static extra_options) is not a recipe key
        if value is not None:
            d[key] = value
    return target, StaticSettings(
        **d, calibration=cfg.calibration.method, percentile=cfg.calibration.percentile,
        exclude_nodes=tuple(cfg.exclude_nodes),
    )


def _calibration_batches(ctx: StepContext, cfg: CalibrationConfig) -> tuple[Batches, int, int | None]:
    """The calibration batches, read one at a time as the calibrator asks (never all in memory),
    the number of samples, and the sequence length text batches are padded to (None: as they come).

    Text batches are padded per batch (varying lengths): minmax takes them as they are; ORT's
    histogram calibrators stack every batch, so for entropy/percentile each is padded to the
    longest sample drawn."""
    split = ctx.data("calibration")
    rng = np.random.default_rng(ctx.seed)
    n = min(cfg.samples, len(split))
    if cfg.method != "minmax" and n > cfg.batch_size:
        # ORT's histogram calibrators (entropy, percentile) stack the batches with np.asarray and
        # fail on a shorter last batch: use whole batches only
        n -= n % cfg.batch_size
    idx = np.sort(rng.choice(len(split), size=n, replace=False))
    pad_to = None
    if cfg.method != "minmax" and hasattr(split, "lengths"):
        pad_to = int(np.asarray(split.lengths())[idx].max())
    return split.stream(cfg.batch_size, idx), n, pad_to


def _tuning_data(ctx: StepContext, mp: MixedPrecisionConfig) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``tuning_samples`` rows of the tuning split, in memory: mixed precision runs them many times."""
    if "tuning" not in ctx.splits:
        raise StepError(
            "quantize.mixed_precision needs a tuning split, disjoint from calibration and held-out; "
            "set data.split.tuning (e.g. 0.1) or data.sources.tuning"
        )
    tuning = ctx.data("tuning")
    overlap = set(tuning.sample_hashes()) & set(ctx.splits["calibration"].sample_hashes())
    if overlap:
        raise StepError(
            f"the tuning split shares {len(overlap)} images with the calibration split; mixed "
            "precision must be judged on images the calibration never saw: give disjoint sources"
        )
    rng = np.random.default_rng(ctx.seed + 1)
    n = min(mp.tuning_samples, len(tuning))
    idx = np.sort(rng.choice(len(tuning), size=n, replace=False))
    return tuning.inputs(idx), tuning.labels[idx]


def _dynamic(src, out, s: StaticSettings, ops, ctx: StepContext) -> None:
    n_mm = ops.get("MatMul", 0) + ops.get("Gemm", 0) + ops.get("Attention", 0)
    if n_mm == 0:
        raise StepError(
            "quantize mode 'dynamic' quantizes MatMul/Gemm/Attention only, and this model has none; "
            "use mode: static for convolutional models"
        )
    if ops.get("Conv", 0):
        ctx.notes.append(
            f"dynamic quantization applied to the {n_mm} MatMul/Gemm/Attention op(s) only; the {ops['Conv']} "
            "Conv ops stay float (dynamic ConvInteger is about 5x slower than fp32 on x86), so a "
            "conv net gains little: use mode: static for it"
        )
    quantize_dynamic_file(src, out, s)


def _produces(cfg: QuantizeConfig, _kind: str) -> str:
    if cfg.backend == "nncf":
        return (cfg.nncf or NNCFConfig()).output
    return "onnx"


def _apply_nncf(art: Artifact, cfg: QuantizeConfig, ctx: StepContext) -> Artifact:
    ncfg = cfg.nncf or NNCFConfig()
    path, kind, info = quantize_nncf(art.path, art.kind, ncfg, ctx, ctx.seed)
    meta = dict(art.meta)
    meta["quantization"] = {"mode": "static", "backend": "nncf", **info, "output": kind}
    if kind == "onnx":
        meta["int8_coverage"] = int8_coverage(path).to_dict()
    meta.pop("extra_files", None)
    return Artifact(
        kind=kind, path=path, lineage=[*art.lineage, f"quantize(nncf, {info['preset']}, {info['model_type']}, {kind})"], meta=meta,
    )


def _roles(cfg: QuantizeConfig) -> dict[str, str]:
    """Static quantization calibrates on calibration; mixed precision judges layers on tuning."""
    roles = {}
    if cfg.mode == "static":
        roles["calibration"] = "static quantization calibrates"
    if cfg.mixed_precision is not None:
        roles["tuning"] = "mixed_precision: ranks the layers by the accuracy they cost"
    if cfg.backend == "nncf" and cfg.nncf is not None and cfg.nncf.accuracy_control is not None:
        roles["tuning"] = "nncf.accuracy_control: validates the quantized model"
    return roles


def _check_input(cfg: QuantizeConfig, kind: str) -> str | None:
    if kind == "openvino" and cfg.backend != "nncf":
        return "an OpenVINO IR model is quantized with backend: nncf (ONNX Runtime quantizes ONNX files)"
    return None


@register_step(
    "quantize", config=QuantizeConfig, accepts={"onnx", "openvino"}, produces=_produces,
    roles=_roles, check_input=_check_input,
    example={"mode": "static", "calibration": {"samples": 32, "batch_size": 8}},
)
def apply(art: Artifact, cfg: QuantizeConfig, ctx: StepContext) -> Artifact:
    """Quantize to int8 (ONNX Runtime, or NNCF for OpenVINO) and count what really runs in int8."""
    if cfg.backend == "nncf":
        return _apply_nncf(art, cfg, ctx)
    if art.kind != "onnx":
        raise StepError(f"backend onnxruntime quantizes ONNX models, not {art.kind}; use backend: nncf")
    target, s = resolve_settings(cfg)
    ops = source_op_counts(art.path)
    if not any(ops.get(op, 0) for op in QUANTIZABLE_COMPUTE):
        raise StepError(
            "int8 quantization needs Conv, MatMul or Gemm ops, and this model has none "
            f"(its ops: {', '.join(sorted(ops)) or 'none'}); remove the quantize step"
        )
    transformer = is_transformer(art.path)
    op_types = cfg.op_types or default_op_types(cfg.mode, transformer, ops)
    if cfg.exclude_op_types:
        op_types = sorted(set(op_types or ops) - set(cfg.exclude_op_types))
    s = dataclasses.replace(s, op_types=tuple(op_types) if op_types is not None else None,
                            activation_matmuls=cfg.activation_matmuls)
    src = preprocess(art.path, ctx.workdir / "preprocessed.onnx") if cfg.preprocess else art.path
    out = ctx.workdir / "quantized-all.onnx"
    meta = dict(art.meta)
    mixed = None
    padded, pads_as_convs = [], []
    if cfg.mode == "static":
        src, pads_as_convs, padded = rewrite_for_int8(src, ctx.workdir / "rewritten.onnx",
                                                      pad_channels=s.pad_channels,
                                                      pads_as_convs=s.channel_pads_as_convs)
        # the channel Pads stay float: the input is padded, then quantized
        s = dataclasses.replace(s, exclude_nodes=s.exclude_nodes + tuple(p.pad_node for p in padded))
        if s.channel_pads_as_convs and not pads_as_convs and not cfg.preprocess and ops.get("Pad", 0):
            ctx.notes.append(
                f"channel_pads_as_convs found no Pad it could rewrite among the model's {ops['Pad']}: "
                "with preprocess: false their pads are not folded into constants; set preprocess: true"
            )
    if cfg.mode == "static" and ops.get("Attention", 0):  # ORT has no static rule for Attention
        ctx.notes.append(
            f"static QDQ leaves ONNX Runtime's {ops['Attention']} fused Attention op(s) float, with "
            "their Q/K/V projections inside: export with optimize: none for static int8 of every "
            "MatMul, or use mode: dynamic (QAttention)"
        )
    if cfg.mode == "dynamic":
        _dynamic(src, out, s, ops, ctx)
    else:
        batches, n, pad_to = _calibration_batches(ctx, cfg.calibration)
        cache = ctx.workdir / "calibration.json"  # this call's ranges, re-used by mixed precision
        cache.unlink(missing_ok=True)  # never another call's: a workdir may be re-used
        with track(ctx.progress, "calibrating", len(batches)) as advance:
            reader = BatchReader(batches, input_names(src), advance, pad_to=pad_to)
            quantize_static_file(src, out, s, reader=reader, cache_path=cache)
        meta["calibration_samples"] = n
        if cfg.mixed_precision is not None:
            out, mixed = _mixed_precision(art, src, out, s, cache, cfg.mixed_precision, ctx)
    coverage = int8_coverage(out)
    if not coverage.int8 or not any(coverage.int8.values()):
        raise StepError(
            "quantization produced no int8 operator (coverage: " + coverage.summary() + "); the "
            "model has no op ONNX Runtime can quantize, or every one was excluded"
        )
    meta["int8_coverage"] = coverage.to_dict()
    kept_float = list(cfg.exclude_nodes) + list((mixed or {}).get("float_layers", []))
    requantized = sorted(set(kept_float) & int8_node_names(out)) if kept_float else []
    if requantized:
        ctx.notes.append(
            f"{len(requantized)} layer(s) left float by the quantizer still run in int8 in ONNX "
            f"Runtime ({', '.join(requantized[:5])}): their input and output are int8, so ORT's "
            "WeightBiasQuantization quantizes their weights at load time"
        )
    meta["quantization"] = {
        "mode": cfg.mode, "target": target, "format": s.format,
        "activations": s.activation_type, "weights": s.weight_type, "per_channel": s.per_channel,
        "symmetric_activations": s.symmetric_activations, "reduce_range": s.reduce_range,
        "op_types": list(s.op_types) if s.op_types is not None else "all",
        "activation_matmuls": s.activation_matmuls, "transformer": transformer,
        "calibration": s.calibration if cfg.mode == "static" else None,
        "mixed_precision": mixed, "float_layers_requantized_by_ort": requantized,
        "padded_channels": [p.to_dict() for p in padded],
        "channel_pads_as_convs": [p.to_dict() for p in pads_as_convs],
    }
    label = f"quantize({cfg.mode}, {target}, {'U' if s.activation_type == 'uint8' else 'S'}8"
    label += f"{'U' if s.weight_type == 'uint8' else 'S'}8"
    if mixed and mixed["float_layers"]:
        label += f", {len(mixed['float_layers'])} layers float"
    label += ")"
    final = ctx.workdir / "model.onnx"
    if out != final:
        import shutil

        shutil.copyfile(out, final)
    return Artifact(
        kind="onnx",
        path=final, lineage=[*art.lineage, label], meta=meta,
    )


def _mixed_precision(art, src, all_int8, s: StaticSettings, cache, mp: MixedPrecisionConfig,
                     ctx: StepContext):
    from compress.quantization.mixed import latency_cost, search

    x, y = _tuning_data(ctx, mp)
    tried: dict[tuple[str, ...], object] = {(): all_int8}

    def quantize(excluded: tuple[str, ...]):
        if excluded not in tried:
            path = ctx.workdir / f"mixed-{len(tried)}.onnx"
            settings = dataclasses.replace(s, exclude_nodes=s.exclude_nodes + excluded)
            tried[excluded] = quantize_static_file(src, path, settings, cache_path=cache)
        return tried[excluded]

    candidates = [c for c in compute_nodes(src) if c[0] not in s.exclude_nodes]
    path, result = search(
        art.path, quantize, candidates, x, y, tolerance_points=mp.max_drop_points,
        max_float_layers=mp.max_float_layers, sensitivity_samples=mp.sensitivity_samples, log=ctx.log,
    )
    if result.float_layers:
        batch = {k: np.resize(v, (mp.latency_batch_size, *v.shape[1:])) for k, v in x.items()}
        result.latency = latency_cost(all_int8, path, batch)
    if not result.reached:
        ctx.notes.append(
            f"mixed precision did not reach the tolerance: tuning top-1 {result.tuning_top1_mixed:.2f}% "
            f"vs float {result.tuning_top1_float:.2f}% with {len(result.float_layers)} layer(s) in "
            f"float (max_drop_points {mp.max_drop_points}); raise max_float_layers or try "
            "calibration method entropy/percentile"
        )
    d = result.to_dict()
    d["sensitivity"] = d["sensitivity"][:10]
    return path, d
