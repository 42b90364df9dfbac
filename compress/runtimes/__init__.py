"""Runtimes: one module each, registered by name. Heavy imports happen when a model is loaded."""

from compress.runtimes import onnxruntime, openvino, tensorrt, torch  # noqa: F401
from compress.runtimes.base import RUNTIMES, Session, register_runtime

__all__ = ["RUNTIMES", "Session", "register_runtime"]
