"""results.json has a versioned JSON Schema (docs/results.schema.json) that every run's output meets."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from compress.errors import InputError
from compress.results.schema import (
    SCHEMA_VERSION,
    load_results,
    resolve_results_path,
    results_json_schema,
    validate_results,
)

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).parent / "golden" / "results.json"


@pytest.fixture
def golden() -> dict:
    return json.loads(GOLDEN.read_text())


def test_docs_schema_is_current():
    doc = json.loads((ROOT / "docs" / "results.schema.json").read_text())
    assert doc == results_json_schema(), (
        "docs/results.schema.json is stale: run python -m compress.results.schema > docs/results.schema.json"
    )


def test_schema_is_a_valid_draft_2020_12_schema():
    import jsonschema

    jsonschema.Draft202012Validator.check_schema(results_json_schema())


@pytest.mark.slow
def test_a_real_run_writes_results_that_meet_the_schema(write_recipe, recipe_dict, cli, tmp_path):
    """Every run validates its results before writing them (compress.run.pipeline._write), so every
    end-to-end test checks the schema too; this one reads a run's file back as another tool would."""
    from compress.cli import app

    recipe = write_recipe(recipe_dict)
    res = cli.invoke(app, ["run", str(recipe), "--out", str(tmp_path / "runs"), "-q"])
    assert res.exit_code == 0, res.output
    results, file = load_results(tmp_path / "runs")  # the report dir resolves to its newest run
    assert file.parent.parent == tmp_path / "runs"
    assert results["schema_version"] == SCHEMA_VERSION
    validate_results(results)
    # the plot the report embeds is beside it
    report = (file.parent / "report.md").read_text()
    assert "](pareto-cpu.png)" in report
    assert (file.parent / "pareto-cpu.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("name", ["results.json", "results_regressed.json"])
def test_golden_results_meet_the_schema_and_its_json_schema(name):
    """The typed models and the JSON Schema they generate (what other tools read) agree."""
    import jsonschema

    data = json.loads((GOLDEN.parent / name).read_text())
    validate_results(data)
    jsonschema.Draft202012Validator(results_json_schema()).validate(data)


def test_results_are_typed(golden):
    """The Python API's results: attributes with types, the unknown fields kept."""
    from compress.results.models import Results

    golden["variants"]["int8"]["a_future_measurement"] = 1
    res = Results.model_validate(golden)
    int8 = res.variants["int8"]
    assert int8.accuracy.heldout.top1 == pytest.approx(golden["variants"]["int8"]["accuracy"]["heldout"]["top1"])
    assert int8.latency["cpu"]["1"].p50_ms > 0 and int8.speedup["cpu"]["8"].estimate > 1
    assert int8.artifact.facts.int8_coverage["summary"] == "Conv 2/2" and int8.from_ == "onnx-fp32"
    assert res.verdict.exit_code == 3 and res.variants["broken"].status == "failed"
    assert int8.model_extra == {"a_future_measurement": 1}
    assert res.model_dump(mode="json", by_alias=True, exclude_unset=True) == golden


@pytest.mark.parametrize("path, message", [
    (("verdict",), r"\(top level\): 'verdict' is a required property"),
    (("variants", "int8", "gate"), r"variants\.int8: 'gate' is a required property"),
    (("baseline", "accuracy", "heldout", "top1"), r"baseline\.accuracy\.heldout: 'top1' is a required property"),
    (("variants", "broken", "error"), r"variants\.broken: a failed variant says why: 'error' is required"),
    (("variants", "int8", "artifact"), r"variants\.int8: a variant with status ok carries its artifact"),
])
def test_a_missing_required_field_is_rejected_by_name(golden, path, message):
    broken = copy.deepcopy(golden)
    node = broken
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    with pytest.raises(InputError, match=message):
        validate_results(broken)


@pytest.mark.parametrize("path, value, message", [
    (("variants", "int8", "accuracy", "heldout", "top1"), "88%", r"variants\.int8\.accuracy\.heldout\.top1: Input should be a valid number \(got '88%'\)"),
    (("variants", "int8", "latency", "cpu", "1", "p50_ms"), None, r"variants\.int8\.latency\.cpu\.1\.p50_ms: Input should be a valid number \(got None\)"),
    (("variants", "int8", "gate", "verdict"), "maybe", r"variants\.int8\.gate\.verdict: Input should be 'pass', .* \(got 'maybe'\)"),
    (("variants", "int8", "latency", "cpu", "1", "batch_size"), "1", r"variants\.int8\.latency\.cpu\.1\.batch_size: Input should be a valid integer \(got '1'\)"),
])
def test_a_mistyped_field_is_rejected_by_name(golden, path, value, message):
    broken = copy.deepcopy(golden)
    node = broken
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(InputError, match=message):
        validate_results(broken)


def test_another_schema_version_is_refused_with_the_fix(golden):
    golden["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(InputError, match=rf"schema_version {SCHEMA_VERSION + 1}.*reads version {SCHEMA_VERSION}"):
        validate_results(golden)


def test_unknown_fields_are_allowed(golden):
    golden["variants"]["int8"]["a_future_measurement"] = {"anything": 1}
    golden["a_future_section"] = []
    validate_results(golden)


def test_resolving_results_paths(tmp_path, golden):
    root = tmp_path / "runs"
    for stamp in ("20261126-100000", "20261126-120000"):
        (root / stamp).mkdir(parents=True)
        (root / stamp / "results.json").write_text(json.dumps(golden))
    (root / ".20261126-130000.partial").mkdir()  # an unfinished run is never picked
    newest = root / "20261126-120000" / "results.json"
    assert resolve_results_path(root) == newest
    assert resolve_results_path(newest.parent) == newest
    assert resolve_results_path(newest) == newest
    with pytest.raises(InputError, match="does not exist"):
        resolve_results_path(tmp_path / "nope")
    with pytest.raises(InputError, match="holds no results.json"):
        resolve_results_path(root / ".20261126-130000.partial")


def test_load_results_rejects_bad_json(tmp_path):
    bad = tmp_path / "results.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="is not valid JSON"):
        load_results(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(InputError, match="holds a JSON list"):
        load_results(bad)


def test_a_run_refuses_to_write_results_that_break_the_schema(tmp_path, golden):
    """compress.run.pipeline validates before writing, so no run can leave an invalid results.json."""
    from compress.errors import CompressError
    from compress.run.pipeline import _write

    class _Recipe:  # what _write needs of a Recipe: its resolved dump
        def model_dump_json(self, by_alias=True):
            return json.dumps(golden["recipe"])

    del golden["verdict"]
    with pytest.raises(CompressError, match=r"'verdict' is a required property[\s\S]*please report this") as info:
        _write(tmp_path, _Recipe(), golden)
    assert info.value.exit_code == 3
    assert not (tmp_path / "results.json").exists() and not (tmp_path / "report.md").exists()
