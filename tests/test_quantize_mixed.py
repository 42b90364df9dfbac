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

SHAPE = (3, 8, 8)


def _images(n: int = 600) -> tuple[np.ndarray, np.ndarray]:
    """float32 images in [0, 1]: a random template per class plus noise."""
    rng = np.random.default_rng(0)
    templates = rng.uniform(0, 1, size=(10, *SHAPE))
    labels = np.arange(n) % 10
    x = 0.7 * templates[labels] + 0.3 * rng.uniform(0, 1, size=(n, *SHAPE))
    return x.astype(np.float32), labels.astype(np.int64)


def _fragile_cnn():
    """conv1 -> relu -> conv2 -> relu -> pool -> linear, where conv2 is fragile under int8.

    conv1's channel 7 is always 0 after its ReLU (zero weights, bias -10). conv2 gives that dead
    input a weight of 1000 in every output channel: harmless in float (it multiplies zeros), but
    the per-channel int8 scale becomes 1000/127, so every real weight of conv2 rounds to 0.
    """
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    )
    with torch.no_grad():  # a dead ReLU gets no gradient: channel 7 stays 0 through training
        model[0].weight[7] = 0
        model[0].bias[7] = -10
    # a little training on class-template images, so its predictions spread over the classes
    x, y = _images()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(60):
        opt.zero_grad()
        nn.functional.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y)).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        model[2].weight[:, 7] = 1000
    return model.eval()


@pytest.fixture
def fragile(tmp_path: Path):
    """(fp32 ONNX artifact, splits) where the labels are the float model's own predictions, so the
    float model scores 100% and every point lost is lost to quantization."""
    import torch

    from compress.recipe import DataConfig
    from compress.sources.data import make_splits
    from compress.steps.export import export_onnx

    model = _fragile_cnn()
    images = (_images()[0] * 255).round().astype(np.uint8)
    with torch.no_grad():
        labels = model(torch.from_numpy(images.astype(np.float32) / 255)).argmax(1).numpy()
    assert np.bincount(labels, minlength=10).max() < 200  # predictions spread over the classes
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
    assert mp["float_layers"] == ["/2/Conv"]  # the fragile conv, and nothing else
    assert mp["sensitivity"][0]["node"] == "/2/Conv"
    # stops at the tolerance: all-int8, then one layer in float, and no further
    assert [t["float_layers"] for t in mp["tried"]] == [0, 1]
    assert mp["tuning_top1_float"] - mp["tuning_top1_mixed"] <= 2.0
    assert mp["latency"]["batch_size"] == 4 and mp["latency"]["cost_ratio"] > 0
    cov = out.meta["int8_coverage"]
    assert cov["int8"]["Conv"] == 2 and cov["total"]["Conv"] == 3
    assert _heldout_top1(out, splits) >= 95  # confirmed on held-out, which the search never saw
    assert ctx.consumed == {"calibration", "tuning"}
    assert "1 layers float" in out.lineage[-1]


def test_mixed_precision_reports_when_the_tolerance_is_not_reached(tmp_path, fragile):
    art, splits = fragile
    ctx = _ctx(tmp_path, splits)
    # a negative drop cannot be reached: the search stops at max_float_layers and says so
    cfg = QuantizeConfig(mixed_precision={"max_drop_points": 0.0, "max_float_layers": 2,
                                          "latency_batch_size": 2})
    out = apply(art, cfg, ctx)
    mp = out.meta["quantization"]["mixed_precision"]
    if mp["reached"]:  # float and mixed agree on every tuning image: nothing to report
        assert mp["tuning_top1_mixed"] == mp["tuning_top1_float"]
    else:
        assert len(mp["tried"]) == 3
        assert any("did not reach the tolerance" in n for n in ctx.notes)


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
    with pytest.raises(ValueError, match="never see the held-out split"):
        ctx.data("heldout")


def test_recipe_with_mixed_precision_needs_a_tuning_split(recipe_dict):
    from compress.recipe import parse_recipe

    recipe_dict["variants"]["int8"]["steps"] = [{"quantize": {"mixed_precision": {}}}]
    with pytest.raises(RecipeError, match=r"variants.int8.steps\[0\].quantize.mixed_precision: needs a tuning"):
        parse_recipe(recipe_dict)
    recipe_dict["data"]["split"] = {"train": 0.5, "calibration": 0.1, "tuning": 0.1, "heldout": 0.3}
    parse_recipe(recipe_dict)
