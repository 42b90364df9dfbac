"""One run: splits, baseline, variants, evaluation, profiling, gate, and the run directory.

The run directory is assembled under a temporary name and renamed when complete, so a crashed run
never leaves a half-written directory that looks finished.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from compress import __version__
from compress.artifacts import Artifact, Cache
from compress.errors import CompressError
from compress.measure.lengths import fit_length, served_lengths
from compress.measure.timing import speedup
from compress.report.markdown import render_report
from compress.report.plots import write_plots
from compress.results.gate import apply_gate
from compress.results.schema import SCHEMA_VERSION, validate_results
from compress.run.build import Built, build_baseline, input_spec_for
from compress.run.environment import environment
from compress.run.evaluate import evaluate_all
from compress.run.executor import Executor, InProcess
from compress.run.profiling import add_costs, timing_plan
from compress.run.rundir import claim_run_dir, finish_run_dir, sigterm_raises, sweep_stale_partials
from compress.runtimes.base import RUNTIMES
from compress.sources.data import make_splits


@dataclass
class RunOutcome:
    run_dir: Path
    results: dict
    exit_code: int


def _eval_target(recipe, kind: str, allowed: list[str] | None = None):
    """The target a kind of artifact is judged on: the first (of the variant's targets, if it
    names some) that can run it, else a CPU default."""
    from compress.recipe import TargetConfig

    for t in recipe.targets:
        if allowed is not None and t.name not in allowed:
            continue
        if kind in RUNTIMES.get(t.runtime).accepts:
            return t
    runtime = {"torch": "torch", "onnx": "onnxruntime"}.get(kind)
    return TargetConfig(name=f"{runtime}-cpu", runtime=runtime, device="cpu")


def _artifact_entry(art: Artifact) -> dict:
    """results.json's view of an artifact: what it is, and every fact its steps recorded."""
    return {"kind": art.kind, "lineage": art.lineage, "size_bytes": art.size_bytes, "facts": art.facts()}


def run_recipe(recipe, recipe_path: Path, *, out_dir: Path | None = None, use_cache: bool = True,
               progress=None, log=print, executor: Executor | None = None) -> RunOutcome:
    """Run ``recipe`` into a new run directory under ``out_dir`` (default: the recipe's report.dir).

    ``executor`` is where builds, evaluations and profiling happen (default: this process; see
    ``compress.run.executor``). The directory appears complete or not at all: on any exception,
    Ctrl-C or SIGTERM its partial directory is removed; partial directories of runs that died are
    swept first."""
    executor = executor if executor is not None else InProcess()
    executor.check(recipe)  # e.g. a target no Ray node provides: before anything is built
    started = dt.datetime.now(dt.timezone.utc)
    base_dir = recipe_path.parent
    root = Path(out_dir) if out_dir is not None else Path(recipe.report.dir)
    # InputError -> exit 2, nothing written (a tokenizer trained on train goes to the cache)
    splits = make_splits(recipe.data, base_dir, recipe.seed, recipe.model, root / ".cache" if use_cache else None)
    with sigterm_raises():
        sweep_stale_partials(root, log)
        final_dir, tmp_dir = claim_run_dir(root, started.strftime("%Y%m%d-%H%M%S"))
        try:
            store = tmp_dir / "work" / "store" if executor.shared_store else None
            cache = Cache(root / ".cache" if use_cache else store)
            results = _run(recipe, recipe_path, splits, cache, tmp_dir, started, progress, log, executor)
            results["run"]["run_dir"] = str(final_dir)
            _write(tmp_dir, recipe, results)
            shutil.rmtree(tmp_dir / "work", ignore_errors=True)
            finish_run_dir(tmp_dir, final_dir)
        except BaseException:
            shutil.rmtree(tmp_dir, ignore_errors=True)
            raise
    return RunOutcome(final_dir, results, results["verdict"]["exit_code"])


def _run(recipe, recipe_path, splits, cache, tmp_dir, started, progress, log, executor) -> dict:
    """The stages of one run, in order: build, evaluate, profile, cost, gate (then ``_write``)."""
    t_start = time.perf_counter()
    log(f"data: {', '.join(f'{r} {len(s)}' for r, s in splits.items())}")
    baseline, baseline_info, built = build_stage(recipe, recipe_path, splits, cache, tmp_dir, progress, log,
                                                 executor)
    variants = variant_entries(recipe, built)
    baseline_entry = evaluate_stage(recipe, splits, baseline, baseline_info, built, variants, progress, log,
                                    executor, recipe_path)
    entries = {"baseline": baseline_entry, **variants}
    # a variant whose evaluation failed is reported failed, not profiled
    artifacts = {"baseline": baseline, **{n: b.artifact for n, b in built.items() if variants[n]["status"] == "ok"}}
    profile_stage(recipe, splits, artifacts, entries, progress, log, executor, recipe_path)
    cost_stage(recipe, entries)
    results = {
        "schema_version": SCHEMA_VERSION,
        "compress_version": __version__,
        "recipe": json.loads(recipe.model_dump_json(by_alias=True)),
        "run": {"recipe_path": str(recipe_path), "started": started.isoformat(), "wall_s": None},
        "data": {"splits": splits.summary(), "classes": splits.classes,
                 "heldout_labels": splits["heldout"].labels.tolist(),
                 **({"tokenizer": splits.tokenizer.info()} if splits.is_text else {})},
        "targets": [t.model_dump() for t in recipe.targets],
        "baseline": baseline_entry,
        "variants": variants,
    }
    apply_gate(results)  # the gate stage: a pure function of the results
    results["run"]["wall_s"] = time.perf_counter() - t_start
    results["run"]["finished"] = dt.datetime.now(dt.timezone.utc).isoformat()
    return results


def build_stage(recipe, recipe_path: Path, splits, cache, run_dir: Path, progress, log,
                executor: Executor | None = None):
    """The baseline and every variant's artifact (through the cache), the built ones copied to
    ``run_dir/artifacts/<variant>``. Returns (baseline, baseline info, {variant: Built})."""
    executor = executor if executor is not None else InProcess()
    baseline, baseline_info = build_baseline(recipe, recipe_path.parent, splits, cache, progress, log)
    if splits.is_text:  # the vocabulary the models were trained with ships with them
        splits.tokenizer.tokenizer.save_pretrained(str(run_dir / "artifacts" / "tokenizer"))
        splits.tokenizer.path = "artifacts/tokenizer"
    built = executor.build_variants(recipe, recipe_path, baseline, splits, cache, run_dir / "work", progress, log)
    for name, b in built.items():
        if b.ok:
            dest = run_dir / "artifacts" / name
            dest.mkdir(parents=True, exist_ok=True)
            if b.artifact.kind == "torch" and b.artifact.path is None:
                from compress.artifacts import save_torch

                save_torch(b.artifact.module, dest / "model.pt")
            for f in b.artifact.files():
                shutil.copy2(f, dest / f.name)
    return baseline, baseline_info, built


def variant_entries(recipe, built: dict[str, Built]) -> dict[str, dict]:
    """Each variant's results entry before measurement: status, steps, notes, artifact facts."""
    variants: dict[str, dict] = {}
    for name, b in built.items():
        v = recipe.variants[name]
        entry = {
            "status": "ok" if b.ok else "failed", "error": b.error, "from": v.from_,
            "description": v.description, "gated": v.gate, "steps": b.steps, "notes": b.notes,
            "consumed_splits": sorted(b.consumed),
        }
        if b.ok:
            entry["artifact"] = _artifact_entry(b.artifact)
        variants[name] = entry
    return variants


def evaluate_stage(recipe, splits, baseline: Artifact, baseline_info: dict, built: dict[str, Built],
                   variants: dict[str, dict], progress, log, executor: Executor | None = None,
                   recipe_path: Path | None = None) -> dict:
    """Held-out accuracy (and train / drift / production, for the overfitting and drift checks),
    paired with the baseline; fills ``variants`` in place and returns the baseline's entry."""
    allowed = {id(b.artifact): recipe.variants[n].targets for n, b in built.items() if b.ok}

    def eval_target(art):
        return _eval_target(recipe, art.kind, allowed.get(id(art)))

    def eval_load(art):
        target = eval_target(art)
        return RUNTIMES.get(target.runtime).load(art, target)

    executor = executor if executor is not None else InProcess()

    def run_models(models, roles, corrupted):
        return executor.evaluate_models(recipe, recipe_path, splits, models, roles, corrupted, eval_load,
                                        eval_target, progress)

    return {
        "status": "ok", "artifact": _artifact_entry(baseline), "info": baseline_info,
        **evaluate_all(recipe, splits, baseline, baseline_info, built, variants, eval_load,
                       lambda art: eval_target(art).name, progress, log, run_models=run_models),
    }


def batch_maker(recipe, splits):
    """``make_batch(batch_size, seq_len=None)``: random samples of the calibration (else train, else
    held-out) split, the inputs every model is timed on (a text batch fitted to ``seq_len``)."""
    probe = splits["calibration"] if "calibration" in splits else splits.get("train", splits["heldout"])
    rng = np.random.default_rng(recipe.seed)

    def make_batch(bs: int, seq_len: int | None = None) -> dict:
        idx = rng.choice(len(probe), size=bs, replace=len(probe) < bs)
        batch = probe.inputs(np.sort(idx))
        return batch if seq_len is None else fit_length(batch, seq_len)  # real tokens, then padding

    return make_batch


def profile_settings(recipe, splits) -> dict:
    """The ``profile_pairs`` keywords of a recipe's profile section (a text model's sequence grid
    and real lengths included)."""
    spec = input_spec_for(recipe, splits)
    text = spec.kind == "text"
    return {
        "batch_sizes": recipe.profile.batch_sizes, "plan": timing_plan(recipe.profile),
        "memory_input_spec": spec if recipe.profile.memory else None,
        "seq_lens": (recipe.profile.seq_lens or [spec.seq_len]) if text else None,
        "served": served_for(recipe, splits, spec) if text else None, "seed": recipe.seed,
    }


def profile_stage(recipe, splits, artifacts: dict[str, Artifact], entries: dict[str, dict], progress, log,
                  executor: Executor | None = None, recipe_path: Path | None = None) -> None:
    """Latency, memory and speed-up of every runnable (model, target) pair, into ``entries``; a
    text model on the batch size x sequence length grid and at the real lengths of a split too."""
    executor = executor if executor is not None else InProcess()
    pairs, owner = {}, {}
    for target in recipe.targets:
        for name, art in artifacts.items():
            wanted = None if name == "baseline" else recipe.variants[name].targets
            if wanted is None or target.name in wanted:
                pairs[f"{name}@{target.name}"] = (art, target)
                owner[f"{name}@{target.name}"] = name
    measured = executor.profile_pairs(recipe, recipe_path, pairs, batch_maker(recipe, splits),
                                      profile_settings(recipe, splits), progress, log)
    reference, ref_target = recipe.gate.reference, recipe.gate.reference_target
    for key, got in measured.items():
        entry, target = entries[owner[key]], pairs[key][1]
        for field, value in got.items():
            entry.setdefault(field, {})[target.name] = value
        ref = measured.get(f"{reference}@{ref_target or target.name}", {})
        if "latency" in got and "latency" in ref:
            entry.setdefault("speedup", {})[target.name] = {
                bs: speedup(ref["latency"][bs], m, seed=recipe.seed)
                for bs, m in got["latency"].items() if bs in ref["latency"]
            }
        if "latency_by_seq_len" in got and "latency_by_seq_len" in ref:
            grid = ref["latency_by_seq_len"]
            entry.setdefault("speedup_by_seq_len", {})[target.name] = {
                n: {bs: speedup(grid[n][bs], m, seed=recipe.seed) for bs, m in cells.items() if bs in grid.get(n, {})}
                for n, cells in got["latency_by_seq_len"].items()
            }


def served_for(recipe, splits, spec):
    """The batches a server would form from the split ``profile.real_lengths`` names, or None."""
    real = recipe.profile.real_lengths_config(text=True)
    if real is None:
        return None
    return served_lengths(splits[real.split], batch_size=real.batch_size or max(recipe.profile.batch_sizes),
                          max_length=spec.seq_len, batching=real.batching, samples=real.samples,
                          seed=recipe.seed, split_name=real.split)


def cost_stage(recipe, entries: dict[str, dict]) -> None:
    """Serving cost and each variant's break-even on every priced target, into ``entries``."""
    add_costs(entries, recipe.targets, reference=recipe.gate.reference,
              requests_per_day=recipe.profile.requests_per_day,
              compression_usd_per_hour=recipe.profile.compression_usd_per_hour)


def _write(run_dir: Path, recipe, results: dict) -> None:
    (run_dir / "recipe.yaml").write_text(
        yaml.safe_dump(json.loads(recipe.model_dump_json(by_alias=True)), sort_keys=False)
    )
    env = environment(Path(results["run"]["recipe_path"]).parent)
    (run_dir / "environment.json").write_text(json.dumps(env, indent=2))
    results["environment"] = env
    text = json.dumps(results, indent=1, default=_json_default)
    try:
        validate_results(json.loads(text), "results.json")
    except CompressError as err:  # a bug in compress, not in the user's input: exit 3, nothing written
        raise CompressError(f"{err}\n(compress wrote results that break its own schema: please report this)") from None
    (run_dir / "results.json").write_text(text)
    (run_dir / "report.md").write_text(render_report(results))
    write_plots(results, run_dir)


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"cannot serialise {type(o).__name__}")
