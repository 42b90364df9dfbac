"""TensorRT 10 and 11: build an engine from ONNX and fingerprint what it was built for.

Shared by the ``engine`` step (compress/steps/engine.py) and the ``tensorrt`` runtime
(compress/runtimes/tensorrt.py). The two majors differ in how precision is chosen
(``build_plan``): TensorRT 10 has precision builder flags (``BuilderFlag.FP16``/``INT8``) and the
implicit-quantization entropy calibrator (deprecated since 10.1); TensorRT 11 removed both, every
network is strongly typed and types come from the ONNX model (TensorRT's "10.x to 11.x" migration
guide). So int8 is explicit quantization (a QDQ model, strongly typed network) on both; fp16 on
TensorRT 11 converts the model to float16 first; the calibrator is refused where it does not exist.

NOTHING IN THIS MODULE HAS RUN AGAINST A REAL TensorRT: the machines this project is developed on
have no GPU. tests/test_tensorrt.py runs it against tests/fake_tensorrt.py, a stand-in that
records the API calls; the real-GPU tests are marked ``tensorrt`` (docs/tensorrt.md).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compress.errors import MissingDependency, RuntimeFailure, StepError, install_hint

SUPPORTED_MAJORS = (10, 11)
#: fields that make an engine unusable when they differ; they are also the engine step's cache key
STRICT_FIELDS = ("tensorrt", "tensorrt_cuda", "gpu", "compute_capability")
#: recorded for the report; a difference is a warning, not an error
SOFT_FIELDS = ("driver",)
FINGERPRINT_SUFFIX = ".fingerprint.json"


def tensorrt_major(trt) -> int:
    return int(str(trt.__version__).split(".")[0])


def import_tensorrt(purpose: str):
    """The tensorrt module, if its major version is one compress supports."""
    try:
        import tensorrt as trt
    except ImportError:
        raise MissingDependency("tensorrt", "tensorrt", purpose) from None
    if tensorrt_major(trt) not in SUPPORTED_MAJORS:
        raise RuntimeFailure(
            f"{purpose}: TensorRT {trt.__version__} is installed, compress supports TensorRT "
            f"{' and '.join(map(str, SUPPORTED_MAJORS))}: {install_hint('tensorrt')}"
        )
    return trt


# --------------------------------------------------------------------------- version dispatch


@dataclass(frozen=True)
class BuildPlan:
    """How one precision is built on one TensorRT major."""

    network_flags: int  # for Builder.create_network
    set_flags: tuple[str, ...]  # BuilderFlag names to set
    clear_flags: tuple[str, ...]  # BuilderFlag names to clear (TF32 unless asked)
    calibrate: bool  # attach the entropy calibrator
    convert_fp16: bool  # convert the ONNX model to float16 before parsing (TensorRT 11 fp16)
    strongly_typed: bool


def build_plan(trt, precision: str, *, tf32: bool = False) -> BuildPlan:
    """Network flags, builder flags and model conversion for ``precision`` on the installed TensorRT.
    A StepError names the fix when the installed version cannot build it."""
    major = tensorrt_major(trt)
    clear = () if tf32 or not hasattr(trt.BuilderFlag, "TF32") else ("TF32",)  # TF32 is on by default
    if major >= 11:  # strongly typed always (the creation flag is ignored): types come from the model
        if precision == "int8-calibrate":
            raise StepError(
                f"precision int8-calibrate needs TensorRT's implicit-quantization calibrator, which "
                f"TensorRT {trt.__version__} removed (11.x): use precision: int8-qdq after "
                "`- quantize: {target: tensorrt}` (explicit quantization), or install TensorRT 10 "
                "(pip install 'tensorrt>=10.1,<11')"
            )
        return BuildPlan(0, (), clear, False, precision == "fp16", True)
    strongly = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    if precision == "fp32":
        return BuildPlan(0, (), clear, False, False, False)
    if precision == "fp16":
        return BuildPlan(0, ("FP16",), clear, False, False, False)
    if precision == "int8-qdq":  # explicit quantization: precision flags are not allowed, types are the model's
        return BuildPlan(strongly, (), clear, False, False, True)
    if not hasattr(trt, "IInt8EntropyCalibrator2"):
        raise StepError(f"precision int8-calibrate: TensorRT {trt.__version__} has no "
                        "IInt8EntropyCalibrator2; use precision: int8-qdq")
    return BuildPlan(0, ("FP16", "INT8"), clear, True, False, False)


# --------------------------------------------------------------------------- fingerprint


@functools.cache
def tensorrt_cuda_major() -> str | None:
    """The CUDA major TensorRT's wheel was built for, from its package name (tensorrt-cu12 -> '12')."""
    from importlib import metadata

    for dist in metadata.distributions():
        name = (dist.metadata.get("Name") or "").lower().replace("_", "-")
        if name.startswith("tensorrt-cu") and name[len("tensorrt-cu"):].split("-")[0].isdigit():
            return name[len("tensorrt-cu"):].split("-")[0]
    return None


def gpu_identity(device: int = 0) -> dict:
    """Name and compute capability of CUDA device ``device`` (CUDA_VISIBLE_DEVICES applies)."""
    torch = torch_cuda("TensorRT")
    major, minor = torch.cuda.get_device_capability(device)
    return {"gpu": torch.cuda.get_device_name(device), "compute_capability": f"{major}.{minor}"}


@functools.cache
def driver_version() -> str | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        v = pynvml.nvmlSystemGetDriverVersion()
        return v.decode() if isinstance(v, bytes) else str(v)
    except Exception:  # pynvml missing, or NVML without permission: the driver is a soft field
        return None


def current_fingerprint(device: int = 0, trt=None) -> dict:
    """What an engine built here, on CUDA device ``device``, is tied to."""
    trt = trt or import_tensorrt("the TensorRT fingerprint")
    return {"tensorrt": str(trt.__version__), "tensorrt_cuda": tensorrt_cuda_major(),
            **gpu_identity(device), "driver": driver_version()}


def cache_key_fingerprint(device: int = 0) -> dict:
    """The strict fields of this machine's fingerprint, or why there is none (the engine step's
    cache key: an engine cached for another GPU or TensorRT is never reused)."""
    try:
        fp = current_fingerprint(device)
    except (MissingDependency, RuntimeFailure) as err:
        # the kind of failure, not its message: that names paths of this checkout, and the key
        # must not change with where compress is installed
        return {"unavailable": type(err).__name__}
    return {k: fp[k] for k in STRICT_FIELDS}


def compare_fingerprints(stored: dict | None, current: dict) -> tuple[list[str], list[str]]:
    """(errors, warnings): errors make the engine stale, warnings are worth reporting."""
    if not stored:
        return (["the engine has no fingerprint (it was not built by compress, or its "
                 f"{FINGERPRINT_SUFFIX} file was lost); rebuild it with the engine step"], [])
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
    return engine_path.with_name(engine_path.name + FINGERPRINT_SUFFIX)


def write_fingerprint(engine_path: Path, fp: dict) -> Path:
    path = fingerprint_path(engine_path)
    path.write_text(json.dumps(fp, indent=2, sort_keys=True))
    return path


def read_fingerprint(engine_path: Path) -> dict | None:
    p = fingerprint_path(Path(engine_path))
    return json.loads(p.read_text()) if p.is_file() else None


# --------------------------------------------------------------------------- build


def torch_cuda(purpose: str):
    import torch

    if not torch.cuda.is_available():
        raise RuntimeFailure(
            f"{purpose} needs an NVIDIA GPU with CUDA, and torch sees none "
            f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'}); run it on a GPU machine"
        )
    return torch


def onnx_has_qdq(path: Path) -> bool:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)


def to_float16_onnx(src: Path, dst: Path) -> Path:
    """The model in float16 with float32 inputs and outputs (what TensorRT 11 builds in fp16)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    onnx.save(convert_float_to_float16(onnx.load(str(src)), keep_io_types=True), str(dst))
    return dst


def entropy_calibrator(trt, batches: Sequence[np.ndarray], cache_path: Path, device: int = 0):
    """IInt8EntropyCalibrator2 (TensorRT 10) over host batches of the profile's opt shape."""
    torch = torch_cuda("int8 calibration")

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.batches = [np.ascontiguousarray(b, dtype=np.float32) for b in batches]
            self.index = 0
            self.device = torch.empty(self.batches[0].shape, dtype=torch.float32, device=f"cuda:{device}")

        def get_batch_size(self):
            return int(self.batches[0].shape[0])

        def get_batch(self, names):
            if self.index >= len(self.batches):
                return None
            self.device.copy_(torch.from_numpy(self.batches[self.index]))
            torch.cuda.synchronize(self.device.device)
            self.index += 1
            return [int(self.device.data_ptr())] * len(names)

        def read_calibration_cache(self):
            return cache_path.read_bytes() if cache_path.is_file() else None

        def write_calibration_cache(self, cache):
            cache_path.write_bytes(bytes(cache))

    return EntropyCalibrator()


def input_profile(input_spec, name: str, batch: tuple[int, int, int],
                   seq: tuple[int, int, int] | None = None) -> list[tuple[int, ...]]:
    """The min / opt / max shapes of input ``name``: the batch range, and for a text input the
    sequence range too (``seq``, default 1 / max_length / max_length)."""
    if input_spec.kind == "image":
        return [input_spec.shape(name, b) for b in batch]
    lo, opt, hi = seq or (1, input_spec.seq_len, input_spec.seq_len)
    return [input_spec.shape(name, b, s) for b, s in zip(batch, (lo, opt, hi), strict=True)]


def build_engine(onnx_path: Path, engine_path: Path, *, precision: str, input_spec=None,
                 batch_min: int, batch_opt: int, batch_max: int, workspace_bytes: int, tf32: bool = False,
                 seq: tuple[int, int, int] | None = None,
                 device: int = 0, calibration_batches: Sequence[np.ndarray] | None = None,
                 log=print, trt=None, calibrator=None, input_shape: tuple[int, ...] | None = None) -> dict:
    """Build and serialise an engine with one optimisation profile covering every named input of
    ``input_spec`` (an InputSpec; ``input_shape=``, one image sample's shape, also works); return its
    fingerprint (also written beside the engine)."""
    from compress.sources.inputs import as_input_spec

    if (input_spec is None) == (input_shape is None):
        raise TypeError("build_engine takes input_spec or input_shape, exactly one")
    input_spec = as_input_spec(input_spec if input_spec is not None else input_shape)
    trt = trt or import_tensorrt("the engine step")
    plan = build_plan(trt, precision, tf32=tf32)
    fp = current_fingerprint(device, trt)
    if plan.convert_fp16:
        onnx_path = to_float16_onnx(onnx_path, engine_path.with_name("model.fp16.onnx"))
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(plan.network_flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        hint = (" (int32-bias DequantizeLinear nodes: quantize with target: tensorrt, which leaves "
                "biases in float)" if "DequantizeLinear" in errors else "")
        raise StepError(f"TensorRT could not parse {onnx_path}: {errors}{hint}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    for flag in plan.set_flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    for flag in plan.clear_flags:
        config.clear_flag(getattr(trt.BuilderFlag, flag))
    profile = builder.create_optimization_profile()
    names = [network.get_input(i).name for i in range(network.num_inputs)]
    unknown = [n for n in names if n not in input_spec.names]
    if unknown and not (len(names) == 1 and len(input_spec.names) == 1):  # one input: any name
        raise StepError(f"the ONNX model's inputs {names} are not the data's {list(input_spec.names)}: "
                        "export the model from this recipe's data")
    for name in names:
        lo, opt, hi = input_profile(input_spec, name if name in input_spec.names else input_spec.names[0],
                                     (batch_min, batch_opt, batch_max), seq)
        if profile.set_shape(name, lo, opt, hi) is False:
            raise StepError(f"TensorRT rejected the profile shapes of input {name!r}: "
                            f"{list(lo)} / {list(opt)} / {list(hi)}")
    if config.add_optimization_profile(profile) < 0:
        raise StepError(f"TensorRT rejected the optimisation profile (batch {batch_min}/{batch_opt}/"
                        f"{batch_max}, inputs {input_spec.describe()}): check model.input_shape "
                        "(images) or data.text.max_length (text)")
    if plan.calibrate:
        if not calibration_batches:
            raise StepError("int8-calibrate needs calibration batches from the calibration split")
        wrong = {len(b) for b in calibration_batches} - {batch_opt}
        if wrong:  # TensorRT calibrates at the calibration profile's opt shape
            raise StepError(f"calibration batches of {sorted(wrong)} images; TensorRT calibrates at "
                            f"the profile's opt batch ({batch_opt})")
        config.int8_calibrator = (calibrator or entropy_calibrator)(
            trt, calibration_batches, engine_path.with_name("calibration.cache"), device)
        if config.set_calibration_profile(profile) is False:
            raise StepError("TensorRT rejected the calibration profile")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise StepError("TensorRT failed to build the engine (see the TensorRT log above); try a "
                        "larger workspace_mb or precision: fp16")
    engine_path.write_bytes(bytes(serialized))
    write_fingerprint(engine_path, fp)
    log(f"TensorRT {trt.__version__} engine built: {engine_path.stat().st_size} bytes, {precision}, "
        f"{fp['gpu']}")
    return fp


# --------------------------------------------------------------------------- batches vs the profile


def split_batch(n: int, batch_min: int, batch_max: int) -> list[tuple[int, int, int]]:
    """``(start, stop, run_size)`` chunks that cover ``n`` rows with run sizes inside the profile:
    at most ``batch_max`` rows each; a chunk under ``batch_min`` is padded to it (run_size > stop-start)."""
    if n < 1:
        raise ValueError(f"a batch needs at least one row, got {n}")
    chunks = []
    for start in range(0, n, batch_max):
        stop = min(start + batch_max, n)
        chunks.append((start, stop, max(stop - start, batch_min)))
    return chunks


def run_in_profile(feed: dict[str, np.ndarray], batch_min: int, batch_max: int, run_chunk) -> np.ndarray:
    """``run_chunk(chunk) -> outputs`` over ``feed`` in chunks the profile allows (``split_batch``),
    the padding's outputs dropped; the outputs concatenated in row order."""
    n = len(next(iter(feed.values())))
    parts = []
    for start, stop, size in split_batch(n, batch_min, batch_max):
        chunk = {k: v[start:stop] for k, v in feed.items()}
        if size > stop - start:  # under batch_min: pad with zeros, drop their outputs
            chunk = {k: np.concatenate([v, np.zeros((size - len(v), *v.shape[1:]), v.dtype)])
                     for k, v in chunk.items()}
        parts.append(run_chunk(chunk)[: stop - start])
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def profile_problems(batch_sizes: Sequence[int], batch_min: int, batch_max: int, where: str) -> list[str]:
    """Messages for batch sizes outside the profile (they would be timed split or padded)."""
    outside = sorted({b for b in batch_sizes if not batch_min <= b <= batch_max})
    if not outside:
        return []
    return [f"{where} {outside} outside the engine's profile batch_min..batch_max "
            f"({batch_min}..{batch_max}): the runtime would split or pad them, so their latency is "
            f"not the engine's; set batch_min: {min(min(outside), batch_min)} and batch_max: "
            f"{max(max(outside), batch_max)}, or drop those batch sizes"]
