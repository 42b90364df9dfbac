"""OpenVINO settings side by side: one quantized model, several OpenVINO targets, ORT fp32 as the bar.

Times an OpenVINO model (e.g. the NNCF int8 IR that eval/bench_openvino.py writes under --work) with
LATENCY and THROUGHPUT hints and several stream / request counts, interleaved with the fp32 ONNX
file on ONNX Runtime, at one batch size, with compress's profiler; prints p50 and the speed-up
over ORT fp32 for each. THROUGHPUT rows are timed with every request busy on a whole batch
(docs/openvino.md).

    python eval/bench_openvino.py --work /tmp/ov/work
    python eval/bench_openvino_configs.py --fp32 RUN/artifacts/onnx-fp32/model.onnx \
        --model RUN/artifacts/nncf-int8/model.xml
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

CONFIGS = {  # name -> (threads, options)
    "LATENCY, 2 threads": (2, {}),
    "LATENCY, OpenVINO's thread default": (None, {}),
    "THROUGHPUT, 2 requests": (2, {"hint": "THROUGHPUT", "requests": 2}),
    "THROUGHPUT, 4 requests": (2, {"hint": "THROUGHPUT", "requests": 4}),
    "THROUGHPUT, 1 stream, 2 requests": (2, {"hint": "THROUGHPUT", "streams": 1, "requests": 2}),
}


def main() -> int:
    import numpy as np

    from compress.artifacts import Artifact
    from compress.measure.timing import time_sessions
    from compress.recipe import TargetConfig
    from compress.runtimes import RUNTIMES

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fp32", required=True, help="the fp32 ONNX file (the ORT reference)")
    ap.add_argument("--model", required=True, help="the model OpenVINO runs (ONNX or IR .xml)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=9)
    args = ap.parse_args()
    fp32, model = Path(args.fp32), Path(args.model)
    for p in (fp32, model):
        if not p.exists():
            print(f"{p} does not exist: run eval/bench_openvino.py --work DIR first", file=sys.stderr)
            return 2
    ref = Artifact(kind="onnx", digest="fp32", path=fp32)
    art = Artifact(kind="openvino" if model.suffix == ".xml" else "onnx", digest="m", path=model)
    sessions = {"ORT fp32": RUNTIMES.get("onnxruntime").load(
        ref, TargetConfig(name="ort", runtime="onnxruntime", device="cpu", threads=2))}
    for i, (name, (threads, options)) in enumerate(CONFIGS.items()):
        target = TargetConfig(name=f"ov{i}", runtime="openvino", device="cpu", threads=threads, options=options)
        sessions[name] = RUNTIMES.get("openvino").load(art, target)
    x = np.random.default_rng(0).standard_normal((args.batch_size, 3, 32, 32)).astype(np.float32)
    bs = args.batch_size
    out = time_sessions(sessions, lambda n: x[:n], [bs], rounds=args.rounds, min_round_s=0.3)
    base = out["ORT fp32"][bs]["p50_ms"]
    command = "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
    print(f"```\n{command}\n```\n")
    print(f"| runtime / settings | streams | p50 ms b{bs} | speed-up vs ORT fp32 |")
    print("|---|---|---|---|")
    for name, sess in sessions.items():
        streams = getattr(sess, "info", {}).get("streams", "—")
        p50 = out[name][bs]["p50_ms"]
        print(f"| {name} | {streams} | {p50:.2f} | {base / p50:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
