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
from pathlib import Path

import numpy as np

from compress.errors import RuntimeFailure
from compress.runtimes.base import Session, check_options, register_runtime

OPTIONS = ("graph_optimization", "provider_options", "execution_provider", "device_id",
           "batch_min", "batch_opt", "batch_max", "trt_cache_dir")
#: the TensorRT provider's optimisation profile on the batch axis unless the target sets it
TRT_BATCH_DEFAULTS = {"batch_min": 1, "batch_opt": 32, "batch_max": 256}
TRT_ONLY = ("batch_min", "batch_opt", "batch_max", "trt_cache_dir")
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
    if ep != "tensorrt":
        extra = [k for k in TRT_ONLY if k in target.options]
        if extra:
            raise ValueError(f"{where}.{extra[0]} is for execution_provider: tensorrt; remove it")
        return
    b = trt_batch(target)
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in b):
        raise ValueError(f"{where}.batch_min/batch_opt/batch_max must be integers >= 1, got {list(b)}")
    if not b[0] <= b[1] <= b[2]:
        raise ValueError(f"{where}: batch_min <= batch_opt <= batch_max must hold, got {list(b)}")


def trt_batch(target) -> tuple[int, int, int]:
    """(min, opt, max) of the TensorRT provider's profile on the batch axis."""
    return tuple(target.options.get(k, v) for k, v in TRT_BATCH_DEFAULTS.items())


def trt_cache_root(target) -> Path:
    """Where the TensorRT provider keeps its engine and timing caches."""
    if "trt_cache_dir" in target.options:
        return Path(str(target.options["trt_cache_dir"])).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "compress" / "onnxruntime-tensorrt"


def profile_shapes(inputs: list[tuple[str, list]], batch: tuple[int, int, int]) -> dict:
    """``trt_profile_{min,opt,max}_shapes`` ("name:1x3x32x32,...") for inputs whose first axis is
    the batch and whose other axes are fixed."""
    for name, dims in inputs:
        if any(not isinstance(d, int) or d < 1 for d in dims[1:]):
            raise RuntimeFailure(f"the TensorRT provider needs fixed non-batch dimensions; input "
                                 f"{name!r} has {dims}: export the model with a fixed input_shape")
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
        self.input_name = self.sess.get_inputs()[0].name
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

    def run(self, batch: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(batch, dtype=np.float32)
        if self.batch is None:
            return self.sess.run(None, {self.input_name: x})[0]
        from compress.engine.tensorrt import split_batch

        parts = []
        for start, stop, size in split_batch(len(x), *self.batch):
            part = x[start:stop]
            if size > len(part):  # under the profile's batch_min: pad, drop the padding's outputs
                part = np.concatenate([part, np.zeros((size - len(part), *x.shape[1:]), x.dtype)])
            parts.append(self.sess.run(None, {self.input_name: part})[0][: stop - start])
        return parts[0] if len(parts) == 1 else np.concatenate(parts)


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
    ep = execution_provider(target)
    provider_options = dict(target.options.get("provider_options", {}))
    batch = None
    if ep == "tensorrt":  # the recipe's provider_options win over compress's defaults
        provider_options = {**tensorrt_options(str(artifact.path), target), **provider_options}
        lo, _opt, hi = trt_batch(target)
        batch = (lo, hi)
    return OrtSession(
        str(artifact.path), ep, target.threads, target.options.get("graph_optimization", "all"),
        provider_options, int(target.options.get("device_id", 0)), batch,
    )
