"""Accuracy-aware mixed precision: find the layers int8 hurts most and keep just those in float.

1. Quantize everything; measure top-1 on the *tuning* split against the float model. Within the
   tolerance: done, nothing stays in float.
2. Sensitivity, one layer at a time: re-quantize with only that layer left in float (the
   calibration ranges are reused, so this is cheap) and measure how much closer the logits get to
   the float model's (mean squared logit error on the tuning split; a continuous score ranks layers
   where a top-1 count on a few hundred images would mostly read 0).
3. Greedy: keep the 1, 2, ... most sensitive layers in float until the tuning top-1 drop is within
   the tolerance, or ``max_float_layers`` is reached (then the best model found is kept and the
   result says the tolerance was not reached).

The tuning split is neither the calibration split nor held-out: held-out confirms the choice.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from compress.quantization.ort import OrtRunner
from compress.sources.inputs import batch_size, take


@dataclass
class MixedPrecisionResult:
    float_layers: list[str]
    tolerance_points: float
    reached: bool
    tuning_n: int
    tuning_top1_float: float
    tuning_top1_all_int8: float
    tuning_top1_mixed: float
    sensitivity: list[dict] = field(default_factory=list)  # {node, op_type, score}, most sensitive first
    tried: list[dict] = field(default_factory=list)  # {float_layers, tuning_top1}
    latency: dict | None = None  # all-int8 vs mixed on the build machine

    def to_dict(self) -> dict:
        return asdict(self)


def top1(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((logits.argmax(1) == labels).mean() * 100)


def logit_error(logits: np.ndarray, reference: np.ndarray) -> float:
    return float(np.mean((logits - reference) ** 2))


def search(
    float_model: Path,
    quantize: Callable[[tuple[str, ...]], Path],
    candidates: Sequence[tuple[str, str]],
    x_tuning: Mapping[str, np.ndarray],
    y_tuning: np.ndarray,
    *,
    tolerance_points: float,
    max_float_layers: int,
    sensitivity_samples: int | None = None,
    log: Callable[[str], None] = print,
) -> tuple[Path, MixedPrecisionResult]:
    """Return the chosen model and what was found. ``quantize(excluded_nodes) -> path``."""
    ref = OrtRunner(float_model).logits(x_tuning)
    acc_float = top1(ref, y_tuning)
    path_all = quantize(())
    acc_all = top1(OrtRunner(path_all).logits(x_tuning), y_tuning)
    result = MixedPrecisionResult([], tolerance_points, acc_float - acc_all <= tolerance_points,
                                  len(y_tuning), acc_float, acc_all, acc_all)
    result.tried.append({"float_layers": 0, "tuning_top1": acc_all})
    if result.reached:
        log(f"mixed precision: all-int8 tuning top-1 {acc_all:.2f}% vs float {acc_float:.2f}%: within "
            f"{tolerance_points} points, no layer kept in float")
        return path_all, result

    n_sens = len(y_tuning) if sensitivity_samples is None else min(sensitivity_samples, len(y_tuning))
    xs, refs = take(x_tuning, slice(0, n_sens)), ref[:n_sens]
    err_all = logit_error(OrtRunner(path_all).logits(xs), refs)
    scores = []
    for name, op_type in candidates:
        err = logit_error(OrtRunner(quantize((name,))).logits(xs), refs)
        scores.append({"node": name, "op_type": op_type, "score": err_all - err})
    scores.sort(key=lambda s: -s["score"])
    result.sensitivity = scores
    log("mixed precision: most sensitive layers " + ", ".join(s["node"] for s in scores[:5]))

    best_path, best_acc, best_layers = path_all, acc_all, []
    for k in range(1, min(max_float_layers, len(scores)) + 1):
        layers = [s["node"] for s in scores[:k]]
        path = quantize(tuple(layers))
        acc = top1(OrtRunner(path).logits(x_tuning), y_tuning)
        result.tried.append({"float_layers": k, "tuning_top1": acc})
        if acc > best_acc:
            best_path, best_acc, best_layers = path, acc, layers
        if acc_float - acc <= tolerance_points:
            best_path, best_acc, best_layers = path, acc, layers
            result.reached = True
            break
    result.float_layers = best_layers
    result.tuning_top1_mixed = best_acc
    return best_path, result


def latency_cost(all_int8: Path, mixed: Path, batch: Mapping[str, np.ndarray], threads: int | None = None,
                 rounds: int = 5, min_round_s: float = 0.1) -> dict:
    """Median latency of the all-int8 and the mixed model, interleaved, on the build machine."""
    from compress.measure.timing import time_sessions

    bs = batch_size(batch)
    timing = time_sessions({"all_int8": OrtRunner(all_int8, threads), "mixed": OrtRunner(mixed, threads)},
                           lambda _bs: batch, [bs], warmup=2, rounds=rounds, min_round_s=min_round_s)
    a, m = timing["all_int8"][bs]["p50_ms"], timing["mixed"][bs]["p50_ms"]
    return {"batch_size": bs, "threads": threads, "all_int8_p50_ms": a, "mixed_p50_ms": m,
            "cost_ratio": m / a}
