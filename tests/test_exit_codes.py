"""Exit codes never lie: 1 is only ever a failed gate. An unexpected exception anywhere (a step, a
runtime while evaluating or timing, the report writer, any command) exits 3 with one line; SIGTERM
exits 143; and the run directory is complete or absent, never half-written, with the cache usable."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import compress
from compress.cli import app
from compress.errors import InputError

INJECTED = "injected failure [see the log] [/]"  # brackets: rich markup must not eat them


def _flat(text: str) -> str:
    return " ".join(text.split())


def _boom(*_args, **_kwargs):
    raise RuntimeError(INJECTED)


def _assert_unexpected_one_line(result, command: str) -> None:
    assert result.exit_code == 3, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("error (unexpected): ")
    assert f"compress {command} failed with RuntimeError: {INJECTED}" in line
    assert "--debug" in line and "COMPRESS_DEBUG=1" in line


# ---- every command: an unexpected exception exits 3 with one line ----------------------------

COMMANDS = {
    # command: (the function it calls that we make raise, its arguments)
    "run": ("compress.run.pipeline.run_recipe", ["run", "{recipe}", "--quiet", "--out", "{tmp}/runs"]),
    "validate": ("compress.recipe.load_recipe", ["validate", "{recipe}"]),
    "schema": ("compress.recipe.recipe_json_schema", ["schema"]),
    "gate": ("compress.results.schema.load_results", ["gate", "{tmp}"]),
    "compare": ("compress.results.schema.load_results", ["compare", "{tmp}", "{tmp}"]),
    "sensitivity": ("compress.pruning.sensitivity.run_for_recipe", ["sensitivity", "{recipe}", "--out", "{tmp}/s"]),
    "profile": ("compress.run.profile_model.load_model", ["profile", "model.onnx"]),
    "search": ("compress.search.directory.new_search_dir", ["search", "{recipe}", "--quiet", "--out", "{tmp}/s"]),
}


def test_every_command_is_covered():
    assert set(COMMANDS) == {c.name or c.callback.__name__ for c in app.registered_commands}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_unexpected_exception_exits_3_with_one_line(command, cli, monkeypatch, write_recipe, recipe_dict, tmp_path):
    target, args = COMMANDS[command]
    monkeypatch.setattr(target, _boom)
    recipe = write_recipe(recipe_dict)
    result = cli.invoke(app, [a.format(recipe=recipe, tmp=tmp_path) for a in args])
    _assert_unexpected_one_line(result, command)
    assert "(at compress/" not in result.stderr  # raised in the test, not in compress


def test_the_line_names_where_in_compress_it_failed(cli, monkeypatch, write_recipe, recipe_dict):
    monkeypatch.setattr("compress.recipe.load.yaml.safe_load", _boom)
    result = cli.invoke(app, ["validate", str(write_recipe(recipe_dict))])
    _assert_unexpected_one_line(result, "validate")
    assert "(at compress/recipe/" in result.stderr


@pytest.mark.parametrize("how", [["--debug"], "env"])
def test_debug_prints_the_traceback_and_still_exits_3(how, cli, monkeypatch, write_recipe, recipe_dict):
    monkeypatch.setattr("compress.recipe.load_recipe", _boom)
    args = ["validate", str(write_recipe(recipe_dict))]
    if how == "env":
        monkeypatch.setenv("COMPRESS_DEBUG", "1")
    else:
        args = how + args
    result = cli.invoke(app, args)
    assert result.exit_code == 3
    assert "Traceback (most recent call last)" in result.stderr
    assert f"RuntimeError: {INJECTED}" in result.stderr
    assert "--debug" not in result.stderr.splitlines()[-1]  # no hint to use what is already on


def test_error_messages_print_brackets_literally(cli, monkeypatch, tmp_path):
    message = "cannot read [bold]x[/bold] in runs[old]/[/]"

    def raise_input_error(*_a, **_k):
        raise InputError(message)

    monkeypatch.setattr("compress.recipe.load_recipe", raise_input_error)
    result = cli.invoke(app, ["run", str(tmp_path / "r.yaml"), "--quiet"])
    assert result.exit_code == 2
    assert f"error (invalid input): {message}" in _flat(result.stderr)


def test_a_missing_recipe_with_brackets_in_its_path(cli, tmp_path):
    path = tmp_path / "a[/]b" / "[bold]r.yaml"
    result = cli.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert str(path) in _flat(result.stderr)


# ---- a real run with an injected failure: exit 3, run directory complete or absent ------------

def _run_dirs(out: Path) -> set[Path]:
    return {p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")} if out.exists() else set()


def _debris(out: Path) -> list[str]:
    return [p.name for p in out.rglob("*") if ".partial" in p.name or ".tmp-" in p.name] if out.exists() else []


def _results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def _plant_partial(out: Path, name: str, owner: dict | None) -> Path:
    d = out / f".{name}.partial"
    d.mkdir(parents=True)
    (d / "results.json").write_text("{half")
    if owner is not None:
        (d / "owner.json").write_text(json.dumps(owner))
    return d


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _inject_step(mp: pytest.MonkeyPatch) -> None:
    from compress.steps.base import STEPS

    mp.setitem(STEPS._items, "quantize", dataclasses.replace(STEPS.get("quantize"), apply=_boom))


def _inject_evaluation(mp: pytest.MonkeyPatch) -> None:
    mp.setattr("compress.runtimes.onnxruntime.OrtSession.run", _boom)


def _inject_timing(mp: pytest.MonkeyPatch) -> None:
    from compress.runtimes.onnxruntime import OrtSession

    real_run = OrtSession.run
    # evaluation runs batches of 16 (the recipe below); only timing runs a batch of 1
    mp.setattr(OrtSession, "run", lambda self, inputs: _boom() if len(inputs["pixel_values"]) == 1
               else real_run(self, inputs))


def _inject_report(mp: pytest.MonkeyPatch) -> None:
    mp.setattr("compress.run.pipeline.render_report", _boom)


INJECTIONS = {"step": _inject_step, "evaluation": _inject_evaluation, "timing": _inject_timing,
              "report": _inject_report}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_project, new_tiny_recipe):
    """The tiny recipe run into one --out once per injected failure (in this order), then once more
    with none, after planting partial directories of a dead, a live and a remote run."""
    from compress.run.rundir import owner_record

    folder = tiny_project(tmp_path_factory.mktemp("exit-codes"))
    recipe = new_tiny_recipe()
    recipe["evaluate"]["batch_size"] = 16
    recipe["baseline"]["train"]["epochs"] = 1  # accuracy does not matter here
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    out = folder / "runs"
    args = ["run", str(path), "--out", str(out), "--quiet"]
    done = {}
    for name, inject in INJECTIONS.items():
        before = _run_dirs(out)
        with pytest.MonkeyPatch.context() as mp:
            inject(mp)
            result = CliRunner().invoke(app, args)
        done[name] = {"result": result, "new_dirs": _run_dirs(out) - before, "debris": _debris(out)}
    planted = {
        "dead": _plant_partial(out, "20200101-000000", {**owner_record(), "pid": _dead_pid()}),
        "live": _plant_partial(out, "20200101-000001", owner_record()),  # this process
        "remote": _plant_partial(out, "20200101-000002", {**owner_record(), "host": "another-host"}),
    }
    before = _run_dirs(out)
    result = CliRunner().invoke(app, args)
    done["clean"] = {"result": result, "new_dirs": _run_dirs(out) - before, "planted": planted}
    return done


@pytest.mark.parametrize("where", ["step", "evaluation"])
def test_a_failure_in_a_variant_is_reported_in_a_complete_run_directory(runs, where):
    run = runs[where]
    assert run["result"].exit_code == 3, run["result"].output
    (run_dir,) = run["new_dirs"]
    assert (run_dir / "report.md").is_file()
    variants = _results(run_dir)["variants"]
    failed = {"step": ["int8"], "evaluation": ["onnx-fp32", "int8"]}[where]
    for name in failed:
        assert variants[name]["status"] == "failed" and INJECTED in variants[name]["error"]
    assert all(v["status"] == "ok" for name, v in variants.items() if name not in failed)
    assert run["debris"] == []


@pytest.mark.parametrize("where", ["timing", "report"])
def test_a_failure_of_the_run_itself_exits_3_and_leaves_no_run_directory(runs, where):
    run = runs[where]
    _assert_unexpected_one_line(run["result"], "run")
    assert "(at compress/" in run["result"].stderr
    assert run["new_dirs"] == set()
    assert run["debris"] == []


def test_after_the_failures_a_clean_run_reuses_the_cache(runs):
    run = runs["clean"]
    assert run["result"].exit_code == 0, run["result"].output
    (run_dir,) = run["new_dirs"]
    variants = _results(run_dir)["variants"]
    assert all(v["status"] == "ok" for v in variants.values())
    assert all(s["cached"] for v in variants.values() for s in v["steps"])


def test_the_next_run_sweeps_partials_of_dead_runs_only(runs):
    planted = runs["clean"]["planted"]
    assert not planted["dead"].exists()
    assert planted["live"].exists() and planted["remote"].exists()


def _env_with_this_checkout() -> dict:
    """The environment for a `compress` subprocess that imports the code under test."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(compress.__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}


# ---- SIGTERM, as CI systems send on cancel ------------------------------------------------------

@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_a_stopped_run_exits_128_plus_the_signal_and_leaves_nothing_half_written(
        signum, code, tmp_path, tiny_project, new_tiny_recipe):
    folder = tiny_project(tmp_path)
    recipe = new_tiny_recipe()
    recipe["profile"].update(rounds=20, min_round_s=5.0)  # long enough to be stopped mid-run
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    out = folder / "runs"
    proc = subprocess.Popen(
        [sys.executable, "-c", "from compress.cli import main; main()", "run", str(path), "--out", str(out), "--quiet"],
        env=_env_with_this_checkout(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not list(out.glob(".*.partial/owner.json")):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the run never started"
            time.sleep(0.1)
        time.sleep(0.5)
        proc.send_signal(signum)
        _stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr
    if signum == signal.SIGTERM:
        assert "terminated by SIGTERM" in stderr
    assert _debris(out) == [] and _run_dirs(out) == set()


# ---- the run directory's claim and sweep, unit by unit -------------------------------------------

def test_two_runs_in_the_same_second_claim_different_directories(tmp_path):
    from compress.run.rundir import claim_run_dir

    first, first_partial = claim_run_dir(tmp_path, "20260101-000000")
    second, second_partial = claim_run_dir(tmp_path, "20260101-000000")
    assert first.name == "20260101-000000" and second.name == "20260101-000000-2"
    assert first_partial.is_dir() and second_partial.is_dir()
    assert json.loads((first_partial / "owner.json").read_text())["pid"] == os.getpid()


def test_a_finished_name_is_never_reused(tmp_path):
    from compress.run.rundir import claim_run_dir, finish_run_dir

    final, partial = claim_run_dir(tmp_path, "20260101-000000")
    finish_run_dir(partial, final)
    assert final.is_dir() and not (final / "owner.json").exists()
    assert claim_run_dir(tmp_path, "20260101-000000")[0].name == "20260101-000000-2"


def test_sweep_removes_only_partials_whose_owner_is_dead(tmp_path):
    from compress.run.rundir import owner_record, sweep_stale_partials

    dead = _plant_partial(tmp_path, "a", {**owner_record(), "pid": _dead_pid()})
    reused = _plant_partial(tmp_path, "b", {**owner_record(), "process_started": 0.0})  # our pid, reused
    live = _plant_partial(tmp_path, "c", owner_record())
    elsewhere = _plant_partial(tmp_path, "d", {**owner_record(), "pid": _dead_pid(), "host": "another-host"})
    unknown = _plant_partial(tmp_path, "e", None)
    messages = []
    assert sorted(sweep_stale_partials(tmp_path, messages.append)) == [dead, reused]
    assert live.exists() and elsewhere.exists() and unknown.exists()
    assert any(str(unknown) in m and "no owner record" in m for m in messages)


def test_sigterm_raises_only_over_the_default_handler():
    from compress.errors import Terminated
    from compress.run.rundir import sigterm_raises

    with pytest.raises(Terminated) as info, sigterm_raises():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises before this ends
    assert info.value.exit_code == 143
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL

    def mine(*_a):
        pass

    previous = signal.signal(signal.SIGTERM, mine)
    try:
        with sigterm_raises():
            assert signal.getsignal(signal.SIGTERM) is mine  # a caller's handler is theirs
    finally:
        signal.signal(signal.SIGTERM, previous)


@pytest.mark.parametrize("command", [["schema"], ["validate", "{recipe}"]])
def test_a_reader_that_leaves_early_is_exit_141_not_a_failed_gate(command, write_recipe, recipe_dict):
    """`compress ... | head`: stdout is a pipe nobody reads any more."""
    recipe = write_recipe(recipe_dict)
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run(
            [sys.executable, "-c", "from compress.cli import main; main()", *(a.format(recipe=recipe) for a in command)],
            stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120, env=_env_with_this_checkout(),
        )
    finally:
        os.close(write_end)
    assert proc.returncode == 141, proc.stderr
    assert "Traceback" not in proc.stderr and "error" not in proc.stderr


def test_sigterm_inside_an_import_is_delivered_again_after_it():
    """A SIGTERM that lands while a module is being imported (torch's C++ extensions call back into
    Python there; an exception raised through them aborts the process) is raised a moment later,
    outside the import, still as Terminated."""
    code = textwrap.dedent('''
        import importlib, os, signal, sys, time
        sys.path.insert(0, sys.argv[1])
        from compress.run.rundir import Terminated, sigterm_raises
        with open(os.path.join(sys.argv[1], "slowmod.py"), "w") as f:
            f.write("import os, signal, time\\nos.kill(os.getpid(), signal.SIGTERM)\\ntime.sleep(0.02)\\nDONE = True\\n")
        try:
            with sigterm_raises():
                import slowmod
                assert slowmod.DONE
                time.sleep(5)
        except Terminated:
            print("terminated, import complete:", getattr(sys.modules.get("slowmod"), "DONE", False))
    ''')
    import tempfile

    with tempfile.TemporaryDirectory() as where:
        env = _env_with_this_checkout()
        env["PYTHONPATH"] = os.pathsep.join([where, env["PYTHONPATH"]])
        out = subprocess.run([sys.executable, "-c", code, where], env=env, capture_output=True, text=True,
                             timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "terminated, import complete: True"


def test_signals_wait_until_a_deferred_block_is_done():
    """A write that must not be cut in half (an Optuna commit): Ctrl-C inside the block arrives
    after it, as a KeyboardInterrupt, and the handlers are as they were."""
    import os
    import signal as sig

    from compress.run.rundir import signals_deferred

    before = sig.getsignal(sig.SIGINT)
    done = []
    with pytest.raises(KeyboardInterrupt):
        with signals_deferred():
            os.kill(os.getpid(), sig.SIGINT)
            for _ in range(1000):  # bytecodes run: the handler had every chance to fire here
                pass
            done.append("written")
        for _ in range(1000):
            pass
    assert done == ["written"] and sig.getsignal(sig.SIGINT) is before
