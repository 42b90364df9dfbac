"""What CI systems read: JUnit XML, $GITHUB_STEP_SUMMARY, `compress gate`, and the docs/ci.md recipes."""

from __future__ import annotations

import copy
import json
import re
import shlex
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from compress.cli import app
from compress.results.ci import append_step_summary, junit_cases, junit_xml, summary_markdown
from compress.results.gate import apply_gate

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture
def results() -> dict:
    return json.loads((GOLDEN / "results.json").read_text())


@pytest.fixture
def run_dir(tmp_path, results) -> Path:
    d = tmp_path / "runs" / "20261126-120000"
    d.mkdir(parents=True)
    (d / "results.json").write_text(json.dumps(results))
    return d


def _checks(results: dict) -> list[tuple[str, dict]]:
    return [(n, c) for n, v in results["variants"].items() for c in (v.get("gate") or {}).get("checks", [])]


def _flat(text: str) -> str:
    return " ".join(text.split())  # rich wraps long lines


def test_junit_has_one_case_per_gate_check(results):
    root = ET.fromstring(junit_xml(results))
    suite = root.find("testsuite")
    cases = suite.findall("testcase")
    checks = _checks(results)
    failed_builds = [n for n, v in results["variants"].items() if v["status"] == "failed"]
    assert len(checks) == 7 and failed_builds == ["broken"]
    assert len(cases) == len(checks) + len(failed_builds)
    assert suite.get("tests") == str(len(cases))
    for (variant, check), case in zip(checks, cases[: len(checks)], strict=True):
        assert case.get("classname") == f"compress.synthetic.{variant}"
        assert case.get("name").startswith(check["rule"])
        failure = case.find("failure")
        assert (failure is None) == check["passed"]
        if failure is not None:
            assert failure.get("message") == check["detail"]
    assert suite.get("failures") == "1"  # pruned's accuracy
    assert cases[-1].get("classname") == "compress.synthetic.broken"
    assert cases[-1].find("error").get("message").startswith("step quantize failed")
    assert suite.get("errors") == "1"
    names = [c.get("name") for c in cases if c.get("classname") == "compress.synthetic.int8"]
    assert names == ["max_accuracy_drop", "min_speedup [cpu, batch 1]", "min_speedup [cpu, batch 8]"]


def test_junit_skips_a_variant_that_is_not_gated(results):
    results["variants"]["pruned"]["gated"] = False
    apply_gate(results)
    cases = junit_cases(results)
    pruned = [c for c in cases if c["classname"].endswith(".pruned")]
    assert pruned == [{"classname": "compress.synthetic.pruned", "name": "gate", "outcome": "skipped",
                       "message": "gate: false in the recipe"}]
    assert ET.fromstring(junit_xml(results)).find("testsuite").get("skipped") == "1"


def test_step_summary_is_appended_only_when_set(tmp_path, results):
    assert append_step_summary("x", env={}) is None
    target = tmp_path / "summary.md"
    target.write_text("earlier step\n")
    text = summary_markdown(results, Path("runs/x/report.md"))
    assert append_step_summary(text, env={"GITHUB_STEP_SUMMARY": str(target)}) == target
    written = target.read_text()
    assert written.startswith("earlier step\n## compress: synthetic")
    assert "Gate failed** for pruned" in written and "| **int8** |" in written
    assert "Full report: `runs/x/report.md`" in written


# --- compress gate -------------------------------------------------------------------------------


def test_gate_reapplies_the_recipe_gate_without_changing_the_run(cli, run_dir, results):
    before = (run_dir / "results.json").read_bytes()
    res = cli.invoke(app, ["gate", str(run_dir)])
    assert res.exit_code == 3, res.output  # `broken` failed to build: exit 3 wins over a gate failure
    assert "FAIL  pruned: top-1 drop +6.67 points" in res.output
    assert (run_dir / "results.json").read_bytes() == before


def test_gate_options_make_it_stricter_or_looser(cli, tmp_path, results):
    del results["variants"]["broken"]
    apply_gate(results)
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    assert cli.invoke(app, ["gate", str(path)]).exit_code == 1  # pruned drops 6.67 > 2
    loose = cli.invoke(app, ["gate", str(path), "--max-accuracy-drop", "10"])
    assert loose.exit_code == 0, loose.output
    assert "looser than the recipe's 2.0" in _flat(loose.output)
    dropped = cli.invoke(app, ["gate", str(path), "--rule", "max_worst_class_drop=50"])
    assert "looser" not in _flat(dropped.output)  # the recipe set no worst-class limit: stricter
    strict = cli.invoke(app, ["gate", str(path), "--max-accuracy-drop", "10", "--min-speedup", "2.0"])
    assert strict.exit_code == 1
    assert "FAIL  int8: 1.75x vs onnx-fp32 on cpu, batch 1 < 2x" in strict.output
    only_b8 = cli.invoke(app, ["gate", str(path), "--max-accuracy-drop", "10", "--min-speedup", "1.8",
                               "--speedup-batch-size", "8"])
    assert only_b8.exit_code == 0, only_b8.output
    confident = cli.invoke(app, ["gate", str(path), "--max-accuracy-drop", "10", "--mode", "confident"])
    assert confident.exit_code == 1  # pruned: upper bound of the drop 13.33 > 10
    assert "confident mode" in confident.output


def test_gate_writes_junit_and_step_summary(cli, tmp_path, run_dir):
    summary = tmp_path / "summary.md"
    res = cli.invoke(app, ["gate", str(run_dir), "--junit", str(tmp_path / "out" / "j.xml")],
                     env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert res.exit_code == 3
    root = ET.parse(tmp_path / "out" / "j.xml").getroot()
    assert len(root.findall(".//testcase")) == 8
    assert "## compress: synthetic" in summary.read_text()


@pytest.mark.parametrize("args, message", [
    (["--max-accuracy-drop", "-1"], "gate.max_accuracy_drop"),
    (["--mode", "sure"], "Invalid value for '--mode'"),  # a choice, checked by the CLI
    (["--rule", "no_such_rule=1"], "unknown gate rule(s) no_such_rule"),
    (["--rule", "max_worst_class_drop"], "is not NAME=VALUE"),
    (["--rule", "reference=int8"], "gate.reference cannot be changed after a run"),
])
def test_gate_invalid_options_exit_2(cli, run_dir, args, message):
    res = cli.invoke(app, ["gate", str(run_dir), *args])
    assert res.exit_code == 2, res.output
    assert message in _flat(res.output)


def test_gate_invalid_results_exit_2(cli, tmp_path, results):
    assert cli.invoke(app, ["gate", str(tmp_path / "missing")]).exit_code == 2
    broken = copy.deepcopy(results)
    del broken["variants"]["int8"]["gate"]
    (tmp_path / "results.json").write_text(json.dumps(broken))
    res = cli.invoke(app, ["gate", str(tmp_path / "results.json")])
    assert res.exit_code == 2
    assert "variants.int8: 'gate' is a required property" in _flat(res.output)


def test_gate_rule_option_overrides_any_rule(cli, tmp_path, results):
    del results["variants"]["broken"]
    apply_gate(results)
    (tmp_path / "results.json").write_text(json.dumps(results))
    res = cli.invoke(app, ["gate", str(tmp_path / "results.json"), "--rule", "max_accuracy_drop=7"])
    assert res.exit_code == 0, res.output


# --- docs/ci.md ----------------------------------------------------------------------------------


def _yaml_blocks(markdown: str) -> list[dict]:
    return [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", markdown, re.S)]


def _doc_commands() -> dict[str, list[str]]:
    github, gitlab = _yaml_blocks((ROOT / "docs" / "ci.md").read_text())
    gh = [s["run"].strip() for s in github["jobs"]["compress"]["steps"] if "run" in s]
    gl = [c for job in gitlab.values() for c in job["script"]]
    return {"github": gh, "gitlab": gl}


def test_docs_ci_workflows_are_well_formed():
    cmds = _doc_commands()
    gh_run = next(c for c in cmds["github"] if c.startswith("compress run"))
    assert gh_run in cmds["gitlab"]  # both CI systems run the same command
    assert 'pip install -e ".[dev]"' in cmds["github"] and 'pip install -e ".[dev]"' in cmds["gitlab"]
    assert any(c.startswith("compress compare") for c in cmds["github"])
    assert any(c.startswith("compress gate") for c in cmds["gitlab"])


def _run(cli, command: str, env: dict) -> int:
    """A docs command: `compress ...` through CliRunner, anything else (mkdir, cp) through bash."""
    if command.startswith("compress "):
        res = cli.invoke(app, shlex.split(command)[1:], env=env)
        if res.exception and not isinstance(res.exception, SystemExit):
            raise res.exception
        return res.exit_code
    return subprocess.run(["bash", "-c", command], check=False).returncode


@pytest.mark.slow
def test_docs_ci_commands_run_locally(cli, tmp_path, monkeypatch, tiny_project, new_tiny_recipe):
    """The GitHub job on main, then on a pull request, then GitLab's release gate, with the tiny
    recipe standing in for recipes/resnet.yaml."""
    project = tmp_path / "project"
    (project / "recipes").mkdir(parents=True)
    tiny_project(project / "recipes")
    (project / "recipes" / "resnet.yaml").write_text(yaml.safe_dump(new_tiny_recipe(), sort_keys=False))
    monkeypatch.chdir(project)
    summary = tmp_path / "step_summary.md"
    env = {"GITHUB_STEP_SUMMARY": str(summary)}
    cmds = _doc_commands()
    run_cmd = next(c for c in cmds["github"] if c.startswith("compress run"))
    compare_cmd = next(c for c in cmds["github"] if c.startswith("compress compare"))
    keep_cmd = next(c for c in cmds["github"] if c.startswith("mkdir -p runs/main"))
    gate_cmd = next(c for c in cmds["gitlab"] if c.startswith("compress gate"))

    # push to main: run, keep the results for later pull requests
    assert _run(cli, run_cmd, env) == 0
    assert _run(cli, keep_cmd, env) == 0
    assert (project / "runs" / "main" / "results.json").is_file()
    junit = ET.parse(project / "compress-junit.xml").getroot()
    assert junit.find("testsuite").get("name") == "compress gate: tiny"
    assert "## compress: tiny" in summary.read_text()

    # a pull request: a fresh checkout has no runs/this; run, then compare with main's results
    subprocess.run(["rm", "-rf", "runs/this", "compress-junit.xml"], check=True)
    summary.write_text("")
    assert _run(cli, run_cmd, env) == 0
    code = _run(cli, compare_cmd, env)
    diff = (project / "compare.md").read_text()
    assert "# compress compare" in diff and "| **int8** |" in diff
    assert diff in summary.read_text()
    # same seed, same data: identical predictions, compared pairwise; timings are not gated by default
    assert "paired" in diff and "✅ No regression" in diff
    assert code == 0

    # GitLab's release job: a stricter gate on the same run, nothing rebuilt
    before = sorted(p.name for p in (project / "runs" / "this").iterdir())
    assert _run(cli, gate_cmd, env) in (0, 1)
    assert sorted(p.name for p in (project / "runs" / "this").iterdir()) == before
    assert ET.parse(project / "compress-release-junit.xml").getroot().find("testsuite").findall("testcase")
