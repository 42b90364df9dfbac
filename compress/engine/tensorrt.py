"""TensorRT 10: build an engine from ONNX, load it, and fingerprint what it was built for.

Shared by the ``engine`` step (compress/steps/engine.py) and the ``tensorrt`` runtime
(compress/runtimes/tensorrt.py). Written against the TensorRT 10 Python API: ``Builder`` ->
``create_network(0)`` (explicit batch is the only mode in 10) -> ``OnnxParser`` -> builder config
(memory pool limit, FP16/INT8 flags, optimisation profile, entropy calibrator) ->
``build_serialized_network``; at run time ``Runtime.deserialize_cuda_engine``, named I/O tensors,
``set_input_shape``/``set_tensor_address``/``execute_async_v3``. Device buffers are torch CUDA
tensors (torch is already a dependency), so neither pycuda nor cuda-python is needed.

An engine only runs on the TensorRT version and GPU model it was built with. The fingerprint
(TensorRT, CUDA, driver, GPU name, compute capability) is stored with the engine and compared at
load; a mismatch is refused with a message that says to rebuild.

NOTHING IN THIS MODULE HAS RUN: TensorRT cannot be installed on the machines this project is
developed on. The pure parts (fingerprint comparison, option checks) are unit-tested; the rest is
covered by tests marked ``tensorrt`` that skip where TensorRT or a GPU is missing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from compress.errors import MissingDependency, RuntimeFailure, StepError

#: fields that make an engine unusable when they differ (TensorRT refuses or misbehaves)
STRICT_FIELDS = ("tensorrt", "gpu", "compute_capability", "cuda_major")
#: fields recorded for the report; a difference is a warning, not an error
SOFT_FIELDS = ("cuda", "driver")


def import_tensorrt(purpose: str):
    try:
        import tensorrt as trt
    except ImportError:
        raise MissingDependency("tensorrt", "tensorrt", purpose) from None
    return trt


def _torch_cuda(purpose: str):
    import torch

    if not torch.cuda.is_available():
        raise RuntimeFailure(
            f"{purpose} needs an NVIDIA GPU with CUDA, and torch sees none "
            f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'}); run it on a GPU machine"
        )
    return torch


def _driver_version() -> str | None:
    try:
        import pynvml
    except ImportError:
        pynvml = None
    if pynvml is not None:
        try:
            pynvml.nvmlInit()
            v = pynvml.nvmlSystemGetDriverVersion()
            return v.decode() if isinstance(v, bytes) else str(v)
        except Exception:  # NVML missing or no permission: fall back to nvidia-smi
            pass
    import subprocess

    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10, check=True)
        return out.stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return None


def current_fingerprint(device: int = 0) -> dict:
    """What an engine built here would be tied to."""
    trt = import_tensorrt("the TensorRT fingerprint")
    torch = _torch_cuda("TensorRT")
    major, minor = torch.cuda.get_device_capability(device)
    cuda = torch.version.cuda
    return {
        "tensorrt": trt.__version__,
        "cuda": cuda,
        "cuda_major": cuda.split(".")[0] if cuda else None,
        "driver": _driver_version(),
        "gpu": torch.cuda.get_device_name(device),
        "compute_capability": f"{major}.{minor}",
    }


def compare_fingerprints(stored: dict | None, current: dict) -> tuple[list[str], list[str]]:
    """(errors, warnings): errors make the engine stale, warnings are worth reporting."""
    if not stored:
        return (["the engine has no fingerprint (it was not built by compress, or its "
                 "fingerprint file was lost); rebuild it with the engine step"], [])
    errors = [f"{k}: built with {stored.get(k)!r}, this machine has {current.get(k)!r}"
              for k in STRICT_FIELDS if stored.get(k) != current.get(k)]
    warnings = [f"{k}: built with {stored.get(k)!r}, this machine has {current.get(k)!r}"
                for k in SOFT_FIELDS if stored.get(k) != current.get(k)]
    return errors, warnings


def check_fingerprint(stored: dict | None, current: dict, engine: str) -> list[str]:
    """Raise RuntimeFailure for a stale engine; return the warnings otherwise."""
    errors, warnings = compare_fingerprints(stored, current)
    if errors:
        raise RuntimeFailure(
            f"TensorRT engine {engine} is stale: " + "; ".join(errors)
            + ". TensorRT engines only run on the TensorRT version and GPU they were built for: "
            f"rebuild it on this machine (delete the cached artifact {Path(engine).parent} and re-run)"
        )
    return warnings


def fingerprint_path(engine_path: Path) -> Path:
    return engine_path.with_name(engine_path.name + ".fingerprint.json")


def write_fingerprint(engine_path: Path, fp: dict) -> None:
    fingerprint_path(engine_path).write_text(json.dumps(fp, indent=2, sort_keys=True))


def read_fingerprint(engine_path: Path) -> dict | None:
    p = fingerprint_path(engine_path)
    return json.loads(p.read_text()) if p.is_file() else None


def onnx_has_qdq(path: Path) -> bool:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)


def _entropy_calibrator(trt, batches: Sequence[np.ndarray], cache_path: Path):
    """IInt8EntropyCalibrator2 over host batches, copied to one torch CUDA buffer per batch."""
    torch = _torch_cuda("int8 calibration")

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.batches = [np.ascontiguousarray(b, dtype=np.float32) for b in batches]
            self.index = 0
            self.device = torch.empty(self.batches[0].shape, dtype=torch.float32, device="cuda")

        def get_batch_size(self):
            return int(self.batches[0].shape[0])

        def get_batch(self, names):
            if self.index >= len(self.batches):
                return None
            self.device.copy_(torch.from_numpy(self.batches[self.index]))
            self.index += 1
            return [int(self.device.data_ptr())] * len(names)

        def read_calibration_cache(self):
            return cache_path.read_bytes() if cache_path.is_file() else None

        def write_calibration_cache(self, cache):
            cache_path.write_bytes(bytes(cache))

    return EntropyCalibrator()


def build_engine(onnx_path: Path, engine_path: Path, *, precision: str, input_shape: tuple[int, ...],
                 batch_min: int, batch_opt: int, batch_max: int, workspace_bytes: int,
                 calibration_batches: Sequence[np.ndarray] | None = None, log=print) -> dict:
    """Build and serialise an engine; return its fingerprint (also written beside the engine)."""
    trt = import_tensorrt("the engine step")
    fp = current_fingerprint()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise StepError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if precision in ("fp16", "int8-qdq", "int8-calibrate"):
        config.set_flag(trt.BuilderFlag.FP16)  # layers left in float may run in fp16
    if precision in ("int8-qdq", "int8-calibrate"):
        config.set_flag(trt.BuilderFlag.INT8)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        profile.set_shape(tensor.name, (batch_min, *input_shape), (batch_opt, *input_shape),
                          (batch_max, *input_shape))
    config.add_optimization_profile(profile)
    if precision == "int8-calibrate":
        if not calibration_batches:
            raise StepError("int8-calibrate needs calibration batches from the calibration split")
        config.int8_calibrator = _entropy_calibrator(
            trt, calibration_batches, engine_path.with_name("calibration.cache"))
        config.set_calibration_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise StepError("TensorRT failed to build the engine (see the TensorRT log above); try a "
                        "larger workspace_mb or precision: fp16")
    engine_path.write_bytes(bytes(serialized))
    write_fingerprint(engine_path, fp)
    log(f"TensorRT engine built: {engine_path.stat().st_size} bytes, {precision}, {fp['gpu']}")
    return fp


class EngineSession:
    """A deserialised engine with torch CUDA buffers; ``run`` takes and returns numpy arrays."""

    def __init__(self, engine_path: Path, stored_fingerprint: dict | None):
        trt = import_tensorrt("the tensorrt runtime")
        self.torch = _torch_cuda("the tensorrt runtime")
        current = current_fingerprint()
        self.warnings = check_fingerprint(stored_fingerprint, current, str(engine_path))
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
        if self.engine is None:
            raise RuntimeFailure(f"TensorRT could not deserialise {engine_path}; rebuild it")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(self.inputs) != 1:
            raise RuntimeFailure(f"the tensorrt runtime runs single-input engines; this one has {self.inputs}")
        self.dtypes = {n: trt.nptype(self.engine.get_tensor_dtype(n)) for n in names}
        self.stream = self.torch.cuda.Stream()
        self.fingerprint = current

    def run(self, batch: np.ndarray) -> np.ndarray:
        torch = self.torch
        name = self.inputs[0]
        with torch.cuda.stream(self.stream):  # copies and execution ordered on one stream
            x = torch.from_numpy(np.ascontiguousarray(batch, dtype=self.dtypes[name])).cuda()
            self.context.set_input_shape(name, tuple(x.shape))
            self.context.set_tensor_address(name, x.data_ptr())
            outs = {}
            for out in self.outputs:
                shape = tuple(self.context.get_tensor_shape(out))
                dtype = torch.from_numpy(np.zeros(0, self.dtypes[out])).dtype
                outs[out] = torch.empty(shape, dtype=dtype, device="cuda")
                self.context.set_tensor_address(out, outs[out].data_ptr())
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise RuntimeFailure("TensorRT execute_async_v3 failed")
            result = outs[self.outputs[0]].float().cpu()  # .cpu() waits for the stream
        return result.numpy()
