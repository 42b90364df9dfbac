"""Search trials in batches on an executor's workers (`compress search --ray`): the same seed samples
the same trials as the in-process search, and they get the same artifacts (digests) and tuning
accuracies; each target's candidates are timed in one task asking for that target's node; an
interrupted batch is queued again. On a real two-node cluster too (slow)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from compress.run.executor import InProcess
from tests.test_search import _load_study, _search_recipe

pytest.importorskip("optuna")


class Batches(InProcess):
    """The in-process executor posing as a cluster of two worker slots, recording its map calls."""

    name = "batches"

    def __init__(self, interrupt_timing: bool = False):
        self.calls: list[tuple[str, int, dict | None]] = []
        self.interrupt_timing = interrupt_timing

    def slots(self) -> int:
        return 2

    def map(self, fn, items, *, num_cpus=1, num_gpus=0, resources=None):
        self.calls.append((fn.__name__, len(items), resources))
        if self.interrupt_timing and fn.__name__ == "time_trials":
            raise KeyboardInterrupt
        return super().map(fn, items, num_cpus=num_cpus, num_gpus=num_gpus, resources=resources)


def _measured(search_dir: Path) -> dict:
    """What must not depend on where trials ran: per trial, its options, state, digest, tuning scores."""
    return {t.number: (t.state.name, t.user_attrs.get("options"), t.user_attrs.get("digest"),
                       t.user_attrs.get("tuning_top1"), t.user_attrs.get("screen"),
                       t.user_attrs.get("duplicate_of"), t.user_attrs.get("error"))
            for t in _load_study(search_dir).trials}


def _new_search(write_recipe, new_tiny_recipe, out: Path, trials: int = 4) -> Path:
    from compress.search.directory import new_search_dir

    return new_search_dir(write_recipe(_search_recipe(new_tiny_recipe, trials=trials)), out)


@pytest.mark.slow
def test_batched_trials_are_the_in_process_trials_and_time_on_their_target(write_recipe, new_tiny_recipe, tmp_path):
    from compress.search.study import run_search

    one_by_one = _new_search(write_recipe, new_tiny_recipe, tmp_path / "a")
    run_search(one_by_one, max_new_trials=3, log=lambda _m: None)
    batches = Batches()
    batched = _new_search(write_recipe, new_tiny_recipe, tmp_path / "b")
    got = run_search(batched, max_new_trials=3, log=lambda _m: None, executor=batches)
    assert not got.complete and got.trials == 3  # the budget (4) is not spent: resumable
    assert _measured(batched) == _measured(one_by_one)
    assert all(m[2] is not None or m[0] != "COMPLETE" for m in _measured(batched).values())
    measure_calls = [(n, r) for f, n, r in batches.calls if f == "measure_trial"]
    timing_calls = [r for f, _n, r in batches.calls if f == "time_trials"]
    assert measure_calls == [(2, None), (1, None)]  # two slots: trials 0-1, then trial 2
    assert timing_calls and all(r == {"target:cpu": 1} for r in timing_calls)
    timed = [t for t in _load_study(batched).trials if "latency_ms_p50" in t.user_attrs]
    assert timed and all(t.user_attrs["speedup"] > 0 for t in timed)


def test_an_interrupted_batch_is_queued_again_and_resumes(write_recipe, new_tiny_recipe, tmp_path):
    from optuna.trial import TrialState

    from compress.search.study import finished, run_search

    search_dir = _new_search(write_recipe, new_tiny_recipe, tmp_path / "runs")
    with pytest.raises(KeyboardInterrupt):
        run_search(search_dir, max_new_trials=2, log=lambda _m: None, executor=Batches(interrupt_timing=True))
    study = _load_study(search_dir)
    assert [(t.number, t.state, t.user_attrs.get("interrupted")) for t in study.trials[:2]] == [
        (0, TrialState.FAIL, True), (1, TrialState.FAIL, True)]
    waiting = [t for t in study.trials if t.state == TrialState.WAITING]
    assert [t.system_attrs["fixed_params"] for t in waiting] == [t.params for t in study.trials[:2]]
    assert finished(study) == []
    got = run_search(search_dir, max_new_trials=1, log=lambda _m: None)  # resumed in-process
    study = _load_study(search_dir)
    (redo,) = finished(study)
    assert redo.user_attrs["redo_of"] == 0 and redo.params == study.trials[0].params and got.trials == 1


class FailingMeasure(Batches):
    """Every trial's measurement task fails (as a worker that died twice would)."""

    def map(self, fn, items, **kwargs):
        if fn.__name__ == "measure_trial":
            return [RuntimeError("TrialFailed: prune: boom") for _ in items]
        return super().map(fn, items, **kwargs)


def test_twin_of_a_failed_trial_in_one_batch_fails_too_and_its_options_are_tried_again(
        write_recipe, new_tiny_recipe, tmp_path):
    from optuna.trial import TrialState

    from compress.search.space import start_params
    from compress.search.study import open_study, prepare, run_search, same_options

    search_dir = _new_search(write_recipe, new_tiny_recipe, tmp_path / "runs")
    ctx = prepare(search_dir, None, lambda _m: None)
    study = open_study(ctx.recipe, search_dir)
    params = start_params(ctx.recipe)
    study.enqueue_trial(params)
    study.enqueue_trial(params)  # drawn twice in one batch of two
    run_search(search_dir, max_new_trials=2, log=lambda _m: None, executor=FailingMeasure())
    first, twin = _load_study(search_dir).trials[:2]
    assert (first.state, twin.state) == (TrialState.FAIL, TrialState.FAIL)
    assert first.user_attrs["error"] == "prune: boom"
    assert twin.user_attrs["error"] == "the same options as trial 0, which failed: prune: boom"
    assert "duplicate_of" not in twin.user_attrs
    # in-process and in later batches, a failed trial does not make a later draw a duplicate
    assert same_options(SimpleNamespace(study=_load_study(search_dir), number=99), params) is None


def test_a_failed_task_is_a_failed_trial_with_its_message():
    from compress.search.batches import _text

    assert _text(RuntimeError("TrialFailed: prune: ratio too high")) == "prune: ratio too high"
    assert _text(RuntimeError("ValueError: boom")) == "ValueError: boom"


@pytest.mark.slow
def test_search_on_two_nodes_matches_the_in_process_search(ray_cluster, cli, write_recipe, new_tiny_recipe, tmp_path):
    from compress.cli import app

    recipe = write_recipe(_search_recipe(new_tiny_recipe, trials=3))
    local = cli.invoke(app, ["search", str(recipe), "--out", str(tmp_path / "local"), "--quiet"])
    got = ray_cluster.compress_run(recipe, tmp_path / "ray", command="search")
    assert got.returncode == local.exit_code == 0, got.stderr[-3000:]
    (local_dir,), (ray_dir,) = (tmp_path / "local").glob("search-*"), (tmp_path / "ray").glob("search-*")
    assert _measured(ray_dir) == _measured(local_dir)
    assert "(measure_trial pid=" in got.stderr and "(time_trials pid=" in got.stderr  # Ray tasks did the work
    summary = json.loads((ray_dir / "search.json").read_text())
    assert summary["trials"][0]["start"] is True and summary["members"]
    assert all(t["latency_ms_p50"] > 0 for t in summary["trials"] if t["state"] == "COMPLETE")


@pytest.mark.slow
def test_a_search_target_no_node_provides_is_refused_before_the_directory_is_made(
        ray_cluster, write_recipe, new_tiny_recipe, tmp_path):
    recipe = _search_recipe(new_tiny_recipe)
    recipe["targets"].append({"name": "cpu-openvino", "runtime": "onnxruntime", "device": "cpu", "threads": 1})
    got = ray_cluster.compress_run(write_recipe(recipe), tmp_path / "ray", command="search")
    assert got.returncode == 2, got.stderr[-3000:]
    assert "provides target(s) ['cpu-openvino']" in " ".join(got.stderr.split())
    assert not (tmp_path / "ray").exists()
