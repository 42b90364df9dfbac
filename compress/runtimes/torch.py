"""PyTorch eager runtime (CPU, or CUDA when present)."""

from __future__ import annotations

import numpy as np

from compress.errors import RuntimeFailure
from compress.runtimes.base import Session, check_options, register_runtime

OPTIONS = ("dtype", "channels_last")


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
            "device": device,
            "precision": dtype,
            "channels_last": channels_last,
        }

    def run(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        if self.threads:
            torch.set_num_threads(self.threads)
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            if self.autocast is not None:
                with torch.autocast(self.device.type, dtype=self.autocast):
                    y = self.module(x)
            else:
                y = self.module(x)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return y.float().cpu().numpy()


@register_runtime(
    "torch", accepts={"torch"}, devices={"cpu", "cuda"}, summary="PyTorch eager", options=OPTIONS
)
def load(artifact, target) -> Session:
    import torch

    check_options(target, OPTIONS)
    if target.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeFailure(
            f"target {target.name!r} asks for device cuda, but torch sees no CUDA GPU on this machine"
        )
    dtype = target.options.get("dtype", "fp32")
    if dtype not in ("fp32", "fp16", "bf16"):
        raise RuntimeFailure(f"targets.{target.name}.options.dtype must be fp32, fp16 or bf16, got {dtype!r}")
    module = artifact.load_module()
    return TorchSession(module, target.device, target.threads, dtype, bool(target.options.get("channels_last", False)))
