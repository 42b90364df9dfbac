"""PyTorch eager on the CPU or a CUDA GPU: fp32, or fp16/bf16 autocast, optionally channels_last.

On CUDA the session times itself with CUDA events recorded around the whole call (input copy,
forward, output copy) and synchronises before reading them, because the host clock alone would
time only the kernel launches. The CUDA path has not been run on a GPU yet (no GPU was available
when it was written); the CPU path is tested.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import numpy as np
from pydantic import Field

from compress.errors import RuntimeFailure
from compress.runtimes.base import RuntimeOptions, Session, register_runtime, target_options
from compress.sources.inputs import call_module


class TorchOptions(RuntimeOptions):
    """``targets[].options`` of a torch target."""

    dtype: Literal["fp32", "fp16", "bf16"] = Field("fp32", description="fp16/bf16: autocast")
    channels_last: bool = Field(False, strict=True, description="Run in the channels_last memory format")
    device_id: int = Field(0, ge=0, strict=True, description="GPU index, for device: cuda")


def check_target(target, opts: TorchOptions) -> None:
    """Rules between the options and the target's device; ValueError names the option and the fix."""
    if opts.device_id and target.device == "cpu":
        raise ValueError("device_id is for GPUs; remove it or set device: cuda")


class TorchSession(Session):
    def __init__(self, module, device: str, threads: int | None, dtype: str, channels_last: bool):
        import torch

        self._torch = torch
        self.device = torch.device(device)
        self.threads = threads
        self.module = module.to(self.device).eval()
        self.channels_last = channels_last
        if channels_last:
            self.module = self.module.to(memory_format=torch.channels_last)
        self.autocast = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype]
        self.info = {
            "runtime": "torch",
            "torch": torch.__version__,
            "device": str(self.device),
            "precision": dtype if dtype == "fp32" else f"{dtype} autocast",
            "channels_last": channels_last,
            "threads": threads,
        }
        if self.device.type == "cuda":
            self.info["gpu"] = torch.cuda.get_device_name(self.device)
            # only a CUDA session times itself on the device (see the module docstring)
            self.time_run_ms = self._time_run_cuda_ms

    def _tensor(self, v: np.ndarray):
        """float inputs as float32 (channels_last when asked, for 4-D images); integer ones as they are."""
        torch = self._torch
        floating = np.issubdtype(np.asarray(v).dtype, np.floating)
        x = torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32 if floating else None)).to(self.device)
        if self.channels_last and floating and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _forward(self, inputs: Mapping[str, np.ndarray]):
        torch = self._torch
        if not isinstance(inputs, Mapping):
            raise TypeError(f"the torch runtime takes a mapping of named input arrays, got {type(inputs).__name__}")
        x = {k: self._tensor(v) for k, v in inputs.items()}
        before = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)  # global in torch: set for the call, then restored
        try:
            with torch.inference_mode():
                if self.autocast is not None:
                    with torch.autocast(self.device.type, dtype=self.autocast):
                        y = call_module(self.module, x)
                else:
                    y = call_module(self.module, x)
        finally:
            if self.threads:
                torch.set_num_threads(before)  # a later training in this process keeps its threads
        return y.float().cpu().numpy()

    def run(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        y = self._forward(inputs)
        if self.device.type == "cuda":
            self._torch.cuda.synchronize(self.device)
        return y

    def _time_run_cuda_ms(self, inputs: Mapping[str, np.ndarray]) -> float:
        torch = self._torch
        stream = torch.cuda.current_stream(self.device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record(stream)
        self._forward(inputs)
        end.record(stream)
        end.synchronize()
        return float(start.elapsed_time(end))

    def close(self) -> None:
        self.module = None
        if self.device.type == "cuda":
            self._torch.cuda.empty_cache()


@register_runtime(
    "torch", accepts={"torch"}, devices={"cpu", "cuda"},
    summary="PyTorch eager (CPU or CUDA; fp32, fp16/bf16 autocast, channels_last)",
    options=TorchOptions, check=check_target, imports=("torch",), example={"dtype": "bf16"},
)
def load(artifact, target) -> Session:
    import torch

    o = target_options(target)
    device = "cpu"
    if target.device == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeFailure(
                f"target {target.name!r} asks for device cuda, but torch sees no CUDA GPU on this machine"
            )
        if o.device_id >= torch.cuda.device_count():
            raise RuntimeFailure(
                f"targets.{target.name}.options.device_id {o.device_id}: torch sees "
                f"{torch.cuda.device_count()} GPU(s); use 0..{torch.cuda.device_count() - 1}"
            )
        device = f"cuda:{o.device_id}"
    module = artifact.load_module()
    return TorchSession(module, device, target.threads, o.dtype, o.channels_last)
