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

from collections.abc import Mapping

import numpy as np

from compress.errors import RuntimeFailure
from compress.runtimes.base import Session, check_options, register_runtime
from compress.sources.inputs import bind

OPTIONS = ("graph_optimization", "provider_options", "execution_provider", "device_id")
PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
PROVIDER_DEVICE = {"cpu": "cpu", "cuda": "cuda", "tensorrt": "cuda"}
LEVELS = ("disable", "basic", "extended", "all")


def validate_target(target) -> None:
    """Check a target's options when the recipe is loaded; ValueError names the key and the fix."""
    where = f"targets.{target.name}.options"  # unknown keys: rejected by TargetConfig
    level = target.options.get("graph_optimization", "all")
    if level not in LEVELS:
        raise ValueError(f"{where}.graph_optimization must be one of {', '.join(LEVELS)}, got {level!r}")
    ep = execution_provider(target)
    if PROVIDER_DEVICE[ep] != target.device:
        raise ValueError(
            f"{where}.execution_provider {ep!r} runs on {PROVIDER_DEVICE[ep]}, but the target's "
            f"device is {target.device}; set device: {PROVIDER_DEVICE[ep]}"
        )
    if not isinstance(target.options.get("provider_options", {}), dict):
        raise ValueError(f"{where}.provider_options must be a mapping of provider settings")
    device_id = target.options.get("device_id", 0)
    if not isinstance(device_id, int) or isinstance(device_id, bool) or device_id < 0:
        raise ValueError(f"{where}.device_id must be a GPU index >= 0, got {device_id!r}")
    if device_id and target.device == "cpu":
        raise ValueError(f"{where}.device_id is for GPUs; remove it or set device: cuda")


def execution_provider(target) -> str:
    """The short name (cpu, cuda, tensorrt) of the provider a target asks for."""
    ep = target.options.get("execution_provider", target.device)
    key = {v: k for k, v in PROVIDERS.items()}.get(ep, ep)  # full ORT names are accepted too
    if key not in PROVIDERS:
        raise ValueError(
            f"targets.{target.name}.options.execution_provider: unknown execution provider {ep!r}; "
            f"valid: {', '.join(PROVIDERS)}"
        )
    return key


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
        self.input_names = [i.name for i in self.sess.get_inputs()]
        self.input_types = {i.name: i.type for i in self.sess.get_inputs()}
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

    def run(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        feed = bind(inputs, self.input_names, "this ONNX model")
        # float inputs as float32 (the file's type); integer inputs (token ids) as they come
        feed = {k: np.ascontiguousarray(v, dtype=np.float32) if self.input_types[k] == "tensor(float)"
                else np.ascontiguousarray(v) for k, v in feed.items()}
        return self.sess.run(None, feed)[0]


@register_runtime(
    "onnxruntime",
    accepts={"onnx"},
    devices={"cpu", "cuda"},
    summary="ONNX Runtime (CPU, CUDA or TensorRT execution provider)",
    options=OPTIONS,
    validate=validate_target,
)
def load(artifact, target) -> Session:
    check_options(target, OPTIONS)
    try:
        validate_target(target)
    except ValueError as err:
        raise RuntimeFailure(str(err)) from None
    return OrtSession(
        str(artifact.path), execution_provider(target), target.threads,
        target.options.get("graph_optimization", "all"),
        dict(target.options.get("provider_options", {})), int(target.options.get("device_id", 0)),
    )
