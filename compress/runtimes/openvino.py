"""OpenVINO runtime: reads ONNX directly or OpenVINO IR; CPU (GPU/NPU where present).

Settings come from the target's ``options``: ``precision`` (f32, bf16, f16: the inference precision
hint), ``hint`` (LATENCY or THROUGHPUT), ``streams``, ``requests`` (async infer requests in
THROUGHPUT mode; the profiler times a THROUGHPUT session with every request busy on a whole batch
and reports the time per batch that gives). The precision OpenVINO actually compiled is read back and reported: on CPUs with
AMX, OpenVINO runs an fp32 model in bf16 unless told otherwise, and the report must say so.
"""

from __future__ import annotations

import contextlib
import ctypes
import sys
import time
from collections.abc import Iterator, Mapping
from typing import Literal

import numpy as np
from pydantic import Field, field_validator

from compress.errors import MissingDependency, RecipeError, RuntimeFailure
from compress.runtimes.base import RuntimeOptions, Session, register_runtime, target_options
from compress.sources.inputs import batch_size, bind

PRECISIONS = {"f32": "f32", "fp32": "f32", "bf16": "bf16", "f16": "f16", "fp16": "f16"}
DEVICES = {"cpu": "CPU", "gpu": "GPU", "npu": "NPU"}


class OpenVINOOptions(RuntimeOptions):
    """``targets[].options`` of an openvino target."""

    precision: Literal["f32", "fp32", "bf16", "f16", "fp16"] | None = Field(
        None, description="Inference precision hint; default: OpenVINO's (bf16 on CPUs with AMX)"
    )
    hint: Literal["LATENCY", "THROUGHPUT"] = Field(
        "LATENCY", description="Performance hint (case-insensitive); THROUGHPUT runs async requests"
    )
    streams: int | None = Field(None, ge=1, strict=True, description="Number of execution streams")
    requests: int | None = Field(
        None, ge=1, strict=True, description="THROUGHPUT infer requests; default: OpenVINO's optimal number"
    )

    @field_validator("hint", mode="before")
    @classmethod
    def _upper(cls, v):
        return v.upper() if isinstance(v, str) else v


def import_openvino():
    try:
        import openvino as ov
    except ImportError:
        raise MissingDependency("openvino", "openvino", "The openvino runtime") from None
    return ov


class _SignalStack(ctypes.Structure):  # stack_t of sigaltstack(2) on Linux
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


@contextlib.contextmanager
def own_signal_stack() -> Iterator[None]:
    """Keep this thread's alternate signal stack as it was across an OpenVINO compile.

    OpenVINO's CPU plugin installs an alternate signal stack on the thread that loads it (the first
    device query or compile) and unmaps it when the Core goes away, without uninstalling it from that thread when the Core is
    released on another one (Python's garbage collector runs in whichever thread allocates). Python's
    signal handlers run on the alternate stack (SA_ONSTACK), so the next Ctrl-C or SIGTERM then
    killed the process with SIGSEGV instead of stopping it (seen: `compress search` interrupted while
    fine-tuning, after an OpenVINO trial). tests/test_openvino.py reproduces it."""
    if not sys.platform.startswith("linux"):
        yield
        return
    libc = ctypes.CDLL(None, use_errno=True)
    before = _SignalStack()
    if libc.sigaltstack(None, ctypes.byref(before)) != 0:
        yield
        return
    try:
        yield
    finally:
        libc.sigaltstack(ctypes.byref(before), None)


class OpenVINOSession(Session):
    """Compiles one static-shape model per batch size (faster than dynamic shapes on CPU)."""

    def __init__(self, path: str, device: str, threads: int | None, precision: str | None,
                 hint: str, streams: int | None, requests: int | None):
        with own_signal_stack():  # loading the CPU plugin installs one (own_signal_stack says why)
            self._open(path, device, threads, precision, hint, streams, requests)

    def _open(self, path: str, device: str, threads: int | None, precision: str | None,
              hint: str, streams: int | None, requests: int | None) -> None:
        ov = import_openvino()
        self._ov = ov
        self.core = ov.Core()
        if device not in self.core.available_devices:
            raise RuntimeFailure(
                f"OpenVINO device {device} is not available here (available: "
                f"{', '.join(self.core.available_devices)})"
            )
        try:
            self.model = self.core.read_model(path)
        except Exception as err:
            raise RuntimeFailure(f"OpenVINO could not read {path}: {err}") from err
        self.input_names = [i.get_any_name() for i in self.model.inputs]
        self.device = device
        self.hint = hint
        self.requests = requests
        self.config = {"PERFORMANCE_HINT": hint}
        if precision:
            caps = self.core.get_property(device, "OPTIMIZATION_CAPABILITIES")
            if precision.upper() not in {c.upper() for c in caps} and precision != "f32":
                raise RuntimeFailure(
                    f"OpenVINO {device} cannot run precision {precision} (capabilities: {', '.join(caps)})"
                )
            self.config["INFERENCE_PRECISION_HINT"] = precision
        if threads:
            self.config["INFERENCE_NUM_THREADS"] = threads
        if streams:
            self.config["NUM_STREAMS"] = streams
        self._compiled: dict[int, object] = {}
        self._pools: dict[int, list] = {}  # batch size -> infer requests (THROUGHPUT)
        first = self._get(1)
        actual = str(first.get_property("INFERENCE_PRECISION_HINT"))
        self.info = {
            "runtime": "openvino",
            "openvino": ov.__version__,
            "device": device,
            "hint": hint,
            "precision_requested": precision or "default",
            "precision": _precision_name(actual),
            "streams": int(first.get_property("NUM_STREAMS")),
            "optimal_requests": int(first.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")),
        }
        if hint == "THROUGHPUT":
            # The profiler times a session through time_run_ms when it has one: here, every
            # infer request works on a whole batch at once, as a busy server's would.
            self.time_run_ms = self._time_concurrent_ms
            self.info["timing"] = "concurrent"
            self.info["concurrent_requests"] = self._n_requests()

    def _n_requests(self) -> int:
        """THROUGHPUT infer requests: the target's ``requests``, else OpenVINO's optimal number."""
        return self.requests or self.info["optimal_requests"] or 1

    def _get(self, batch: int):
        if batch not in self._compiled:
            model = self.model.clone()
            shapes = {}
            for port in model.inputs:  # every input's batch axis; other axes as the file has them
                shape = list(port.get_partial_shape())
                shape[0] = batch
                shapes[port] = self._ov.PartialShape(shape)
            try:
                model.reshape(shapes)
                with own_signal_stack():
                    self._compiled[batch] = self.core.compile_model(model, self.device, self.config)
            except Exception as err:
                raise RuntimeFailure(f"OpenVINO could not compile the model for batch {batch}: {err}") from err
        return self._compiled[batch]

    def _feed(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = bind(inputs, self.input_names, "this OpenVINO model")
        return {k: np.ascontiguousarray(v, dtype=np.float32 if np.issubdtype(v.dtype, np.floating) else None)
                for k, v in feed.items()}

    def run(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        x = self._feed(inputs)
        n = batch_size(x)
        if self.hint == "THROUGHPUT" and n > 1:
            return self._run_async(x, n)
        compiled = self._get(n)
        return np.asarray(compiled(x)[0])

    def _run_async(self, x: dict[str, np.ndarray], n: int) -> np.ndarray:
        """Split the batch over the async infer requests; results come back in input order.

        Requests are started and waited on from this thread (no Python callbacks): a callback runs
        on OpenVINO's stream threads and needs the GIL, which deadlocked the destruction of a
        compiled model at interpreter exit.
        """
        n_req = min(self._n_requests(), n)
        bounds = np.array_split(np.arange(n), n_req)
        used: dict[int, int] = {}
        running = []
        for rows in bounds:
            chunk = {k: v[rows[0] : rows[-1] + 1] for k, v in x.items()}
            size = len(rows)
            pool = self._pools.setdefault(size, [])
            k = used.get(size, 0)
            if k == len(pool):
                pool.append(self._get(size).create_infer_request())
            used[size] = k + 1
            req = pool[k]
            req.start_async(chunk)
            running.append(req)
        for req in running:
            req.wait()
        return np.concatenate([np.array(req.get_output_tensor(0).data) for req in running], axis=0)

    def _time_concurrent_ms(self, inputs: Mapping[str, np.ndarray]) -> float:
        """THROUGHPUT timing: start ``requests`` infer requests on a full copy of ``batch`` each, wait
        for all, and return the wall time divided by their number: the time per batch a saturated
        server sees (its throughput is batch / this), not the latency of one request."""
        x = self._feed(inputs)
        n = batch_size(x)
        n_req = self._n_requests()
        pool = self._pools.setdefault(-n, [])  # negative key: full-batch requests
        while len(pool) < n_req:
            pool.append(self._get(n).create_infer_request())
        t0 = time.perf_counter()
        for req in pool[:n_req]:
            req.start_async(x)
        for req in pool[:n_req]:
            req.wait()
        return (time.perf_counter() - t0) * 1e3 / n_req

    def close(self) -> None:
        self._pools.clear()
        self._compiled.clear()


def _precision_name(raw) -> str:
    """OpenVINO element type (e.g. <Type: 'bfloat16'>) -> f32 / bf16 / f16."""
    text = str(raw).lower()
    for key, name in (("bfloat16", "bf16"), ("bf16", "bf16"), ("float16", "f16"), ("f16", "f16"),
                      ("float32", "f32"), ("f32", "f32")):
        if key in text:
            return name
    return text


#: x86 CPU flags that give OpenVINO's CPU plugin native kernels for a reduced precision
CPU_PRECISION_FLAGS = {"bf16": ("avx512_bf16", "amx_bf16"), "f16": ("avx512_fp16", "amx_fp16")}


def _check(target, opts: OpenVINOOptions) -> None:
    """A reduced precision on an x86 CPU without the instructions for it is refused at load time."""
    import platform

    from compress.quantization.targets import cpu_flags

    precision = PRECISIONS.get(opts.precision or "f32")
    if target.device != "cpu" or precision not in CPU_PRECISION_FLAGS:
        return
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return  # ARM CPUs run f16 natively; OpenVINO checks its capabilities when it compiles
    need = CPU_PRECISION_FLAGS[precision]
    if not set(need) & cpu_flags():
        raise ValueError(
            f"precision: {opts.precision} needs a CPU with {' or '.join(need)}, and this machine's "
            "CPU has neither (/proc/cpuinfo): OpenVINO would emulate it or refuse; use precision: "
            "f32, or int8 (the quantize step)"
        )


@register_runtime(
    "openvino", accepts={"onnx", "openvino"}, devices={"cpu", "gpu", "npu"}, check=_check,
    summary="OpenVINO (reads ONNX or IR; LATENCY or THROUGHPUT with async requests)",
    extra="openvino", options=OpenVINOOptions, imports=("openvino",),
    example={"hint": "THROUGHPUT", "requests": 2},
)
def load(artifact, target) -> Session:
    o = target_options(target)
    if target.device not in DEVICES:
        raise RecipeError(
            f"targets.{target.name}: the openvino runtime runs on device cpu, gpu or npu, not {target.device!r}"
        )
    return OpenVINOSession(
        str(artifact.path), DEVICES[target.device], target.threads,
        PRECISIONS[o.precision] if o.precision else None, o.hint, o.streams, o.requests,
    )
