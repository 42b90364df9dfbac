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

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator

from compress.errors import RuntimeFailure
from compress.runtimes.base import RuntimeOptions, Session, register_runtime, target_options
from compress.sources.inputs import bind

#: the TensorRT provider's optimisation profile on the batch axis unless the target sets it
TRT_BATCH_DEFAULTS = {"batch_min": 1, "batch_opt": 32, "batch_max": 256}
TRT_ONLY = ("batch_min", "batch_opt", "batch_max", "trt_cache_dir")
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
    batch_min: int | None = Field(
        None, ge=1, strict=True, description="execution_provider tensorrt: the profile's smallest batch (default 1)"
    )
    batch_opt: int | None = Field(
        None, ge=1, strict=True, description="execution_provider tensorrt: the batch TensorRT tunes for (default 32)"
    )
    batch_max: int | None = Field(
        None, ge=1, strict=True, description="execution_provider tensorrt: the profile's largest batch (default "
        "256); larger batches are split"
    )
    trt_cache_dir: str | None = Field(
        None, description="execution_provider tensorrt: engine and timing caches (default "
        "~/.cache/compress/onnxruntime-tensorrt)"
    )

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
    if ep != "tensorrt":
        extra = [k for k in TRT_ONLY if k in opts.model_fields_set]
        if extra:
            raise ValueError(f"{extra[0]} is for execution_provider: tensorrt; remove it")
        return
    b = [getattr(opts, k) if getattr(opts, k) is not None else v for k, v in TRT_BATCH_DEFAULTS.items()]
    if not b[0] <= b[1] <= b[2]:
        raise ValueError(f"batch_min <= batch_opt <= batch_max must hold, got {b}")


def trt_batch(target) -> tuple[int, int, int]:
    """(min, opt, max) of the TensorRT provider's profile on the batch axis."""
    o = target_options(target)
    return tuple(getattr(o, k) if getattr(o, k) is not None else v for k, v in TRT_BATCH_DEFAULTS.items())


def trt_cache_root(target) -> Path:
    """Where the TensorRT provider keeps its engine and timing caches."""
    o = target_options(target)
    if o.trt_cache_dir is not None:
        return Path(o.trt_cache_dir).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "compress" / "onnxruntime-tensorrt"


def profile_shapes(inputs: list[tuple[str, list]], batch: tuple[int, int, int]) -> dict:
    """``trt_profile_{min,opt,max}_shapes`` ("name:1x3x32x32,...") for inputs whose first axis is
    the batch and whose other axes are fixed."""
    for name, dims in inputs:
        if any(not isinstance(d, int) or d < 1 for d in dims[1:]):
            raise RuntimeFailure(f"the TensorRT provider needs fixed non-batch dimensions; input "
                                 f"{name!r} has {dims}: an image model needs a fixed model.input_shape; "
                                 "a text model's sequence axis is dynamic, so build a TensorRT engine "
                                 "(the engine step, runtime tensorrt) whose profile covers the lengths")
    return {f"trt_profile_{kind}_shapes": ",".join(f"{n}:" + "x".join(map(str, (b, *d[1:]))) for n, d in inputs)
            for kind, b in zip(("min", "opt", "max"), batch, strict=True)}


def tensorrt_options(path: str, target) -> dict:
    """The TensorRT provider's engine cache, timing cache and profile shapes for model ``path``:
    without them every session (evaluation, profiling, memory probe) rebuilds its engines."""
    import onnx

    from compress.artifacts import file_digest

    graph = onnx.load(path, load_external_data=False).graph
    weights = {i.name for i in graph.initializer}
    inputs = [(i.name, [d.dim_value if d.HasField("dim_value") else d.dim_param
                        for d in i.type.tensor_type.shape.dim])
              for i in graph.input if i.name not in weights]
    root = trt_cache_root(target)
    engines = root / "engines" / f"{file_digest(Path(path))}-ort{_ort_version()}"
    engines.mkdir(parents=True, exist_ok=True)
    return {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(engines),
            "trt_timing_cache_enable": True, "trt_timing_cache_path": str(root),
            **profile_shapes(inputs, trt_batch(target))}


def _ort_version() -> str:
    import onnxruntime as ort

    return ort.__version__


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
                 device_id: int = 0, batch: tuple[int, int] | None = None):
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
        self.batch = batch  # (min, max) of the TensorRT provider's profile: batches are split to fit
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
        if self.batch is None:
            return self.sess.run(None, feed)[0]
        from compress.engine.tensorrt import run_in_profile

        return run_in_profile(feed, *self.batch, lambda chunk: self.sess.run(None, chunk)[0])


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
    ep = o.execution_provider or target.device
    provider_options = dict(o.provider_options)
    batch = None
    if ep == "tensorrt":  # the recipe's provider_options win over compress's defaults
        provider_options = {**tensorrt_options(str(artifact.path), target), **provider_options}
        lo, _opt, hi = trt_batch(target)
        batch = (lo, hi)
    return OrtSession(
        str(artifact.path), ep, target.threads, o.graph_optimization, provider_options, o.device_id, batch,
    )
