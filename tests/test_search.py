"""`compress search`: the space is validated like every recipe key (exit 2, key named); a tiny search
writes its front and a search-result.yaml that `compress run` reproduces; an interrupted search
resumes without redoing finished trials; held-out is read only when the front is measured."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from compress.cli import app
from compress.errors import RecipeError
from compress.recipe.load import parse_recipe

pytest.importorskip("optuna")


def _search_recipe(new_tiny_recipe, trials: int = 3) -> dict:
    recipe = new_tiny_recipe()
    recipe["data"]["split"] = {"train": 0.5, "calibration": 0.1, "tuning": 0.1, "heldout": 0.3}
    recipe["variants"]["pruned-int8"] = {"steps": [
        {"prune": {"ratio": 0.25, "finetune": {"epochs": 1}}},
        {"export": {"format": "onnx"}},
        {"quantize": {"mode": "static"}},
    ]}
    recipe["targets"][0]["usd_per_hour"] = 0.17
    recipe["gate"] = {"max_accuracy_drop": 100.0, "reference": "onnx-fp32"}
    recipe["search"] = {
        "start": "pruned-int8",
        "space": {
            "prune.ratio": {"low": 0.25, "high": 0.5, "step": 0.25},
            "prune.finetune.epochs": {"low": 1, "high": 2},
            "quantize.calibration.method": {"choices": ["minmax", "percentile"]},
        },
        "objective": {"batch_size": 4},
        "budget": {"trials": trials},
        "fidelity": {"finetune_epochs": 1, "tuning_samples": 10},
        "timing_rounds": 2,
    }
    return recipe


def _with(recipe: dict, path: str, value) -> dict:
    node = recipe
    *parents, last = path.split("/")
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return recipe


_DELETE = object()

BAD_SPACES = [
    ("search/space/prune.ratio", {"low": 0.6, "high": 0.2}, r"search\.space\.prune\.ratio: empty range: low 0\.6 > high 0\.2"),
    ("search/space/prune.ratio", {"choices": []}, r"search\.space\.prune\.ratio: empty choices"),
    ("search/space/prune.ratio", {"low": 0.2}, r"search\.space\.prune\.ratio: needs `choices"),
    ("search/space/prune.ratioo", {"low": 0.2, "high": 0.4},
     r"search\.space\.prune\.ratioo: unknown option 'ratioo' of step prune; valid: ratio, macs_budget"),
    ("search/space/prune.finetune.epoch", {"low": 1, "high": 2},
     r"search\.space\.prune\.finetune\.epoch: unknown option 'epoch' of step prune\.finetune"),
    ("search/space/prune.ratio", {"low": 0.2, "high": 1.5},
     r"search\.space\.prune\.ratio: value 1\.5 is invalid for step prune: ratio"),
    ("search/space/quantize.calibration.method", {"choices": ["minmax", "kl"]},
     r"search\.space\.quantize\.calibration\.method: value 'kl' is invalid for step quantize"),
    ("search/space/sparsify.pattern", {"choices": ["2:4"]}, r"search\.space\.sparsify\.pattern: the starting chain has no 'sparsify' step"),
    ("search/space/target", {"choices": ["cpu", "gpu"]}, r"search\.space\.target: choices must be target names; unknown \['gpu'\]"),
    ("search/space/targets.cpu.options.nope", {"choices": [1]}, r"search\.space\.targets\.cpu\.options\.nope: value 1 is invalid for target cpu"),
    ("search/space", {}, r"search\.space: an empty space searches nothing"),
    ("search/budget", {"trials": 0}, r"search\.budget\.trials: a budget of 0 trials runs nothing"),
    ("search/budget", {"minutes": 0}, r"search\.budget\.minutes: a budget of 0 minutes runs nothing"),
    ("search/budget", {}, r"search\.budget: give trials and/or minutes"),
    ("search/start", "nope", r"search\.start: unknown variant 'nope'"),
    ("search/objective", {"target": "cpu", "metric": "usd_per_1m"}, None),  # valid: cpu is priced
    ("search/objective", {"target": "gpu"}, r"search\.objective\.target: unknown target 'gpu'"),
    ("targets/0/usd_per_hour", _DELETE, r"search\.objective: target 'cpu' has no usd_per_hour"),
    ("data/split", {"train": 0.6, "calibration": 0.1, "heldout": 0.3}, r"data\.split\.tuning: search scores trials on the tuning split"),
]


@pytest.mark.parametrize(("path", "value", "message"), BAD_SPACES, ids=[f"{p}={v}" for p, v, _ in BAD_SPACES])
def test_bad_search_space_names_the_key(new_tiny_recipe, path, value, message):
    recipe = _with(_search_recipe(new_tiny_recipe), path, value)
    if message is None:
        parse_recipe(recipe)
        return
    with pytest.raises(RecipeError, match=message):
        parse_recipe(recipe)


def test_bad_space_exits_2_from_validate_and_search_and_writes_nothing(cli, write_recipe, new_tiny_recipe, tmp_path):
    recipe = _with(_search_recipe(new_tiny_recipe), "search/space/prune.ratio", {"low": 0.6, "high": 0.2})
    path = write_recipe(recipe)
    result = cli.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert "search.space.prune.ratio: empty range" in result.output
    out = tmp_path / "runs"
    result = cli.invoke(app, ["search", str(path), "--out", str(out), "--quiet"])
    assert result.exit_code == 2, result.output
    assert not out.exists()


def test_a_recipe_without_search_is_an_input_error(cli, write_recipe, new_tiny_recipe, tmp_path):
    result = cli.invoke(app, ["search", str(write_recipe(new_tiny_recipe())), "--out", str(tmp_path / "r"), "-q"])
    assert result.exit_code == 2
    assert "has no `search:` section" in result.output


def test_sampled_options_land_in_the_chain_and_the_start_is_the_first_trial(new_tiny_recipe):
    from compress.search.space import apply_params, start_params

    recipe = _search_recipe(new_tiny_recipe)
    recipe["variants"]["pruned-int8"]["steps"][0]["prune"].pop("finetune")
    recipe["search"]["space"]["prune.finetune.epochs"] = {"low": 1, "high": 3}
    rec = parse_recipe(recipe)
    cand = apply_params(rec, {"prune.ratio": 0.5, "prune.finetune.epochs": 3, "quantize.calibration.method": "percentile"})
    steps = dict(cand.steps)
    assert steps["prune"]["ratio"] == 0.5 and steps["prune"]["finetune"] == {"epochs": 3}  # section created
    assert steps["quantize"]["calibration"]["method"] == "percentile"
    assert cand.target["name"] == "cpu"
    # the start has no finetune (so no epochs inside the space): it cannot be enqueued as is
    assert start_params(rec) is None
    rec = parse_recipe(_search_recipe(new_tiny_recipe))
    assert start_params(rec) == {"prune.ratio": 0.25, "prune.finetune.epochs": 1, "quantize.calibration.method": "minmax"}


def test_paths_are_made_absolute_for_the_copies(tmp_path):
    from compress.search.directory import absolute_paths

    data = {"model": {"source": "python:m.py:f", "checkpoint": "w.pt", "tokenizer": "tok"},
            "data": {"sources": {"train": "hf-disk:ds@train", "heldout": "hf-dataset:glue/sst2@validation"},
                     "drift": {"source": "sklearn:digits"}}}
    out = absolute_paths(data, tmp_path)
    assert out["model"]["source"] == f"python:{tmp_path / 'm.py'}:f"
    assert out["model"]["checkpoint"] == str(tmp_path / "w.pt")
    assert out["model"]["tokenizer"] == str(tmp_path / "tok")
    assert out["data"]["sources"] == {"train": f"hf-disk:{tmp_path / 'ds'}@train",
                                      "heldout": "hf-dataset:glue/sst2@validation"}  # a name, not a path
    assert out["data"]["drift"]["source"] == "sklearn:digits"
    assert data["model"]["source"] == "python:m.py:f"  # the user's mapping is untouched


def _search(cli, path: Path, out: Path, *extra: str):
    return cli.invoke(app, ["search", *([str(path)] if path else []), "--out", str(out), "--quiet", *extra])


def _load_study(search_dir: Path):
    import optuna

    return optuna.load_study(study_name="search", storage=f"sqlite:///{search_dir / 'study.db'}")


@pytest.mark.slow
def test_tiny_search_writes_the_front_and_a_result_that_run_reproduces(cli, write_recipe, new_tiny_recipe, tmp_path):
    from compress.artifacts import Cache, file_digest
    from compress.recipe import load_recipe
    from compress.run.build import build_baseline, build_variants
    from compress.sources.data import make_splits

    out = tmp_path / "runs"
    result = _search(cli, write_recipe(_search_recipe(new_tiny_recipe)), out)
    assert result.exit_code == 0, result.output
    (search_dir,) = out.glob("search-*")
    summary = json.loads((search_dir / "search.json").read_text())
    assert len(summary["trials"]) == 3
    assert summary["trials"][0]["start"] is True  # the hand-written start is trial 0, measured in full
    assert summary["trials"][0]["state"] == "COMPLETE" and "screen" not in summary["trials"][0]
    assert all(t["screen"]["finetune_epochs_cap"] == 1 and t["screen"]["tuning_n"] == 10
               for t in summary["trials"][1:])  # the others were screened at low fidelity first
    assert summary["members"]["search-best"]["trial"] in summary["front"]
    best = summary["members"]["search-best"]
    # the hand-written start is measured on held-out too (as a front member or as search-start)
    assert [m["trial"] for m in summary["members"].values() if m["start"]] == [0]
    for m in summary["members"].values():
        assert m["selection_optimism_points"] == pytest.approx(m["tuning_change_points"] - m["heldout_change_points"])
        assert m["verdict_point"] in ("pass", "fail") and m["verdict_confident"] in ("pass", "fail")
    costs = [t["values"][0] for t in summary["trials"] if t["state"] == "COMPLETE"]
    assert best["tuning_usd_per_1m"] == min(costs)  # the gate passes everything here: the cheapest wins
    report = (search_dir / "report.md").read_text()
    assert "| search-best " in report and "optimism" in report  # "| search-best (first to pass) |" too and (search_dir / "search-pareto.png").is_file()
    # held-out was read once, by the run that measured the front
    heldout_run = Path(summary["heldout_run"])
    res = json.loads((heldout_run / "results.json").read_text())
    assert set(summary["members"]) <= set(res["variants"])
    assert res["variants"]["search-best"]["gated"] is True
    assert best["heldout_change_points"] == res["variants"]["search-best"]["accuracy"]["change_points"]

    result_path = search_dir / "search-result.yaml"
    assert "search" not in yaml.safe_load(result_path.read_text())
    run = cli.invoke(app, ["run", str(result_path), "--out", str(tmp_path / "again"), "--quiet"])
    assert run.exit_code == 0, run.output
    # rebuilt from nothing (a fresh cache, the baseline retrained): the same cache key and bytes
    rec = load_recipe(result_path)
    splits = make_splits(rec.data, search_dir, rec.seed)
    cache = Cache(tmp_path / "fresh-cache")
    baseline, _ = build_baseline(rec, search_dir, splits, cache, log=lambda _m: None)
    built = build_variants(rec, baseline, splits, cache, tmp_path / "work", log=lambda _m: None)
    art = built["search-best"].artifact
    assert art.digest == best["digest"]
    searched = Cache(out / ".cache").get(best["digest"], None)
    assert [file_digest(f) for f in art.files()] == [file_digest(f) for f in searched.files()]


@pytest.mark.slow
def test_stopped_search_resumes_without_redoing_trials(cli, write_recipe, new_tiny_recipe, tmp_path):
    from optuna.trial import TrialState

    out = tmp_path / "runs"
    result = _search(cli, write_recipe(_search_recipe(new_tiny_recipe, trials=3)), out, "--max-trials", "1")
    assert result.exit_code == 0, result.output
    assert "continue with: compress search --resume" in result.output
    (search_dir,) = out.glob("search-*")
    assert not (search_dir / "search-result.yaml").exists()
    study = _load_study(search_dir)
    (first,) = study.trials
    # a process killed mid-trial leaves a RUNNING trial behind: simulate one
    left = study.ask()
    left.suggest_float("prune.ratio", 0.25, 0.5, step=0.25)
    assert study.trials[-1].state == TrialState.RUNNING

    result = cli.invoke(app, ["search", "--resume", str(search_dir), "--quiet"])
    assert result.exit_code == 0, result.output
    trials = _load_study(search_dir).trials
    assert trials[0].datetime_complete == first.datetime_complete  # not redone
    assert trials[1].user_attrs.get("interrupted") is True and trials[1].state == TrialState.FAIL
    redo = [t for t in trials if t.user_attrs.get("redo_of") == 1]
    assert len(redo) == 1 and redo[0].params["prune.ratio"] == left.params["prune.ratio"]
    counted = [t for t in trials if not t.user_attrs.get("interrupted") and "duplicate_of" not in t.user_attrs]
    assert len(counted) == 3 and (search_dir / "search-result.yaml").is_file()  # repeats are free


@pytest.mark.slow
def test_nothing_passing_on_tuning_exits_1_without_touching_heldout(cli, write_recipe, new_tiny_recipe, tmp_path):
    recipe = _search_recipe(new_tiny_recipe, trials=2)
    recipe["gate"]["min_speedup"] = 1000.0  # no candidate is 1000x faster than fp32
    # one point in the space: after the start there is nothing new to try
    recipe["search"]["space"] = {"quantize.calibration.method": {"choices": ["minmax"]}}
    out = tmp_path / "runs"
    result = _search(cli, write_recipe(recipe), out)
    assert result.exit_code == 1, result.output
    (search_dir,) = out.glob("search-*")
    summary = json.loads((search_dir / "search.json").read_text())
    assert summary["members"] == {} and "heldout_run" not in summary
    (first,) = summary["trials"]  # the one point was tried: the space is exhausted before the budget
    assert first["state"] == "COMPLETE" and max(first["constraint"]) > 0  # measured, fails the speed rule
    assert summary["stopped_early"] == "all 1 option sets of the space have been tried"
    assert "all 1 option sets of the space have been tried" in (search_dir / "report.md").read_text()
    assert not (search_dir / "search-result.yaml").exists()
    assert [p for p in out.iterdir() if p.is_dir() and not p.name.startswith((".", "search-"))] == []
    assert "No trial passed the gate on the tuning split" in (search_dir / "report.md").read_text()


def _stored_trials(db: Path) -> list[tuple[int, str]]:
    """(number, state) of the trials in an Optuna SQLite file, read without Optuna (the search is writing it)."""
    import sqlite3

    if not db.is_file():
        return []
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)) as con:
            return con.execute("SELECT number, state FROM trials ORDER BY number").fetchall()
    except sqlite3.OperationalError:  # the tables are not created yet, or the file is locked: poll again
        return []


@pytest.mark.slow
@pytest.mark.parametrize("signame, exit_code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_killed_search_process_resumes_without_redoing_finished_trials(
        signame, exit_code, cli, write_recipe, new_tiny_recipe, tmp_path):
    """A real `compress search` process, killed once a trial is stored, continues with --resume."""
    from optuna.trial import TrialState

    import compress

    recipe = _search_recipe(new_tiny_recipe, trials=4)
    out = tmp_path / "runs"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(compress.__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(
        [sys.executable, "-c", "from compress.cli import main; main()", "search", str(write_recipe(recipe)),
         "--out", str(out), "--quiet"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 600  # generous: the machine may be loaded
        while time.monotonic() < deadline and proc.poll() is None:
            dbs = list(out.glob("search-*/study.db"))
            if dbs and any(state in ("COMPLETE", "PRUNED") for _n, state in _stored_trials(dbs[0])):
                break
            time.sleep(0.2)
        assert proc.poll() is None, f"the search ended before a trial was stored:\n{proc.communicate()[0]}"
        proc.send_signal(getattr(signal, signame))
        output, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == exit_code, output
    (search_dir,) = out.glob("search-*")
    assert not (search_dir / "search-result.yaml").exists()
    before = {t.number: t for t in _load_study(search_dir).trials}
    kept = {n: t for n, t in before.items() if t.state.is_finished() and not t.user_attrs.get("interrupted")}
    assert 0 in kept and kept[0].user_attrs.get("start") is True
    # the trial the signal stopped (if it stopped one): marked interrupted, or left running by the signal
    left = [t for t in before.values() if t.user_attrs.get("interrupted") or t.state == TrialState.RUNNING]
    assert {t.number for t in before.values()} - set(kept) - {t.number for t in left} == {
        t.number for t in before.values() if t.state == TrialState.WAITING}  # and its queued redo

    result = cli.invoke(app, ["search", "--resume", str(search_dir), "--quiet"])
    assert result.exit_code == 0, result.output
    after = _load_study(search_dir).trials
    for n, t in kept.items():  # finished trials are kept as they were, not built or measured again
        assert (after[n].state, after[n].params, after[n].datetime_complete) == (t.state, t.params, t.datetime_complete)
        assert after[n].user_attrs == t.user_attrs
    for t in left:  # an interrupted trial is run again with the same options (when it had drawn any)
        redo = [r for r in after if r.user_attrs.get("redo_of") == t.number]
        options = t.params or t.system_attrs.get("fixed_params")
        if not options:  # stopped between Optuna's ask and the sampling: nothing to redo
            assert redo == []
            continue
        assert len(redo) == 1 and redo[0].params == options and redo[0].state.is_finished()
    counted = [t for t in after if t.state.is_finished() and not t.user_attrs.get("interrupted")
               and "duplicate_of" not in t.user_attrs]  # repeats of tried options are free
    assert len(counted) == 4
    assert len({t.number for t in counted} & set(kept)) == len(kept)
    assert (search_dir / "search-result.yaml").is_file()


@pytest.mark.slow
def test_an_interrupted_start_is_redone_as_the_start(cli, write_recipe, new_tiny_recipe, tmp_path):
    """The hand-written start, stopped mid-trial, is run again as the start: in full, never screened out."""
    from optuna.trial import TrialState

    from compress.recipe import load_recipe
    from compress.search.directory import RECIPE_FILE, new_search_dir
    from compress.search.space import start_params
    from compress.search.study import open_study

    search_dir = new_search_dir(write_recipe(_search_recipe(new_tiny_recipe, trials=2)), tmp_path / "runs")
    recipe = load_recipe(search_dir / RECIPE_FILE)
    study = open_study(recipe, search_dir)
    study.enqueue_trial(start_params(recipe), user_attrs={"start": True})
    study.ask()  # trial 0, the start, left running by a process that was killed

    result = cli.invoke(app, ["search", "--resume", str(search_dir), "--quiet"])
    assert result.exit_code == 0, result.output
    trials = _load_study(search_dir).trials
    assert trials[0].user_attrs["interrupted"] is True and trials[0].state == TrialState.FAIL
    (redo,) = [t for t in trials if t.user_attrs.get("redo_of") == 0]
    assert redo.user_attrs.get("start") is True and redo.state == TrialState.COMPLETE
    assert "screen" not in redo.user_attrs  # measured in full, as the start always is
    summary = json.loads((search_dir / "search.json").read_text())
    assert [m["trial"] for m in summary["members"].values() if m["start"]] == [redo.number]


def test_space_size_counts_choices_grids_and_each_targets_own_options(new_tiny_recipe):
    from compress.search.space import Dimension, space_size

    assert Dimension(choices=["a", "b", "a"]).size == 2
    assert Dimension(low=1, high=4).size == 4 and Dimension(low=0, high=10, step=5).size == 3
    assert Dimension(low=0.25, high=0.5, step=0.25).size == 2 and Dimension(low=0.1, high=0.5).size is None
    recipe = _search_recipe(new_tiny_recipe)
    assert space_size(parse_recipe(recipe)) == 2 * 2 * 2
    recipe["targets"].append({"name": "ov", "runtime": "openvino", "device": "cpu", "threads": 1,
                              "usd_per_hour": 0.17})
    recipe["search"]["space"]["target"] = {"choices": ["cpu", "ov"]}
    recipe["search"]["space"]["targets.ov.options.hint"] = {"choices": ["LATENCY", "THROUGHPUT"]}
    assert space_size(parse_recipe(recipe)) == 8 * (1 + 2)  # the hint is drawn only with ov
    recipe["search"]["space"]["prune.ratio"] = {"low": 0.2, "high": 0.5}
    assert space_size(parse_recipe(recipe)) is None


def test_repeats_are_free_and_an_exhausted_space_ends_the_search(write_recipe, new_tiny_recipe, tmp_path):
    """Draws of options already tried do not count against the trial budget; once every point of the
    space was tried the search stops and measures its front."""
    from compress.search.directory import new_search_dir
    from compress.search.study import finished, run_search

    recipe = _search_recipe(new_tiny_recipe, trials=6)
    recipe["search"]["space"] = {"quantize.calibration.method": {"choices": ["minmax", "percentile"]}}
    recipe["search"].pop("fidelity")
    search_dir = new_search_dir(write_recipe(recipe), tmp_path / "runs")
    lines: list[str] = []
    got = run_search(search_dir, log=lines.append)
    study = _load_study(search_dir)
    counted = finished(study)
    assert got.complete and got.trials == len(counted) == 2  # not the budget of 6
    assert sorted(t.user_attrs["options"]["quantize.calibration.method"] for t in counted) == ["minmax", "percentile"]
    repeats = [t for t in study.trials if "duplicate_of" in t.user_attrs]
    assert all(t.state.name == "PRUNED" and "constraint" in t.user_attrs for t in repeats)
    assert "search: all 2 option sets of the space have been tried; stopping before the budget is spent" in lines
    assert (search_dir / "search-result.yaml").is_file()


def test_a_sampler_that_only_repeats_stops_the_search():
    from compress.search import study as st

    assert st.exhausted(_FakeStudy([]), None) is None
    repeats = [_FakeTrial(0, {"m": 1})] + [_FakeTrial(i, {"m": 1}, duplicate_of=0) for i in range(1, st.MAX_REPEATS + 1)]
    assert st.exhausted(_FakeStudy(repeats), None) == f"the last {st.MAX_REPEATS} draws repeated options already tried"
    assert st.exhausted(_FakeStudy(repeats[:-1]), None) is None
    assert st.exhausted(_FakeStudy(repeats[:1]), 1) == "all 1 option sets of the space have been tried"
    failed = [_FakeTrial(0, {"m": 1}, state="FAIL")]
    assert st.exhausted(_FakeStudy(failed), 1) is None  # a failed point may be drawn again


class _FakeTrial:
    def __init__(self, number, options, duplicate_of=None, state="COMPLETE"):
        from optuna.trial import TrialState

        self.number, self.params, self.state = number, options, TrialState[state]
        self.user_attrs = {"options": options, **({"duplicate_of": duplicate_of} if duplicate_of is not None else {})}


class _FakeStudy:
    def __init__(self, trials):
        self.trials = trials

    def get_trials(self, deepcopy=False, states=None):
        return [t for t in self.trials if states is None or t.state in states]


def test_a_trial_stopped_before_its_options_were_drawn_is_not_redone(tmp_path):
    """Ctrl-C between Optuna's ask and the sampling leaves a trial with no options: marked
    interrupted, nothing queued (an enqueued trial keeps its fixed options and is queued again)."""
    import optuna
    from optuna.trial import TrialState

    from compress.search.study import requeue

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'study.db'}", directions=["minimize", "maximize"])
    bare = study.ask()
    requeue(study, bare)
    study.enqueue_trial({"x": 1}, user_attrs={"start": True})
    fixed = study.ask()  # its options are fixed, though not suggested yet
    requeue(study, fixed)
    trials = study.get_trials(deepcopy=False)
    assert [(t.number, t.state, t.user_attrs.get("interrupted")) for t in trials[:2]] == [
        (0, TrialState.FAIL, True), (1, TrialState.FAIL, True)]
    (waiting,) = [t for t in trials if t.state == TrialState.WAITING]
    assert waiting.system_attrs["fixed_params"] == {"x": 1}
    assert waiting.user_attrs == {"redo_of": 1, "start": True}
