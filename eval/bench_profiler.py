"""Cross-check compress's profiler on real CIFAR-10 ResNets against an independent measurement.

For each depth (default ResNet-20 and ResNet-56, akamaster weights) this script builds three ONNX
variants: fp32, int8 (ONNX Runtime quantize_static, QDQ, uint8 activations / int8 weights, per
channel, calibrated on 256 JPEG test images that are not twins of the exact held-out images) and
pruned (torch-pruning, 50% of each block's inner channels, L2 magnitude, no fine-tuning: this
benchmark is about time, not accuracy). It then, in `--passes` alternating passes,

1. profiles the three variants with ``compress.measure.timing.time_sessions`` (ONNX Runtime CPU, 2 threads,
   real test images, interleaved rounds, batch 1 and 32);
2. times every (variant, batch) again with ``timeit`` in a separate Python process that builds its
   own ONNX Runtime session with the same settings and nothing of compress,

each right beside the other per batch size, alternating which goes first. It reports, per (variant,
batch), the median of the profiler's p50s over the passes, the median of the timeit medians, and
the median of the per-pass ratios profiler / timeit (goal: within 10%), plus top-1 on the exact
test images 0-999,
peak memory (compress.measure.memory) and $ per 1M inferences at the c7i.large list price.

    python eval/bench_profiler.py [--data DIR] [--depth 20 --depth 56] [--out docs/results/profiler.md]

Exit code 0 when it ran, 2 when the data is missing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

THREADS = 2
BATCH_SIZES = [1, 32]

TIMEIT_CHILD = r"""
import json, sys, timeit
import numpy as np
import onnxruntime as ort
path, npy, threads, warmup, repeat = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
so = ort.SessionOptions()
so.intra_op_num_threads = threads
so.inter_op_num_threads = 1
so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
sess = ort.InferenceSession(path, sess_options=so, providers=["CPUExecutionProvider"])
x = np.load(npy)
feed = {sess.get_inputs()[0].name: x}
for _ in range(warmup):
    sess.run(None, feed)
times = timeit.repeat(lambda: sess.run(None, feed), number=1, repeat=repeat)
print(json.dumps({"median_ms": float(np.median(times)) * 1e3, "n": len(times)}))
"""


def build_variants(depth: int, data_dir: Path, workdir: Path) -> dict[str, Path]:
    import torch
    import torch_pruning as tp
    from cifar_data import load_jpeg_10k, non_twin_jpeg_rows, preprocess, weights_dir
    from cifar_resnet import load_pretrained, pruning_ignored_layers
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    from compress.steps.export import export_onnx

    paths = {}
    model = load_pretrained(depth, weights_dir(data_dir))
    paths["fp32"] = workdir / f"resnet{depth}-fp32.onnx"
    export_onnx(model, (3, 32, 32), paths["fp32"], opset=17, dynamic_batch=True)

    images, _ = load_jpeg_10k(data_dir)
    calib = preprocess(images[non_twin_jpeg_rows(data_dir)[:256]])

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"input": calib[i:i + 32]} for i in range(0, len(calib), 32)])

        def get_next(self):
            return next(self.batches, None)

    pre = workdir / f"resnet{depth}-pre.onnx"
    quant_pre_process(str(paths["fp32"]), str(pre))
    paths["int8"] = workdir / f"resnet{depth}-int8.onnx"
    quantize_static(str(pre), str(paths["int8"]), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True)

    pruned = load_pretrained(depth, weights_dir(data_dir))
    example = torch.zeros(1, 3, 32, 32)
    pruner = tp.pruner.MetaPruner(pruned, example, importance=tp.importance.GroupMagnitudeImportance(p=2),
                                  pruning_ratio=0.5, ignored_layers=pruning_ignored_layers(pruned))
    pruner.step()
    paths["pruned"] = workdir / f"resnet{depth}-pruned.onnx"
    export_onnx(pruned.eval(), (3, 32, 32), paths["pruned"], opset=17, dynamic_batch=True)
    return paths


def top1(path: Path, images: np.ndarray, labels: np.ndarray) -> float:
    from compress.runtimes.onnxruntime import OrtSession

    sess = OrtSession(str(path), "cpu", THREADS, "all", {})
    logits = np.concatenate([sess.run(images[i:i + 250]) for i in range(0, len(images), 250)])
    return float((logits.argmax(1) == labels).mean() * 100)


def timeit_child(path: Path, npy: Path, repeat: int) -> float:
    out = subprocess.run([sys.executable, "-c", TIMEIT_CHILD, str(path), str(npy), str(THREADS), "20", str(repeat)],
                         capture_output=True, text=True, check=True, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    return json.loads(out.stdout.strip().splitlines()[-1])["median_ms"]


def bench(depth: int, data_dir: Path, workdir: Path, passes: int, rounds: int, min_round_s: float) -> list[dict]:
    from cifar_data import load_exact_1000, preprocess

    from compress.artifacts import Artifact
    from compress.measure.cost import PRICES, usd_per_1m
    from compress.measure.memory import measure_memory
    from compress.measure.timing import time_sessions
    from compress.recipe import TargetConfig
    from compress.runtimes.base import RUNTIMES

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        paths = build_variants(depth, data_dir, workdir)
    images, labels, _ = load_exact_1000(data_dir)
    x = preprocess(images)
    accuracy = {name: top1(p, x, labels) for name, p in paths.items()}
    batches = {bs: x[:bs] for bs in BATCH_SIZES}
    npys = {}
    for bs, b in batches.items():
        npys[bs] = workdir / f"batch{bs}.npy"
        np.save(npys[bs], b)
    target = TargetConfig(name="cpu", runtime="onnxruntime", device="cpu", threads=THREADS)
    runtime = RUNTIMES.get("onnxruntime")
    arts = {n: Artifact(kind="onnx", digest=n, path=p) for n, p in paths.items()}
    prof: dict = {(n, bs): [] for n in paths for bs in BATCH_SIZES}
    indep: dict = {(n, bs): [] for n in paths for bs in BATCH_SIZES}
    stable: dict = {(n, bs): [] for n in paths for bs in BATCH_SIZES}
    speedups: dict = {(n, bs): [] for n in paths for bs in BATCH_SIZES}
    # The machine's load changes by several times within minutes, so the independent measurement
    # is taken right beside the profiler's, per batch size, and the order alternates between
    # passes (profiler first, then timeit first) so that a drift does not favour either.
    for p in range(passes):
        for bs in BATCH_SIZES:
            def profiler_pass(bs=bs):
                sessions = {n: runtime.load(a, target) for n, a in arts.items()}
                res = time_sessions(sessions, lambda _bs: batches[bs], [bs], rounds=rounds,
                                    min_round_s=min_round_s)
                for s in sessions.values():
                    s.close()
                for n in paths:
                    prof[(n, bs)].append(res[n][bs]["p50_ms"])
                    stable[(n, bs)].append(res[n][bs]["stable"])
                    speedups[(n, bs)].append(res["fp32"][bs]["p50_ms"] / res[n][bs]["p50_ms"])

            def timeit_pass(bs=bs):
                for n, path in paths.items():
                    ms = prof[(n, bs)][-1] if prof[(n, bs)] else 1.0
                    repeat = int(min(2000, max(30, 1e3 * rounds * min_round_s / max(ms, 0.05))))
                    indep[(n, bs)].append(timeit_child(path, npys[bs], repeat))

            for step in (profiler_pass, timeit_pass) if p % 2 == 0 else (timeit_pass, profiler_pass):
                step()
        print(f"resnet{depth} pass {p + 1}/{passes} done", file=sys.stderr)
    memory = {n: measure_memory(a, target, (3, 32, 32), BATCH_SIZES) for n, a in arts.items()}
    price = PRICES["c7i.large"].usd_per_hour
    rows = []
    for n in paths:
        for bs in BATCH_SIZES:
            p50 = float(np.median(prof[(n, bs)]))
            ti = float(np.median(indep[(n, bs)]))
            pass_ratios = [a / b for a, b in zip(prof[(n, bs)], indep[(n, bs)], strict=True)]
            rows.append({
                "model": f"resnet{depth}", "variant": n, "batch": bs, "top1": accuracy[n],
                "profiler_p50_ms": p50, "timeit_median_ms": ti,
                "pass_ratios": pass_ratios, "ratio": float(np.median(pass_ratios)),
                "speedup_vs_fp32": float(np.median(speedups[(n, bs)])),
                "stable_passes": f"{sum(stable[(n, bs)])}/{passes}",
                "peak_memory_mb": (memory[n].get("session_peak_bytes") or 0) / 2**20 if memory[n].get("measured") else None,
                "size_mb": paths[n].stat().st_size / 2**20,
                "usd_per_1m": usd_per_1m(bs / (p50 / 1e3), price),
            })
    return rows


def markdown(rows: list[dict], command: str, started: str, passes: int, load: str) -> str:
    from compress.run.environment import cpu_info

    cpu = cpu_info()
    lines = [
        "| model | variant | batch | top-1 (exact 0-999) | profiler p50 ms | timeit median ms (separate process) | ratio (median of passes) | per-pass ratios | speed-up vs fp32: profiler / timeit | stable passes | peak memory | file size | $ / 1M at c7i.large |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    fp32 = {(r["model"], r["batch"]): r["timeit_median_ms"] for r in rows if r["variant"] == "fp32"}
    for r in rows:
        timeit_speedup = fp32[(r["model"], r["batch"])] / r["timeit_median_ms"]
        mem = f"{r['peak_memory_mb']:.1f} MB" if r["peak_memory_mb"] is not None else "not measured"
        lines.append(
            f"| {r['model']} | {r['variant']} | {r['batch']} | {r['top1']:.1f}% | {r['profiler_p50_ms']:.3f} | "
            f"{r['timeit_median_ms']:.3f} | {r['ratio']:.3f} | {', '.join(f'{x:.2f}' for x in r['pass_ratios'])} | "
            f"{r['speedup_vs_fp32']:.2f}x / {timeit_speedup:.2f}x | {r['stable_passes']} | {mem} | {r['size_mb']:.2f} MB | ${r['usd_per_1m']:.4f} |"
        )
    within = sum(abs(r["ratio"] - 1) <= 0.10 for r in rows)
    head = (
        f"Measured {started} on {cpu.get('model', '?')} ({cpu.get('logical_cores')} logical cores, "
        f"no GPU; 1-minute load average {load}), Python {platform.python_version()}, {passes} alternating passes.\n\n"
        f"```\n{command}\n```\n\n"
        f"**{within} of {len(rows)}** (variant, batch) pairs have the profiler's median within 10% of the "
        "independent timeit median."
    )
    return head + "\n\n" + "\n".join(lines) + "\n"


def main() -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from cifar_data import shared_data_dir

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="shared data directory (default: $COMPRESS_SHARED_DATA or ../shared/data)")
    parser.add_argument("--depth", type=int, action="append", help="ResNet depth(s): 20, 32, 44, 56")
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--min-round-s", type=float, default=0.2)
    parser.add_argument("--out", help="write the Markdown table here")
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args()
    data_dir = shared_data_dir(args.data)
    started = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load_before = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-profiler-") as tmp:
        for depth in args.depth or [20, 56]:
            rows += bench(depth, data_dir, Path(tmp), args.passes, args.rounds, args.min_round_s)
    command = "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
    load = f"{load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"
    text = markdown(rows, command, started, args.passes, load)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
