"""A whole run of a tiny recipe through the CLI: what lands on disk, what the exit code says, and
that a re-run reuses the cache. The tiny model and data make both runs take seconds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from compress.cli import app

OK_VARIANTS = ["onnx-fp32", "int8", "pruned", "pruned-int8"]


def _e2e_recipe(new_tiny_recipe, *, broken: bool) -> dict:
    recipe = new_tiny_recipe()
    recipe["variants"]["pruned"] = {
        "steps": [
            {"prune": {"ratio": 0.5, "finetune": {"epochs": 1}}},
            {"export": {"format": "onnx"}},
        ]
    }
    recipe["variants"]["pruned-int8"] = {
        "from": "pruned",
        "steps": [{"quantize": {"mode": "static"}}],
    }
    if broken:
        # fails while building: the pattern names no module of the tiny CNN
        recipe["variants"]["broken"] = {
            "steps": [{"prune": {"ratio": 0.5, "ignore": ["layer*"]}}, {"export": {}}]
        }
    # an impossible speed-up, so the verdict does not depend on how noisy the machine is
    recipe["gate"] = {"max_accuracy_drop": 100.0, "min_speedup": 1000.0, "reference": "onnx-fp32"}
    return recipe


def _run(folder: Path, recipe: dict, name: str, out: Path):
    path = folder / name
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(out), "--quiet"])
    run_dirs = sorted(p for p in out.iterdir() if p.is_dir() and not p.name.startswith("."))
    return result, run_dirs


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_project, new_tiny_recipe):
    """Run 1 with a failing variant, then run 2 (same steps, no failing variant) into the same --out."""
    folder = tiny_project(tmp_path_factory.mktemp("e2e"))
    out = folder / "runs"
    first, dirs1 = _run(folder, _e2e_recipe(new_tiny_recipe, broken=True), "with-broken.yaml", out)
    second, dirs2 = _run(
        folder, _e2e_recipe(new_tiny_recipe, broken=False), "without-broken.yaml", out
    )
    assert len(dirs1) == 1 and len(dirs2) == 2, (first.output, second.output)
    (second_dir,) = set(dirs2) - set(dirs1)
    return {
        "out": out,
        "first": first,
        "first_dir": dirs1[0],
        "second": second,
        "second_dir": second_dir,
    }


def _results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def test_a_failed_step_exits_3_and_the_others_complete(runs):
    assert runs["first"].exit_code == 3, runs["first"].output
    res = _results(runs["first_dir"])
    assert res["verdict"]["exit_code"] == 3 and res["verdict"]["errors"] == ["broken"]
    broken = res["variants"]["broken"]
    assert broken["status"] == "failed"
    assert "prune.ignore pattern 'layer*' matches no module name" in broken["error"]
    assert all(res["variants"][n]["status"] == "ok" for n in OK_VARIANTS)


def test_run_directory_holds_everything(runs):
    run_dir = runs["first_dir"]
    for name in ("recipe.yaml", "environment.json", "results.json", "report.md"):
        assert (run_dir / name).is_file(), name
    for name in OK_VARIANTS:
        assert (run_dir / "artifacts" / name / "model.onnx").is_file(), name
    assert not (run_dir / "artifacts" / "broken").exists()
    # the recipe as run, defaults resolved, parses back
    as_run = yaml.safe_load((run_dir / "recipe.yaml").read_text())
    assert as_run["profile"]["batch_sizes"] == [1, 4] and "broken" in as_run["variants"]
    assert "packages" in json.loads((run_dir / "environment.json").read_text())


def test_results_keep_per_sample_heldout_predictions(runs):
    res = _results(runs["first_dir"])
    labels = res["data"]["heldout_labels"]
    assert len(labels) == 60  # 30% of 200, stratified
    for name in ["baseline", *OK_VARIANTS]:
        entry = res["baseline"] if name == "baseline" else res["variants"][name]
        held = entry["accuracy"]["heldout"]
        assert len(held["predictions"]) == held["n"] == len(labels), name
        correct = sum(p == y for p, y in zip(held["predictions"], labels, strict=True))
        assert held["top1"] == pytest.approx(100 * correct / len(labels)), name
    # the tiny data is learnable: the trained baseline is far above chance (10%)
    assert res["baseline"]["accuracy"]["heldout"]["top1"] > 50


def test_every_ok_variant_is_profiled_and_gated(runs):
    res = _results(runs["first_dir"])
    for name in OK_VARIANTS:
        v = res["variants"][name]
        assert set(v["latency"]["cpu"]) == {"1", "4"}, name
    assert res["variants"]["onnx-fp32"]["gate"]["verdict"] == "reference"
    assert res["verdict"]["failed"] == ["int8", "pruned", "pruned-int8"]
    pruning = res["variants"]["pruned"]["artifact"]["facts"]["pruning"]
    assert pruning["macs_after"] < pruning["macs_before"]
    assert "Conv 2/2" in res["variants"]["int8"]["artifact"]["facts"]["int8_coverage"]["summary"]


def test_report_shows_the_failed_variant(runs):
    report = (runs["first_dir"] / "report.md").read_text()
    assert report.startswith(
        "# compress report: tiny\n\n**💥 1 variant(s) failed to build or run:** broken."
    )
    assert "| **broken** |" in report and "💥 error" in report
    assert (
        "**Failed:** step 0 (prune): prune.ignore pattern 'layer*' matches no module name" in report
    )


def test_nothing_half_written_is_left_behind(runs):
    leftovers = [
        p.name for p in runs["out"].rglob("*") if ".partial" in p.name or ".tmp-" in p.name
    ]
    assert leftovers == []
    assert not (runs["first_dir"] / "work").exists()


def test_second_run_exits_per_its_gate_and_reuses_the_cache(runs):
    second = runs["second"]
    res = _results(runs["second_dir"])
    assert second.exit_code == res["verdict"]["exit_code"] == 1, second.output
    assert res["verdict"]["errors"] == []
    assert res["baseline"]["info"]["cached"] is True
    for name in OK_VARIANTS:
        steps = res["variants"][name]["steps"]
        assert steps and all(s["cached"] for s in steps), (name, steps)
    report = (runs["second_dir"] / "report.md").read_text()
    assert "(cached)" in report


def test_invalid_input_exits_2_and_leaves_no_run_directory(
    cli, write_recipe, recipe_dict, empty_image_folder, tmp_path
):
    recipe_dict["data"]["source"] = f"imagefolder:{empty_image_folder.name}"
    path = write_recipe(recipe_dict)
    out = tmp_path / "runs"
    result = cli.invoke(app, ["run", str(path), "--out", str(out), "--quiet"])
    assert result.exit_code == 2
    text = " ".join(result.stderr.split())
    assert f"imagefolder {empty_image_folder} contains no images" in text
    assert "Traceback" not in result.output
    assert not out.exists() or not any(out.iterdir())


def test_other_code_rebuilds_instead_of_reusing_the_cache(runs, tiny_project, new_tiny_recipe, monkeypatch, tmp_path):
    """The cache key includes compress's source: after an upgrade or a local edit of a step, a
    re-run rebuilds every artifact rather than reusing one that other code made."""
    import shutil

    import compress.run.build

    folder = tiny_project(tmp_path)
    recipe = _e2e_recipe(new_tiny_recipe, broken=False)

    def rerun(name: str) -> dict:
        out = tmp_path / name
        shutil.copytree(runs["out"] / ".cache", out / ".cache")  # the cache of the runs above
        result, dirs = _run(folder, recipe, f"{name}.yaml", out)
        assert result.exit_code == 1, result.output
        return _results(dirs[-1])

    same = rerun("same-code")
    assert same["baseline"]["info"]["cached"] is True
    assert all(s["cached"] for name in OK_VARIANTS for s in same["variants"][name]["steps"])
    monkeypatch.setattr(compress.run.build, "code_digest", lambda: "other code")
    other = rerun("other-code")
    assert other["baseline"]["info"]["cached"] is False
    for name in OK_VARIANTS:
        assert not any(s["cached"] for s in other["variants"][name]["steps"]), name
