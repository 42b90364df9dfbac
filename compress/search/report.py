"""The end of a search: the tuning-split Pareto front, written as ordinary variants
(``search-result.yaml``), run through the pipeline (held-out, interleaved timing against the
reference, gate), and reported with each member's selection optimism and the first trial that passed.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import yaml

from compress.recipe.load import parse_recipe
from compress.results.gate import gate_variant

RESULT_FILE = "search-result.yaml"
WINNER = "search-best"
FIRST_PASS = "search-first-pass"
START = "search-start"


def _feasible(t) -> bool:
    return max(t.user_attrs.get("constraint", [math.inf])) <= 0


def pareto(trials: list) -> list:
    """Trials no other beats on both objectives (lower cost, higher tuning top-1), cheapest first."""
    front = [t for t in trials if not any(
        q is not t and q.values[0] <= t.values[0] and q.values[1] >= t.values[1]
        and (q.values[0] < t.values[0] or q.values[1] > t.values[1]) for q in trials)]
    return sorted(front, key=lambda t: (t.values[0], -t.values[1], t.number))


def select(study, front_size: int) -> tuple[list, object | None, list, object | None]:
    """(front members measured on held-out, the first trial that passed on tuning, the whole front,
    the hand-written start when it was measured)."""
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    feasible = [t for t in done if _feasible(t)]
    front = pareto(feasible)
    first = min(feasible, key=lambda t: t.number) if feasible else None
    start = next((t for t in done if t.user_attrs.get("start")), None)
    return front[:front_size], first, front, start


def member_names(members: list, first, start=None) -> dict[int, str]:
    """Trial number -> variant name in search-result.yaml: the front, then the first trial that
    passed and the hand-written start (when measured), for comparison."""
    names = {t.number: (WINNER if i == 0 else f"search-front-{i + 1}") for i, t in enumerate(members)}
    for extra, name in ((first, FIRST_PASS), (start, START)):
        if extra is not None and extra.number not in names:
            names[extra.number] = name
    return names


def result_recipe(ctx, trials: dict[str, object]) -> dict:
    """The recipe without its search section; variants: the reference's chain and one flattened
    variant per trial (the winner gated, the others measured with ``gate: false``)."""
    data = ctx.data
    ref = ctx.recipe.gate.reference
    keep, cur = {}, ref if ref != "baseline" else None
    while cur is not None:
        keep[cur] = data["variants"][cur]
        cur = keep[cur].get("from")
    variants = dict(reversed(list(keep.items())))
    targets = data["targets"]
    for name, t in trials.items():
        target = copy.deepcopy(t.user_attrs["target"])
        given = next(x for x in targets if x["name"] == target["name"])
        if _normal(target) != _normal(given):  # searched runtime options: a target of its own
            target["name"] = f"{target['name']}-trial{t.number}"
            if target not in targets:
                targets.append(target)
        u = t.user_attrs
        variants[name] = {
            "description": f"Search trial {t.number}: tuning top-1 change {-u['drop_points']:+.2f} points, "
                           f"{u['speedup']:.2f}x at batch {u['batch_size']} (tuning-split estimates)",
            "gate": name == WINNER,
            "targets": [target["name"]],
            "steps": [{step: cfg} for step, cfg in u["steps"]],
        }
    data["variants"] = variants
    bs = ctx.recipe.search.objective.batch_size
    profile = data.setdefault("profile", {})
    sizes = profile.get("batch_sizes", [1, 32])
    if bs not in sizes:
        profile["batch_sizes"] = sorted({*sizes, bs})
    return data


def _normal(target: dict) -> dict:
    from compress.runtimes.target import TargetConfig

    t = TargetConfig.model_validate(target)
    return {**t.model_dump(mode="json"), "options": t.options.model_dump(mode="json")}


def write_result(ctx, data: dict) -> Path:
    """search-result.yaml, validated as any recipe before it is written."""
    parse_recipe(data, origin=RESULT_FILE)
    path = ctx.search_dir / RESULT_FILE
    header = ("# Written by `compress search`: the winner (search-best) and the Pareto front found on the\n"
              "# tuning split, as ordinary variants. `compress run` on this file reproduces them.\n")
    path.write_text(header + yaml.safe_dump(data, sort_keys=False))
    return path


def finish(ctx, study, progress=None, log=print, executor=None, stopped_early: str | None = None) -> int:
    """Measure the front on held-out through the pipeline (on ``executor``, default in-process), write
    the report; returns the exit code (the winner's held-out gate: 0 pass, 1 fail or nothing passed on
    tuning, 3 an error)."""
    from compress.run.pipeline import run_recipe

    s = ctx.recipe.search
    members, first, front, start = select(study, s.front_size)
    summary = {"trials": _trial_rows(study), "front": [t.number for t in front], "members": {},
               "stopped_early": stopped_early,
               "objective": s.objective.model_dump(), "gate": ctx.recipe.gate.model_dump(mode="json")}
    if not members:
        log("search: no trial passed the gate on the tuning split; nothing to measure on held-out")
        _write(ctx, summary, None)
        return 1
    names = member_names(members, first, start)
    by_name = {names[t.number]: t for t in [*members, first, start] if t is not None}
    path = write_result(ctx, result_recipe(ctx, by_name))
    recipe = parse_recipe(yaml.safe_load(path.read_text()), origin=str(path))
    log(f"search: measuring {len(by_name)} front member(s) on held-out against {ctx.recipe.gate.reference} ...")
    outcome = run_recipe(recipe, path, out_dir=ctx.search_dir.parent, progress=progress, log=log,
                         executor=executor)
    res = outcome.results
    gate = res["recipe"].get("gate", {})
    for name, t in by_name.items():
        v = res["variants"][name]
        u = t.user_attrs
        target = recipe.variants[name].targets[0]
        heldout = (v.get("accuracy") or {}).get("change_points")
        lat = ((v.get("latency") or {}).get(target) or {}).get(str(u["batch_size"])) or {}
        sp = ((v.get("speedup") or {}).get(target) or {}).get(str(u["batch_size"])) or {}
        summary["members"][name] = {
            "trial": t.number, "target": target, "params": t.user_attrs.get("options", t.params), "digest": u.get("digest"),
            "tuning_change_points": -u["drop_points"], "heldout_change_points": heldout,
            "selection_optimism_points": None if heldout is None else -u["drop_points"] - heldout,
            "tuning_speedup": u["speedup"], "heldout_speedup": sp.get("estimate"),
            "tuning_usd_per_1m": u.get("usd_per_1m"), "heldout_usd_per_1m": lat.get("usd_per_1m"),
            "tuning_latency_ms_p50": u["latency_ms_p50"], "heldout_latency_ms_p50": lat.get("p50_ms"),
            "verdict_point": gate_variant(name, {**v, "gated": True}, {**gate, "mode": "point"})["verdict"],
            "verdict_confident": gate_variant(name, {**v, "gated": True}, {**gate, "mode": "confident"})["verdict"],
            "first_pass": t is first, "start": t is start,
        }
    summary["heldout_run"] = str(outcome.run_dir)
    _write(ctx, summary, outcome.run_dir)
    return outcome.exit_code


def _trial_rows(study) -> list[dict]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        u = dict(t.user_attrs)
        rows.append({"number": t.number, "state": t.state.name, "params": u.get("options", t.params),
                     "values": t.values, **{k: u[k] for k in sorted(u) if k not in ("steps", "target")},
                     "target": (u.get("target") or {}).get("name")})
    return rows


def _write(ctx, summary: dict, run_dir: Path | None) -> None:
    from compress.search.plot import render_search_plot

    (ctx.search_dir / "search.json").write_text(json.dumps(summary, indent=1, default=str))
    plot = render_search_plot(summary, ctx.recipe.search.objective.metric, ctx.search_dir / "search-pareto.png")
    (ctx.search_dir / "report.md").write_text(render(summary, ctx.recipe, run_dir, plot))


def _roles(m: dict) -> str:
    roles = [r for r, on in (("first to pass", m["first_pass"]), ("the start", m["start"])) if on]
    return f" ({', '.join(roles)})" if roles else ""


def _f(x, fmt: str = "{:.2f}") -> str:
    return "n/a" if x is None else fmt.format(x)


def render(summary: dict, recipe, run_dir: Path | None, plot: Path | None) -> str:
    """report.md of a search: the front, its held-out confirmation, optimism, every trial."""
    s, gate = recipe.search, recipe.gate
    metric = "$ per 1M" if s.objective.metric == "usd_per_1m" else "p50 ms"
    rows = summary["trials"]
    states = {st: sum(r["state"] == st for r in rows) for st in ("COMPLETE", "PRUNED", "FAIL")}
    lines = [
        f"# Search: {recipe.name}", "",
        f"Objective: minimise {metric} at batch {s.objective.batch_size}; constraint: the gate "
        f"(max_accuracy_drop {gate.max_accuracy_drop}, min_speedup {gate.min_speedup} against "
        f"{gate.reference}) on the **tuning** split. Trials: {len(rows)} ({states['COMPLETE']} measured, "
        f"{states['PRUNED']} screened out at low fidelity or drawn again, {states['FAIL']} failed or interrupted).",
        "",
    ]
    if summary.get("stopped_early"):
        lines += [f"Stopped before the budget was spent: {summary['stopped_early']}.", ""]
    if not summary["members"]:
        lines += ["**No trial passed the gate on the tuning split**: nothing was measured on held-out.", ""]
    else:
        lines += [
            f"Only these front members were measured on held-out, in one run ([report]({run_dir}/report.md)), "
            "timed interleaved with the reference. Selection optimism = tuning estimate of the top-1 change "
            "minus the held-out change (points; positive: the search was optimistic).", "",
            "| variant | trial | target | tuning change | held-out change | optimism | speed-up tuning / held-out "
            f"| {metric} tuning / held-out | gate (point) | gate (confident) |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        key = "usd_per_1m" if s.objective.metric == "usd_per_1m" else "latency_ms_p50"
        fmt = "{:.4g}"
        for name, m in summary["members"].items():
            lines.append(
                f"| {name}{_roles(m)} | {m['trial']} | {m['target']} | "
                f"{_f(m['tuning_change_points'], '{:+.2f}')} | {_f(m['heldout_change_points'], '{:+.2f}')} | "
                f"{_f(m['selection_optimism_points'], '{:+.2f}')} | {_f(m['tuning_speedup'])}x / "
                f"{_f(m['heldout_speedup'])}x | {_f(m['tuning_' + key], fmt)} / {_f(m['heldout_' + key], fmt)} | "
                f"{m['verdict_point']} | {m['verdict_confident']} |")
        lines += ["", "The winner is `search-best`; `search-first-pass` is the first trial that passed on "
                  "tuning (the gain over stopping there) and `search-start` the hand-written starting "
                  "variant, each listed under its own name when it is not already a front member.", ""]
    if plot is not None:
        lines += [f"![tuning-split trials and front]({plot.name})", ""]
    lines += ["## Every trial (tuning split)", "",
              f"| trial | state | target | tuning change | speed-up | {metric} | seconds | options |",
              "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        value = None if not r["values"] else r["values"][0]
        change = -r["drop_points"] if "drop_points" in r else (
            -r["screen"]["drop_points"] if "screen" in r else None)
        state = {"PRUNED": "screened out"}.get(r["state"], r["state"].lower())
        if "duplicate_of" in r:
            state = f"same as trial {r['duplicate_of']}"
        lines.append(f"| {r['number']} | {state} | {r.get('target') or ''} | "
                     f"{_f(change, '{:+.2f}')} | {_f(r.get('speedup'))} | {_f(value, '{:.4g}')} | "
                     f"{_f(r.get('seconds'), '{:.0f}')} | {json.dumps(r['params'])} |")
    return "\n".join(lines) + "\n"
