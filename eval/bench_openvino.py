"""OpenVINO beside ONNX Runtime on the real CIFAR-10 ResNet-20 and ResNet-56, with compress alone.

For each model one recipe is written and run by compress: ONNX Runtime fp32 (the bar), ORT's plain
`quantize_static` defaults, compress's ORT int8 defaults, OpenVINO running the fp32 ONNX file as is,
OpenVINO + NNCF int8 (LATENCY and THROUGHPUT with 2 async requests), and (ResNet-56) compress's own
best CPU variant: channel pruning + distillation fine-tuning + NNCF int8. Calibration and
fine-tuning use JPEG images that are not twins of the exact 1,000; top-1 is on the exact 1,000.
Every model/target pair of a recipe is timed in one interleaved loop.

    python eval/bench_openvino.py [--data DIR] [--out docs/results/openvino.md] [--work DIR]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import yaml  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the sibling eval modules, when run as a script

from cifar_data import shared_data_dir, weights_dir, write_role_splits  # noqa: E402
from cifar_resnet import PRUNING_IGNORE, checkpoint_path  # noqa: E402

MEAN_STD = [[0.485, 0.456, 0.406], [0.229, 0.224, 0.225]]
PLAIN_ORT_DEFAULTS = {  # onnxruntime.quantization.quantize_static's own defaults
    "mode": "static", "format": "qdq", "activation_type": "int8", "weight_type": "int8",
    "per_channel": False, "symmetric_activations": False, "symmetric_weights": True,
    "reduce_range": False, "preprocess": False, "calibration": {"method": "minmax", "samples": 300},
}


def recipe_for(depth: int, data: dict[str, Path], weights: Path, prune: bool, rounds: int) -> dict:
    variants = {
        "onnx-fp32": {"description": "fp32 ONNX file (ORT: the bar; OpenVINO: read as is)",
                      "steps": [{"export": {"format": "onnx"}}]},
        "ort-int8-plain-defaults": {
            "description": "onnxruntime quantize_static with its own defaults (S8S8, per-tensor)",
            "from": "onnx-fp32", "targets": ["ort"], "steps": [{"quantize": PLAIN_ORT_DEFAULTS}],
        },
        "ort-int8": {"description": "compress's ORT defaults (U8S8 QDQ, per-channel)",
                     "from": "onnx-fp32", "targets": ["ort"],
                     "steps": [{"quantize": {"mode": "static", "calibration": {"samples": 300}}}]},
        "nncf-int8": {"description": "NNCF defaults (300 calibration images), run by OpenVINO",
                      "from": "onnx-fp32", "targets": ["openvino", "openvino-throughput"],
                      "steps": [{"quantize": {"backend": "nncf", "nncf": {"subset_size": 300}}}]},
    }
    if prune:
        variants["pruned-nncf-int8"] = {
            "description": "compress's best CPU variant: 30% channels pruned (block-inner convs), "
                           "2 epochs distillation fine-tuning, NNCF int8, OpenVINO",
            "targets": ["openvino", "openvino-throughput"],
            "steps": [
                {"prune": {"ratio": 0.3, "importance": "l2", "ignore": PRUNING_IGNORE,
                           "finetune": {"epochs": 2, "lr": 0.01, "batch_size": 64,
                                        "distill": {"temperature": 4.0, "alpha": 0.7}}}},
                {"export": {"format": "onnx"}},
                {"quantize": {"backend": "nncf", "nncf": {"subset_size": 300}}},
            ],
        }
    return {
        "name": f"cifar-resnet{depth}-openvino",
        "seed": 0,
        "model": {"source": f"python:{HERE / 'cifar_resnet.py'}:resnet{depth}",
                  "checkpoint": {"path": str(checkpoint_path(depth, weights)), "key": "state_dict",
                                 "strip_prefix": "module."},
                  "input_shape": [3, 32, 32]},
        # train (for fine-tuning) only where a variant fine-tunes: every split a variant consumed is
        # also evaluated, for the overfitting check
        "data": {"sources": {k: f"npz:{v}" for k, v in data.items() if k != "train" or prune},
                 "transform": {"normalize": MEAN_STD}},
        "evaluate": {"robustness": {"when": "never"}},
        "variants": variants,
        "targets": [
            {"name": "ort", "runtime": "onnxruntime", "device": "cpu", "threads": 2},
            {"name": "openvino", "runtime": "openvino", "device": "cpu", "threads": 2},
            {"name": "openvino-throughput", "runtime": "openvino", "device": "cpu", "threads": 2,
             "options": {"hint": "THROUGHPUT", "requests": 2}},
        ],
        "profile": {"batch_sizes": [1, 32], "rounds": rounds},
        "gate": {"max_accuracy_drop": 0.5, "reference": "onnx-fp32", "reference_target": "ort"},
    }


def rows(results: dict, depth: int) -> list[str]:
    out = []
    base = results["baseline"]["accuracy"]["heldout"]["top1"]
    for name, v in results["variants"].items():
        if v["status"] != "ok":
            out.append(f"| ResNet-{depth} | {name} | — | failed: {v['error']} | | | | |")
            continue
        acc = v["accuracy"]["heldout"]["top1"]
        for target, per_bs in (v.get("latency") or {}).items():
            sp = v.get("speedup", {}).get(target, {})
            info = v.get("runtime_info", {}).get(target, {})
            prec = info.get("precision", "f32 (ORT)") if info.get("runtime") == "openvino" else "ORT"
            cells = [f"{sp[b]['estimate']:.2f}x [{sp[b]['low']:.2f}, {sp[b]['high']:.2f}]"
                     if b in sp else "—" for b in ("1", "32")]
            p50 = " / ".join(f"{per_bs[b]['p50_ms']:.2f}" for b in ("1", "32") if b in per_bs)
            out.append(f"| ResNet-{depth} | {name} | `{target}` ({prec}) | {acc:.1f}% ({acc - base:+.1f}) "
                       f"| {p50} | {cells[0]} | {cells[1]} | {v['gate']['verdict']} |")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="the shared data directory")
    parser.add_argument("--out", default=None, help="write the Markdown table here")
    parser.add_argument("--work", default=None, help="keep npz files, recipes and runs here")
    parser.add_argument("--depths", type=int, nargs="+", default=[20, 56])
    parser.add_argument("--no-prune", action="store_true", help="skip the pruned ResNet-56 variant")
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    data_dir = shared_data_dir(args.data)

    from compress.recipe import parse_recipe
    from compress.run.pipeline import run_recipe

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench-openvino-"))
    work.mkdir(parents=True, exist_ok=True)
    data = write_role_splits(data_dir, work, calibration_n=1000)
    lines = []
    t0 = time.perf_counter()
    for depth in args.depths:
        raw = recipe_for(depth, data, weights_dir(data_dir), prune=depth == 56 and not args.no_prune,
                         rounds=args.rounds)
        path = work / f"resnet{depth}.yaml"
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        recipe = parse_recipe(raw, origin=str(path))
        outcome = run_recipe(recipe, path, out_dir=work / "runs", log=lambda m: print(m, flush=True))
        print(f"ResNet-{depth}: {outcome.run_dir / 'report.md'}", flush=True)
        lines += rows(outcome.results, depth)
    head = ["| model | variant | target (precision run) | top-1 exact 1,000 (vs fp32) | p50 ms b1 / b32 "
            "| speed-up b1 vs ORT fp32 [95% CI] | speed-up b32 vs ORT fp32 [95% CI] | gate |",
            "|---|---|---|---|---|---|---|---|"]
    table = "\n".join(head + lines)
    print(table)
    if args.out:
        import platform

        from compress.run.environment import cpu_info

        cpu = cpu_info()
        Path(args.out).write_text(
            "# OpenVINO beside ONNX Runtime (real CIFAR-10 ResNets)\n\n"
            f"Measured {dt.date.today()} on {cpu.get('model')} ({cpu.get('logical_cores')} logical "
            f"cores, {', '.join(cpu.get('flags', []))}), {platform.platform()}, no GPU; "
            f"wall time {time.perf_counter() - t0:.0f} s. Command:\n\n"
            f"```\npython {' '.join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])}\n```\n\n" + table + "\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
