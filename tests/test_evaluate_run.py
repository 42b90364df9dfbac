"""A whole run through the evaluator: held-out discipline, the overfitting gate on a variant
fine-tuned to memorise a tiny train split, labelled drift, an unlabelled production sample, and a
report that shows intervals, sample sizes and where every number came from."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from conftest import NUM_CLASSES, TINY_MODEL_SOURCE, _tiny_recipe, learnable_images

from compress.recipe import load_recipe
from compress.run.pipeline import run_recipe


def _noise_npz(path, n, seed):
    """Images with no signal and random labels: the only way to score on them is to memorise."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 3, 8, 8), dtype=np.uint8)
    labels = np.arange(n) % NUM_CLASSES
    rng.shuffle(labels)
    np.savez(path, images=images, labels=labels)


@pytest.fixture(scope="module")
def memorising_run(tmp_path_factory):
    """One run shared by the tests below (a few seconds)."""
    tmp_path = tmp_path_factory.mktemp("memorising")
    (tmp_path / "tiny_model.py").write_text(TINY_MODEL_SOURCE)
    recipe_dict = _tiny_recipe()
    _noise_npz(tmp_path / "noise.npz", 400, seed=0)
    images, labels = learnable_images(n=60, seed=5)
    np.savez(tmp_path / "prod.npz", images=images)  # unlabelled production sample
    _noise_npz(tmp_path / "drift.npz", 80, seed=1)
    recipe_dict["data"] = {
        "source": "npz:noise.npz",
        "split": {"train": 0.05, "calibration": 0.05, "heldout": 0.5},  # 20 train samples
        "drift": {"source": "npz:drift.npz"},
        "production": {"source": "npz:prod.npz"},
    }
    recipe_dict["baseline"] = {"train": {"epochs": 1, "lr": 0.01, "batch_size": 20}}
    recipe_dict["variants"] = {
        "onnx-fp32": {"steps": [{"export": {"format": "onnx"}}]},
        "memorised": {"steps": [{"finetune": {"epochs": 50, "lr": 0.3, "batch_size": 20,
                                              "weight_decay": 0.0}},
                                {"export": {"format": "onnx"}}]},
    }
    recipe_dict["evaluate"] = {"bootstrap_resamples": 500}
    recipe_dict["gate"] = {"max_accuracy_drop": 100.0, "max_overfit_gap_increase": 20.0,
                           "max_drift_drop_increase": 100.0, "mode": "confident",
                           "reference": "onnx-fp32"}
    # the evaluator is under test here, not the profiler: time as little as the schema allows
    recipe_dict["profile"].update(batch_sizes=[1], rounds=1, warmup=0, warmup_max_s=0,
                                  max_extra_rounds=0, memory=False)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe_dict, sort_keys=False))
    import torch

    # One thread: on a shared 2-core machine the two-thread fine-tuning of this tiny CNN spends
    # ~100x longer waiting for its second thread than computing (10 s instead of 0.1 s).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield run_recipe(load_recipe(path), path, out_dir=tmp_path / "runs", log=lambda _m: None)
    finally:
        torch.set_num_threads(threads)


def test_overfitting_gate_catches_a_variant_fine_tuned_on_a_tiny_split(memorising_run):
    results = memorising_run.results
    bad = results["variants"]["memorised"]
    good = results["variants"]["onnx-fp32"]
    assert bad["fit_splits"] == ["train", "calibration"]
    assert bad["overfit"]["gated_splits"] == ["train"]  # export only reads calibration to check itself
    of = bad["overfit"]["by_split"]["train"]
    assert of["fit_n"] == 20 and of["variant_fit_top1"] >= 90
    assert of["gap_increase_interval"]["low"] > 20
    assert bad["gate"]["verdict"] == "fail"
    failed = [c["rule"] for c in bad["gate"]["checks"] if not c["passed"]]
    assert failed == ["max_overfit_gap_increase"]
    assert abs(good["overfit"]["by_split"]["train"]["gap_increase_points"]) < 1e-9
    assert good["gate"]["verdict"] == "reference"
    assert memorising_run.exit_code == 1


def test_results_record_overlap_drift_and_production_with_their_splits(memorising_run):
    results = memorising_run.results
    v = results["variants"]["onnx-fp32"]
    assert v["heldout_overlap"] == {"calibration": 0, "train": 0}
    assert v["accuracy"]["change_split"] == "heldout" and v["accuracy"]["change_n"] == 200
    lab = v["drift"]["labelled"]
    assert lab["drift_n"] == 80 and lab["heldout_n"] == 200 and lab["test"] == "fisher"
    assert "degradation" in lab
    prod = v["drift"]["production"]
    assert prod["current_n"] == 60 and prod["reference_n"] == 200
    assert "robustness" not in v["drift"]  # drift data was given: no synthetic profile
    assert results["data"]["splits"]["production"]["n"] == 60
    base = results["baseline"]
    assert base["fit_splits"] == ["train"] and base["heldout_overlap"] == {"train": 0}


def test_report_shows_intervals_sample_sizes_and_findings(memorising_run):
    report = (memorising_run.run_dir / "report.md").read_text()
    assert "Gate mode: `confident`" in report
    assert "Paired with the baseline on `heldout` (n=200): top-1 change" in report
    assert "[95% CI" in report
    assert "Overfitting (`train` n=20 vs `heldout` n=200)" in report
    assert "Drift (`drift` = npz:drift.npz, n=80)" in report
    assert "Production sample (npz:prod.npz, n=60, against held-out n=200)" in report
    assert "Held-out shares no sample with `calibration`, `train` (content hash)." in report
