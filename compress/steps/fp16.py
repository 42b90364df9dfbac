"""FP16: convert an ONNX model's float32 weights and compute to float16, for GPU targets.

Uses ONNX Runtime's own converter (``onnxruntime.transformers.float16``, installed with ORT).
``keep_io_types: true`` (the default) keeps the model's inputs and outputs float32, with Cast nodes
inside, so callers feed the same arrays as before. On a CPU, float16 rarely pays: ONNX Runtime's
CPU EP runs many fp16 ops by casting back to float32. Use it for the CUDA EP or TensorRT.

bfloat16 is not an ONNX conversion here: ONNX Runtime's CPU EP has no bfloat16 MatMul or Add
kernel (ORT 1.31: "Could not find an implementation for MatMul(13)"), and on a CPU with
avx512_bf16 or AMX bf16 is OpenVINO's run-time precision (``targets[].options.precision: bf16``).
With ``target`` naming a recipe target, the recipe is refused when that target cannot run it.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from compress.artifacts import Artifact
from compress.errors import StepError
from compress.sources.inputs import bind
from compress.steps.base import StepConfig, StepContext, register_step


class Fp16Config(StepConfig):
    precision: Literal["float16", "bfloat16"] = Field(
        "float16", description="float16; bfloat16 is refused with where to get it (OpenVINO's "
        "precision option: ONNX Runtime's CPU EP has no bfloat16 kernels)",
    )
    target: str | None = Field(
        None, description="The recipe target the float16 model is for; the recipe is refused when "
        "it cannot run float16 (ONNX Runtime on cpu; openvino, where precision is a target option)",
    )
    keep_io_types: bool = Field(True, description="Inputs and outputs stay float32 (Cast nodes inside)")
    op_block_list: list[str] | None = Field(
        None, description="Op types kept in float32; default: the converter's list of unsafe ops"
    )
    node_block_list: list[str] = Field(default_factory=list, description="Node names kept in float32")
    verify: bool = Field(True, description="Compare with the float32 model on calibration inputs")
    max_rel_error: float = Field(
        0.05, gt=0, description="Largest |fp16 - fp32| relative to the fp32 logits' range"
    )


BF16_HELP = (
    "precision: bfloat16: ONNX Runtime's CPU EP has no bfloat16 kernels (MatMul, Add: "
    "NOT_IMPLEMENTED in ORT 1.31), so this step makes no bfloat16 ONNX model. For bf16 on a CPU "
    "with avx512_bf16 or AMX, remove this step and run the float32 model on an openvino target "
    "with options: {precision: bf16}; for a GPU use precision: float16"
)


def _check(cfg: Fp16Config, recipe) -> list[str]:
    """Refuse a precision the named target cannot run (exit 2, before anything is built)."""
    if cfg.precision == "bfloat16":
        return [BF16_HELP]
    target = next((t for t in recipe.targets if t.name == cfg.target), None)
    if target is None:  # no target named (or an unknown one: the generic rule names it)
        return []
    if target.runtime == "openvino":
        return [f"target: {target.name} is openvino, where float16 is a run-time option: remove "
                f"this step and set targets.{target.name}.options.precision: f16 (a GPU, or a CPU "
                "with avx512_fp16/AMX-FP16) or bf16 (a CPU with avx512_bf16 or AMX)"]
    if target.runtime == "onnxruntime" and target.device == "cpu":  # its EP is then the CPU's
        return [f"target: {target.name} is ONNX Runtime on cpu, which has few float16 kernels on "
                "x86 and runs the rest by casting back to float32 (slower than float32): fp16 is "
                "for cuda/tensorrt targets; for a CPU use quantize, or OpenVINO with "
                "options.precision: bf16"]
    return []


@register_step(
    "fp16", config=Fp16Config, accepts={"onnx"}, produces="onnx", check=_check,
    targets=lambda cfg: {"target": cfg.target} if cfg.target else set(),
    roles=lambda cfg: {"calibration": "verify: compares float16 with float32 (or set verify: false)"}
    if cfg.verify else {},
    example={"keep_io_types": True, "max_rel_error": 0.1},
)
def apply(art: Artifact, cfg: Fp16Config, ctx: StepContext) -> Artifact:
    """Convert an ONNX model to float16 (weights and compute), keeping I/O types as configured."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(art.path))
    kwargs = {"keep_io_types": cfg.keep_io_types, "node_block_list": cfg.node_block_list or None}
    if cfg.op_block_list is not None:
        kwargs["op_block_list"] = cfg.op_block_list
    try:
        converted = convert_float_to_float16(model, **kwargs)
    except Exception as err:
        raise StepError(f"float16 conversion failed: {type(err).__name__}: {err}") from err
    out = ctx.workdir / "model.onnx"
    onnx.save(converted, str(out))
    meta = {k: v for k, v in art.meta.items() if k not in ("int8_coverage", "quantization")}
    meta["precision"] = {"weights": "float16", "io": "float32" if cfg.keep_io_types else "float16"}
    if cfg.verify:
        meta["fp16_max_rel_error"] = _verify(art.path, out, ctx, cfg)
    return Artifact(
        kind="onnx", path=out,
        lineage=[*art.lineage, "fp16" + ("" if cfg.keep_io_types else "(fp16 I/O)")], meta=meta,
    )


def _verify(fp32_path, fp16_path, ctx: StepContext, cfg: Fp16Config) -> float:
    import onnxruntime as ort

    split = ctx.data("calibration")
    x = split.inputs(np.arange(min(16, len(split))))
    ref_sess = ort.InferenceSession(str(fp32_path), providers=["CPUExecutionProvider"])
    sess = ort.InferenceSession(str(fp16_path), providers=["CPUExecutionProvider"])
    ref = ref_sess.run(None, bind(x, [i.name for i in ref_sess.get_inputs()], "the float32 model"))[0]
    # float inputs become float16 unless keep_io_types (integer inputs, e.g. token ids, never do)
    feed = x if cfg.keep_io_types else {
        k: v.astype(np.float16) if np.issubdtype(v.dtype, np.floating) else v for k, v in x.items()}
    got = sess.run(None, bind(feed, [i.name for i in sess.get_inputs()], "the float16 model"))[0]
    got = got.astype(np.float32)
    err = float(np.abs(got - ref).max() / max(float(np.ptp(ref)), 1e-12))
    if err > cfg.max_rel_error:
        raise StepError(
            f"the float16 model differs from float32 by {err:.3g} of the logits' range (limit "
            f"{cfg.max_rel_error}); keep the overflowing ops in float32 with op_block_list or "
            "node_block_list, or raise max_rel_error"
        )
    return err
