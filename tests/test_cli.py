"""The `compress` command: it teaches, validates with key paths, and never shows a traceback for a
user's mistake."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import compress
from compress.cli import app

ROOT = Path(__file__).parents[1]


def _project() -> dict:
    """pyproject.toml's [project] table."""
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in Python 3.11+")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _flat(text: str) -> str:
    """Output with rich's line wrapping undone, so long messages can be matched."""
    return " ".join(text.split())


def test_help_teaches_where_to_start(cli):
    result = cli.invoke(app, ["--help"])
    assert result.exit_code == 0
    text = _flat(result.stdout)
    assert "compress run recipes/resnet.yaml" in text
    for command in ("run", "validate", "schema"):
        assert command in text


def test_run_help_documents_the_exit_codes(cli):
    result = cli.invoke(app, ["run", "--help"])
    assert result.exit_code == 0
    text = _flat(result.stdout)
    assert "Exits 0 when every gated variant passes, 1 when a gate fails, 2" in text
    assert "--out" in text


def test_validate_good_recipe_lists_variants(cli, write_recipe, recipe_dict):
    path = write_recipe(recipe_dict)
    result = cli.invoke(app, ["validate", str(path)])
    assert result.exit_code == 0, result.output
    text = _flat(result.stdout)
    assert "valid (2 variants, 1 target(s))" in text
    assert "onnx-fp32: export ⇒ onnx" in text
    assert "int8: [onnx-fp32] → quantize ⇒ onnx" in text


def test_validate_bad_recipe_exits_2_with_key_paths(cli, write_recipe, recipe_dict):
    recipe_dict["variants"]["int8"] = {"steps": [{"export": {}}, {"quantize": {"mdoe": "static"}}]}
    recipe_dict["targets"][0]["runtime"] = "tflite"
    path = write_recipe(recipe_dict)
    result = cli.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    text = _flat(result.stderr)
    assert "is invalid" in text
    assert "variants.int8.steps[1].quantize.mdoe: unknown key" in text
    assert "targets[0].runtime: unknown runtime 'tflite'" in text
    assert "Traceback" not in result.output


def test_validate_rule_problems_are_listed_one_per_line(cli, write_recipe, recipe_dict):
    recipe_dict["gate"]["reference"] = "nope"
    recipe_dict["variants"]["q"] = {"steps": [{"quantize": {}}, {"export": {}}]}
    path = write_recipe(recipe_dict)
    result = cli.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    lines = [line.strip() for line in result.stderr.splitlines()]
    assert any(line.startswith("variants.q.steps[0].quantize:") for line in lines)
    assert any(line.startswith("gate.reference: unknown variant 'nope'") for line in lines)


def test_validate_yaml_syntax_error_exits_2(cli, tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: tiny\nmodel:\n  source: x\n   bad: indent\n")
    result = cli.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert "YAML syntax error at line 4" in _flat(result.stderr)


def test_run_missing_recipe_exits_2_without_traceback(cli, tmp_path):
    result = cli.invoke(app, ["run", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "runs")])
    assert result.exit_code == 2
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    text = _flat(result.stderr)
    assert "error (invalid input)" in text and "does not exist; check the path" in text
    assert not (tmp_path / "runs").exists()


def test_run_invalid_recipe_exits_2(cli, write_recipe, recipe_dict, tmp_path):
    recipe_dict["bogus"] = 1
    path = write_recipe(recipe_dict)
    result = cli.invoke(app, ["run", str(path), "--out", str(tmp_path / "runs"), "--quiet"])
    assert result.exit_code == 2
    assert "bogus: unknown key" in _flat(result.stderr)
    assert "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()


def test_version_names_the_distribution(cli):
    project = _project()
    result = cli.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"compress {compress.__version__} (distribution {project['name']})"
    assert project["version"] == compress.__version__


def test_the_distribution_is_not_the_unrelated_compress_on_the_package_index():
    from compress.errors import DISTRIBUTION

    project = _project()
    assert project["name"] == DISTRIBUTION != "compress"
    assert project["scripts"] == {"compress": "compress.cli:app"}  # the command stays `compress`


def test_install_hints_never_fetch_the_unrelated_compress():
    """`pip install 'compress[...]'` would install another project: no doc or message says it."""
    root = ROOT
    files = [root / "README.md", *(root / "docs").rglob("*.md"), *(root / "compress").rglob("*.py")]
    bad = re.compile(r"pip install [^\n`]*?(?<![\w.-])compress(\[|\s|'|\"|$)")
    offenders = [f"{f.relative_to(root)}: {m.group(0)}" for f in files for m in bad.finditer(f.read_text())]
    assert offenders == []


def test_missing_dependency_hint_installs_this_checkout():
    from compress.errors import MissingDependency

    checkout = Path(compress.__file__).resolve().parents[1]
    err = MissingDependency("pynvml", "nvml", "Reading GPU energy")
    assert f"pip install -e '{checkout}[nvml]'" in str(err)


def test_shell_completion_completes_commands_and_choices():
    # a real shell asks a fresh process; in-process, output of threads other tests left running
    # (progress bars, runtimes' loggers) could land in the captured stdout
    import os
    import subprocess
    import sys
    from pathlib import Path

    COMPRESS = str(Path(sys.executable).with_name("compress"))  # the installed command

    def complete(words: str) -> list[str]:
        env = {**os.environ, "_COMPRESS_COMPLETE": "complete_bash", "COMP_WORDS": words,
               "COMP_CWORD": str(len(words.split(" ")) - 1)}
        out = subprocess.run([COMPRESS], env=env, capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 0, out.stderr
        return out.stdout.split()

    assert complete("compress ga") == ["gate"]
    assert complete("compress gate runs --mode ") == ["point", "confident"]
    shown = subprocess.run([COMPRESS, "--show-completion", "bash"],
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0 and "_COMPRESS_COMPLETE=complete_bash" in shown.stdout, shown.stderr


def test_gate_mode_is_a_choice(cli):
    from compress.results.gate import GATE_MODES

    assert f"<{'|'.join(GATE_MODES)}>" in _flat(cli.invoke(app, ["gate", "--help"]).stdout)
    result = cli.invoke(app, ["gate", "runs", "--mode", "fast"])
    assert result.exit_code == 2
    assert "'fast' is not one of 'point'," in _flat(result.output)
