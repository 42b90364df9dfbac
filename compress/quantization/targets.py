"""Target-aware quantization defaults: which int8 settings are fast on which hardware.

Every row says where its settings come from. Rows marked ``measured_here`` were timed with
``eval/bench_quantization.py`` on this project's 2-core Sapphire Rapids machine (AVX-512 VNNI + AMX);
the others follow ONNX Runtime's and TensorRT's documentation and have NOT been measured here
(docs/steps/quantize.md has the table and the numbers).
"""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path

TARGET_NAMES = ("auto", "x86-vnni", "x86", "arm", "cuda", "tensorrt")
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


@dataclass(frozen=True)
class QuantDefaults:
    """The settings a target gets when the recipe leaves a field unset."""

    format: str
    activation_type: str
    weight_type: str
    per_channel: bool
    symmetric_activations: bool
    symmetric_weights: bool
    reduce_range: bool
    pad_channels: int
    channel_pads_as_convs: bool
    why: str
    measured_here: bool
    extra: dict = field(default_factory=dict)  # quantize_static extra_options

    def settings(self) -> dict:
        d = asdict(self)
        d.pop("why")
        d.pop("measured_here")
        return d


DEFAULTS: dict[str, QuantDefaults] = {
    "x86-vnni": QuantDefaults(
        "qdq", "uint8", "int8", True, False, True, False, 4, True,
        why="U8S8: ORT's x86 kernels fuse DQ->Conv->Q into QLinearConv for uint8 activations; with "
        "int8 activations only some convolutions fuse and the model can be slower than fp32. "
        "Input channels padded to a multiple of 4: the int8 stem conv of an RGB model is 2-3x "
        "slower with 3 input channels than with 4. Channel Pads (option-A shortcuts) as 1x1 "
        "Convs, which run in int8 instead of dequantize -> float Pad -> quantize",
        measured_here=True,
    ),
    "x86": QuantDefaults(
        "qdq", "uint8", "int8", True, False, True, True, 0, False,
        why="U8S8 with 7-bit weights (reduce_range): without VNNI the 8-bit dot product can "
        "saturate (ORT's quantize_static guidance)",
        measured_here=False,
    ),
    "arm": QuantDefaults(
        "qdq", "int8", "int8", True, True, True, False, 0, False,
        why="S8S8 symmetric: ARM int8 kernels prefer symmetric int8 activations (ORT's guidance)",
        measured_here=False,
    ),
    "cuda": QuantDefaults(
        "qdq", "int8", "int8", True, True, True, False, 0, False,
        why="symmetric S8S8 QDQ, the form GPU int8 kernels consume (ORT's guidance for GPU); the "
        "fp16 step is the other GPU option",
        measured_here=False,
    ),
    "tensorrt": QuantDefaults(
        "qdq", "int8", "int8", True, True, True, False, 0, False,
        why="TensorRT accepts only symmetric int8 QDQ (zero point 0), per-channel weights; biases "
        "stay float (QuantizeBias off): TensorRT's ONNX parser rejects the int32-bias "
        "DequantizeLinear nodes ORT writes otherwise (onnx-tensorrt #850, onnxruntime #14229)",
        measured_here=False, extra={"QuantizeBias": False},
    ),
}


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()


def detect_target(machine: str | None = None, flags: set[str] | None = None) -> str:
    """The CPU target of this machine: x86-vnni, x86 or arm."""
    machine = (machine or platform.machine()).lower()
    if machine in ("arm64", "aarch64") or machine.startswith("arm"):
        return "arm"
    flags = cpu_flags() if flags is None else flags
    return "x86-vnni" if any(f in flags for f in VNNI_FLAGS) else "x86"


def resolve_target(target: str) -> str:
    """``auto`` becomes the build machine's CPU target; the other names stay as they are."""
    if target not in TARGET_NAMES:
        raise ValueError(f"unknown quantization target {target!r}; valid: {', '.join(TARGET_NAMES)}")
    return detect_target() if target == "auto" else target


def defaults_table_markdown() -> str:
    """The table of docs/steps/quantize.md, generated from DEFAULTS so the two cannot drift."""
    head = ("| target | format | activations | weights | per-channel | sym. act. | reduce_range | "
            "pad_channels | channel_pads_as_convs | why | measured here |")
    lines = [head, "|" + "---|" * 11]
    for name, d in DEFAULTS.items():
        lines.append(
            f"| {name} | {d.format} | {d.activation_type} | {d.weight_type} | {d.per_channel} | "
            f"{d.symmetric_activations} | {d.reduce_range} | {d.pad_channels or 'off'} | {d.channel_pads_as_convs} | {d.why} | "
            f"{'yes' if d.measured_here else 'no'} |"
        )
    return "\n".join(lines)
