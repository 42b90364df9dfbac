"""TensorRT: run an engine built by the ``engine`` step, after checking its fingerprint.

Needs the ``tensorrt`` extra (``pip install -e '.[tensorrt]'`` in a checkout) and an NVIDIA GPU.
A batch larger than the engine's optimisation profile is run in chunks of at most ``batch_max``
rows (a last chunk under ``batch_min`` is padded and the padding dropped); every TensorRT call that
reports failure by its return value is checked. Not run on a GPU yet: see docs/tensorrt.md.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from pydantic import Field

from compress.errors import RuntimeFailure
from compress.runtimes.base import RuntimeOptions, Session, register_runtime, target_options
from compress.sources.inputs import bind


class TensorRTOptions(RuntimeOptions):
    """``targets[].options`` of a tensorrt target."""

    device_id: int = Field(0, ge=0, strict=True, description="GPU index (after CUDA_VISIBLE_DEVICES)")


class CudaBuffers:
    """Device memory as torch CUDA tensors, on one device and one stream (no pycuda needed)."""

    def __init__(self, device_id: int = 0):
        from compress.engine.tensorrt import torch_cuda

        self.torch = torch_cuda("the tensorrt runtime")
        if device_id >= self.torch.cuda.device_count():
            raise RuntimeFailure(f"no CUDA device {device_id}: torch sees {self.torch.cuda.device_count()} "
                                 "(CUDA_VISIBLE_DEVICES renumbers them from 0)")
        self.device = self.torch.device("cuda", device_id)
        self.stream = self.torch.cuda.Stream(device=self.device)

    def scope(self):
        stack = contextlib.ExitStack()
        stack.enter_context(self.torch.cuda.device(self.device))
        stack.enter_context(self.torch.cuda.stream(self.stream))
        return stack

    @property
    def stream_handle(self) -> int:
        return self.stream.cuda_stream

    def upload(self, array: np.ndarray):
        t = self.torch.from_numpy(np.ascontiguousarray(array)).to(self.device)
        return t, int(t.data_ptr())

    def empty(self, shape: tuple[int, ...], dtype):
        t = self.torch.empty(shape, dtype=self.torch.from_numpy(np.zeros(0, dtype)).dtype, device=self.device)
        return t, int(t.data_ptr())

    def download(self, tensor) -> np.ndarray:
        return tensor.float().cpu().numpy()  # .cpu() waits for the stream


class EngineSession:
    """A deserialised engine; ``run`` takes host arrays and returns the first output as float32."""

    def __init__(self, engine_path: Path, stored_fingerprint: dict | None, *, device_id: int = 0,
                 trt=None, buffers=None):
        from compress.engine.tensorrt import check_fingerprint, current_fingerprint, import_tensorrt

        trt = trt or import_tensorrt("the tensorrt runtime")
        self.buffers = buffers or CudaBuffers(device_id)
        self.fingerprint = current_fingerprint(device_id, trt)
        self.warnings = check_fingerprint(stored_fingerprint, self.fingerprint, str(engine_path))
        with self.buffers.scope():
            self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
            self.engine = self.runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
            if self.engine is None:
                raise RuntimeFailure(f"TensorRT could not deserialise {engine_path}; rebuild it")
            self.context = self.engine.create_execution_context()
            if self.context is None:
                raise RuntimeFailure(f"TensorRT could not create an execution context for {engine_path} "
                                     "(out of GPU memory?)")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.dtypes = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))) for n in names}
        lo, _opt, hi = self.engine.get_tensor_profile_shape(self.inputs[0], 0)
        self.batch_min, self.batch_max = int(lo[0]), int(hi[0])
        self.device_memory_bytes = getattr(self.engine, "device_memory_size_v2", None)

    def _feeds(self, inputs) -> dict[str, np.ndarray]:
        if not isinstance(inputs, Mapping):
            if len(self.inputs) != 1:
                raise RuntimeFailure(f"this engine has inputs {self.inputs}: pass a mapping of name -> array")
            inputs = {self.inputs[0]: inputs}
        missing = set(self.inputs) - set(inputs)
        if missing:
            raise RuntimeFailure(f"missing engine input(s) {sorted(missing)}; the engine has {self.inputs}")
        rows = {len(inputs[n]) for n in self.inputs}
        if len(rows) != 1:
            raise RuntimeFailure(f"the engine's inputs have different batch sizes {sorted(rows)}")
        return {n: np.asarray(inputs[n], dtype=self.dtypes[n]) for n in self.inputs}

    def run(self, inputs) -> np.ndarray:
        from compress.engine.tensorrt import run_in_profile

        with self.buffers.scope():
            return run_in_profile(self._feeds(inputs), self.batch_min, self.batch_max, self._run_chunk)

    def _run_chunk(self, chunk: dict[str, np.ndarray]) -> np.ndarray:
        ctx, keep = self.context, []
        for name, x in chunk.items():
            if not ctx.set_input_shape(name, tuple(x.shape)):
                raise RuntimeFailure(f"TensorRT refused input shape {tuple(x.shape)} for {name!r} "
                                     f"(profile batch {self.batch_min}..{self.batch_max})")
            buf, ptr = self.buffers.upload(x)
            keep.append(buf)
            if not ctx.set_tensor_address(name, ptr):
                raise RuntimeFailure(f"TensorRT refused the device address of input {name!r}")
        outs = {}
        for name in self.outputs:
            shape = tuple(int(d) for d in ctx.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise RuntimeFailure(f"TensorRT could not infer the shape of output {name!r}: {shape}")
            outs[name], ptr = self.buffers.empty(shape, self.dtypes[name])
            if not ctx.set_tensor_address(name, ptr):
                raise RuntimeFailure(f"TensorRT refused the device address of output {name!r}")
        if not ctx.execute_async_v3(self.buffers.stream_handle):
            raise RuntimeFailure("TensorRT execute_async_v3 failed (see the TensorRT log)")
        return self.buffers.download(outs[self.outputs[0]])


class TensorRTSession(Session):
    def __init__(self, artifact, device_id: int = 0, **engine_kwargs):
        from compress.engine.tensorrt import read_fingerprint

        meta = artifact.meta.get("tensorrt") or {}
        stored = meta.get("fingerprint") or read_fingerprint(artifact.path)  # the sidecar travels with the plan
        self.engine = EngineSession(artifact.path, stored, device_id=device_id, **engine_kwargs)
        self.info = {"runtime": "tensorrt", "fingerprint": self.engine.fingerprint,
                     "precision": meta.get("precision"), "device_id": device_id,
                     "batch_profile": [self.engine.batch_min, self.engine.batch_max],
                     "engine_device_memory_bytes": self.engine.device_memory_bytes,
                     "fingerprint_warnings": self.engine.warnings}

    def run(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        return self.engine.run(bind(inputs, self.engine.inputs, "this TensorRT engine"))

    def close(self) -> None:
        """Free the engine and its context (TensorRT's device memory) before the next session loads."""
        self.engine.context = self.engine.engine = None


@register_runtime("tensorrt", accepts={"tensorrt"}, devices={"cuda"},
                  summary="TensorRT engines (NVIDIA GPUs)", extra="tensorrt", options=TensorRTOptions,
                  imports=("tensorrt",), example={"device_id": 0})
def load(artifact, target) -> Session:
    return TensorRTSession(artifact, target_options(target).device_id)
