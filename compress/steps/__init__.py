"""Compression steps, one module each, registered by name (see ``compress.steps.base``)."""

from compress.steps import engine, export, finetune, fp16, prune, quantize, sparsify  # noqa: F401
from compress.steps.base import STEPS, StepConfig, StepContext, register_step

__all__ = ["STEPS", "StepConfig", "StepContext", "register_step"]
