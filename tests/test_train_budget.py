"""What keeps a training-heavy recipe inside a time budget: torch threads for training and
fine-tuning, fine-tuning on a subset of train, and the overfitting gap on a subset of each fit split."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from torch import nn

from compress.recipe.schema import EvaluateConfig, TrainConfig
from compress.run.evaluate import fit_subsets
from compress.sources.data import Split, Splits
from compress.steps.base import StepContext
from compress.steps.finetune import FinetuneConfig, run_finetune
from compress.training import torch_threads
from tests.conftest import NUM_CLASSES, learnable_images


def _split(role: str, n: int, seed: int = 0) -> Split:
    images, labels = learnable_images(n, seed)
    mean = np.full((1, 3, 1, 1), 0.5, np.float32)
    std = np.full((1, 3, 1, 1), 0.25, np.float32)
    return Split.from_arrays(role, images.astype(np.float32) / 255.0, labels, mean, std, f"{role}-data")


def _splits(**sizes: int) -> Splits:
    splits = Splits()
    for i, (role, n) in enumerate(sizes.items()):
        splits[role] = _split(role, n, seed=i)
    splits.classes = [str(c) for c in range(NUM_CLASSES)]
    return splits


def test_torch_threads_sets_the_count_inside_and_restores_it():
    before = torch.get_num_threads()
    with torch_threads(1) as n:
        assert n == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), torch_threads(1):  # restored after a failure too
        raise RuntimeError("training failed")
    assert torch.get_num_threads() == before
    with torch_threads(None) as n:  # None leaves torch's setting alone
        assert n == before == torch.get_num_threads()


@pytest.mark.parametrize(("config", "key"), [
    (lambda: TrainConfig(threads=0), "threads"),
    (lambda: FinetuneConfig(threads=0), "threads"),
    (lambda: FinetuneConfig(samples=1), "samples"),
    (lambda: EvaluateConfig(fit_samples=0), "fit_samples"),
])
def test_budget_options_refuse_nonsense(config, key):
    with pytest.raises(ValidationError, match=key):
        config()


def test_finetune_on_a_stratified_subset_of_train_with_one_thread(tmp_path):
    splits = _splits(train=200, heldout=20)
    ctx = StepContext(splits=splits, model_spec=None, input_shape=(3, 8, 8), seed=0, workdir=tmp_path)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, NUM_CLASSES))
    seen: list[int] = []
    model.register_forward_hook(lambda _m, inputs, _out: seen.append(len(inputs[0])))
    before = torch.get_num_threads()
    cfg = FinetuneConfig(epochs=1, lr=0.01, batch_size=25, samples=100, threads=1)
    history = run_finetune(model, cfg, ctx)
    assert history["samples"] == 100 and history["train_split_n"] == 200 and history["threads"] == 1
    assert sum(seen) == 100  # one epoch over the subset only
    assert torch.get_num_threads() == before
    # the subset keeps train's class proportions and is the same for the same seed
    from compress.steps.finetune import train_subset

    sub = train_subset(splits["train"], 100, seed=0)
    full_counts = np.bincount(splits["train"].labels, minlength=NUM_CLASSES)
    assert np.array_equal(np.bincount(sub.labels, minlength=NUM_CLASSES) * 2, full_counts)
    assert np.array_equal(sub.rows, train_subset(splits["train"], 100, seed=0).rows)
    assert "100 of 200 samples" in sub.source
    # more samples than train: all of train
    assert run_finetune(model, FinetuneConfig(epochs=1, batch_size=50, samples=500), ctx)["samples"] == 200


def test_fit_samples_cuts_fit_splits_only_and_alike_for_every_model():
    splits = _splits(train=300, calibration=40, heldout=50)
    splits["drift"] = _split("drift", 50, seed=9)
    judged = fit_subsets(splits, 100, seed=0)
    assert len(judged["train"]) == 100 and "100 of 300 samples" in judged["train"].source
    assert judged["calibration"] is splits["calibration"]  # smaller than fit_samples: whole
    assert judged["heldout"] is splits["heldout"] and judged["drift"] is splits["drift"]
    assert np.array_equal(judged["train"].rows, fit_subsets(splits, 100, seed=0)["train"].rows)
    assert len(set(judged["train"].rows.tolist())) == 100
    assert fit_subsets(splits, None, seed=0) == dict(splits)


def test_prune_reads_top1_on_a_seeded_subset_of_a_large_calibration_split(monkeypatch, tmp_path):
    import compress.steps.prune as prune

    monkeypatch.setattr(prune, "SLICE_SAMPLES", 30)
    seen: list = []
    monkeypatch.setattr("compress.training.accuracy", lambda module, split: seen.append(split) or 50.0)
    ctx = StepContext(splits=_splits(train=60, calibration=100, heldout=20), model_spec=None,
                      input_shape=(3, 8, 8), seed=0, workdir=tmp_path)
    assert prune._slice_top1(None, ctx) == ("calibration", 50.0)
    assert prune._slice_top1(None, ctx) == ("calibration", 50.0)
    assert len(seen[0]) == 30 and np.array_equal(seen[0].rows, seen[1].rows)  # the same rows each time
    small = StepContext(splits=_splits(train=60, calibration=20, heldout=20), model_spec=None,
                        input_shape=(3, 8, 8), seed=0, workdir=tmp_path)
    prune._slice_top1(None, small)
    assert len(seen[2]) == 20  # a small split is read whole
