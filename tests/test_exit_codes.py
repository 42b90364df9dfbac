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
    monkeypatch.setattr("compress.recipe.schema.yaml.safe_load", _boom)
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

@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_project, new_tiny_recipe):
    """The tiny project and recipe, one --out shared by the tests below (they run in file order and
    each checks only what it added), so the baseline is trained once."""
    folder = tiny_project(tmp_path_factory.mktemp("exit-codes"))
    recipe = new_tiny_recipe()
    recipe["evaluate"]["batch_size"] = 16  # so that only timing runs a batch of 1
    recipe["baseline"]["train"]["epochs"] = 1  # accuracy does not matter here
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return {"folder": folder, "recipe": path, "out": folder / "runs"}


def _run(project, *extra):
    return CliRunner().invoke(app, ["run", str(project["recipe"]), "--out", str(project["out"]), "--quiet", *extra])


def _run_dirs(out: Path) -> set[Path]:
    return {p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")} if out.exists() else set()


def _debris(out: Path) -> list[str]:
    return [p.name for p in out.rglob("*") if ".partial" in p.name or ".tmp-" in p.name] if out.exists() else []


def _results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def test_a_step_raising_fails_its_variant_and_exits_3(project, monkeypatch):
    from compress.steps.base import STEPS

    spec = STEPS.get("quantize")
    monkeypatch.setitem(STEPS._items, "quantize", dataclasses.replace(spec, apply=_boom))
    before = _run_dirs(project["out"])
    result = _run(project)
    assert result.exit_code == 3, result.output
    (run_dir,) = _run_dirs(project["out"]) - before
    res = _results(run_dir)
    assert res["variants"]["int8"]["status"] == "failed"
    assert INJECTED in res["variants"]["int8"]["error"]
    assert res["variants"]["onnx-fp32"]["status"] == "ok"
    assert (run_dir / "report.md").is_file()
    assert _debris(project["out"]) == []


def test_a_runtime_raising_in_evaluation_fails_its_variants_and_exits_3(project, monkeypatch):
    monkeypatch.setattr("compress.runtimes.onnxruntime.OrtSession.run", _boom)
    before = _run_dirs(project["out"])
    result = _run(project)
    assert result.exit_code == 3, result.output
    (run_dir,) = _run_dirs(project["out"]) - before
    for name in ("onnx-fp32", "int8"):
        variant = _results(run_dir)["variants"][name]
        assert variant["status"] == "failed" and INJECTED in variant["error"]
    assert _debris(project["out"]) == []


def test_a_runtime_raising_while_timing_exits_3_and_leaves_no_run_directory(project, monkeypatch):
    from compress.runtimes.onnxruntime import OrtSession

    real_run = OrtSession.run

    def run_but_not_batch_1(self, batch):
        return _boom() if len(batch) == 1 else real_run(self, batch)

    monkeypatch.setattr(OrtSession, "run", run_but_not_batch_1)
    before = _run_dirs(project["out"])
    result = _run(project)
    _assert_unexpected_one_line(result, "run")
    assert "(at compress/" in result.stderr
    assert _run_dirs(project["out"]) == before
    assert _debris(project["out"]) == []


def test_the_report_writer_raising_exits_3_and_leaves_no_run_directory(project, monkeypatch):
    monkeypatch.setattr("compress.run.pipeline.render_report", _boom)
    before = _run_dirs(project["out"])
    result = _run(project)
    _assert_unexpected_one_line(result, "run")
    assert _run_dirs(project["out"]) == before
    assert _debris(project["out"]) == []


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


def test_after_the_failures_a_clean_run_reuses_the_cache_and_sweeps_dead_partials(project):
    from compress.run.rundir import owner_record

    out = project["out"]
    dead = _plant_partial(out, "20200101-000000", {**owner_record(), "pid": _dead_pid()})
    live = _plant_partial(out, "20200101-000001", owner_record())  # this process: alive
    elsewhere = _plant_partial(out, "20200101-000002", {**owner_record(), "host": "another-host"})
    before = _run_dirs(out)
    result = _run(project)
    assert result.exit_code == 0, result.output
    (run_dir,) = _run_dirs(out) - before
    res = _results(run_dir)
    assert all(s["cached"] for v in res["variants"].values() for s in v["steps"])
    assert all(v["status"] == "ok" for v in res["variants"].values())
    assert not dead.exists()
    assert live.exists() and elsewhere.exists()


# ---- SIGTERM, as CI systems send on cancel ------------------------------------------------------

def test_sigterm_exits_143_and_leaves_nothing_half_written(tmp_path, tiny_project, new_tiny_recipe):
    folder = tiny_project(tmp_path)
    recipe = new_tiny_recipe()
    recipe["profile"].update(rounds=20, min_round_s=5.0)  # long enough to be stopped mid-run
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    out = folder / "runs"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(compress.__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(
        [sys.executable, "-c", "from compress.cli import main; main()", "run", str(path), "--out", str(out), "--quiet"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not list(out.glob(".*.partial/owner.json")):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the run never started"
            time.sleep(0.1)
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        _stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert "terminated by SIGTERM" in stderr and "Traceback" not in stderr
    assert _debris(out) == [] and _run_dirs(out) == set()
