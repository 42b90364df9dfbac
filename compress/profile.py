"""Latency and throughput, measured so that machine noise hits every variant alike.

Method: warm up every session; then, per batch size, run ``rounds`` rounds in which each variant is
timed for at least ``min_round_s`` (the order rotates every round). All variants therefore sample
the same stretch of machine time, and speed-ups are ratios of medians from the same run. An
absolute time is never gated on.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from compress import stats
from compress.energy import EnergyUnavailable, default_meter
from compress.progress import track


def interleaved_order(names: list[str], round_index: int) -> list[str]:
    """Round r starts at variant r mod n, so no variant is always first (or always after another)."""
    if not names:
        return []
    k = round_index % len(names)
    return names[k:] + names[:k]


def time_sessions(
    sessions: dict[str, object],
    make_batch: Callable[[int], np.ndarray],
    batch_sizes: list[int],
    *,
    warmup: int = 5,
    rounds: int = 7,
    min_round_s: float = 0.2,
    device: str = "cpu",
    progress=None,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, dict[int, dict]]:
    """{variant: {batch_size: {timing summary, throughput_per_s, energy}}} for every session."""
    names = list(sessions)
    meter = default_meter(device)
    out: dict[str, dict[int, dict]] = {n: {} for n in names}
    total = len(batch_sizes) * rounds * len(names)
    with track(progress, "profiling", total) as advance:
        for bs in batch_sizes:
            batch = make_batch(bs)
            for name in names:
                for _ in range(warmup):
                    sessions[name].run(batch)
            samples: dict[str, list[float]] = {n: [] for n in names}
            joules: dict[str, float] = dict.fromkeys(names, 0.0)
            energy_ok = meter.available()
            for r in range(rounds):
                for name in interleaved_order(names, r):
                    sess = sessions[name]
                    e0 = meter.read_j() if energy_ok else 0.0
                    t_end = clock() + min_round_s
                    n_runs = 0
                    while n_runs < 3 or clock() < t_end:
                        t0 = clock()
                        sess.run(batch)
                        samples[name].append((clock() - t0) * 1e3)
                        n_runs += 1
                    if energy_ok:
                        joules[name] += meter.read_j() - e0
                    advance()
            for name in names:
                summary = stats.summarize_timings(samples[name])
                inferences = len(samples[name]) * bs
                if energy_ok and joules[name] > 0:
                    energy = {"measured": True, "meter": meter.name, "j_per_inference": joules[name] / inferences}
                else:
                    energy = EnergyUnavailable(meter.name, meter.reason or "counter did not advance").to_dict()
                out[name][bs] = {
                    **summary.to_dict(),
                    "batch_size": bs,
                    "throughput_per_s": bs / (summary.p50_ms / 1e3),
                    "energy": energy,
                    "samples_ms": [round(s, 4) for s in samples[name]],
                }
    return out


def speedup(reference: dict, variant: dict, *, seed: int = 0) -> dict:
    """Median(reference) / median(variant), with a bootstrap interval, from one interleaved run."""
    iv = stats.ratio_interval(reference["samples_ms"], variant["samples_ms"], seed=seed)
    return iv.to_dict()
