"""Latency and throughput, measured so that machine noise hits every variant alike.

Method, per batch size:

1. **Warm-up until stable.** Each session runs at least ``warmup`` untimed calls, then keeps running
   in windows of ``WARMUP_WINDOW`` calls until the median of one window is within
   ``warmup_tolerance`` of the previous one (or ``warmup_max_s`` has passed; then the session is
   flagged ``warmup_stable: false``). Lazy initialisation, allocator growth, cuDNN/TensorRT
   autotuning and CPU frequency ramps all happen here, not in the timed rounds.
2. **Interleaved rounds.** ``rounds`` rounds; in each, every variant is timed for at least
   ``min_round_s`` seconds; the order rotates every round (``interleaved_order``), so all variants
   sample the same stretch of machine time and no variant is always first. Each variant's block
   starts with ``settle_runs`` untimed calls, so the first timed call does not pay for the caches
   the previous variant left behind, which a deployed model serving alone never pays (a guard: on
   the 2-core development machine its effect was within noise, docs/results/profiler.md).
3. **Stability.** The coefficient of variation of a variant's per-round medians (``round_cv``)
   measures drift between rounds. While any variant's ``round_cv`` exceeds ``max_cv``, one more
   interleaved round is run for every variant (so the comparison stays interleaved), up to
   ``max_extra_rounds``; a variant still above is flagged ``stable: false``. The per-sample ``cv``
   is reported as well, but a single descheduling spike inflates it without moving the median, so
   it does not trigger extension.
4. **Summary.** p50/p90/p99, a bootstrap 95% interval of the median, throughput (batch / median)
   with the interval that follows from the median's, and energy per inference where a hardware
   counter is readable.

On a GPU the host clock would only time the kernel launches; a session that knows how to time
itself on the device (``time_run_ms``: CUDA events, synchronised) is timed that way. Speed-ups are
ratios of medians from the same run: no gate ever depends on an absolute time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from compress.errors import InputError
from compress.measure import stats
from compress.measure.energy import EnergyWindow, default_meter
from compress.run.progress import track

WARMUP_WINDOW = 5  # calls per warm-up window; two consecutive windows are compared


@dataclass(frozen=True)
class TimingPlan:
    """How long and how carefully to time. Defaults fit a CPU model of a few ms."""

    warmup: int = 5
    warmup_max_s: float = 2.0
    warmup_tolerance: float = 0.05
    rounds: int = 7
    min_round_s: float = 0.2
    max_cv: float = 0.1
    max_extra_rounds: int = 6
    settle_runs: int = 1

    def __post_init__(self) -> None:
        checks = [
            (self.warmup >= 0, f"warmup must be >= 0 runs, got {self.warmup}"),
            (self.warmup_max_s >= 0, f"warmup_max_s must be >= 0 seconds, got {self.warmup_max_s}"),
            (self.warmup_tolerance > 0, f"warmup_tolerance must be > 0, got {self.warmup_tolerance}"),
            (self.rounds >= 1, f"rounds must be >= 1, got {self.rounds}"),
            (self.min_round_s > 0, f"min_round_s must be > 0 seconds, got {self.min_round_s}"),
            (self.max_cv > 0, f"max_cv must be > 0 (e.g. 0.1 for 10%), got {self.max_cv}"),
            (self.max_extra_rounds >= 0, f"max_extra_rounds must be >= 0, got {self.max_extra_rounds}"),
            (self.settle_runs >= 0, f"settle_runs must be >= 0, got {self.settle_runs}"),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(f"profile: {message}")


def interleaved_order(names: list[str], round_index: int) -> list[str]:
    """Round r starts at variant r mod n, so no variant is always first (or always after another)."""
    if not names:
        return []
    k = round_index % len(names)
    return names[k:] + names[:k]


def check_batch_sizes(batch_sizes: list[int]) -> list[int]:
    return check_sizes(batch_sizes, "batch sizes", "[1, 32]")


def check_sizes(sizes: list[int], what: str, example: str) -> list[int]:
    """Sorted, distinct, positive integers (batch sizes, sequence lengths), or an InputError."""
    if not sizes:
        raise InputError(f"{what}: give at least one, e.g. {example}")
    bad = [b for b in sizes if not isinstance(b, (int, np.integer)) or b < 1]
    if bad:
        raise InputError(f"{what} must be positive integers, got {bad} in {list(sizes)}")
    return sorted({int(b) for b in sizes})


def round_cv(round_medians_ms: list[float]) -> float:
    """Coefficient of variation (sample std / mean) of per-round medians; 0 with one round."""
    x = np.asarray(round_medians_ms, dtype=float)
    if x.size < 2 or x.mean() <= 0:
        return 0.0
    return float(x.std(ddof=1) / x.mean())


class _Timer:
    """Times one call: on the device when the session can (CUDA events), else with ``clock``."""

    def __init__(self, clock: Callable[[], float]):
        self.clock = clock

    def __call__(self, session, batch) -> float:
        device_timer = getattr(session, "time_run_ms", None)
        if device_timer is not None:
            return float(device_timer(batch))
        t0 = self.clock()
        session.run(batch)
        return (self.clock() - t0) * 1e3


def warm_up(session, batch, plan: TimingPlan, timer: _Timer, clock: Callable[[], float]) -> dict:
    """Run ``session`` until two consecutive windows of calls have medians within tolerance
    (``warmup_stable`` True), or until ``warmup_max_s`` has passed (False). With
    ``warmup_max_s == 0`` only the fixed ``warmup`` runs happen (None: not checked)."""
    for _ in range(plan.warmup):
        session.run(batch)
    if plan.warmup_max_s == 0:  # fixed warm-up only: no stability search
        return {"warmup_runs": plan.warmup, "warmup_stable": None}
    t_end = clock() + plan.warmup_max_s
    previous: float | None = None
    runs = plan.warmup
    while True:
        window = [timer(session, batch) for _ in range(WARMUP_WINDOW)]
        runs += WARMUP_WINDOW
        current = float(np.median(window))
        if previous is not None and abs(current - previous) <= plan.warmup_tolerance * previous:
            return {"warmup_runs": runs, "warmup_stable": True}
        if clock() >= t_end:
            return {"warmup_runs": runs, "warmup_stable": False}
        previous = current


def time_sessions(
    sessions: dict[str, object],
    make_batch: Callable[[int], np.ndarray],
    batch_sizes: list[int],
    *,
    warmup: int = 5,
    rounds: int = 7,
    min_round_s: float = 0.2,
    max_cv: float = 0.1,
    max_extra_rounds: int = 6,
    warmup_max_s: float = 2.0,
    settle_runs: int = 1,
    device: str = "cpu",
    progress=None,
    clock: Callable[[], float] = time.perf_counter,
    meter=None,
) -> dict[str, dict[int, dict]]:
    """{variant: {batch_size: {timing summary, throughput, stability, energy}}} for every session."""
    plan = TimingPlan(warmup=warmup, rounds=rounds, min_round_s=min_round_s, max_cv=max_cv,
                      max_extra_rounds=max_extra_rounds, warmup_max_s=warmup_max_s, settle_runs=settle_runs)
    batch_sizes = check_batch_sizes(batch_sizes)
    names = list(sessions)
    meter = meter if meter is not None else default_meter(device)
    timer = _Timer(clock)
    out: dict[str, dict[int, dict]] = {n: {} for n in names}
    with track(progress, "profiling", len(batch_sizes) * plan.rounds) as advance:
        for bs in batch_sizes:
            run = _BatchRun(sessions, make_batch(bs), plan, timer, clock, meter)
            for r in range(plan.rounds):
                run.round(r)
                advance()
            extra = 0
            while extra < plan.max_extra_rounds and any(
                round_cv(run.medians[n]) > plan.max_cv for n in names
            ):
                run.round(plan.rounds + extra)
                extra += 1
            for name in names:
                out[name][bs] = _summarize(
                    run.samples[name], run.medians[name], bs, plan, extra, run.warm[name],
                    run.energy[name].result(len(run.samples[name]) * bs).to_dict(),
                )
    return out


class _BatchRun:
    """The warm-up and the interleaved rounds of every session at one batch size."""

    def __init__(self, sessions: dict, batch, plan: TimingPlan, timer: _Timer, clock, meter):
        self.sessions, self.batch, self.plan, self.timer, self.clock = sessions, batch, plan, timer, clock
        self.meter = meter
        names = list(sessions)
        self.warm = {n: warm_up(sessions[n], batch, plan, timer, clock) for n in names}
        self.samples: dict[str, list[float]] = {n: [] for n in names}
        self.medians: dict[str, list[float]] = {n: [] for n in names}
        self.energy = {n: EnergyWindow(meter) for n in names}  # one window per variant, open in its rounds

    def round(self, r: int) -> None:
        for name in interleaved_order(list(self.sessions), r):
            for _ in range(self.plan.settle_runs):  # untimed: this variant's caches, not the last one's
                self.sessions[name].run(self.batch)
            with self.energy[name]:
                t_end = self.clock() + self.plan.min_round_s
                this_round: list[float] = []
                while len(this_round) < 3 or self.clock() < t_end:
                    this_round.append(self.timer(self.sessions[name], self.batch))
            self.samples[name].extend(this_round)
            self.medians[name].append(float(np.median(this_round)))


def _summarize(samples: list[float], medians: list[float], bs: int, plan: TimingPlan, extra: int,
               warm: dict, energy: dict) -> dict:
    summary = stats.summarize_timings(samples)
    cv_rounds = round_cv(medians)
    return {
        **summary.to_dict(),
        "batch_size": bs,
        "throughput_per_s": bs / (summary.p50_ms / 1e3),
        "throughput_low_per_s": bs / (summary.p50_high_ms / 1e3),
        "throughput_high_per_s": bs / (summary.p50_low_ms / 1e3),
        "rounds": plan.rounds + extra,
        "extra_rounds": extra,
        "round_medians_ms": [round(m, 4) for m in medians],
        "round_cv": cv_rounds,
        "stable": cv_rounds <= plan.max_cv,
        **warm,
        "energy": energy,
        "samples_ms": [round(s, 4) for s in samples],
    }


def speedup(reference: dict, variant: dict, *, seed: int = 0) -> dict:
    """Median(reference) / median(variant), with a bootstrap interval, from one interleaved run."""
    iv = stats.ratio_interval(reference["samples_ms"], variant["samples_ms"], seed=seed)
    return iv.to_dict()
