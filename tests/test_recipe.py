"""The recipe promises: a valid recipe loads; every mistake fails at load time with its key path and
a message that says what is valid or what to do."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from compress.cli import app
from compress.errors import InputError, RecipeError
from compress.recipe import load_recipe, parse_recipe
from compress.runtimes import RUNTIMES
from compress.steps import STEPS

DEMO_RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "resnet.yaml"


def test_demo_recipe_validates():
    recipe = load_recipe(DEMO_RECIPE)
    assert {"onnx-fp32", "int8", "pruned", "pruned-int8"} <= set(recipe.variants)
    kinds = recipe.final_kinds()
    assert kinds["int8"] == "onnx" and kinds["pruned-int8"] == "onnx"
    assert recipe.variant_order().index("pruned") < recipe.variant_order().index("pruned-int8")


@pytest.mark.parametrize("path", sorted(DEMO_RECIPE.parent.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_recipe_validates(path):
    try:
        load_recipe(path)
    except RecipeError as err:
        # recipes/sst2.yaml reads the shared SST-2 files beside the checkout; without them the only
        # problems may be those files (tests/test_recipe_sst2.py checks the rest)
        missing = [p for p in err.problems if "shared/data/" in p and "does not exist" in p]
        if not missing or len(missing) != len(err.problems):
            raise
        pytest.skip(f"{path.name}: the shared data it reads is not beside this checkout")


def test_the_failing_gate_example_shares_the_quickstarts_model_and_data():
    """recipes/gate-fails.yaml reuses the quickstart's cached baseline and export only while
    these sections stay equal."""
    demo, fails = load_recipe(DEMO_RECIPE), load_recipe(DEMO_RECIPE.parent / "gate-fails.yaml")
    assert (fails.model, fails.baseline, fails.seed, fails.report) == (
        demo.model, demo.baseline, demo.seed, demo.report)
    assert fails.data.model_copy(update={"drift": None}) == demo.data.model_copy(update={"drift": None})
    assert fails.variants["onnx-fp32"].steps == demo.variants["onnx-fp32"].steps


def test_tiny_recipe_validates(recipe_dict):
    recipe = parse_recipe(recipe_dict)
    assert recipe.variants["int8"].from_ == "onnx-fp32"
    assert [name for name, _ in recipe.variants["int8"].step_list()] == ["quantize"]


def _set(path: str, value) -> Callable[[dict], None]:
    """A mutation that sets a dotted key path (list indices as numbers) of the recipe."""

    def mutate(recipe: dict) -> None:
        *parents, last = path.split(".")
        node = recipe
        for key in parents:
            node = node[int(key)] if key.isdigit() else node[key]
        node[int(last) if last.isdigit() else last] = value

    return mutate


def _variant(name: str, steps: list, **extra) -> Callable[[dict], None]:
    def mutate(recipe: dict) -> None:
        recipe["variants"][name] = {"steps": steps, **extra}

    return mutate


def _duplicate_target(recipe: dict) -> None:
    recipe["targets"].append(dict(recipe["targets"][0]))


def _no_split(*roles: str) -> Callable[[dict], None]:
    """The data has no split of these roles (their fractions are 0)."""

    def mutate(recipe: dict) -> None:
        for role in roles:
            recipe["data"]["split"][role] = 0

    return mutate


def _both(*mutations: Callable[[dict], None]) -> Callable[[dict], None]:
    def mutate(recipe: dict) -> None:
        for m in mutations:
            m(recipe)

    return mutate


def _add_target(**target) -> Callable[[dict], None]:
    def mutate(recipe: dict) -> None:
        recipe["targets"].append(target)

    return mutate


def _from_cycle(recipe: dict) -> None:
    recipe["variants"]["a"] = {"from": "b", "steps": []}
    recipe["variants"]["b"] = {"from": "a", "steps": []}


BAD_RECIPES = [
    pytest.param(_set("bogus", 1), r"bogus: unknown key", id="unknown-top-level-key"),
    pytest.param(
        _variant("int8", [{"export": {}}, {"quantize": {"mdoe": "static"}}]),
        re.escape("variants.int8.steps[1].quantize.mdoe: unknown key"),
        id="unknown-key-in-step",
    ),
    pytest.param(
        _variant("odd", [{"squeeze": {}}, {"export": {}}]),
        re.escape("variants.odd.steps[0]: each step is one key naming the step; valid steps: ")
        + re.escape(", ".join(STEPS.names())),
        id="unknown-step",
    ),
    pytest.param(
        _set("targets.0.runtime", "tflite"),
        re.escape("targets[0].runtime: unknown runtime 'tflite'; valid runtimes: ")
        + re.escape(", ".join(RUNTIMES.names())),
        id="unknown-runtime",
    ),
    pytest.param(
        _set("model.source", "tf:resnet18"),
        r"model.source: unknown model source scheme 'tf'; valid schemes: torchvision:NAME, python:",
        id="unknown-model-scheme",
    ),
    *[
        pytest.param(
            _variant("p", [{"prune": {"ratio": ratio}}, {"export": {}}]),
            re.escape(f"variants.p.steps[0].prune.ratio: ratio must be in (0, 1), got {ratio:.1f}"),
            id=f"prune-ratio-{ratio}",
        )
        for ratio in (0, 1, 1.5)
    ],
    pytest.param(
        _set("gate.max_accuracy_drop", "a lot"),
        r"gate.max_accuracy_drop: Input should be a valid number",
        id="gate-threshold-wrong-type",
    ),
    pytest.param(
        _set("gate.max_accuracy_drop", -1),
        r"gate.max_accuracy_drop: max_accuracy_drop is a tolerance in points and must be >= 0",
        id="gate-threshold-negative",
    ),
    pytest.param(
        _variant("q", [{"quantize": {}}, {"export": {}}]),
        r"variants.q.steps\[0\].quantize: needs an ONNX or an OpenVINO IR model, but the variant has a torch model "
        r"at this point; add `- export: \{format: onnx\}` before it",
        id="quantize-before-export",
    ),
    pytest.param(
        _variant("p", [{"export": {}}, {"prune": {}}]),
        r"variants.p.steps\[1\].prune: needs a torch model, but the variant has an ONNX model at "
        r"this point; move it before the export step",
        id="prune-after-export",
    ),
    pytest.param(
        _set("variants.int8.from", "nope"),
        r"variants.int8.from: unknown variant 'nope'; valid: onnx-fp32, int8",
        id="from-unknown-variant",
    ),
    pytest.param(_from_cycle, r"variants.a.from: `from` chain loops back", id="from-cycle"),
    pytest.param(
        _set("data.split.heldout", 0.5),
        r"data.split: split fractions add up to 1.2 > 1",
        id="split-fractions-over-1",
    ),
    pytest.param(
        _duplicate_target,
        r"targets: name 'cpu' is used twice; target names must be unique",
        id="duplicate-target-names",
    ),
    pytest.param(
        _set("gate.reference", "nope"),
        r"gate.reference: unknown variant 'nope'; valid: baseline, onnx-fp32, int8",
        id="gate-reference-unknown",
    ),
    pytest.param(
        _variant("torch-only", [{"prune": {}}]),
        r"variants.torch-only: ends with a torch model, which no target can run "
        r"\(targets: cpu=onnxruntime\)",
        id="no-target-runs-variant",
    ),
    pytest.param(
        _both(_add_target(name="torch", runtime="torch"), _set("gate.reference_target", "torch")),
        re.escape("gate.reference_target: torch (torch) cannot run the reference 'onnx-fp32', an ONNX "
                  "model, so no speed-up could be measured"),
        id="reference-target-cannot-run-the-reference",
    ),
    pytest.param(
        _both(_add_target(name="torch", runtime="torch"), _set("variants.int8.targets", ["torch"])),
        re.escape("variants.int8.targets: none of torch=torch runs an ONNX model, so the variant would "
                  "never be timed"),
        id="variant-targets-cannot-run-it",
    ),
    pytest.param(
        _both(_add_target(name="ov", runtime="openvino", device="cpu"),
              _variant("ac", [{"quantize": {"backend": "nncf", "nncf": {"accuracy_control": {"max_drop": 1.0}}}}],
                       **{"from": "onnx-fp32", "targets": ["ov"]})),
        re.escape("variants.ac.steps[0].quantize.nncf.accuracy_control: validates the quantized model on the "
                  "tuning split, and the data has none; set data.split.tuning"),
        id="nncf-accuracy-control-without-tuning",
    ),
    # the three recipes that passed validation and then failed at build time with a KeyError
    pytest.param(
        _both(_no_split("train"), _variant("p", [{"prune": {"importance": "taylor"}}, {"export": {}}])),
        re.escape("variants.p.steps[0].prune: importance taylor scores channels on the train split, "
                  "and the data has none; set data.split.train"),
        id="taylor-without-train",
    ),
    pytest.param(
        _both(_no_split("calibration"), _variant("half", [{"fp16": {}}], **{"from": "onnx-fp32"})),
        re.escape("variants.half.steps[0].fp16.verify: compares float16 with float32 (or set verify: "
                  "false) on the calibration split, and the data has none; set data.split.calibration"),
        id="fp16-without-calibration",
    ),
    pytest.param(
        _both(
            _no_split("calibration"), _add_target(name="gpu", runtime="tensorrt", device="cuda"),
            _variant("trt", [{"engine": {"precision": "int8-calibrate"}}], **{"from": "onnx-fp32"}),
        ),
        re.escape("variants.trt.steps[0].engine.precision: int8-calibrate calibrates on the calibration "
                  "split, and the data has none; set data.split.calibration"),
        id="engine-int8-calibrate-without-calibration",
    ),
    pytest.param(
        _no_split("calibration"),
        re.escape("variants.int8.steps[0].quantize: static quantization calibrates on the calibration "
                  "split, and the data has none; set data.split.calibration (e.g. 0.1)"),
        id="static-quantize-without-calibration",
    ),
    pytest.param(
        _both(_no_split("train"), _variant("ft", [{"finetune": {}}, {"export": {}}])),
        re.escape("variants.ft.steps[0].finetune: fine-tuning trains on the train split"),
        id="finetune-without-train",
    ),
    pytest.param(
        _no_split("train"),
        re.escape("baseline.train: training the baseline needs a train split"),
        id="baseline-train-without-train",
    ),
    pytest.param(
        _both(_no_split("train", "calibration"), _set("baseline.train", None)),
        re.escape("variants.onnx-fp32.steps[0].export: verify compares ONNX Runtime with torch on "
                  "calibration (or train) inputs, and the data has neither"),
        id="export-verify-without-data",
    ),
    pytest.param(
        _set("baseline.train", None),
        re.escape("model.checkpoint: the model has no checkpoint and baseline.train is not set"),
        id="no-checkpoint-no-training",
    ),
    pytest.param(
        _variant("p", [{"prune": {"latency_budget": {"target": "gpu", "max_fraction": 0.5}}}, {"export": {}}]),
        re.escape("variants.p.steps[0].prune.latency_budget.target: unknown target 'gpu'; valid: cpu"),
        id="latency-budget-unknown-target",
    ),
    # what `run` used to reject only after building
    pytest.param(
        _set("model.source", "torchvision:resnet1000"),
        r"model.source: no torchvision model 'resnet1000'; e\.g\. .*resnet18",
        id="unknown-torchvision-model",
    ),
    pytest.param(
        _add_target(name="ov", runtime="openvino", options={"hint": "FASTEST"}),
        re.escape("targets[1].options.hint: unknown hint 'FASTEST'; valid: LATENCY, THROUGHPUT"),
        id="unknown-openvino-hint",
    ),
    pytest.param(
        _add_target(name="ov", runtime="openvino", options={"streams": 0, "threads_per_stream": 2}),
        re.escape("targets[1].options: unknown option(s) ['threads_per_stream'] for runtime 'openvino'"),
        id="unknown-openvino-option",
    ),
    pytest.param(
        _add_target(name="gpu", runtime="onnxruntime", device="cpu", options={"execution_provider": "tensorrt"}),
        re.escape("targets[1].options: execution_provider 'tensorrt' runs on cuda, but the target's "
                  "device is cpu; set device: cuda"),
        id="execution-provider-on-the-wrong-device",
    ),
    pytest.param(
        _both(
            _set("data", {"sources": {"heldout": "npz:tiny.npz"}}), _set("baseline.train", None),
            _set("model.checkpoint", "w.pt"),
        ),
        re.escape("variants.int8.steps[0].quantize: static quantization calibrates on the calibration "
                  "split, and the data has none; set data.sources.calibration"),
        id="missing-role-with-sources",
    ),
]


@pytest.mark.parametrize(("mutate", "message"), BAD_RECIPES)
def test_bad_recipe_fails_with_key_path(recipe_dict, mutate, message):
    mutate(recipe_dict)
    with pytest.raises(RecipeError, match=message) as info:
        parse_recipe(recipe_dict)
    # the problems are also available one by one, for the CLI to list
    assert any(re.search(message, p) for p in info.value.problems)


KEYERROR_RECIPES = {  # each used to pass `compress validate` and fail at build time with a KeyError
    "taylor": (_both(_no_split("train"), _variant("p", [{"prune": {"importance": "taylor"}}, {"export": {}}])),
               "variants.p.steps[0].prune: importance taylor"),
    "fp16": (_both(_no_split("calibration"), _variant("half", [{"fp16": {}}], **{"from": "onnx-fp32"})),
             "variants.half.steps[0].fp16.verify:"),
    "engine": (_both(_no_split("calibration"), _add_target(name="gpu", runtime="tensorrt", device="cuda"),
                     _variant("trt", [{"engine": {"precision": "int8-calibrate"}}], **{"from": "onnx-fp32"})),
               "variants.trt.steps[0].engine.precision: int8-calibrate"),
}


@pytest.mark.parametrize("case", sorted(KEYERROR_RECIPES))
def test_validate_exits_2_naming_the_key_instead_of_a_build_time_keyerror(case, cli, write_recipe, recipe_dict):
    mutate, key = KEYERROR_RECIPES[case]
    mutate(recipe_dict)
    result = cli.invoke(app, ["validate", str(write_recipe(recipe_dict))])
    assert result.exit_code == 2, result.output
    assert key in " ".join(result.stderr.split())
    assert "KeyError" not in result.output and "Traceback" not in result.output


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (_set("data.source", "npz:nope.npz"), r"data.source: file '.*nope.npz' does not exist"),
        (_set("model.source", "python:nope.py:tiny_cnn"), r"model.source: python file '.*nope.py' does not exist"),
        (_set("model.checkpoint", "weights.pt"), r"model.checkpoint: checkpoint '.*weights.pt' does not exist"),
        (_set("model.source", "onnx:model.onnx"), r"model.source: ONNX file '.*model.onnx' does not exist"),
        (_set("data.sources", {"heldout": "imagefolder:photos"}), r"data.sources.heldout: folder '.*photos' does not exist"),
        (_set("model.source", "python:no_such_pkg_xyz.models:build"),
         r"model.source: no module 'no_such_pkg_xyz' on the Python path"),
    ],
    ids=["data-file", "model-file", "checkpoint", "onnx-file", "image-folder", "python-module"],
)
def test_validate_finds_missing_files_relative_to_the_recipe(cli, write_recipe, recipe_dict, mutate, message):
    mutate(recipe_dict)
    if "sources" in recipe_dict["data"]:
        del recipe_dict["data"]["source"]
    if recipe_dict["model"]["source"].startswith("onnx:"):
        del recipe_dict["baseline"]
    result = cli.invoke(app, ["validate", str(write_recipe(recipe_dict))])
    assert result.exit_code == 2, result.output
    assert re.search(message, " ".join(result.stderr.split()))
    if "module" not in message:
        assert "paths are relative to the recipe's folder" in " ".join(result.stderr.split())


def test_every_problem_is_reported_at_once(recipe_dict):
    _set("gate.reference", "nope")(recipe_dict)
    _duplicate_target(recipe_dict)
    with pytest.raises(RecipeError) as info:
        parse_recipe(recipe_dict)
    assert len(info.value.problems) == 2


def test_recipe_must_be_a_mapping():
    with pytest.raises(RecipeError, match="a recipe must be a YAML mapping of keys, got list"):
        parse_recipe(["not", "a", "mapping"])


def test_load_missing_recipe_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="does not exist; check the path"):
        load_recipe(tmp_path / "nope.yaml")


def test_yaml_syntax_error_names_the_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: tiny\nseed: 0\nmodel:\n  source: x\n   bad: indent\n")
    with pytest.raises(RecipeError, match=r"YAML syntax error at line 5, column 7"):
        load_recipe(path)


def test_schema_command_prints_the_recipe_schema(cli):
    result = cli.invoke(app, ["schema"])
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    assert "variants" in schema["properties"]
    assert set(schema["required"]) >= {"name", "model", "data", "variants", "targets"}
