"""The ``engine`` step: build a TensorRT engine (10 or 11) from an ONNX model, with an optimisation
profile for dynamic batch: fp32, fp16, int8 from a QDQ model (explicit quantization), or int8 with
TensorRT 10's entropy calibrator. The engine's fingerprint (TensorRT and its CUDA, GPU, compute
capability, driver) is written beside it, travels with it through the cache and is part of its
cache key. Not run on a GPU yet: see docs/tensorrt.md.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from compress.artifacts import Artifact
from compress.errors import StepError
from compress.sources.inputs import only_input
from compress.steps.base import StepConfig, StepContext, register_step


class EngineConfig(StepConfig):
    precision: Literal["fp32", "fp16", "int8-qdq", "int8-calibrate"] = Field(
        "fp16", description="int8-qdq: a model quantized with target: tensorrt (TensorRT 10 and 11); "
        "int8-calibrate: TensorRT 10's entropy calibrator over the calibration split"
    )
    tf32: bool = Field(False, description="Let float32 layers use TF32 tensor cores (10-bit mantissa "
                       "products); off: float32 stays float32")
    workspace_mb: int = Field(1024, ge=16, description="Builder scratch memory (MiB)")
    batch_min: int = Field(1, ge=1)
    batch_opt: int = Field(32, ge=1, description="The batch size TensorRT tunes its kernels for; "
                           "int8-calibrate calibrates in batches of this size")
    batch_max: int = Field(64, ge=1)
    device_id: int = Field(0, ge=0, description="The CUDA device to build for (after CUDA_VISIBLE_DEVICES)")
    calibration_samples: int = Field(512, ge=1, description="For int8-calibrate")
    seq_min: int = Field(1, ge=1, description="Text models: the shortest sequence the engine runs")
    seq_opt: int | None = Field(None, ge=1, description="Text models: the sequence length TensorRT "
                                "tunes for (default data.text.max_length)")
    seq_max: int | None = Field(None, ge=1, description="Text models: the longest sequence (default "
                                "data.text.max_length)")
    calibration_batch_size: int | None = Field(
        None, ge=1, description="For int8-calibrate; must equal batch_opt (TensorRT calibrates at the "
        "profile's opt shape); leave unset"
    )

    @model_validator(mode="after")
    def _profile(self):
        if not self.batch_min <= self.batch_opt <= self.batch_max:
            raise ValueError(
                f"batch sizes must satisfy batch_min <= batch_opt <= batch_max, got "
                f"{self.batch_min}, {self.batch_opt}, {self.batch_max}"
            )
        if not self.seq_min <= (self.seq_opt or self.seq_min) <= (self.seq_max or 1 << 30):
            raise ValueError(f"sequence lengths must satisfy seq_min <= seq_opt <= seq_max, got "
                             f"{self.seq_min}, {self.seq_opt}, {self.seq_max}")
        if self.calibration_batch_size not in (None, self.batch_opt):
            raise ValueError(
                f"calibration_batch_size {self.calibration_batch_size} differs from batch_opt "
                f"{self.batch_opt}: TensorRT calibrates at the profile's opt batch; remove "
                "calibration_batch_size or set batch_opt to it"
            )
        return self


def _seq(cfg: EngineConfig, ctx: StepContext) -> tuple[int, int, int] | None:
    """A text model's sequence range (min / opt / max); None for images."""
    spec = ctx.input_spec
    if spec.kind != "text":
        return None
    hi = cfg.seq_max or spec.seq_len
    opt = cfg.seq_opt or hi
    if not cfg.seq_min <= opt <= hi:
        raise StepError(f"engine sequence lengths must satisfy seq_min <= seq_opt <= seq_max; with "
                        f"data.text.max_length {spec.seq_len} they are {cfg.seq_min}, {opt}, {hi}")
    return cfg.seq_min, opt, hi


def _roles(cfg: EngineConfig) -> dict[str, str]:
    return {"calibration": "precision: int8-calibrate calibrates"} if cfg.precision == "int8-calibrate" else {}


def _check(cfg: EngineConfig, recipe) -> list[str]:
    """The recipe's profiled batch sizes must be inside the engine's profile."""
    from compress.engine.tensorrt import profile_problems

    return profile_problems(recipe.profile.batch_sizes, cfg.batch_min, cfg.batch_max, "profile.batch_sizes")


def _cache_key(cfg: EngineConfig, _ctx: StepContext) -> dict:
    """The GPU and TensorRT this machine would build for: an engine cached elsewhere is rebuilt."""
    from compress.engine.tensorrt import cache_key_fingerprint

    return cache_key_fingerprint(cfg.device_id)


@register_step("engine", config=EngineConfig, accepts={"onnx"}, produces="tensorrt", roles=_roles,
               check=_check, cache_key=_cache_key, example={"precision": "fp16"})
def apply(art: Artifact, cfg: EngineConfig, ctx: StepContext) -> Artifact:
    """Build a TensorRT engine from ONNX (fp32 / fp16 / int8) for the GPU of this machine."""
    from compress.engine.tensorrt import build_engine, build_plan, import_tensorrt, onnx_has_qdq

    if art.meta.get("transformer_fusions"):
        raise StepError("this ONNX model has ONNX Runtime's fused transformer ops (Attention, "
                        "SkipLayerNormalization, ...), which TensorRT cannot parse: export it with "
                        "optimize: none for a TensorRT engine")
    qdq = onnx_has_qdq(art.path)
    if cfg.precision == "int8-qdq" and not qdq:
        raise StepError("precision int8-qdq needs a QDQ model: put `- quantize: {target: tensorrt}` "
                        "before the engine step, or use precision: int8-calibrate")
    if cfg.precision == "int8-calibrate" and qdq:
        raise StepError("this model already has QuantizeLinear/DequantizeLinear nodes: use "
                        "precision: int8-qdq (TensorRT does not calibrate a quantized model)")
    trt = import_tensorrt("the engine step")  # before touching data: fail with the extra to install
    build_plan(trt, cfg.precision, tf32=cfg.tf32)  # refuses what this TensorRT cannot build
    batches = None
    if cfg.precision == "int8-calibrate":
        size = cfg.batch_opt  # the calibrator's buffer has the profile's opt shape
        split = ctx.data("calibration")
        n = min(cfg.calibration_samples, len(split))
        n -= n % size
        if n == 0:
            raise StepError(f"the calibration split has {len(split)} images, fewer than one batch_opt "
                            f"({size}) to calibrate with; lower batch_opt")
        idx = np.random.default_rng(ctx.seed).choice(len(split), size=n, replace=False)
        # the engine's calibrator takes single-input arrays
        batches = [only_input(split.inputs(np.sort(idx[i : i + size])), "TensorRT int8 calibration")
                   for i in range(0, n, size)]
    out = ctx.workdir / "engine.plan"
    fp = build_engine(
        art.path, out, precision=cfg.precision, input_spec=ctx.input_spec,
        batch_min=cfg.batch_min, batch_opt=cfg.batch_opt, batch_max=cfg.batch_max, seq=_seq(cfg, ctx),
        workspace_bytes=cfg.workspace_mb << 20, tf32=cfg.tf32, device=cfg.device_id,
        calibration_batches=batches, log=ctx.log, trt=trt,
    )
    from compress.engine.tensorrt import fingerprint_path

    meta = {k: v for k, v in art.meta.items() if k not in ("extra_files",)}
    meta["tensorrt"] = {"precision": cfg.precision, "fingerprint": fp, "tf32": cfg.tf32,
                        "batch_profile": [cfg.batch_min, cfg.batch_opt, cfg.batch_max]}
    if _seq(cfg, ctx) is not None:
        meta["tensorrt"]["sequence_profile"] = list(_seq(cfg, ctx))
    meta["extra_files"] = [fingerprint_path(out).name]  # the cache copies it with the plan
    # no digest: the run keys it with the one cache key (compress.run.build.step_key), _cache_key included
    return Artifact(kind="tensorrt", path=out, lineage=[*art.lineage, f"engine({cfg.precision})"], meta=meta)
