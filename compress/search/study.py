"""The search itself: an Optuna study stored in the search directory (SQLite), whose trials build
candidates through the run's cache (``build_variants``: shared prefixes are built once), score
top-1 on the tuning split only and time each candidate against the gate's reference, interleaved.

Two fidelities: a first stage (fewer fine-tuning epochs, a seeded subsample of tuning) screens a
trial; only a trial within the gate's tolerance plus a margin is rebuilt at full fidelity and timed.
Held-out is never read here: ``compress.search.report.finish`` measures the final front on it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from compress.artifacts import Cache
from compress.errors import CompressError, MissingDependency, Terminated
from compress.measure.accuracy import evaluate
from compress.measure.cost import usd_per_1m
from compress.recipe.load import load_recipe, parse_recipe
from compress.run.build import build_baseline, build_variants
from compress.run.pipeline import _eval_target
from compress.run.profiling import profile_pairs, timing_plan
from compress.run.rundir import signals_deferred
from compress.runtimes.base import RUNTIMES
from compress.search.directory import RECIPE_FILE
from compress.search.space import sample, space_size, start_params
from compress.sources.data import make_splits

STUDY_FILE = "study.db"


def _optuna():
    try:
        import optuna
    except ImportError:
        raise MissingDependency("optuna", "search", "compress search") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


# --------------------------------------------------------------------------- one trial


class TrialFailed(Exception):
    """A candidate that could not be built or run: the trial is recorded as failed."""


@dataclass
class Context:
    recipe: object
    search_dir: Path
    splits: object
    cache: Cache
    baseline: object
    reference: object
    reference_target: object | None
    screen_idx: np.ndarray | None
    base_top1: dict = field(default_factory=dict)  # "screen" / "full" -> baseline tuning top-1
    log: object = print

    @property
    def data(self) -> dict:
        d = json.loads(self.recipe.model_dump_json(by_alias=True, exclude_unset=True))
        d.pop("search", None)
        return d


def _build(ctx: Context, steps: list[tuple[str, dict]], target: dict, workdir: Path):
    """The artifact of ``steps`` through the shared cache (a prefix built before is reused)."""
    data = ctx.data
    data["variants"] = {"candidate": {"steps": [{n: c} for n, c in steps], "targets": [target["name"]]}}
    data["targets"] = [target if t["name"] == target["name"] else t for t in data["targets"]]
    data["gate"] = {}
    try:
        rec = parse_recipe(data, origin="the sampled candidate")
    except CompressError as err:
        raise TrialFailed(str(err)) from None
    built = build_variants(rec, ctx.baseline, ctx.splits, ctx.cache, workdir, log=ctx.log)["candidate"]
    if not built.ok:
        raise TrialFailed(built.error)
    return built.artifact, rec.targets[[t.name for t in rec.targets].index(target["name"])]


def _top1(ctx: Context, art, target, idx: np.ndarray | None) -> tuple[float, int]:
    """Top-1 (%) on the tuning split (or its rows ``idx``), run by ``target`` when it can."""
    if art.kind not in RUNTIMES.get(target.runtime).accepts:
        target = _eval_target(ctx.recipe, art.kind)
    split = ctx.splits["tuning"] if idx is None else ctx.splits["tuning"].subset(idx)
    session = RUNTIMES.get(target.runtime).load(art, target)
    try:
        result = evaluate(session, split, batch_size=ctx.recipe.evaluate.batch_size, keep_logits=False)
    finally:
        session.close()
    return result.top1, result.n


def _capped(steps: list[tuple[str, dict]], epochs: int | None) -> list[tuple[str, dict]]:
    """``steps`` (normalised by their configs) with every ``finetune.epochs`` capped at ``epochs``."""
    from compress.steps.base import STEPS

    out = []
    for name, cfg in steps:
        model = STEPS.get(name).config.model_validate(cfg)
        full = model.model_dump(mode="json", exclude_unset=True)
        if epochs is not None and isinstance(full.get("finetune"), dict):
            full["finetune"]["epochs"] = min(model.finetune.epochs, epochs)
        out.append((name, full))
    return out


def _time(ctx: Context, art, target) -> dict:
    """p50 latency of the candidate and the reference at the objective's batch size, interleaved."""
    got = time_candidates(ctx, {"candidate": (art, target)}, target)["candidate"]
    if isinstance(got, TrialFailed):
        raise got
    return got


def time_candidates(ctx: Context, candidates: dict, target) -> dict:
    """{key: timing, or the TrialFailed} of candidates on ``target``, timed with the reference in one
    interleaved loop (one candidate in-process; a batch's candidates of one target on Ray)."""
    s = ctx.recipe.search
    ref_target = ctx.reference_target or target
    probe = ctx.splits["calibration"] if "calibration" in ctx.splits else ctx.splits["train"]
    rng = np.random.default_rng(ctx.recipe.seed)

    def make_batch(bs: int):
        return probe.inputs(np.sort(rng.choice(len(probe), size=bs, replace=len(probe) < bs)))

    plan = {**timing_plan(ctx.recipe.profile), "rounds": s.timing_rounds, "max_extra_rounds": 0}
    bs = s.objective.batch_size
    got = profile_pairs({"reference": (ctx.reference, ref_target), **candidates},
                        make_batch, [bs], plan=plan, log=ctx.log)
    if "latency" not in got["reference"]:
        raise TrialFailed(f"reference could not be timed on {target.name}: {got['reference'].get('not_profiled')}")
    ref = got["reference"]["latency"][str(bs)]
    out: dict = {}
    for key, (_art, cand_target) in candidates.items():
        if "latency" not in got[key]:
            out[key] = TrialFailed(f"candidate could not be timed on {target.name}: {got[key].get('not_profiled')}")
            continue
        cand = got[key]["latency"][str(bs)]
        out[key] = {"batch_size": bs, "latency_ms_p50": cand["p50_ms"], "reference_latency_ms_p50": ref["p50_ms"],
                    "speedup": ref["p50_ms"] / cand["p50_ms"], "throughput_per_s": cand["throughput_per_s"],
                    "usd_per_1m": None}
        if cand_target.usd_per_hour is not None:
            out[key]["usd_per_1m"] = usd_per_1m(cand["throughput_per_s"], cand_target.usd_per_hour)
    return out


def new_record(cand) -> dict:
    return {"steps": [[n, c] for n, c in cand.steps], "target": cand.target, "options": cand.params}


def duplicate(record: dict, number: int, earlier_attrs: dict) -> dict:
    """``record`` of a trial that drew the options of trial ``number`` (not measured again)."""
    record["duplicate_of"] = number
    if "constraint" in earlier_attrs:
        record["constraint"] = earlier_attrs["constraint"]
    return record


def run_trial(ctx: Context, trial) -> tuple[list[float] | None, dict]:
    """Sample, screen, then (when promoted) build at full fidelity, score and time one trial.
    Returns (objective values, or None when screened out; what was measured)."""
    with signals_deferred():  # each suggestion is a write to the study
        cand = sample(ctx.recipe, trial)
    record = new_record(cand)
    earlier = same_options(trial, cand.params)
    if earlier is not None:  # a sampler may draw a point again: its timing would only add noise
        return None, duplicate(record, earlier.number, earlier.user_attrs)
    art, target = measure(ctx, cand.steps, cand.target, trial.number, bool(trial.user_attrs.get("start")), record)
    if art is None:
        return None, record
    timing = _time(ctx, art, target)
    return score(ctx, record, timing, target), record


def measure(ctx: Context, steps: list, target: dict, number: int, start: bool, record: dict):
    """Screen (two fidelities) then build at full fidelity and score on tuning, into ``record``;
    returns (artifact, target), or (None, None) when screened out. No timing."""
    s, gate = ctx.recipe.search, ctx.recipe.gate
    workdir = ctx.search_dir / "work" / f"trial-{number}"
    tol = gate.max_accuracy_drop
    # the hand-written start is always measured in full: the result is never worse than it on tuning
    two_stage = (s.fidelity.tuning_samples is not None or s.fidelity.finetune_epochs is not None) and not start
    screen_steps = _capped(steps, s.fidelity.finetune_epochs)
    # nothing to cap and no subsample: the first stage is the full one (built and scored once)
    same = screen_steps == _capped(steps, None) and ctx.screen_idx is None
    if two_stage:
        art, target_ = _build(ctx, screen_steps, target, workdir / "screen")
        top1, n = _top1(ctx, art, target_, ctx.screen_idx)
        drop = ctx.base_top1["screen"] - top1
        record["screen"] = {"tuning_top1": top1, "tuning_n": n, "drop_points": drop,
                            "finetune_epochs_cap": s.fidelity.finetune_epochs}
        if tol is not None and drop > tol + s.fidelity.promote_margin_points:
            record["constraint"] = [drop - tol, 0.0]
            return None, None
    if not (two_stage and same):
        art, target_ = _build(ctx, steps, target, workdir / "full")
        top1, n = _top1(ctx, art, target_, None)
    drop = ctx.base_top1["full"] - top1
    record.update(tuning_top1=top1, tuning_n=n, drop_points=drop, digest=art.digest)
    return art, target_


def score(ctx: Context, record: dict, timing: dict, target) -> list[float]:
    """The objective values of a measured, timed trial; its gate constraint into ``record``."""
    s, gate, tol = ctx.recipe.search, ctx.recipe.gate, ctx.recipe.gate.max_accuracy_drop
    record.update(**timing)
    record["constraint"] = [record["drop_points"] - tol if tol is not None else 0.0,
                            gate.min_speedup - timing["speedup"] if gate.min_speedup is not None else 0.0]
    value = timing[s.objective.metric]
    if value is None:
        raise TrialFailed(f"target {target.name} has no usd_per_hour: $ per 1M cannot be measured")
    return [value, record["tuning_top1"]]


def same_options(trial, options: dict):
    """An earlier finished trial (measured or screened out) with exactly these options, or None."""
    from optuna.trial import TrialState

    for t in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        if t.number != trial.number and t.user_attrs.get("options") == options:
            return t
    return None


# --------------------------------------------------------------------------- the study


def _constraints(trial) -> list[float]:
    return trial.user_attrs.get("constraint", [0.0, 0.0])


def _set_constraint(trial, record: dict) -> None:
    """The gate as Optuna's constraint (feasible when every value is <= 0): tuning drop minus
    max_accuracy_drop, min_speedup minus the speed-up."""
    for key, value in zip(("accuracy_drop", "speedup"), record["constraint"], strict=True):
        trial.set_constraint(key, value)


def open_study(recipe, search_dir: Path):
    """The study in ``search_dir`` (created or loaded). The sampler is seeded by the recipe's seed
    plus the trials already stored, so a resumed search does not replay the first invocation's draws."""
    optuna = _optuna()
    kind = {"tpe": optuna.samplers.TPESampler, "nsga2": optuna.samplers.NSGAIISampler,
            "random": optuna.samplers.RandomSampler}[recipe.search.sampler]
    study = optuna.create_study(
        study_name="search", storage=f"sqlite:///{(search_dir / STUDY_FILE).resolve()}",
        sampler=kind(seed=recipe.seed), directions=["minimize", "maximize"], load_if_exists=True,
    )
    if study.trials:
        study.sampler = kind(seed=recipe.seed + len(study.trials))
    return study


def finished(study) -> list:
    """Trials that count against the budget: measured, screened out or failed; not interrupted, and
    not a repeat of an earlier trial's options (a repeat measures nothing and costs nothing)."""
    from optuna.trial import TrialState

    return [t for t in study.get_trials(deepcopy=False)
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
            and not t.user_attrs.get("interrupted") and "duplicate_of" not in t.user_attrs]


MAX_REPEATS = 25  # draws in a row of options already tried: the sampler has nothing new to offer


def exhausted(study, size: int | None) -> str | None:
    """Why the space has nothing left to try, or None: every one of its ``size`` option sets was
    measured or screened out (a failed one may be drawn again), or the last MAX_REPEATS draws all
    repeated earlier options (a space with continuous ranges that the sampler has converged in)."""
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False)
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
            and not t.user_attrs.get("interrupted")]
    tried = {json.dumps(t.user_attrs.get("options", t.params), sort_keys=True, default=str) for t in done
             if t.state != TrialState.FAIL and "duplicate_of" not in t.user_attrs}
    if size is not None and len(tried) >= size:
        return f"all {size} option sets of the space have been tried"
    repeats = 0
    for t in reversed(done):
        if "duplicate_of" not in t.user_attrs:
            break
        repeats += 1
    if repeats >= MAX_REPEATS:
        return f"the last {repeats} draws repeated options already tried"
    return None


def _requeue_interrupted(study, log) -> None:
    """Trials left running by a process that died are marked interrupted and queued again."""
    from optuna.trial import TrialState

    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        with signals_deferred():
            study._storage.set_trial_user_attr(t._trial_id, "interrupted", True)
            study.tell(t.number, state=TrialState.FAIL)
            queued = _queue_again(study, t, log)
        if queued:
            log(f"trial {t.number} was interrupted: queued again")


def _queue_again(study, trial, log=None) -> bool:
    """Queue an interrupted trial's options again; the hand-written start stays the start (measured in full).
    A trial stopped before its options were drawn (between Optuna's ask and the sampling) has none
    to redo: it is only marked interrupted."""
    frozen = study._storage.get_trial(trial._trial_id)
    options = frozen.params or frozen.system_attrs.get("fixed_params") or {}
    if not options:
        if log is not None:
            log(f"trial {trial.number} was stopped before its options were drawn: nothing to redo")
        return False
    attrs = {"redo_of": trial.number, **({"start": True} if trial.user_attrs.get("start") else {})}
    study.enqueue_trial(options, user_attrs=attrs)
    return True


def prepare(search_dir: Path, progress=None, log=print, base_top1: dict | None = None) -> Context:
    """Splits, baseline, the gate's reference and the baseline's tuning top-1 (through the cache);
    a Ray worker is given the driver's ``base_top1`` rather than measuring it again."""
    recipe = load_recipe(search_dir / RECIPE_FILE)
    splits = make_splits(recipe.data, search_dir, recipe.seed)
    cache = Cache(search_dir.parent / ".cache")
    baseline, _info = build_baseline(recipe, search_dir, splits, cache, progress, log)
    ref_name = recipe.gate.reference
    reference = baseline
    if ref_name != "baseline":
        built = build_variants(recipe.model_copy(update={"variants": _ancestry(recipe, ref_name)}),
                               baseline, splits, cache, search_dir / "work" / "reference", log=log)[ref_name]
        if not built.ok:
            raise CompressError(f"the gate's reference {ref_name} could not be built: {built.error}")
        reference = built.artifact
    ref_target = None
    if recipe.gate.reference_target is not None:
        ref_target = next(t for t in recipe.targets if t.name == recipe.gate.reference_target)
    n_tuning = len(splits["tuning"])
    want = recipe.search.fidelity.tuning_samples
    idx = None
    if want is not None and want < n_tuning:
        idx = np.sort(np.random.default_rng(recipe.seed).choice(n_tuning, size=want, replace=False))
    ctx = Context(recipe, search_dir, splits, cache, baseline, reference, ref_target, idx, log=log)
    if base_top1 is not None:
        ctx.base_top1.update(base_top1)
        return ctx
    base_target = _eval_target(recipe, baseline.kind)
    ctx.base_top1["full"] = _top1(ctx, baseline, base_target, None)[0]
    ctx.base_top1["screen"] = ctx.base_top1["full"] if idx is None else _top1(ctx, baseline, base_target, idx)[0]
    return ctx


def _ancestry(recipe, name: str) -> dict:
    out, cur = {}, name
    while cur is not None:
        out[cur] = recipe.variants[cur]
        cur = recipe.variants[cur].from_
    return out


@dataclass
class SearchOutcome:
    search_dir: Path
    complete: bool  # the budget is spent (then the front was measured on held-out)
    exit_code: int
    trials: int


def run_search(search_dir: Path, *, max_new_trials: int | None = None, progress=None, log=print,
               executor=None) -> SearchOutcome:
    """Run (or continue) the study in ``search_dir`` until its budget is spent, then measure the
    front on held-out (``compress.search.report.finish``). ``max_new_trials`` stops earlier, resumable.
    ``executor``: None or in-process runs one trial after another here; another (Ray, already
    ``check``-ed against the recipe) runs batches of trials on its workers (``compress.search.batches``)."""
    from compress.search.report import finish

    ctx = prepare(search_dir, progress, log)
    s = ctx.recipe.search
    study = open_study(ctx.recipe, search_dir)
    _requeue_interrupted(study, log)
    if not study.trials:
        first = start_params(ctx.recipe)
        if first is not None:
            with signals_deferred():
                study.enqueue_trial(first, user_attrs={"start": True})
        else:
            log(f"search: {s.start}'s own options are not all inside the space; it is not tried as is")
    t0, new = time.perf_counter(), 0
    budget_s = s.budget.minutes * 60 if s.budget.minutes is not None else None
    task = progress.add_task("search", total=s.budget.trials) if progress is not None else None
    size = space_size(ctx.recipe)
    said: list[str] = []

    def budget_left() -> bool:
        if s.budget.trials is not None and len(finished(study)) >= s.budget.trials:
            return False
        why = exhausted(study, size)
        if why is not None:
            if not said:
                said.append(why)
                log(f"search: {why}; stopping before the budget is spent")
            return False
        return budget_s is None or time.perf_counter() - t0 < budget_s

    def told(trial, record: dict) -> None:
        log(_trial_line(trial.number, record))
        if task is not None:
            progress.update(task, completed=len(finished(study)),
                            description=_progress_text(study, s, time.perf_counter() - t0, budget_s))

    if executor is not None and executor.name != "in-process":
        from compress.search.batches import run_batches

        def room() -> int:
            """How many trials may start now."""
            if not budget_left():
                return 0
            n = s.budget.trials - len(finished(study)) if s.budget.trials is not None else executor.slots()
            return n if max_new_trials is None else min(n, max_new_trials - new)

        while (n := room()) > 0:
            new += run_batches(ctx, study, executor, min(n, executor.slots()), told)
    else:
        while budget_left() and (max_new_trials is None or new < max_new_trials):
            with signals_deferred():
                trial = study.ask()
            started = time.perf_counter()
            try:
                values, record = run_trial(ctx, trial)
            except (KeyboardInterrupt, Terminated):
                requeue(study, trial)
                raise
            except (TrialFailed, CompressError) as err:
                values, record = None, {"error": str(err)}
            record["seconds"] = time.perf_counter() - started
            tell(study, trial, values, record)
            new += 1
            told(trial, record)
    if task is not None:
        progress.remove_task(task)
    if budget_left():  # stopped by max_new_trials: resumable
        return SearchOutcome(search_dir, False, 0, len(finished(study)))
    code = finish(ctx, study, progress=progress, log=log, executor=executor, stopped_early=said[0] if said else None)
    return SearchOutcome(search_dir, True, code, len(finished(study)))


def requeue(study, trial) -> None:
    """A trial stopped by Ctrl-C or SIGTERM: recorded as interrupted (not counted) and queued again."""
    from optuna.trial import TrialState

    with signals_deferred():  # a second Ctrl-C must not cut this write in half
        trial.set_user_attr("interrupted", True)
        study.tell(trial, state=TrialState.FAIL)
        _queue_again(study, trial)


def tell(study, trial, values: list[float] | None, record: dict) -> None:
    """Store what a trial measured and tell Optuna: complete, screened out (pruned) or failed."""
    from optuna.trial import TrialState

    with signals_deferred():  # Ctrl-C or SIGTERM inside SQLite's commit: after it, not in it
        for key, value in record.items():
            trial.set_user_attr(key, value)
        if "constraint" in record:
            _set_constraint(trial, record)
        if values is not None:
            study.tell(trial, values)
        else:
            study.tell(trial, state=TrialState.FAIL if "error" in record else TrialState.PRUNED)


def _trial_line(number: int, r: dict) -> str:
    if "error" in r:
        return f"trial {number}: failed: {r['error']}"
    if "duplicate_of" in r:
        return f"trial {number}: the same options as trial {r['duplicate_of']}: not measured again"
    if "drop_points" not in r:
        return f"trial {number}: screened out (tuning drop {r['screen']['drop_points']:.2f} points at low fidelity)"
    cost = f", ${r['usd_per_1m']:.4f}/1M" if r.get("usd_per_1m") is not None else ""
    ok = "passes" if max(r["constraint"]) <= 0 else "fails"
    return (f"trial {number}: tuning drop {r['drop_points']:.2f} points, {r['speedup']:.2f}x, "
            f"{r['latency_ms_p50']:.2f} ms{cost}: {ok} the gate on tuning")


def _progress_text(study, s, elapsed_s: float, budget_s: float | None) -> str:
    from optuna.trial import TrialState

    done = finished(study)
    ok = [t for t in done if t.state == TrialState.COMPLETE and max(_constraints(t)) <= 0]
    best = min((t.values[0] for t in ok), default=None)
    unit = "$/1M" if s.objective.metric == "usd_per_1m" else "ms"
    left = []
    if budget_s is not None:
        left.append(budget_s - elapsed_s)
    if s.budget.trials is not None and done:
        per = sum(t.user_attrs.get("seconds", 0.0) for t in done) / len(done)
        left.append(per * (s.budget.trials - len(done)))
    best_text = f"best {best:.4g} {unit}" if best is not None else "none passing yet"
    left_text = f", ~{max(0.0, min(left)) / 60:.1f} min left" if left else ""
    return f"search: {len(done)} trials, {best_text}{left_text}"
