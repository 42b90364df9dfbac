"""ONNX Runtime: the CPU execution provider, or CUDA when asked for and available."""

from __future__ import annotations

import numpy as np

from compress.errors import RuntimeFailure
from compress.runtimes.base import Session, check_options, register_runtime

OPTIONS = ("graph_optimization", "provider_options")
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


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
    def __init__(self, path: str, device: str, threads: int | None, level: str, provider_options: dict):
        import onnxruntime as ort

        provider = PROVIDERS[device]
        if provider not in ort.get_available_providers():
            raise RuntimeFailure(
                f"ONNX Runtime has no {provider} here (available: {', '.join(ort.get_available_providers())}); "
                "install onnxruntime-gpu and a matching CUDA, or use device: cpu"
            )
        providers = [(provider, provider_options)] if provider_options else [provider]
        if provider != "CPUExecutionProvider":
            providers.append("CPUExecutionProvider")
        try:
            self.sess = ort.InferenceSession(
                path, sess_options=make_session_options(threads, level), providers=providers
            )
        except Exception as err:  # ORT raises its own Fail/InvalidGraph types
            raise RuntimeFailure(f"ONNX Runtime could not load {path}: {err}") from err
        if device == "cuda" and self.sess.get_providers()[0] != provider:
            raise RuntimeFailure(f"ONNX Runtime fell back to {self.sess.get_providers()[0]} instead of {provider}")
        self.input_name = self.sess.get_inputs()[0].name
        self.info = {
            "runtime": "onnxruntime",
            "onnxruntime": ort.__version__,
            "providers": self.sess.get_providers(),
            "threads": threads,
            "graph_optimization": level,
        }

    def run(self, batch: np.ndarray) -> np.ndarray:
        out = self.sess.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})
        return out[0]


@register_runtime(
    "onnxruntime",
    accepts={"onnx"},
    devices={"cpu", "cuda"},
    summary="ONNX Runtime (CPU or CUDA execution provider)",
    options=OPTIONS,
)
def load(artifact, target) -> Session:
    check_options(target, OPTIONS)
    level = target.options.get("graph_optimization", "all")
    if level not in ("disable", "basic", "extended", "all"):
        raise RuntimeFailure(
            f"targets.{target.name}.options.graph_optimization must be disable, basic, extended or all"
        )
    return OrtSession(str(artifact.path), target.device, target.threads, level,
                      dict(target.options.get("provider_options", {})))
