"""ONNX Runtime with the CPU, CUDA or TensorRT execution provider.

The execution provider follows the target's device (cpu -> CPU, cuda -> CUDA) unless
``options.execution_provider`` names one (``tensorrt`` needs ``device: cuda``). A GPU provider that
ONNX Runtime silently replaces with the CPU is an error, never a quiet fallback: the profile would
otherwise time the wrong hardware. ``session.run`` copies the outputs back to host memory, so it
returns only when the device is done and the host clock times it correctly.

The CUDA and TensorRT paths are written against ONNX Runtime's documented provider API but have
not been run on a GPU yet (no GPU was available when they were written).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator

from compress.errors import RuntimeFailure
from compress.runtimes.base import RuntimeOptions, Session, register_runtime, target_options

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
PROVIDER_DEVICE = {"cpu": "cpu", "cuda": "cuda", "tensorrt": "cuda"}


class OrtOptions(RuntimeOptions):
    """``targets[].options`` of an onnxruntime target."""

    graph_optimization: Literal["disable", "basic", "extended", "all"] = Field(
        "all", description="ONNX Runtime's graph optimisation level"
    )
    execution_provider: Literal["cpu", "cuda", "tensorrt"] | None = Field(
        None, description="Default: the target's device (cpu -> CPU, cuda -> CUDA); tensorrt needs "
        "device: cuda. Full ORT names (CUDAExecutionProvider) are accepted too"
    )
    provider_options: dict[str, Any] = Field(
        default_factory=dict, description="Settings passed to the execution provider as they are"
    )
    device_id: int = Field(0, ge=0, strict=True, description="GPU index, for device: cuda")

    @field_validator("execution_provider", mode="before")
    @classmethod
    def _short_name(cls, v):
        return {full: short for short, full in PROVIDERS.items()}.get(v, v)


def check_target(target, opts: OrtOptions) -> None:
    """Rules between the options and the target's device; ValueError names the option and the fix."""
    ep = opts.execution_provider or target.device
    if PROVIDER_DEVICE.get(ep, ep) != target.device:
        raise ValueError(
            f"execution_provider {ep!r} runs on {PROVIDER_DEVICE[ep]}, but the target's device is "
            f"{target.device}; set device: {PROVIDER_DEVICE[ep]}"
        )
    if opts.device_id and target.device == "cpu":
        raise ValueError("device_id is for GPUs; remove it or set device: cuda")


def provider_list(ep: str, device_id: int, provider_options: dict) -> list:
    """What ``InferenceSession(providers=...)`` gets: the asked-for provider first, then fallbacks
    for the nodes it cannot run (TensorRT -> CUDA -> CPU), each with its device."""
    if ep == "cpu":
        return [("CPUExecutionProvider", dict(provider_options))] if provider_options else [
            "CPUExecutionProvider"
        ]
    gpu = {"device_id": device_id}
    if ep == "cuda":
        return [("CUDAExecutionProvider", {**gpu, **provider_options}), "CPUExecutionProvider"]
    return [
        ("TensorrtExecutionProvider", {**gpu, **provider_options}),
        ("CUDAExecutionProvider", gpu),
        "CPUExecutionProvider",
    ]


def make_session_options(threads: int | None, level: str = "all"):
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[level]
    so.log_severity_level = 3
    return so


class OrtSession(Session):
    def __init__(self, path: str, ep: str, threads: int | None, level: str, provider_options: dict,
                 device_id: int = 0):
        import onnxruntime as ort

        provider = PROVIDERS[ep]
        available = ort.get_available_providers()
        if provider not in available:
            raise RuntimeFailure(
                f"ONNX Runtime has no {provider} here (available: {', '.join(available)}); "
                + ("install onnxruntime-gpu and a matching CUDA, or use device: cpu" if ep != "cpu"
                   else "reinstall onnxruntime")
            )
        try:
            self.sess = ort.InferenceSession(
                path, sess_options=make_session_options(threads, level),
                providers=provider_list(ep, device_id, provider_options),
            )
        except Exception as err:  # ORT raises its own Fail/InvalidGraph types
            raise RuntimeFailure(f"ONNX Runtime could not load {path}: {err}") from err
        used = self.sess.get_providers()
        if used[0] != provider:
            raise RuntimeFailure(
                f"ONNX Runtime fell back to {used[0]} instead of {provider} (the GPU libraries "
                "did not load; see ONNX Runtime's log with log_severity_level 0)"
            )
        self.input_name = self.sess.get_inputs()[0].name
        self.info = {
            "runtime": "onnxruntime",
            "onnxruntime": ort.__version__,
            "execution_provider": provider,
            "providers": used,
            "threads": threads,
            "graph_optimization": level,
        }
        if ep != "cpu":
            self.info["device_id"] = device_id

    def run(self, batch: np.ndarray) -> np.ndarray:
        out = self.sess.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})
        return out[0]


@register_runtime(
    "onnxruntime",
    accepts={"onnx"},
    devices={"cpu", "cuda"},
    summary="ONNX Runtime (CPU, CUDA or TensorRT execution provider)",
    options=OrtOptions,
    check=check_target,
    imports=("onnxruntime",),
    example={"graph_optimization": "basic"},
)
def load(artifact, target) -> Session:
    o = target_options(target)
    return OrtSession(
        str(artifact.path), o.execution_provider or target.device, target.threads,
        o.graph_optimization, dict(o.provider_options), o.device_id,
    )
