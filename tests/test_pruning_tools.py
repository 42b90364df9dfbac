"""Recovery and analysis around pruning: distillation, the validation slice, the sensitivity scan
(library and `compress sensitivity`), and the pruning facts in the report."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from compress.cli import app
from compress.pruning.channels import ChannelPlan
from compress.pruning.report import pruning_section, pruning_warnings
from compress.pruning.sensitivity import SensitivityScan, scan
from compress.sources.data import Split
from compress.training import carve_validation, kd_loss, train
from tests.conftest import NUM_CLASSES, learnable_images


def _split(n: int = 120, seed: int = 0) -> Split:
    images, labels = learnable_images(n, seed)
    mean = np.full((1, 3, 1, 1), 0.5, np.float32)
    std = np.full((1, 3, 1, 1), 0.25, np.float32)
    return Split.from_arrays("train", images.astype(np.float32) / 255.0, labels, mean, std, "test")


def _kl_to_teacher(student, teacher, split: Split, t: float = 4.0) -> float:
    x = torch.from_numpy(split.inputs()["pixel_values"])
    with torch.no_grad():
        s, te = student(x), teacher(x)
    return float(kd_loss(s, te, torch.from_numpy(split.labels), temperature=t, alpha=1.0))


def test_distillation_lowers_the_loss_against_the_teacher():
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, NUM_CLASSES)).eval()
    student = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, NUM_CLASSES))
    split = _split()
    before = _kl_to_teacher(student, teacher, split)
    train(student, split, epochs=4, lr=0.05, batch_size=16, teacher=teacher, temperature=4.0, alpha=1.0)
    after = _kl_to_teacher(student, teacher, split)
    assert after < 0.5 * before


def test_kd_loss_without_a_teacher_is_cross_entropy():
    logits = torch.randn(6, NUM_CLASSES)
    labels = torch.arange(6)
    ce = nn.functional.cross_entropy(logits, labels)
    assert torch.allclose(kd_loss(logits, None, labels, temperature=4.0, alpha=0.7), ce)


def test_validation_slice_is_carved_out_of_train_disjoint_and_stratified():
    split = _split(200)
    rest, val = carve_validation(split, 0.2, seed=0)
    assert len(rest) + len(val) == len(split) and len(val) == 40
    rows = {img.tobytes() for img in rest.pixels()}
    assert not any(img.tobytes() in rows for img in val.pixels())
    assert np.bincount(val.labels, minlength=NUM_CLASSES).tolist() == [4] * NUM_CLASSES


def test_sensitivity_scan_cuts_one_layer_at_a_time(tiny_module):
    split = _split(60)
    plan = ChannelPlan(importance="l2")
    result = scan(tiny_module, plan, (3, 8, 8), NUM_CLASSES, split, ratios=[0.25, 0.5, 0.75],
                  split_name="calibration")
    assert list(result.layers) == ["0", "3"]  # the two convs; the classifier is kept
    assert all(len(accs) == 3 for accs in result.layers.values())
    # cutting more channels of one layer removes more MACs
    for saved in result.layer_macs_saved.values():
        assert saved[0] < saved[1] < saved[2]


def test_suggested_ratios_are_the_deepest_cut_within_the_drop():
    result = SensitivityScan(ratios=[0.25, 0.5, 0.75], unpruned_top1=90.0, split="calibration", n=100,
                             layers={"a": [90.0, 89.5, 80.0], "b": [85.0, 70.0, 60.0], "c": [90, 90, 89.9]})
    assert result.suggest(1.0) == {"a": 0.5, "b": 0.0, "c": 0.75}


def test_sensitivity_command_writes_json_plot_and_suggestion(cli, write_recipe, recipe_dict, tmp_path):
    recipe_dict["variants"]["pruned"] = {"steps": [{"prune": {"importance": "l1"}}, {"export": {}}]}
    path = write_recipe(recipe_dict)
    out = tmp_path / "sens"
    res = cli.invoke(app, ["sensitivity", str(path), "--ratios", "0.5,0.75", "--samples", "20",
                           "--out", str(out)])
    assert res.exit_code == 0, res.output
    doc = json.loads((out / "sensitivity.json").read_text())
    assert doc["importance"] == "l1" and doc["variant"] == "pruned" and doc["split"] == "calibration"
    assert doc["n"] == 20 and doc["ratios"] == [0.5, 0.75]
    assert (out / "sensitivity.png").read_bytes()[:4] == b"\x89PNG"
    assert "layer_ratios:" in res.output


def test_sensitivity_skips_block_pruning_and_refuses_it_by_name(cli, write_recipe, recipe_dict, tmp_path):
    recipe_dict["variants"] = {
        "deep": {"steps": [{"prune": {"granularity": "blocks", "blocks": ["*"]}}, {"export": {}}]},
        **recipe_dict["variants"],
        "thin": {"steps": [{"prune": {"importance": "l1"}}, {"export": {}}]},
    }
    path = write_recipe(recipe_dict)
    res = cli.invoke(app, ["sensitivity", str(path), "--variant", "deep"])
    assert res.exit_code == 2 and "removes whole blocks; the sensitivity scan cuts channels" in " ".join(res.output.split())
    out = tmp_path / "sens"
    res = cli.invoke(app, ["sensitivity", str(path), "--ratios", "0.5", "--samples", "20", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert json.loads((out / "sensitivity.json").read_text())["variant"] == "thin"


@pytest.mark.parametrize("ratios", ["0.5,1.5", "half"])
def test_sensitivity_command_rejects_bad_ratios(cli, write_recipe, recipe_dict, ratios):
    res = cli.invoke(app, ["sensitivity", str(write_recipe(recipe_dict)), "--ratios", ratios])
    assert res.exit_code == 2 and "--ratios" in res.output


def _results(pruning: dict, speedups: dict) -> dict:
    return {
        "recipe": {"gate": {"reference": "onnx-fp32"}},
        "targets": [{"name": "cpu"}],
        "variants": {"p": {"status": "ok", "artifact": {"facts": {"pruning": pruning}},
                           "speedup": {"cpu": {bs: {"estimate": e} for bs, e in speedups.items()}}}},
    }


def test_report_puts_mac_ratio_beside_measured_speedup_and_recovery():
    pr = {"target": "macs_budget", "macs_budget": 0.5, "importance": "taylor", "ratio": 0.52,
          "round_to": 8, "macs_before": 126_000_000, "macs_after": 63_000_000, "params_before": 853_000,
          "params_after": 430_000, "mac_ratio": 0.5, "top1_split": "calibration",
          "top1_unpruned": 84.0, "top1_pruned": 40.0, "top1_recovered": 82.0}
    text = "\n".join(pruning_section(_results(pr, {"1": 1.3, "32": 1.7})))
    row = next(line for line in text.splitlines() if line.startswith("| p |"))
    assert "taylor" in row and "MACs ≤ 50%" in row and "126.00 M → 63.00 M" in row
    assert "2.00x" in row and "1.30x (b1) / 1.70x (b32)" in row
    assert "84.0% → 40.0% → 82.0% (calibration)" in row


def test_report_says_no_speedup_for_sparsity_the_runtime_cannot_use():
    pr = {"target": "2:4", "macs_before": 10, "macs_after": 10, "mac_ratio": 1.0,
          "sparsity": {"pattern": "2:4", "layers": 3, "zero_fraction": 0.5}}
    v = _results(pr, {"32": 0.98})["variants"]["p"]
    assert any("no speed-up on this runtime (cpu)" in w for w in pruning_warnings(v))
    fast = _results(pr, {"32": 1.5})["variants"]["p"]
    assert pruning_warnings(fast) == []
    # a noisy estimate whose interval reaches down to 1.02x is no evidence of a gain
    noisy = _results(pr, {"1": 2.25})["variants"]["p"]
    noisy["speedup"]["cpu"]["1"]["low"] = 1.02
    assert any("no speed-up on this runtime" in w for w in pruning_warnings(noisy))


@pytest.mark.slow
def test_run_reports_pruning_facts_and_the_sparsity_verdict(cli, write_recipe, recipe_dict, tmp_path):
    recipe_dict["variants"] = {
        "onnx-fp32": {"steps": [{"export": {}}]},
        "half-macs": {"steps": [{"prune": {"macs_budget": 0.5, "finetune": {"epochs": 1}}}, {"export": {}}]},
        "sparse": {"steps": [{"sparsify": {}}, {"export": {}}]},
    }
    res = cli.invoke(app, ["run", str(write_recipe(recipe_dict)), "--out", str(tmp_path / "runs"), "-q"])
    assert res.exit_code in (0, 1), res.output
    run_dir = next(p for p in (tmp_path / "runs").iterdir() if not p.name.startswith("."))
    results = json.loads((run_dir / "results.json").read_text())
    pr = results["variants"]["half-macs"]["artifact"]["facts"]["pruning"]
    assert pr["target"] == "macs_budget" and pr["macs_after"] <= 0.5 * pr["baseline_macs"]
    assert pr["recovery"][0]["epochs_run"] == 1 and "top1_recovered" in pr
    assert results["variants"]["sparse"]["artifact"]["facts"]["pruning"]["sparsity"]["pattern"] == "2:4"
    report = (run_dir / "report.md").read_text()
    assert "## Pruning on `cpu`" in report and "| half-macs | l2 | MACs ≤ 50% |" in report
    assert "| sparse | 2:4 | 2:4 sparsity |" in report


def test_augmentation_flips_and_crops_each_image_and_keeps_the_input():
    from compress.training import augment_batch

    x = np.arange(2 * 1 * 4 * 4, dtype=np.float32).reshape(2, 1, 4, 4) + 1  # no zeros in the images
    before = x.copy()
    flipped = augment_batch(x, np.random.default_rng(0), flip=True, crop_padding=0)
    for img, out in zip(x, flipped, strict=True):  # each image is either itself or its mirror
        assert np.array_equal(out, img) or np.array_equal(out, img[..., ::-1])
    many = augment_batch(np.repeat(x[:1], 64, axis=0), np.random.default_rng(1), flip=True, crop_padding=0)
    assert 0 < sum(np.array_equal(o, x[0, ..., ::-1]) for o in many) < 64  # about half are mirrored
    cropped = augment_batch(np.repeat(x[:1], 64, axis=0), np.random.default_rng(2), flip=False, crop_padding=1)
    padded = np.pad(x[0], ((0, 0), (1, 1), (1, 1)))
    windows = {(dy, dx) for dy in range(3) for dx in range(3)}
    seen = {next(w for w in windows if np.array_equal(o, padded[:, w[0]:w[0] + 4, w[1]:w[1] + 4])) for o in cropped}
    assert len(seen) > 1  # crops are shifted windows of the zero-padded image, not all the same
    assert np.array_equal(x, before)  # the caller's batch is not modified
    with pytest.raises(ValueError, match=r"needs image batches \(N, C, H, W\)"):
        augment_batch(np.zeros((4, 10), np.float32), np.random.default_rng(0), flip=True, crop_padding=0)


def test_finetune_with_augmentation_records_it(tmp_path):
    from compress.steps.finetune import FinetuneConfig

    cfg = FinetuneConfig(epochs=1, lr=0.05, augment={"crop_padding": 2})
    assert cfg.augment.flip is True and cfg.augment.crop_padding == 2
    split = _split()
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, NUM_CLASSES))
    seen = []

    class Recorder(nn.Module):  # records what the model is fed
        def __init__(self):
            super().__init__()
            self.net = model

        def forward(self, x):
            seen.append(x.detach().numpy().copy())
            return self.net(x)

    def unchanged(augment) -> int:  # fed images (one batch of the whole split) equal to an original
        seen.clear()
        hist = train(Recorder(), split, epochs=1, lr=0.0, batch_size=len(split), augment=augment)
        originals = {o.tobytes() for o in split.inputs()["pixel_values"]}
        return hist, sum(f.tobytes() in originals for f in seen[0])

    hist, kept = unchanged(cfg.augment.model_dump())
    assert hist["augment"] == {"flip": True, "crop_padding": 2} and hist["epochs_run"] == 1
    assert kept < 0.2 * len(split)  # 1 in 50 is left as is (no flip, centre crop), by chance
    assert unchanged(None)[1] == len(split)  # without augment the model sees the images as they are
