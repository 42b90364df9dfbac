"""A stand-in for the ``tensorrt`` module. It is NOT TensorRT and proves nothing about TensorRT itself.

It has the shape of the TensorRT 10 or 11 Python API that compress calls (``make(version)``: 11 has
no ``BuilderFlag.FP16``/``INT8``, no ``int8_calibrator`` and no ``IInt8EntropyCalibrator2``, as
TensorRT's "10.x to 11.x" migration guide lists), records every call in ``trt.calls``, and lets a
test make any call report failure (``trt.fail = {"set_input_shape", ...}``). Its "engine" returns
the first ``classes`` input values of each row as logits, so splitting and padding can be checked.
``FakeBuffers`` stands in for the torch CUDA buffers.
"""

from __future__ import annotations

import contextlib
import enum
import types

import numpy as np


class FakeBuffers:
    """Host arrays in place of device memory; a pointer is a key into ``memory``."""

    def __init__(self, memory: dict):
        self.memory = memory
        self.stream_handle = 0

    def scope(self):
        return contextlib.nullcontext()

    def _store(self, array):
        ptr = len(self.memory) + 1
        self.memory[ptr] = array
        return array, ptr

    def upload(self, array):
        return self._store(np.array(array))

    def empty(self, shape, dtype):
        return self._store(np.zeros(shape, dtype))

    def download(self, array):
        return np.asarray(array, np.float32)


def make(version: str = "10.13.0", *, profile=((1, 3, 8, 8), (4, 3, 8, 8), (8, 3, 8, 8)), classes: int = 10,
         inputs: tuple[str, ...] = ("input",)):
    """A fake ``tensorrt`` module of ``version`` whose engines have this input ``profile``; the
    networks it parses have the named ``inputs``."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    major = int(version.split(".")[0])
    trt.calls = []
    trt.fail = set()
    trt.memory = {}
    trt.plan = b"fake-plan"

    def record(name, *args):
        trt.calls.append((name, *args))
        return name not in trt.fail

    flags = {"TF32": 6} if major >= 11 else {"FP16": 0, "INT8": 1, "TF32": 6}
    trt.BuilderFlag = enum.IntEnum("BuilderFlag", flags)
    trt.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag",
                                                     {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1})
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="workspace")
    trt.TensorIOMode = types.SimpleNamespace(INPUT="input", OUTPUT="output")
    trt.float32 = "float32"
    trt.nptype = lambda dtype: {"float32": np.float32}[dtype]

    class Logger:
        WARNING = "warning"

        def __init__(self, level):
            self.level = level

    class Profile:
        def set_shape(self, name, lo, opt, hi):
            return record("set_shape", name, tuple(lo), tuple(opt), tuple(hi))

    class Config:
        def set_memory_pool_limit(self, pool, size):
            record("set_memory_pool_limit", pool, size)

        def set_flag(self, flag):
            record("set_flag", flag.name)

        def clear_flag(self, flag):
            record("clear_flag", flag.name)

        def add_optimization_profile(self, profile):
            return 0 if record("add_optimization_profile") else -1

        if major < 11:
            def set_calibration_profile(self, profile):
                return record("set_calibration_profile")

            @property
            def int8_calibrator(self):
                return self._calibrator

            @int8_calibrator.setter
            def int8_calibrator(self, value):
                record("int8_calibrator", value)
                self._calibrator = value

    class Network:
        num_inputs = len(inputs)

        def get_input(self, i):
            return types.SimpleNamespace(name=inputs[i])

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            record("create_network", flags)
            return Network()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            return trt.plan if record("build_serialized_network") else None

    class OnnxParser:
        num_errors = 1

        def __init__(self, network, logger):
            pass

        def parse_from_file(self, path):
            return record("parse_from_file", path)

        def get_error(self, i):
            return "fake parse error"

    class Context:
        def __init__(self):
            self.shapes, self.addresses = {}, {}

        def set_input_shape(self, name, shape):
            ok = record("set_input_shape", name, tuple(shape)) and profile[0][0] <= shape[0] <= profile[2][0]
            if ok:
                self.shapes[name] = tuple(shape)
            return ok

        def set_tensor_address(self, name, ptr):
            self.addresses[name] = ptr
            return record("set_tensor_address", name)

        def get_tensor_shape(self, name):
            return (self.shapes["input"][0], classes)

        def execute_async_v3(self, stream):
            if not record("execute_async_v3", stream):
                return False
            x = trt.memory[self.addresses["input"]]
            trt.memory[self.addresses["logits"]][...] = x.reshape(len(x), -1)[:, :classes]
            return True

    class Engine:
        num_io_tensors = 2
        device_memory_size_v2 = 4096

        def get_tensor_name(self, i):
            return ("input", "logits")[i]

        def get_tensor_mode(self, name):
            return trt.TensorIOMode.INPUT if name == "input" else trt.TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name):
            return trt.float32

        def get_tensor_profile_shape(self, name, index):
            return [list(s) for s in profile]

        def create_execution_context(self):
            return Context()

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            return Engine() if record("deserialize_cuda_engine") and data == trt.plan else None

    trt.Logger, trt.Builder, trt.OnnxParser, trt.Runtime = Logger, Builder, OnnxParser, Runtime
    if major < 11:
        class IInt8EntropyCalibrator2:
            def __init__(self):
                pass

        trt.IInt8EntropyCalibrator2 = IInt8EntropyCalibrator2
    return trt
