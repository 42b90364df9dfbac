"""TensorRT: run an engine built by the ``engine`` step, after checking its fingerprint.

Needs the ``tensorrt`` extra (``pip install -e '.[tensorrt]'`` in a checkout) and an NVIDIA GPU.
Not run anywhere yet: see docs/tensorrt.md for exactly what was and was not tested.
"""

from __future__ import annotations

import numpy as np

from compress.runtimes.base import Session, check_options, register_runtime


class TensorRTSession(Session):
    def __init__(self, artifact):
        from compress.engine.tensorrt import EngineSession, read_fingerprint

        stored = (artifact.meta.get("tensorrt") or {}).get("fingerprint") or read_fingerprint(artifact.path)
        self.engine = EngineSession(artifact.path, stored)
        self.info = {"runtime": "tensorrt", "fingerprint": self.engine.fingerprint,
                     "precision": (artifact.meta.get("tensorrt") or {}).get("precision"),
                     "fingerprint_warnings": self.engine.warnings}

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.engine.run(batch)


@register_runtime("tensorrt", accepts={"tensorrt"}, devices={"cuda"},
                  summary="TensorRT engines (NVIDIA GPUs)", extra="tensorrt")
def load(artifact, target) -> Session:
    check_options(target, ())
    return TensorRTSession(artifact)
