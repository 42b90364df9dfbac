"""Accuracy-aware mixed precision on a model with one deliberately fragile layer, and the data
rules it depends on (tuning disjoint from calibration and held-out)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from compress.artifacts import Artifact
from compress.errors import RecipeError, StepError
from compress.steps.base import StepContext
from compress.steps.quantize import QuantizeConfig, apply

SHAPE = (4, 8, 8)  # the 4th channel is always 0: the fragile layer's weak spot


def _images(n: int) -> np.ndarray:
    """float32 images in [0, 1]: a random colour per image plus a little noise in channels 0-2;
    channel 3 is always 0."""
    rng = np.random.default_rng(0)
    x = 0.9 * rng.uniform(0, 1, size=(n, 4, 1, 1)) + 0.1 * rng.uniform(0, 1, size=(n, *SHAPE))
    x[:, 3] = 0
    return x.astype(np.float32)


def _fragile_cnn():
    """A colour classifier whose first conv is fragile in int8.

    conv1 (3x3, centre tap only) computes [r, g, b, 1-r, 1-g, 1-b]; conv2 passes them through;
    pool + linear picks the largest: 6 classes. conv1 also gives the always-zero input channel 3
    a weight of 1000: harmless in float (it multiplies zeros, and 0 is exact in the quantized
    input too), but its per-channel int8 scale becomes 1000/127, so the real weights (+-1) round
    to 0 and every image gets the same features. Every other layer quantizes almost exactly.
    """
    import torch
    from torch import nn

    model = nn.Sequential(
        nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(),
        nn.Conv2d(6, 6, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 6),
    ).eval()
    with torch.no_grad():
        for m in (model[0], model[2]):
            m.weight.zero_()
            m.bias.zero_()
        for c in range(3):
            model[0].weight[c, c, 1, 1] = 1
            model[0].weight[3 + c, c, 1, 1] = -1
            model[0].bias[3 + c] = 1
        for c in range(6):
            model[2].weight[c, c, 1, 1] = 1
        model[-1].weight.copy_(torch.eye(6))
        model[-1].bias.zero_()
        model[0].weight[:, 3] = 1000
    return model


@pytest.fixture
def fragile(tmp_path: Path):
    """(fp32 ONNX artifact, splits) where the labels are the float model's own predictions, so the
    float model scores 100% and every point lost is lost to quantization."""
    import torch

    from compress.recipe import DataConfig
    from compress.sources.data import make_splits
    from compress.steps.export import export_onnx

    model = _fragile_cnn()
    images = (_images(3000) * 255).round().astype(np.uint8)
    with torch.no_grad():
        logits = model(torch.from_numpy(images.astype(np.float32) / 255)).numpy()
    # keep images with a clear winner, so int8 rounding alone never flips them
    top2 = np.sort(logits, axis=1)[:, -2:]
    keep = np.flatnonzero(top2[:, 1] - top2[:, 0] > 0.05)[:600]
    images, labels = images[keep], logits[keep].argmax(1)
    assert len(keep) == 600 and np.bincount(labels).max() < 200
    np.savez(tmp_path / "fragile.npz", images=images, labels=labels)
    path = tmp_path / "fragile.onnx"
    export_onnx(model, SHAPE, path, opset=17, dynamic_batch=True)
    cfg = DataConfig(source="npz:fragile.npz",
                     split={"train": 0.1, "calibration": 0.2, "tuning": 0.4, "heldout": 0.3})
    return Artifact(kind="onnx", digest="fragile", path=path), make_splits(cfg, tmp_path, seed=0)


def _ctx(tmp_path, splits, name="work"):
    workdir = tmp_path / name
    workdir.mkdir()
    return StepContext(splits=splits, model_spec=None, input_shape=SHAPE, seed=0, workdir=workdir,
                       log=lambda _m: None)


def _heldout_top1(art, splits) -> float:
    from compress.quantization.ort import OrtRunner

    held = splits["heldout"]
    return float((OrtRunner(art.path).logits(held.inputs()).argmax(1) == held.labels).mean() * 100)


def test_mixed_precision_keeps_only_the_fragile_layer_in_float(tmp_path, fragile):
    art, splits = fragile
    plain = apply(art, QuantizeConfig(), _ctx(tmp_path, splits, "plain"))
    assert _heldout_top1(plain, splits) < 70  # the fragile layer breaks all-int8

    ctx = _ctx(tmp_path, splits, "mixed")
    cfg = QuantizeConfig(mixed_precision={"max_drop_points": 2.0, "max_float_layers": 3,
                                          "latency_batch_size": 4})
    out = apply(art, cfg, ctx)
    mp = out.meta["quantization"]["mixed_precision"]
    assert mp["reached"] is True
    assert mp["float_layers"] == ["/0/Conv"]  # the fragile conv, and nothing else
    assert mp["sensitivity"][0]["node"] == "/0/Conv"
    # stops at the tolerance: all-int8, then one layer in float, and no further
    assert [t["float_layers"] for t in mp["tried"]] == [0, 1]
    assert mp["tuning_top1_float"] - mp["tuning_top1_mixed"] <= 2.0
    assert mp["latency"]["batch_size"] == 4 and mp["latency"]["cost_ratio"] > 0
    cov = out.meta["int8_coverage"]
    assert cov["int8"]["Conv"] == 1 and cov["total"]["Conv"] == 2
    assert _heldout_top1(out, splits) >= 95  # confirmed on held-out, which the search never saw
    assert ctx.consumed == {"calibration", "tuning"}
    assert "1 layers float" in out.lineage[-1]


def test_search_stops_at_max_float_layers_when_the_tolerance_is_not_reached(tmp_path, fragile):
    from compress.quantization.mixed import search
    from compress.quantization.ort import compute_nodes

    art, splits = fragile
    broken = apply(art, QuantizeConfig(), _ctx(tmp_path, splits)).path
    tuning = splits["tuning"]
    # a quantizer that ignores the layers it is asked to keep in float can never recover
    path, result = search(art.path, lambda _excluded: broken, compute_nodes(art.path),
                          tuning.inputs(), tuning.labels, tolerance_points=1.0, max_float_layers=2,
                          log=lambda _m: None)
    assert result.reached is False
    assert [t["float_layers"] for t in result.tried] == [0, 1, 2]
    assert result.float_layers == []  # nothing helped, so nothing is kept in float
    assert path == broken
    assert result.tuning_top1_float - result.tuning_top1_mixed > 1.0


def test_mixed_precision_without_tuning_split_is_a_clear_error(tmp_path, fragile):
    from compress.recipe import DataConfig
    from compress.sources.data import make_splits

    art, _ = fragile
    splits = make_splits(DataConfig(source="npz:fragile.npz",
                                    split={"train": 0.5, "calibration": 0.2, "heldout": 0.3}),
                         tmp_path, seed=0)
    with pytest.raises(StepError, match="needs a tuning split.*data.split.tuning"):
        apply(art, QuantizeConfig(mixed_precision={}), _ctx(tmp_path, splits))


def test_tuning_that_overlaps_calibration_is_refused(tmp_path, fragile):
    from compress.recipe import DataConfig
    from compress.sources.data import make_splits

    art, _ = fragile
    cfg = DataConfig(sources={"calibration": "npz:fragile.npz", "tuning": "npz:fragile.npz",
                              "heldout": "npz:fragile.npz"})
    splits = make_splits(cfg, tmp_path, seed=0)
    with pytest.raises(StepError, match="shares 600 images with the calibration split"):
        apply(art, QuantizeConfig(mixed_precision={}), _ctx(tmp_path, splits))


def test_splits_are_disjoint_and_heldout_is_never_given_to_a_step(tmp_path, tiny_npz):
    from compress.recipe import DataConfig
    from compress.sources.data import make_splits

    cfg = DataConfig(source=f"npz:{tiny_npz}",
                     split={"train": 0.4, "calibration": 0.2, "tuning": 0.2, "heldout": 0.2})
    splits = make_splits(cfg, tmp_path, seed=3)
    # compare by index identity of the underlying samples: the tiny images are all distinct
    hashes = {role: set(s.sample_hashes()) for role, s in splits.items()}
    assert len(set().union(*hashes.values())) == sum(len(s) for s in splits.values())
    for a in ("calibration", "tuning"):
        assert not hashes[a] & hashes["heldout"]
    assert not hashes["calibration"] & hashes["tuning"]
    ctx = _ctx(tmp_path, splits)
    with pytest.raises(ValueError, match="never .heldout."):
        ctx.data("heldout")


def test_recipe_with_mixed_precision_needs_a_tuning_split(recipe_dict):
    from compress.recipe import parse_recipe

    recipe_dict["variants"]["int8"]["steps"] = [{"quantize": {"mixed_precision": {}}}]
    with pytest.raises(RecipeError, match=r"variants.int8.steps\[0\].quantize.mixed_precision: .* on the tuning split, and "
                       r"the data has none; set data.split.tuning"):
        parse_recipe(recipe_dict)
    recipe_dict["data"]["split"] = {"train": 0.5, "calibration": 0.1, "tuning": 0.1, "heldout": 0.3}
    parse_recipe(recipe_dict)


# --------------------------------------------------------------------------- what the report says

MIXED = {"float_layers": ["/0/Conv"], "tolerance_points": 0.5, "reached": True, "tuning_n": 240,
         "tuning_top1_float": 100.0, "tuning_top1_all_int8": 19.17, "tuning_top1_mixed": 100.0,
         "latency": {"batch_size": 32, "all_int8_p50_ms": 2.0, "mixed_p50_ms": 2.5, "cost_ratio": 1.25}}


def _variant(quantization: dict, fraction: float, speedup: float = 1.2) -> dict:
    return {"artifact": {"lineage": ["x"], "facts": {
                "quantization": quantization,
                "int8_coverage": {"compute_fraction": fraction, "summary": "Conv 9/19"}}},
            "speedup": {"cpu": {"32": {"estimate": speedup}}}}


def test_report_names_the_float_layers_and_their_latency_cost():
    from compress.report.markdown import variant_details

    text = variant_details("int8-mixed", _variant({"mixed_precision": MIXED}, 0.95), "baseline")
    assert "Mixed precision: 1 layer(s) kept in float (`/0/Conv`)" in text
    assert "all-int8 19.17%, mixed 100.00% (n=240)" in text
    assert "at batch 32 on the build machine: 1.25x the all-int8 model (2.50 vs 2.00 ms)" in text
    assert "NOT reached" not in text
    missed = variant_details("m", _variant({"mixed_precision": dict(MIXED, reached=False)}, 0.95), "b")
    assert "the tolerance of 0.5 points was NOT reached" in missed


def test_low_coverage_warning_gives_the_likely_cause():
    from compress.report.markdown import warnings_for

    s8 = warnings_for("int8", _variant({"activations": "int8", "target": "x86-vnni"}, 0.47, 0.8), "b")
    assert any("only 47% of the compute ops run in int8 (Conv 9/19)" in w
               and "activation_type: uint8 (the x86 default)" in w for w in s8)
    assert any("slower than b on cpu at batch 32: most compute ops do not run in int8" in w for w in s8)
    dyn = warnings_for("dyn", _variant({"mode": "dynamic"}, 0.1), "b")
    assert any("convolutional models need mode: static" in w for w in dyn)
    full = warnings_for("ok", _variant({"activations": "uint8", "target": "x86-vnni"}, 1.0, 0.9), "b")
    assert not any("compute ops run in int8" in w for w in full)
    assert any("dominated by quantize/dequantize" in w for w in full)


@pytest.mark.slow  # a whole recipe run: trains the tiny baseline, builds, evaluates, profiles
def test_a_recipe_run_reports_mixed_precision_and_coverage(tmp_path, recipe_dict, write_recipe):
    """End to end: the step's facts reach results.json and report.md."""
    import json

    from compress.recipe import load_recipe
    from compress.run.pipeline import run_recipe

    recipe_dict["data"]["split"] = {"train": 0.5, "calibration": 0.1, "tuning": 0.1, "heldout": 0.3}
    recipe_dict["variants"]["int8"]["steps"] = [{"quantize": {"mixed_precision": {
        "max_drop_points": 100.0, "latency_batch_size": 2}}}]
    path = write_recipe(recipe_dict)
    outcome = run_recipe(load_recipe(path), path, out_dir=tmp_path / "runs", log=lambda _m: None)
    art = json.loads((outcome.run_dir / "results.json").read_text())["variants"]["int8"]["artifact"]["facts"]
    q = art["quantization"]
    assert q["target"] in {"x86-vnni", "x86", "arm"} and q["mixed_precision"]["reached"] is True
    assert art["int8_coverage"]["summary"].startswith("Conv 2/2")
    report = (outcome.run_dir / "report.md").read_text()
    assert "Mixed precision: no layer kept in float" in report
    assert "int8 coverage: Conv 2/2" in report
