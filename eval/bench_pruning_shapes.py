"""Which pruned shapes of ResNet-56 does ONNX Runtime actually run faster? Latency only, no training.

Each candidate is the pretrained CIFAR-10 ResNet-56 cut by compress's pruning code (L2 magnitude)
to given channel widths, exported to ONNX fp32, and timed with compress's profiler (ORT CPU, 2
threads, interleaved rounds) against the unpruned model at batch 1 and 32. Widths are written
`s<stream widths of stages 1/2/3> i<inner widths of the blocks of stages 1/2/3>`: the residual
stream is what the stem, every block's second conv and the option-A shortcuts carry; the inner
width is each block's first conv's output. Accuracy is not measured here (eval/bench_pruning.py
fine-tunes and evaluates the chosen shape).

    python eval/bench_pruning_shapes.py [--data DIR] [--rounds 9]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import warnings
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

STAGE1, STAGE2, STAGE3 = 16, 32, 64


def widths(s1: int, s2: int, s3: int, i1: int, i2: int, i3: int) -> dict[str, float]:
    """`layer_ratios` (fraction removed per group root) that give these widths."""
    ratios = {"conv1": 1 - s1 / STAGE1, "layer2.0.conv2": 1 - s2 / STAGE2, "layer3.0.conv2": 1 - s3 / STAGE3,
              "layer1.*.conv1": 1 - i1 / STAGE1, "layer2.*.conv1": 1 - i2 / STAGE2, "layer3.*.conv1": 1 - i3 / STAGE3}
    return {k: v for k, v in ratios.items() if v > 0}


# name -> layer_ratios, or a uniform ratio with optional rounding
CANDIDATES: dict[str, dict] = {
    "unpruned": {},
    "inner only, s16/32/64 i8/16/32": {"layer_ratios": widths(16, 32, 64, 8, 16, 32)},
    "uniform 30%, every layer (odd widths)": {"ratio": 0.3},
    "uniform 30%, round_to 8": {"ratio": 0.3, "round_to": 8},
    "s16/16/32 i16/16/32": {"layer_ratios": widths(16, 16, 32, 16, 16, 32)},
    "s16/16/32 i16/16/24 (bench_pruning 'stream')": {"layer_ratios": widths(16, 16, 32, 16, 16, 24)},
    "s16/16/32 i16/16/16": {"layer_ratios": widths(16, 16, 32, 16, 16, 16)},
    "s16/32/48 i8/16/32": {"layer_ratios": widths(16, 32, 48, 8, 16, 32)},
    "s16/32/32 i16/16/32": {"layer_ratios": widths(16, 32, 32, 16, 16, 32)},
    "s16/24/48 i8/24/48": {"layer_ratios": widths(16, 24, 48, 8, 24, 48)},
}


def main() -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import numpy as np
    from cifar_data import shared_data_dir, weights_dir
    from cifar_resnet import load_pretrained

    from compress.measure.timing import time_sessions
    from compress.pruning.channels import ChannelPlan, count_macs_params, make_pruner
    from compress.runtimes.onnxruntime import OrtSession
    from compress.steps.export import export_onnx

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="shared data directory (default: $COMPRESS_SHARED_DATA or ../shared/data)")
    ap.add_argument("--rounds", type=int, default=9)
    args = ap.parse_args()
    wd = weights_dir(shared_data_dir(args.data))
    shape = (3, 32, 32)
    rows = {}
    with tempfile.TemporaryDirectory(prefix="bench-shapes-") as tmp:
        paths = {}
        for i, (name, cut) in enumerate(CANDIDATES.items()):
            model = load_pretrained(56, wd)
            if cut:
                plan = ChannelPlan(importance="l2", ratio=cut.get("ratio", 0.0), ignore=["linear"],
                                   round_to=cut.get("round_to"), layer_ratios=cut.get("layer_ratios", {}))
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    make_pruner(model, plan, shape, 10).step()
            macs, _ = count_macs_params(model, shape)
            w = [model.conv1.out_channels, model.layer2[1].conv2.out_channels, model.layer3[1].conv2.out_channels,
                 model.layer1[1].conv1.out_channels, model.layer2[1].conv1.out_channels, model.layer3[1].conv1.out_channels]
            rows[name] = {"macs": macs, "widths": "s{}/{}/{} i{}/{}/{}".format(*w)}
            paths[name] = Path(tmp) / f"c{i}.onnx"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                export_onnx(model.eval(), shape, paths[name], opset=17, dynamic_batch=True)
        x = np.random.default_rng(0).standard_normal((32, *shape)).astype(np.float32)
        sessions = {n: OrtSession(str(p), "cpu", 2, "all", {}) for n, p in paths.items()}
        out = time_sessions(sessions, lambda bs: x[:bs], [1, 32], rounds=args.rounds, min_round_s=0.3)
    base = rows["unpruned"]["macs"]
    command = "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
    print(f"```\n{command}\n```\n")
    print("| candidate | widths | MACs kept | ORT p50 b1 | speed-up b1 | ORT p50 b32 | speed-up b32 |")
    print("|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        cells = []
        for bs in (1, 32):
            p50 = out[name][bs]["p50_ms"]
            cells += [f"{p50:.2f} ms", f"{out['unpruned'][bs]['p50_ms'] / p50:.2f}x"]
        print(f"| {name} | {r['widths']} | {r['macs'] / base:.1%} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
