"""Does ONNX Runtime's idle spinning bias compress's interleaved timing? One ONNX model on ORT with
its default session options (idle threads spin) and with ``session.intra_op.allow_spinning=0``,
timed by compress's profiler loop (compress.measure.timing.time_sessions): first the two alone, then
each among OpenVINO sessions as a recipe's profiling would interleave them (an fp32 LATENCY
session on the same ONNX file, and THROUGHPUT sessions on the OpenVINO IRs given).

    python eval/bench_ort_spinning.py --onnx MODEL.onnx [--ir INT8.xml ...] [--batch 32] [--rounds 9]
        [--repeats 3]

The input is random (shape from the ONNX file, batch axis set): speed only.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as compress's CLI does

import numpy as np  # noqa: E402


def ort_session(path: str, threads: int, spin: bool):
    import onnxruntime as ort

    from compress.runtimes.onnxruntime import OrtSession, make_session_options

    s = OrtSession(path, "cpu", threads, "all", {})
    if not spin:  # the same options, idle threads not spinning
        so = make_session_options(threads, "all")
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        s.sess = ort.InferenceSession(path, sess_options=so, providers=["CPUExecutionProvider"])
    return s


def ov_session(path: str, threads: int, hint: str):
    from compress.runtimes.openvino import OpenVINOSession

    return OpenVINOSession(path, "CPU", threads, None, hint, None, 2 if hint == "THROUGHPUT" else None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--onnx", required=True)
    ap.add_argument("--ir", nargs="*", default=[], help="OpenVINO IRs timed with the THROUGHPUT hint")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--repeats", type=int, default=3, help="each configuration this many times, alternating")
    args = ap.parse_args()
    import onnx

    from compress.measure.timing import time_sessions

    model = onnx.load(args.onnx, load_external_data=False)
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim][1:]
    name = model.graph.input[0].name
    rng = np.random.default_rng(0)

    def make_batch(n: int):
        return {name: rng.standard_normal((n, *dims), dtype=np.float32)}

    host = subprocess.run(["bash", "-c", "lscpu | grep 'Model name' | sed 's/.*: *//'"],
                          capture_output=True, text=True).stdout.strip() or platform.processor()
    print(f"host: {host}, {os.cpu_count()} logical cores, {args.threads} threads, batch {args.batch}")
    configs = {
        "alone": lambda: {"ort-spin": ort_session(args.onnx, args.threads, True),
                          "ort-nospin": ort_session(args.onnx, args.threads, False)},
        "mix-spin": lambda: {"ort": ort_session(args.onnx, args.threads, True),
                             "ov-fp32-latency": ov_session(args.onnx, args.threads, "LATENCY"),
                             **{f"ov-{i}-throughput": ov_session(p, args.threads, "THROUGHPUT")
                                for i, p in enumerate(args.ir)}},
        "mix-nospin": lambda: {"ort": ort_session(args.onnx, args.threads, False),
                               "ov-fp32-latency": ov_session(args.onnx, args.threads, "LATENCY"),
                               **{f"ov-{i}-throughput": ov_session(p, args.threads, "THROUGHPUT")
                                  for i, p in enumerate(args.ir)}},
    }
    print("| repeat | configuration | session | p50 ms | round CV |")
    print("|---|---|---|---|---|")
    for rep in range(args.repeats):
        for cfg, make in configs.items():
            sessions = make()
            got = time_sessions(sessions, make_batch, [args.batch], rounds=args.rounds)
            for s, by_bs in got.items():
                t = by_bs[args.batch]
                print(f"| {rep} | {cfg} | {s} | {t['p50_ms']:.2f} | {t['round_cv']:.0%} |", flush=True)
            for s in sessions.values():
                if hasattr(s, "close"):
                    s.close()


if __name__ == "__main__":
    main()
