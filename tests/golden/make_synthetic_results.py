"""Writes tests/golden/results.json: a fixed, synthetic run with a known outcome.

Run once (``python tests/golden/make_synthetic_results.py``) when the results schema changes; the
file is checked in so the golden report is a function of a frozen input. The numbers are made up
but computed with compress's own statistics, so they are self-consistent:

- 60 held-out samples, 5 classes; the baseline is right on 54 (90%);
- ``onnx-fp32`` is the speed reference (same predictions as the baseline);
- ``int8`` breaks 1 sample (-1.67 points) and is ~1.8x faster: passes (drop <= 2, speed-up >= 1.2);
- ``pruned`` breaks 4 samples (-6.67 points) and is ~3x faster: fails the accuracy gate;
- ``broken`` failed to build.

``results_regressed.json`` is the same recipe run again after a bad change: ``int8`` breaks 3 more
samples (-5 points against the first run) and is ~1.5x slower at batch 1, ``pruned`` is gone and
``pruned-int8`` is new. ``compress compare`` must call the int8 changes regressions.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from compress.measure.paired import paired_diff_interval
from compress.measure.stats import mcnemar_exact, summarize_timings
from compress.measure.timing import speedup
from compress.results.gate import apply_gate

HERE = Path(__file__).parent
N, CLASSES, SEED = 60, 5, 0
PRICE_USD_PER_HOUR = 0.17


def _latency(rng, median_ms: float, bs: int, n: int = 24) -> dict:
    samples = (median_ms * rng.lognormal(0.0, 0.08, size=n)).round(4).tolist()
    summary = summarize_timings(samples).to_dict()
    throughput = bs / (summary["p50_ms"] / 1e3)
    return {**summary, "batch_size": bs, "throughput_per_s": throughput,
            "energy": {"measured": False, "meter": "rapl", "reason": "synthetic run"},
            "samples_ms": samples,
            "usd_per_1m": PRICE_USD_PER_HOUR / 3600 / throughput * 1e6}


def _accuracy(pred: np.ndarray, labels: np.ndarray, base_pred: np.ndarray) -> dict:
    correct, base_correct = pred == labels, base_pred == labels
    return {
        "heldout": {"split": "heldout", "n": N, "top1": float(100 * correct.mean()), "top5": None,
                    "predictions": pred.tolist()},
        "change_points": float(100 * (correct.mean() - base_correct.mean())),
        "change_interval": paired_diff_interval(correct, base_correct).to_dict(),
        "mcnemar": mcnemar_exact(correct, base_correct).to_dict(),
        "agreement": float(100 * (pred == base_pred).mean()),
    }


def _break(pred: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    out = pred.copy()
    right = np.flatnonzero(out == labels)[:k]
    out[right] = (labels[right] + 1) % CLASSES
    return out


def make(*, regressed: bool = False) -> dict:
    rng = np.random.default_rng(SEED + regressed)
    labels = np.arange(N) % CLASSES
    base_pred = labels.copy()
    base_pred[:6] = (labels[:6] + 2) % CLASSES  # 54 / 60 right
    preds = {"onnx-fp32": base_pred, "int8": _break(base_pred, labels, 4 if regressed else 1),
             "pruned": _break(base_pred, labels, 4)}
    medians = {"onnx-fp32": (2.0, 40.0), "int8": (1.65 if regressed else 1.1, 22.0), "pruned": (0.7, 13.0)}
    lat = {name: {str(bs): _latency(rng, m, bs) for bs, m in zip((1, 8), ms, strict=True)} for name, ms in medians.items()}
    facts = {"params": 300_000, "macs": 12_000_000, "export_max_rel_error": 2e-7, "opset": 17}
    variants = {}
    for name, lineage, size_bytes, extra in (
        ("onnx-fp32", ["baseline(trained)", "export(onnx)"], 1_200_000, {}),
        ("int8", ["baseline(trained)", "export(onnx)", "quantize(static)"], 320_000, {
            "int8_coverage": {"int8": {"Conv": 2}, "total": {"Conv": 2}, "compute_fraction": 1.0,
                              "summary": "Conv 2/2", "op_counts": {"QLinearConv": 2}},
            "quantization": {"mode": "static", "format": "qdq", "activations": "uint8", "weights": "int8",
                             "per_channel": True, "calibration": "minmax"}}),
        ("pruned", ["baseline(trained)", "prune(0.5)", "export(onnx)"], 310_000, {
            "params": 76_000, "macs": 3_100_000,
            "pruning": {"ratio": 0.5, "importance": "l2", "macs_before": 12_000_000, "macs_after": 3_100_000,
                        "params_before": 300_000, "params_after": 76_000, "mac_ratio": 3_100_000 / 12_000_000}}),
    ):
        variants[name] = {
            "status": "ok", "error": None, "from": "onnx-fp32" if name == "int8" else None,
            "description": "The baseline exported unchanged (the speed reference)." if name == "onnx-fp32" else None,
            "gated": True,
            "steps": [{"step": s, "compute_seconds": 1.5, "cached": False} for s in lineage[1:]],
            "notes": [], "consumed_splits": ["calibration"] if name == "int8" else [],
            "artifact": {"kind": "onnx", "lineage": lineage, "size_bytes": size_bytes,
                         "facts": {**facts, **extra}},
            "accuracy": _accuracy(preds[name], labels, base_pred),
            "evaluated_on": "cpu",
            "latency": {"cpu": lat[name]},
            "runtime_info": {"cpu": {"runtime": "onnxruntime", "threads": 2}},
            "speedup": {"cpu": {bs: speedup(lat["onnx-fp32"][bs], m, seed=SEED) for bs, m in lat[name].items()}},
        }
    variants["broken"] = {
        "status": "failed", "gated": True, "from": None, "description": None, "steps": [], "notes": [],
        "consumed_splits": [],
        "error": "step quantize failed: the model has a Resize op that quantize_static cannot calibrate",
    }
    recipe = {
        "name": "synthetic", "seed": SEED,
        "model": {"source": "python:tiny_model.py:tiny_cnn", "kwargs": {}, "checkpoint": None,
                  "input_shape": [3, 8, 8]},
        "data": {"source": "npz:tiny.npz"},
        "variants": {n: {"from": v["from"], "steps": [], "description": v["description"], "gate": True}
                     for n, v in variants.items()},
        "targets": [{"name": "cpu", "runtime": "onnxruntime", "device": "cpu", "threads": 2,
                     "usd_per_hour": PRICE_USD_PER_HOUR}],
        "profile": {"batch_sizes": [1, 8], "warmup": 1, "rounds": 3, "min_round_s": 0.01},
        "gate": {"max_accuracy_drop": 2.0, "min_speedup": 1.2, "speedup_batch_sizes": None,
                 "reference": "onnx-fp32"},
        "report": {"dir": "runs/synthetic"},
    }
    results = {
        "schema_version": 1,
        "compress_version": "0.1.0",
        "recipe": recipe,
        "run": {"recipe_path": "recipes/synthetic.yaml", "started": "2026-11-26T12:00:00+00:00",
                "wall_s": 12.0, "finished": "2026-11-26T12:00:12+00:00",
                "run_dir": "runs/synthetic/20261126-120000"},
        "data": {
            "splits": {"train": {"n": 120, "source": "npz:tiny.npz", "fingerprint": "0123456789abcdef"},
                       "calibration": {"n": 20, "source": "npz:tiny.npz", "fingerprint": "1123456789abcdef"},
                       "heldout": {"n": N, "source": "npz:tiny.npz", "fingerprint": "2123456789abcdef"}},
            "classes": list(range(CLASSES)),
            "heldout_labels": labels.tolist(),
        },
        "targets": recipe["targets"],
        "baseline": {
            "status": "ok",
            "artifact": {"kind": "torch", "lineage": ["baseline(trained)"], "size_bytes": 1_210_000,
                         "facts": {"params": 300_000, "macs": 12_000_000}},
            "info": {"source": "python:tiny_model.py:tiny_cnn", "trained": True, "cached": False},
            "accuracy": {"heldout": {"split": "heldout", "n": N, "top1": 90.0, "top5": None,
                                     "predictions": base_pred.tolist()}},
            "evaluated_on": "torch-cpu",
            "not_profiled": {"cpu": "onnxruntime cannot run a torch model"},
        },
        "variants": variants,
        "environment": {
            "python": "3.11.7", "platform": "Linux-x86_64 (synthetic)",
            "packages": {"compress": "0.1.0", "onnxruntime": "1.31.1"},
            "cpu": {"machine": "x86_64", "logical_cores": 2, "model": "Synthetic CPU", "flags": ["avx2"]},
            "gpus": [], "thread_env": {}, "git_commit": None,
        },
    }
    if regressed:
        variants["pruned-int8"] = variants.pop("pruned")
        pi = variants["pruned-int8"]
        pi["from"] = "pruned"
        pi["artifact"]["lineage"] = pi["artifact"]["lineage"] + ["quantize(static)"]
        pi["steps"].append({"step": "quantize(static)", "compute_seconds": 1.5, "cached": False})
        recipe["variants"]["pruned-int8"] = recipe["variants"].pop("pruned")
        results["run"].update(started="2026-11-27T12:00:00+00:00", finished="2026-11-27T12:00:12+00:00",
                              run_dir="runs/synthetic/20261127-120000")
    apply_gate(results)
    return results


if __name__ == "__main__":
    (HERE / "results.json").write_text(json.dumps(make(), indent=1) + "\n")
    (HERE / "results_regressed.json").write_text(json.dumps(make(regressed=True), indent=1) + "\n")
