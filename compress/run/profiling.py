"""The one profiling loop, used by ``compress run`` and ``compress profile``.

Every (model, target) pair that can run is timed in ONE interleaved loop per device, so that
runtimes on the same machine are compared under the same noise (e.g. ONNX Runtime vs OpenVINO);
then peak memory (a fresh subprocess per pair) and, for priced targets, cost.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from compress.errors import CompressError
from compress.measure.cost import serving_costs, usd_per_1m
from compress.measure.energy import meter_device
from compress.measure.lengths import ServedLengths, time_grid, time_served
from compress.measure.memory import measure_memory_many
from compress.measure.timing import time_sessions
from compress.runtimes.base import RUNTIMES

#: the time_sessions settings a recipe's profile section (or `compress profile`'s options) sets
PLAN_KEYS = ("warmup", "rounds", "min_round_s", "max_cv", "max_extra_rounds", "warmup_max_s")


def timing_plan(profile) -> dict[str, Any]:
    """The timing settings of a recipe's ``profile`` section, as time_sessions keywords."""
    return {k: getattr(profile, k) for k in PLAN_KEYS}


def profile_pairs(
    pairs: dict[str, tuple[Any, Any]],
    make_batch: Callable[[int], Any],
    batch_sizes: list[int],
    *,
    plan: dict[str, Any] | None = None,
    memory_input_spec=None,
    seq_lens: list[int] | None = None,
    served: ServedLengths | None = None,
    seed: int = 0,
    progress=None,
    log: Callable[[str], None] = print,
) -> dict[str, dict]:
    """``{key: (artifact, target)}`` -> ``{key: {"latency": {bs: summary}, "runtime_info": ...,
    "memory": ...}}``, or ``{key: {"not_profiled": why}}`` for a pair that cannot run.

    Peak memory is measured when ``memory_input_spec`` (an InputSpec) is given. A text
    model is timed on the batch size x sequence length grid when ``seq_lens`` is given
    (``make_batch(bs, seq_len)``; ``"latency_by_seq_len": {seq_len: {bs: summary}}``, and
    ``latency`` holds the longest length's cells), and on the real lengths of ``served``
    (``"real_lengths"``, see ``compress.measure.lengths.time_served``)."""
    out: dict[str, dict] = {}
    by_device: dict[str, dict[str, Any]] = {}
    for key, (art, target) in pairs.items():
        runtime = RUNTIMES.get(target.runtime)
        if art.kind not in runtime.accepts:
            out[key] = {"not_profiled": f"{target.runtime} cannot run a {art.kind} model"}
            continue
        try:
            by_device.setdefault(meter_device(target), {})[key] = runtime.load(art, target)
        except CompressError as err:
            out[key] = {"not_profiled": str(err)}
    for device, sessions in by_device.items():
        log(f"profiling {len(sessions)} model/target pair(s) on {device}, interleaved ...")
        timing = {"device": device, "progress": progress, **(plan or {})}
        try:
            if seq_lens:
                grid = time_grid(sessions, make_batch, batch_sizes, seq_lens, **timing)
                timings = {key: by_len[max(by_len)] for key, by_len in grid.items()}
            else:
                timings = time_sessions(sessions, make_batch, batch_sizes, **timing)
            real = time_served(sessions, served, seed=seed, **timing) if served is not None else {}
        finally:
            for sess in sessions.values():
                sess.close()
        for key, per_bs in timings.items():
            out[key] = {"latency": {str(bs): m for bs, m in per_bs.items()},
                        "runtime_info": sessions[key].info}
            if seq_lens:
                out[key]["latency_by_seq_len"] = {
                    str(n): {str(bs): m for bs, m in per_bs.items()} for n, per_bs in grid[key].items()}
            if key in real:
                out[key]["real_lengths"] = real[key]
    if memory_input_spec is not None:
        jobs = {key: pairs[key] for key, got in out.items() if "latency" in got}
        for key, mem in measure_memory_many(jobs, memory_input_spec, batch_sizes, log=log).items():
            out[key]["memory"] = mem
    return out


def add_costs(entries: dict[str, dict], targets, *, reference: str, requests_per_day: float | None = None,
              compression_usd_per_hour: float | None = None) -> None:
    """$ per million inferences (and monthly, with traffic) on every priced target, and each
    variant's break-even against ``reference`` (see ``compress.measure.cost.serving_costs``)."""
    for target in targets:
        if target.usd_per_hour is not None:
            serving_costs(entries, target.name, target.usd_per_hour, reference=reference,
                          requests_per_day=requests_per_day,
                          compression_usd_per_hour=compression_usd_per_hour)
            _price_shapes(entries, target.name, target.usd_per_hour)


def _price_shapes(entries: dict[str, dict], target: str, usd_per_hour: float) -> None:
    """$ per 1M inferences of every grid cell and of the real-length passes of a text model."""
    for entry in entries.values():
        cells = [m for per_bs in (entry.get("latency_by_seq_len") or {}).get(target, {}).values()
                 for m in per_bs.values()]
        real = (entry.get("real_lengths") or {}).get(target)
        cells += [real[how] for how in ("dynamic", "padded")] if real else []
        for m in cells:
            m.setdefault("usd_per_1m", usd_per_1m(m["throughput_per_s"], usd_per_hour))
