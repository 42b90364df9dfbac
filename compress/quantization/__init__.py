"""Quantization internals: target-aware defaults, ONNX Runtime wrappers, mixed precision, fp16.

The ``quantize`` and ``fp16`` steps (compress/steps/) are thin orchestration over these modules.
"""
