"""Search trials on an executor's workers (``compress search --ray``): Optuna is asked for a batch of
trials (as many as the cluster has CPU slots), their options are sampled here, and each trial's builds
and tuning-split scores run as one task (``measure_trial``) that rebuilds the search's context on its
worker from the search directory (never data arrays through Ray). The promoted candidates are then
timed against the reference in one interleaved loop per target, in one task on a node providing
``target:<name>`` (``time_trials``), as `compress run` on Ray times; then every trial is told to Optuna.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from compress.errors import Terminated

#: the search's context per worker process (splits, store, baseline, reference), reused by later tasks
_CONTEXT: dict = {}


@dataclasses.dataclass(frozen=True)
class SearchRef:
    """What every task of a search is given: its directory (recipe.yaml, the store beside it), the
    driver's code digest, torch thread count and baseline digest, and the baseline's tuning top-1."""

    search_dir: Path
    code: str
    torch_threads: int
    baseline_digest: str
    base_top1: tuple  # (("full", x), ("screen", y))


@dataclasses.dataclass(frozen=True)
class TrialJob:
    ref: SearchRef
    number: int
    steps: list
    target: dict
    start: bool


def search_ref(ctx) -> SearchRef:
    import torch

    from compress.artifacts import code_digest

    return SearchRef(Path(ctx.search_dir).resolve(), code_digest(), torch.get_num_threads(), ctx.baseline.digest,
                     tuple(sorted(ctx.base_top1.items())))


def worker_context(ref: SearchRef):
    """This worker's context of the search (made on its first task), as the driver made it."""
    from compress.run.ray_worker import log_to_stderr, not_shared, same_code_and_threads
    from compress.search.study import prepare

    same_code_and_threads(ref.code, ref.torch_threads)
    if _CONTEXT.get("ref") != ref:
        store = ref.search_dir.parent / ".cache"
        if not (store / ref.baseline_digest / "artifact.json").is_file():
            raise RuntimeError(not_shared(store, f"the search's baseline {ref.baseline_digest}"))
        ctx = prepare(ref.search_dir, log=log_to_stderr, base_top1=dict(ref.base_top1))
        if ctx.baseline.digest != ref.baseline_digest:
            raise RuntimeError(f"this worker's baseline {ctx.baseline.digest} is not the driver's {ref.baseline_digest}")
        _CONTEXT.clear()
        _CONTEXT.update(ref=ref, ctx=ctx)
    return _CONTEXT["ctx"]


def measure_trial(job: TrialJob) -> tuple[dict, object, object]:
    """One trial's screen, full build and tuning score on a worker: (record, light artifact or None
    when screened out, the candidate's target)."""
    from compress.run.ray_worker import light
    from compress.search.study import measure

    ctx = worker_context(job.ref)
    record: dict = {}
    started = time.perf_counter()
    art, target = measure(ctx, job.steps, job.target, job.number, job.start, record)
    record["seconds"] = time.perf_counter() - started
    return record, light(art), target


def time_trials(item: tuple[SearchRef, dict, object]) -> dict:
    """{trial number: timing or TrialFailed} of one target's candidates, timed with the reference in
    one interleaved loop on this node."""
    from compress.run.ray_worker import load
    from compress.search.study import time_candidates

    ref, candidates, target = item
    ctx = worker_context(ref)
    st = {"baseline": ctx.baseline, "cache": ctx.cache}
    return time_candidates(ctx, {str(k): (load(st, a), t) for k, (a, t) in candidates.items()}, target)


def _needs_gpu(job: TrialJob) -> bool:
    return job.target.get("runtime") == "tensorrt" or any(
        str(cfg.get("device", "cpu")).startswith("cuda") for _n, cfg in job.steps if isinstance(cfg, dict))


def run_batches(ctx, study, executor, size: int, told) -> int:
    """Ask Optuna for ``size`` trials, run them on ``executor`` and tell their results (in trial
    order, ``told(trial, record)`` after each); returns how many were told. On Ctrl-C or SIGTERM the
    trials not yet told are queued again, as in-process."""
    from compress.run.ray_executor import target_resource
    from compress.run.rundir import signals_deferred
    from compress.search import study as st
    from compress.search.space import sample

    with signals_deferred():
        trials = [study.ask() for _ in range(size)]
    done: set[int] = set()
    try:
        ref = search_ref(ctx)
        records, jobs, same_as = {}, [], {}
        for t in trials:
            with signals_deferred():  # each suggestion is a write to the study
                cand = sample(ctx.recipe, t)
            records[t.number] = st.new_record(cand)
            earlier = st.same_options(t, cand.params)
            twin = next((j.number for j in jobs if records[j.number]["options"] == cand.params), None)
            if earlier is not None:  # a sampler may draw a point again: its timing would only add noise
                st.duplicate(records[t.number], earlier.number, earlier.user_attrs)
            elif twin is not None:  # drawn twice in this batch: measured once
                same_as[t.number] = twin
            else:
                jobs.append(TrialJob(ref, t.number, cand.steps, cand.target, bool(t.user_attrs.get("start"))))
        gpus = 1 if any(_needs_gpu(j) for j in jobs) else 0
        got = dict(zip([j.number for j in jobs], executor.map(measure_trial, jobs, num_gpus=gpus), strict=True))
        promoted: dict[str, dict] = {}  # target name -> {trial number: (artifact, target)}
        for number, result in got.items():
            if isinstance(result, BaseException):
                records[number] = {"error": _text(result), "seconds": 0.0}
                continue
            record, art, target = result
            records[number].update(record)
            if art is not None:
                promoted.setdefault(target.name, {})[number] = (art, target)
        timings: dict[int, object] = {}
        ref_target = ctx.recipe.gate.reference_target
        for name, cands in promoted.items():
            target = next(iter(cands.values()))[1]
            wanted = {target_resource(name): 1, **({target_resource(ref_target): 1} if ref_target else {})}
            started = time.perf_counter()
            (result,) = executor.map(time_trials, [(ref, cands, target)], resources=wanted)
            share = (time.perf_counter() - started) / len(cands)
            for number in cands:
                timings[number] = result if isinstance(result, BaseException) else result[str(number)]
                records[number]["seconds"] += share
        values: dict[int, list | None] = {}
        for number, timing in timings.items():
            try:
                if isinstance(timing, BaseException):
                    raise st.TrialFailed(_text(timing))
                values[number] = st.score(ctx, records[number], timing, _target_of(promoted, number))
            except st.TrialFailed as err:
                records[number] = {"error": str(err), "seconds": records[number]["seconds"]}
        for t in trials:
            record = records[t.number]
            if t.number in same_as:
                first = same_as[t.number]
                if "error" in records[first]:  # failed, like its twin: a later draw of these options runs again
                    record = {"error": f"the same options as trial {first}, which failed: {records[first]['error']}"}
                else:
                    record = st.duplicate(record, first, records[first])
            record.setdefault("seconds", 0.0)
            st.tell(study, t, values.get(t.number), record)
            done.add(t.number)
            told(t, record)
    except (KeyboardInterrupt, Terminated):
        for t in trials:
            if t.number not in done:
                st.requeue(study, t)
        raise
    return len(trials)


def _target_of(promoted: dict, number: int):
    return next(c[number][1] for c in promoted.values() if number in c)


def _text(err: BaseException) -> str:
    """A failed trial's error as in-process records it (a TrialFailed's own message)."""
    msg = str(err)
    prefix = "TrialFailed: "
    return msg[len(prefix):] if msg.startswith(prefix) else msg
