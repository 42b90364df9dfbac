"""Runtime engines built ahead of time from ONNX (TensorRT): build, load, fingerprint."""
