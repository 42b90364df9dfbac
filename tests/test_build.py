"""The one cache key: computed by compress.run.build.step_key, never by a step."""

from __future__ import annotations

import dataclasses

from compress.artifacts import Artifact, Cache
from compress.recipe import load_recipe
from compress.run.build import build_variants
from compress.sources.data import make_splits
from compress.steps import STEPS


def test_a_steps_declared_cache_key_is_part_of_the_one_key(tmp_path, recipe_dict, write_recipe, tiny_module,
                                                           monkeypatch):
    """As the TensorRT engine is keyed by its GPU: same declaration -> cached, another -> rebuilt."""
    recipe_dict["variants"] = {"onnx-fp32": {"steps": [{"export": {"format": "onnx"}}]}}
    recipe = load_recipe(write_recipe(recipe_dict))
    splits = make_splits(recipe.data, tmp_path, recipe.seed)
    baseline = Artifact(kind="torch", digest="baseline", module=tiny_module, lineage=["baseline"])
    cache = Cache(tmp_path / "cache")
    gpu = {"name": "A"}
    spec = STEPS.get("export")
    monkeypatch.setitem(STEPS._items, "export", dataclasses.replace(spec, cache_key=lambda _cfg, _ctx: gpu["name"]))

    def build():
        return build_variants(recipe, baseline, splits, cache, tmp_path / "work", log=lambda _m: None)["onnx-fp32"]

    first, again = build(), build()
    gpu["name"] = "B"
    other = build()
    assert [b.steps[-1]["cached"] for b in (first, again, other)] == [False, True, False]
    assert first.artifact.digest == again.artifact.digest != other.artifact.digest
    assert first.artifact.digest and first.artifact.kind == "onnx"


def test_a_failing_cache_key_fails_that_variant_only(tmp_path, recipe_dict, write_recipe, tiny_module, monkeypatch):
    from compress.errors import StepError

    recipe = load_recipe(write_recipe(recipe_dict))
    splits = make_splits(recipe.data, tmp_path, recipe.seed)
    baseline = Artifact(kind="torch", digest="baseline", module=tiny_module, lineage=["baseline"])

    def no_gpu(_cfg, _ctx):
        raise StepError("no GPU to fingerprint")

    spec = STEPS.get("quantize")
    monkeypatch.setitem(STEPS._items, "quantize", dataclasses.replace(spec, cache_key=no_gpu))
    built = build_variants(recipe, baseline, splits, Cache(None), tmp_path / "work", log=lambda _m: None)
    assert built["onnx-fp32"].ok
    assert not built["int8"].ok and "step 0 (quantize): no GPU to fingerprint" in built["int8"].error


def test_every_step_fact_reaches_results_and_bookkeeping_does_not(recipe_dict, write_recipe):
    """No whitelist: fp16 error, opset, TensorRT precision (and any new fact) are in artifact.facts."""
    from compress.results.models import Facts
    from compress.run.build import Built
    from compress.run.pipeline import variant_entries

    recipe = load_recipe(write_recipe(recipe_dict))
    meta = {"opset": 17, "export_max_rel_error": 1e-7, "fp16_max_rel_error": 3e-3,
            "tensorrt": {"precision": "fp16"}, "a_new_fact": [1, 2],
            "consumed": ["calibration"], "step_seconds": 1.0, "step_machine": "m", "extra_files": ["x"]}
    built = {"onnx-fp32": Built("onnx-fp32", artifact=Artifact(kind="tensorrt", lineage=["b", "e"], meta=meta)),
             "int8": Built("int8", error="step 0 (quantize): boom")}
    entries = variant_entries(recipe, built)
    facts = entries["onnx-fp32"]["artifact"]["facts"]
    assert facts == {"opset": 17, "export_max_rel_error": 1e-7, "fp16_max_rel_error": 3e-3,
                     "tensorrt": {"precision": "fp16"}, "a_new_fact": [1, 2]}
    assert Facts.model_validate(facts).tensorrt["precision"] == "fp16"
    assert "artifact" not in entries["int8"] and entries["int8"]["status"] == "failed"
