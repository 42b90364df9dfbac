"""Model and data sources: what loads, in what shape, and what a bad input says."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from compress.artifacts import Cache
from compress.errors import InputError
from compress.recipe import DataConfig, TransformConfig, parse_recipe
from compress.run.build import build_baseline
from compress.sources.data import load_source, make_splits, stratified_fractions
from compress.sources.models import (
    ModelSpec,
    load_state_dict_checked,
    onnx_path,
    read_state_dict,
)

# --------------------------------------------------------------------------- data


def test_sklearn_digits_loads_offline():
    ds = load_source("sklearn:digits", Path("."))
    images = ds.read()
    assert images.shape == (1797, 1, 8, 8)
    assert images.dtype == np.float32
    assert images.min() >= 0.0 and images.max() <= 1.0
    assert ds.classes == [str(i) for i in range(10)]
    assert sorted(np.unique(ds.labels)) == list(range(10))


def test_transform_resizes_and_converts_channels():
    ds = load_source("sklearn:digits", Path("."), TransformConfig(resize=16, channels=3))
    images = ds.read()
    assert images.shape == (1797, 3, 16, 16)
    # gray -> RGB repeats the channel
    np.testing.assert_array_equal(images[:, 0], images[:, 2])


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_npz_uint8_layouts(tmp_path, layout):
    rng = np.random.default_rng(0)
    nchw = rng.integers(0, 256, size=(12, 3, 5, 7), dtype=np.uint8)
    images = nchw.transpose(0, 2, 3, 1) if layout == "NHWC" else nchw
    np.savez(tmp_path / "d.npz", images=images, labels=np.arange(12) % 3)
    ds = load_source("npz:d.npz", tmp_path)
    assert ds.sample_shape == (3, 5, 7)
    np.testing.assert_allclose(ds.read(), nchw / 255.0, atol=1e-7)
    assert ds.labels.dtype == np.int64
    assert ds.classes == ["0", "1", "2"]


def test_npz_without_labels_says_what_it_needs(tmp_path):
    np.savez(tmp_path / "d.npz", images=np.zeros((4, 8, 8), np.uint8))
    with pytest.raises(InputError, match=r"needs arrays 'images' and 'labels'; found \['images'\]"):
        load_source("npz:d.npz", tmp_path)


def test_npz_missing_file_names_the_path(tmp_path):
    with pytest.raises(InputError, match=r"nope\.npz' does not exist"):
        load_source("npz:nope.npz", tmp_path)


def test_imagefolder_without_images_names_the_folder(empty_image_folder):
    with pytest.raises(InputError, match=f"imagefolder {empty_image_folder} contains no images"):
        load_source(f"imagefolder:{empty_image_folder}", Path("."))


def test_imagefolder_classes_in_sorted_order(image_folder):
    ds = load_source(f"imagefolder:{image_folder.name}", image_folder.parent)
    assert ds.classes == ["ant", "moose", "zebra"]
    assert len(ds) == 9 and ds.sample_shape == (3, 8, 8)  # notes.txt is not an image
    assert Counter(ds.labels.tolist()) == {0: 3, 1: 3, 2: 3}
    # the first class's images are the ones in ant/
    from PIL import Image

    first = np.asarray(Image.open(image_folder / "ant" / "0.png"), dtype=np.float32) / 255.0
    np.testing.assert_allclose(ds.read([0])[0], first.transpose(2, 0, 1), atol=1e-6)


def test_imagefolder_resize_happens_when_read(image_folder):
    ds = load_source(f"imagefolder:{image_folder}", Path("."), TransformConfig(resize=4))
    assert ds.read().shape == (9, 3, 4, 4)


SPLIT = {"train": 0.6, "calibration": 0.1, "heldout": 0.3}


def _digits_splits(seed: int):
    return make_splits(DataConfig(source="sklearn:digits", split=SPLIT), Path("."), seed)


def test_splits_are_disjoint_by_index():
    labels = load_source("sklearn:digits", Path(".")).labels
    parts = stratified_fractions(labels, {"heldout": 0.3, "calibration": 0.1, "train": 0.6}, seed=0)
    seen = np.concatenate(list(parts.values()))
    assert len(seen) == len(np.unique(seen)) == len(labels)


def test_splits_are_disjoint_by_content_and_seeded():
    splits = _digits_splits(seed=0)
    hashes = {role: set(s.sample_hashes()) for role, s in splits.items()}
    assert set(hashes) == {"train", "calibration", "heldout"}
    assert not hashes["heldout"] & hashes["train"]
    assert not hashes["heldout"] & hashes["calibration"]
    assert not hashes["train"] & hashes["calibration"]
    assert sum(len(s) for s in splits.values()) == 1797

    again = _digits_splits(seed=0)
    assert all(again[r].fingerprint() == splits[r].fingerprint() for r in splits)
    other = _digits_splits(seed=1)
    assert other["heldout"].fingerprint() != splits["heldout"].fingerprint()


def test_splits_keep_class_proportions():
    labels = np.repeat([0, 1, 2], [100, 50, 10])
    parts = stratified_fractions(labels, {"heldout": 0.3, "calibration": 0.1, "train": 0.6}, seed=0)
    assert Counter(labels[parts["heldout"]].tolist()) == {0: 30, 1: 15, 2: 3}
    assert Counter(labels[parts["calibration"]].tolist()) == {0: 10, 1: 5, 2: 1}
    assert Counter(labels[parts["train"]].tolist()) == {0: 60, 1: 30, 2: 6}


def test_changing_the_train_fraction_never_moves_heldout():
    a = make_splits(DataConfig(source="sklearn:digits", split=SPLIT), Path("."), 0)
    smaller = {"train": 0.3, "calibration": 0.1, "heldout": 0.3}
    b = make_splits(DataConfig(source="sklearn:digits", split=smaller), Path("."), 0)
    assert a["heldout"].fingerprint() == b["heldout"].fingerprint()


# --------------------------------------------------------------------------- models


def test_python_file_factory_builds_the_module(tiny_model_file):
    spec = ModelSpec(
        f"python:{tiny_model_file.name}:tiny_cnn", {"num_classes": 5}, tiny_model_file.parent
    )
    module = spec.build()
    assert isinstance(module, torch.nn.Module)
    assert module(torch.zeros(2, 3, 8, 8)).shape == (2, 5)


def test_python_factory_must_return_a_module(tiny_model_file):
    spec = ModelSpec(f"python:{tiny_model_file}:not_a_module", {}, Path("."))
    with pytest.raises(InputError, match="returned str, not a torch.nn.Module"):
        spec.build()


def test_python_factory_that_does_not_exist_lists_callables(tiny_model_file):
    spec = ModelSpec(f"python:{tiny_model_file}:resnet", {}, Path("."))
    with pytest.raises(InputError, match=r"has no 'resnet'; callables there: .*tiny_cnn"):
        spec.build()


def test_unknown_torchvision_model_lists_names():
    with pytest.raises(
        InputError, match=r"torchvision:nonexistent: no such torchvision model; e\.g\. .*resnet18"
    ):
        ModelSpec("torchvision:nonexistent").build()


def test_missing_checkpoint_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match=r"nope\.pt' does not exist; check model\.checkpoint"):
        read_state_dict(tmp_path / "nope.pt")


def test_checkpoint_that_does_not_fit_names_the_keys(tiny_module, tmp_path):
    sd = tiny_module.state_dict()
    sd["head.weight"] = sd.pop("8.weight")
    torch.save(sd, tmp_path / "ck.pt")
    with pytest.raises(
        InputError, match=r"does not fit the model: missing: 8\.weight; unexpected: head\.weight"
    ):
        load_state_dict_checked(tiny_module, read_state_dict(tmp_path / "ck.pt"), "ck.pt")


def test_checkpoint_with_wrong_shapes_names_them(tiny_model_file, tiny_module, tmp_path):
    other = ModelSpec(f"python:{tiny_model_file}:tiny_cnn", {"num_classes": 4}, Path(".")).build()
    torch.save(other.state_dict(), tmp_path / "ck.pt")
    with pytest.raises(InputError, match=r"wrong shape: 8\.weight \(4, 16\) vs model \(10, 16\)"):
        load_state_dict_checked(tiny_module, read_state_dict(tmp_path / "ck.pt"), "ck.pt")


def test_pickled_module_is_refused_with_the_fix(tiny_module, tmp_path):
    torch.save(tiny_module, tmp_path / "module.pt")
    with pytest.raises(
        InputError, match=r"weights_only=True.*Save a state_dict \(model\.state_dict\(\)\)"
    ):
        read_state_dict(tmp_path / "module.pt")


def test_onnx_source_that_is_not_onnx(tmp_path):
    (tmp_path / "model.onnx").write_text("this is not a protobuf\n")
    with pytest.raises(InputError, match="is not a valid ONNX model"):
        onnx_path("onnx:model.onnx", tmp_path)


def _baseline_from_checkpoint(recipe_dict, tmp_path, checkpoint):
    recipe_dict["model"]["checkpoint"] = checkpoint
    recipe_dict.pop("baseline", None)
    recipe = parse_recipe(recipe_dict)
    splits = make_splits(recipe.data, tmp_path, recipe.seed)
    return build_baseline(recipe, tmp_path, splits, Cache(None), log=lambda _msg: None)


def test_prefixed_checkpoint_hints_and_loads_with_strip_prefix(
    recipe_dict, tiny_module, tiny_npz, tmp_path
):
    torch.save({f"module.{k}": v for k, v in tiny_module.state_dict().items()}, tmp_path / "ddp.pt")

    with pytest.raises(InputError, match=r"set model\.checkpoint\.strip_prefix: 'module\.'"):
        _baseline_from_checkpoint(recipe_dict, tmp_path, "ddp.pt")

    art, info = _baseline_from_checkpoint(
        recipe_dict, tmp_path, {"path": "ddp.pt", "strip_prefix": "module."}
    )
    assert info["trained"] is False
    x = torch.rand(3, 3, 8, 8)
    with torch.inference_mode():
        torch.testing.assert_close(art.module(x), tiny_module(x))
