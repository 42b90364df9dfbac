"""One run: splits, baseline, variants, evaluation, profiling, gate, and the run directory.

The run directory is assembled under a temporary name and renamed when complete, so a crashed run
never leaves a half-written directory that looks finished.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from compress import __version__
from compress.artifacts import Artifact, Cache
from compress.errors import CompressError
from compress.measure.cost import serving_costs
from compress.measure.energy import meter_device
from compress.measure.memory import measure_memory_many
from compress.measure.timing import speedup, time_sessions
from compress.report.markdown import render_report
from compress.report.plots import write_plots
from compress.results.gate import apply_gate
from compress.results.schema import SCHEMA_VERSION, validate_results
from compress.run.build import build_baseline, build_variants
from compress.run.environment import environment
from compress.run.evaluate import evaluate_all
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


def _artifact_summary(art: Artifact) -> dict:
    meta = art.meta
    return {
        "kind": art.kind, "lineage": art.lineage, "size_bytes": art.size_bytes,
        "params": meta.get("params"), "macs": meta.get("macs"),
        "int8_coverage": meta.get("int8_coverage"), "quantization": meta.get("quantization"),
        "pruning": {k: v for k, v in meta["pruning"].items() if k != "finetune"} if "pruning" in meta else None,
        "export_max_rel_error": meta.get("export_max_rel_error"),
    }


def run_recipe(recipe, recipe_path: Path, *, out_dir: Path | None = None, use_cache: bool = True,
               progress=None, log=print) -> RunOutcome:
    """Run ``recipe`` into a new run directory under ``out_dir`` (default: the recipe's report.dir).

    The directory appears complete or not at all: on any exception, Ctrl-C or SIGTERM its partial
    directory is removed; partial directories of runs that died are swept first."""
    started = dt.datetime.now(dt.timezone.utc)
    base_dir = recipe_path.parent
    root = Path(out_dir) if out_dir is not None else Path(recipe.report.dir)
    splits = make_splits(recipe.data, base_dir, recipe.seed)  # InputError -> exit 2, nothing written
    with sigterm_raises():
        sweep_stale_partials(root, log)
        final_dir, tmp_dir = claim_run_dir(root, started.strftime("%Y%m%d-%H%M%S"))
        try:
            cache = Cache(root / ".cache" if use_cache else None)
            results = _run(recipe, recipe_path, splits, cache, tmp_dir, started, progress, log)
            results["run"]["run_dir"] = str(final_dir)
            _write(tmp_dir, recipe, results)
            shutil.rmtree(tmp_dir / "work", ignore_errors=True)
            finish_run_dir(tmp_dir, final_dir)
        except BaseException:
            shutil.rmtree(tmp_dir, ignore_errors=True)
            raise
    return RunOutcome(final_dir, results, results["verdict"]["exit_code"])


def _run(recipe, recipe_path, splits, cache, tmp_dir, started, progress, log) -> dict:
    import time

    t_start = time.perf_counter()
    base_dir = recipe_path.parent
    log(f"data: {', '.join(f'{r} {len(s)}' for r, s in splits.items())}")
    baseline, baseline_info = build_baseline(recipe, base_dir, splits, cache, progress, log)
    built = build_variants(recipe, baseline, splits, cache, tmp_dir / "work", progress, log)
    # artifacts into the run directory
    for name, b in built.items():
        if b.ok:
            dest = tmp_dir / "artifacts" / name
            dest.mkdir(parents=True, exist_ok=True)
            if b.artifact.kind == "torch" and b.artifact.path is None:
                from compress.artifacts import save_torch

                save_torch(b.artifact.module, dest / "model.pt")
            for f in b.artifact.files():
                shutil.copy2(f, dest / f.name)
    variants: dict[str, dict] = {}
    for name, b in built.items():
        v = recipe.variants[name]
        entry = {
            "status": "ok" if b.ok else "failed", "error": b.error, "from": v.from_,
            "description": v.description, "gated": v.gate, "steps": b.steps, "notes": b.notes,
            "consumed_splits": sorted(b.consumed),
        }
        if b.ok:
            entry["artifact"] = _artifact_summary(b.artifact)
        variants[name] = entry
    # ---- evaluation on held-out (and train / drift / production, for the overfitting and drift
    # checks), paired with the baseline; held-out overlap by content hash (compress.run.evaluate)
    allowed = {id(b.artifact): recipe.variants[n].targets for n, b in built.items() if b.ok}

    def eval_target(art):
        return _eval_target(recipe, art.kind, allowed.get(id(art)))

    def eval_load(art):
        target = eval_target(art)
        return RUNTIMES.get(target.runtime).load(art, target)

    baseline_entry = {
        "status": "ok", "artifact": _artifact_summary(baseline), "info": baseline_info,
        **evaluate_all(recipe, splits, baseline, baseline_info, built, variants, eval_load,
                       lambda art: eval_target(art).name, progress, log),
    }
    # ---- profiling, per target, every runnable artifact interleaved
    artifacts = {"baseline": baseline, **{n: b.artifact for n, b in built.items() if b.ok}}
    reference = recipe.gate.reference
    probe = splits["calibration"] if "calibration" in splits else splits.get("train", splits["heldout"])
    rng = np.random.default_rng(recipe.seed)

    def make_batch(bs: int) -> np.ndarray:
        idx = rng.choice(len(probe), size=bs, replace=len(probe) < bs)
        return probe.inputs(np.sort(idx))

    # Every (model, target) pair that can run is timed in ONE interleaved loop per device, so that
    # runtimes on the same machine are compared under the same noise (e.g. ONNX Runtime vs OpenVINO).
    ref_target = recipe.gate.reference_target
    by_device: dict[str, dict[str, object]] = {}
    owner: dict[str, tuple[str, object]] = {}
    for target in recipe.targets:
        runtime = RUNTIMES.get(target.runtime)
        for name, art in artifacts.items():
            entry = baseline_entry if name == "baseline" else variants[name]
            if name != "baseline":
                if entry["status"] != "ok":
                    continue
                wanted = recipe.variants[name].targets
                if wanted is not None and target.name not in wanted:
                    continue
            if art.kind not in runtime.accepts:
                entry.setdefault("not_profiled", {})[target.name] = (
                    f"{target.runtime} cannot run a {art.kind} model"
                )
                continue
            try:
                sess = runtime.load(art, target)
            except CompressError as err:
                entry.setdefault("not_profiled", {})[target.name] = str(err)
                continue
            key = f"{name}@{target.name}"
            by_device.setdefault(meter_device(target), {})[key] = sess
            owner[key] = (name, target)
    timings: dict[str, dict[int, dict]] = {}
    for device, sessions in by_device.items():
        log(f"profiling {len(sessions)} model/target pair(s) on {device}, interleaved ...")
        timings.update(time_sessions(
            sessions, make_batch, recipe.profile.batch_sizes, warmup=recipe.profile.warmup,
            rounds=recipe.profile.rounds, min_round_s=recipe.profile.min_round_s,
            max_cv=recipe.profile.max_cv, max_extra_rounds=recipe.profile.max_extra_rounds,
            warmup_max_s=recipe.profile.warmup_max_s, device=device, progress=progress,
        ))
        for sess in sessions.values():
            sess.close()
    for key, per_bs in timings.items():
        name, target = owner[key]
        entry = baseline_entry if name == "baseline" else variants[name]
        entry.setdefault("latency", {})[target.name] = {str(bs): m for bs, m in per_bs.items()}
        entry.setdefault("runtime_info", {})[target.name] = by_device[meter_device(target)][key].info
        ref_key = f"{reference}@{ref_target or target.name}"
        if ref_key in timings:
            entry.setdefault("speedup", {})[target.name] = {
                str(bs): speedup(timings[ref_key][bs], m, seed=recipe.seed) for bs, m in per_bs.items()
            }
    # ---- peak memory (a fresh subprocess per model and target), then cost and break-even per target
    entries = {"baseline": baseline_entry, **variants}
    if recipe.profile.memory:
        jobs = {key: (artifacts[name], target) for key, (name, target) in owner.items()}
        for key, mem in measure_memory_many(jobs, recipe.model.input_shape, recipe.profile.batch_sizes,
                                            log=log).items():
            name, target = owner[key]
            entries[name].setdefault("memory", {})[target.name] = mem
    for target in recipe.targets:
        if target.usd_per_hour is not None:
            serving_costs(entries, target.name, target.usd_per_hour, reference=reference,
                          requests_per_day=recipe.profile.requests_per_day,
                          compression_usd_per_hour=recipe.profile.compression_usd_per_hour)
    results = {
        "schema_version": SCHEMA_VERSION,
        "compress_version": __version__,
        "recipe": json.loads(recipe.model_dump_json(by_alias=True)),
        "run": {"recipe_path": str(recipe_path), "started": started.isoformat(),
                "wall_s": None},
        "data": {"splits": splits.summary(), "classes": splits.classes,
                 "heldout_labels": splits["heldout"].labels.tolist()},
        "targets": [t.model_dump() for t in recipe.targets],
        "baseline": baseline_entry,
        "variants": variants,
    }
    apply_gate(results)
    results["run"]["wall_s"] = time.perf_counter() - t_start
    results["run"]["finished"] = dt.datetime.now(dt.timezone.utc).isoformat()
    return results


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
