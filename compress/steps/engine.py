"""The ``engine`` step: build a TensorRT engine from an ONNX model (fp16, int8 from QDQ, or int8
with an entropy calibrator over the calibration split), with an optimisation profile for dynamic
batch. The engine's fingerprint (TensorRT, CUDA, driver, GPU) is stored with it and checked by the
``tensorrt`` runtime at load. Not run anywhere yet: see docs/tensorrt.md.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from compress.artifacts import Artifact, digest_of
from compress.errors import StepError
from compress.steps.base import StepConfig, StepContext, register_step


class EngineConfig(StepConfig):
    precision: Literal["fp32", "fp16", "int8-qdq", "int8-calibrate"] = Field(
        "fp16", description="int8-qdq: a model quantized with target: tensorrt; int8-calibrate: "
        "TensorRT's entropy calibrator over the calibration split"
    )
    workspace_mb: int = Field(1024, ge=16, description="Builder scratch memory (MiB)")
    batch_min: int = Field(1, ge=1)
    batch_opt: int = Field(32, ge=1, description="The batch size TensorRT tunes its kernels for")
    batch_max: int = Field(64, ge=1)
    calibration_samples: int = Field(512, ge=1, description="For int8-calibrate")
    calibration_batch_size: int = Field(32, ge=1)

    @model_validator(mode="after")
    def _profile(self):
        if not self.batch_min <= self.batch_opt <= self.batch_max:
            raise ValueError(
                f"batch sizes must satisfy batch_min <= batch_opt <= batch_max, got "
                f"{self.batch_min}, {self.batch_opt}, {self.batch_max}"
            )
        return self


@register_step(
    "engine", config=EngineConfig, accepts={"onnx"}, produces="tensorrt",
    roles=lambda cfg: {"calibration": "precision: int8-calibrate calibrates"}
    if cfg.precision == "int8-calibrate" else {},
    example={"precision": "fp16", "batch_opt": 8, "batch_max": 16},
)
def apply(art: Artifact, cfg: EngineConfig, ctx: StepContext) -> Artifact:
    """Build a TensorRT engine from ONNX (fp16 / int8) for the GPU of this machine."""
    from compress.engine.tensorrt import build_engine, import_tensorrt, onnx_has_qdq

    qdq = onnx_has_qdq(art.path)
    if cfg.precision == "int8-qdq" and not qdq:
        raise StepError("precision int8-qdq needs a QDQ model: put `- quantize: {target: tensorrt}` "
                        "before the engine step, or use precision: int8-calibrate")
    if cfg.precision == "int8-calibrate" and qdq:
        raise StepError("this model already has QuantizeLinear/DequantizeLinear nodes: use "
                        "precision: int8-qdq (TensorRT does not calibrate a quantized model)")
    import_tensorrt("the engine step")  # before touching data: fail with the extra to install
    batches = None
    if cfg.precision == "int8-calibrate":
        split = ctx.data("calibration")
        n = min(cfg.calibration_samples, len(split))
        n -= n % cfg.calibration_batch_size  # the calibrator's buffer has one fixed batch size
        if n == 0:
            raise StepError(f"the calibration split has {len(split)} images, fewer than one "
                            f"calibration_batch_size ({cfg.calibration_batch_size}); lower it")
        idx = np.random.default_rng(ctx.seed).choice(len(split), size=n, replace=False)
        batches = [split.inputs(np.sort(idx[i : i + cfg.calibration_batch_size]))
                   for i in range(0, n, cfg.calibration_batch_size)]
    out = ctx.workdir / "engine.plan"
    fp = build_engine(
        art.path, out, precision=cfg.precision, input_shape=tuple(ctx.input_shape),
        batch_min=cfg.batch_min, batch_opt=cfg.batch_opt, batch_max=cfg.batch_max,
        workspace_bytes=cfg.workspace_mb << 20, calibration_batches=batches, log=ctx.log,
    )
    meta = dict(art.meta)
    meta["tensorrt"] = {"precision": cfg.precision, "fingerprint": fp,
                        "batch_profile": [cfg.batch_min, cfg.batch_opt, cfg.batch_max]}
    return Artifact(kind="tensorrt", digest=digest_of(art.digest, "engine", cfg.model_dump(), fp),
                    path=out, lineage=[*art.lineage, f"engine({cfg.precision})"], meta=meta)
