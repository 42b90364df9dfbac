"""Profiling text models at realistic shapes: the batch size x sequence length grid, and the
held-out set's own lengths (dynamic padding) against padding to max_length."""

from __future__ import annotations

import numpy as np
import pytest

from compress.measure.lengths import fit_length, padded_share, served_lengths, server_batches
from tests.text_fixtures import StandInTextSplit, export_tiny_bert

FAST = {"warmup": 1, "rounds": 2, "min_round_s": 0.01, "max_cv": 10.0, "max_extra_rounds": 0,
        "warmup_max_s": 0.0}


@pytest.fixture(scope="module")
def bert_pair(tmp_path_factory):
    from compress.artifacts import Artifact, file_digest
    from compress.runtimes.target import TargetConfig

    path = export_tiny_bert(tmp_path_factory.mktemp("bert") / "bert.onnx")
    art = Artifact(kind="onnx", digest=file_digest(path), path=path, lineage=["bert.onnx"])
    return art, TargetConfig(name="cpu", runtime="onnxruntime", device="cpu", threads=1)


def short_sentences(n: int = 48, seed: int = 0) -> StandInTextSplit:
    """Mostly short samples (4..20 tokens) and a few long ones, as real sentences are."""
    rng = np.random.default_rng(seed)
    lengths = np.where(rng.random(n) < 0.9, rng.integers(4, 21, n), rng.integers(40, 65, n))
    return StandInTextSplit(lengths, seed=seed)


def test_fit_length_pads_with_a_zero_mask_and_truncates():
    batch = {"input_ids": np.array([[5, 6, 7], [8, 9, 0]]), "attention_mask": np.array([[1, 1, 1], [1, 1, 0]])}
    padded = fit_length(batch, 5, pad_token_id=3)
    assert padded["input_ids"].tolist() == [[5, 6, 7, 3, 3], [8, 9, 0, 3, 3]]
    assert padded["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 0, 0, 0]]
    assert fit_length(batch, 2)["input_ids"].tolist() == [[5, 6], [8, 9]]
    assert batch["input_ids"].shape == (2, 3)  # the caller's batch is left alone


def test_server_batches_in_arrival_order_or_by_length():
    lengths = np.array([9, 2, 7, 3, 8, 1])
    arrival = server_batches(lengths, 2)
    assert [b.tolist() for b in arrival] == [[0, 1], [2, 3], [4, 5]]
    by_length = server_batches(lengths, 2, batching="length")
    assert [b.tolist() for b in by_length] == [[5, 1], [3, 2], [4, 0]]
    # grouping by length wastes less than arrival order; padding to 10 wastes the most
    assert padded_share(lengths, by_length) < padded_share(lengths, arrival) < padded_share(lengths, arrival, 10)
    assert padded_share(lengths, arrival) == pytest.approx(1 - 30 / (2 * 9 + 2 * 7 + 2 * 8))
    subset = server_batches(lengths, 4, samples=3, seed=1)
    assert sum(len(b) for b in subset) == 3 and np.all(np.diff(np.concatenate(subset)) > 0)
    with pytest.raises(ValueError, match="batching must be one of arrival, length"):
        server_batches(lengths, 2, batching="sorted")


def test_served_lengths_pads_each_batch_to_its_longest_sample():
    split = short_sentences()
    served = served_lengths(split, batch_size=8, max_length=64, batching="length")
    assert served.n_samples == 48 and served.facts["n_batches"] == 6
    widths = [b["input_ids"].shape[1] for b in served.dynamic]
    lengths = split.lengths()
    assert widths == [int(lengths[idx].max()) for idx in server_batches(lengths, 8, batching="length")]
    assert all(b["input_ids"].shape == (8, 64) for b in served.padded)
    assert served.facts["tokens"] == int(lengths.sum())
    assert served.facts["padding_fraction"] < 0.2 < 0.6 < served.facts["padding_fraction_max_length"]


def test_grid_times_every_cell_and_real_lengths_pad_less(bert_pair):
    from compress.run.profiling import profile_pairs

    split = short_sentences()
    served = served_lengths(split, batch_size=8, max_length=64, batching="arrival", samples=32)
    rng = np.random.default_rng(0)

    def make_batch(bs, seq_len):
        return fit_length(split.inputs(np.sort(rng.choice(len(split), bs))), seq_len)

    out = profile_pairs({"bert@cpu": bert_pair}, make_batch, [1, 4], plan=FAST, seq_lens=[16, 64],
                        served=served, log=lambda m: None)["bert@cpu"]
    grid = out["latency_by_seq_len"]
    assert set(grid) == {"16", "64"} and all(set(cells) == {"1", "4"} for cells in grid.values())
    for n, cells in grid.items():
        for bs, m in cells.items():
            assert m["seq_len"] == int(n) and m["batch_size"] == int(bs) and m["p50_ms"] > 0
    assert out["latency"] == grid["64"]  # the gate and $ per 1M read the longest length
    real = out["real_lengths"]
    assert real["n_samples"] == 32 and real["batching"] == "arrival" and real["max_length"] == 64
    assert real["padding_fraction"] < real["padding_fraction_max_length"]
    for how in ("dynamic", "padded"):
        assert real[how]["p50_ms"] > 0 and "batch_size" not in real[how]
        assert real[how]["throughput_per_s"] == pytest.approx(32 / (real[how]["p50_ms"] / 1e3))
    # 64-token batches of mostly ~12-token sentences: the padded pass does more work (its timing is
    # a benchmark's business: eval/bench_text_shapes.py), and the speed-up is a ratio with its interval
    assert real["tokens"] < real["n_samples"] * real["max_length"]
    s = real["speedup"]
    assert s["estimate"] > 0 and s["low"] <= s["estimate"] <= s["high"]


@pytest.fixture(scope="module")
def text_run(bert_pair, new_tiny_recipe):
    """The run's profile and cost stages on a text model (a stand-in text split, the tiny BERT as
    baseline and variant), and the report's serving section from them."""
    from compress.recipe.schema import Recipe
    from compress.run.pipeline import cost_stage, profile_stage
    from compress.sources.inputs import InputSpec
    from tests.text_fixtures import VOCAB

    raw = new_tiny_recipe()
    raw["profile"].update(seq_lens=[16, 64], real_lengths={"batch_size": 8, "samples": 32, "batching": "length"})
    raw["targets"][0]["usd_per_hour"] = 0.1
    recipe = Recipe.model_validate(raw)  # the schema only: the text data section is not in this recipe
    split = short_sentences()
    split.input_spec = InputSpec.text(["input_ids", "attention_mask"], 64, VOCAB)
    art = bert_pair[0]
    entries = {"baseline": {}, "onnx-fp32": {"steps": []}}
    profile_stage(recipe, {"heldout": split, "calibration": split}, {"baseline": art, "onnx-fp32": art},
                  entries, None, lambda m: None)
    cost_stage(recipe, entries)
    return recipe, entries


def test_a_run_profiles_text_on_the_grid_and_at_real_lengths(text_run):
    from compress.results.models import Measured

    _, entries = text_run
    for entry in entries.values():
        Measured.model_validate(entry)  # the typed results accept every new key
        grid = entry["latency_by_seq_len"]["cpu"]
        assert {n: sorted(c) for n, c in grid.items()} == {"16": ["1", "4"], "64": ["1", "4"]}
        assert entry["latency"]["cpu"] == grid["64"]
        assert all(m["usd_per_1m"] > 0 for c in grid.values() for m in c.values())  # every cell priced
        real = entry["real_lengths"]["cpu"]
        assert real["batching"] == "length" and real["n_samples"] == 32 and real["batch_size"] == 8
        assert real["dynamic"]["usd_per_1m"] < real["padded"]["usd_per_1m"]
    speed = entries["baseline"]["speedup_by_seq_len"]["cpu"]
    assert set(speed) == {"16", "64"} and speed["64"] == entries["baseline"]["speedup"]["cpu"]


def test_report_shows_the_grid_and_the_real_length_line(text_run):
    from compress.report.serving import serving_section

    recipe, entries = text_run
    results = {"recipe": recipe.model_dump(mode="json", by_alias=True), "baseline": entries["baseline"],
               "variants": {"onnx-fp32": entries["onnx-fp32"]}}
    text = serving_section(results, {"name": "cpu"})
    assert "| variant | b1 × 16 tokens | b1 × 64 tokens | b4 × 16 tokens | b4 × 64 tokens |" in text
    real = entries["baseline"]["real_lengths"]["cpu"]
    assert (f"**At the heldout split's own lengths** (32 samples, mean {real['mean_length']:.1f} tokens, "
            "in 4 batches of 8 grouped by length") in text
    assert f"{real['speedup']['estimate']:.2f}x [" in text and "faster than padding to 64 tokens" in text


@pytest.mark.parametrize(("profile", "message"), [
    ({"seq_lens": [128]}, "profile.seq_lens: only a text model has a sequence axis to profile"),
    ({"real_lengths": {"batching": "length"}}, "profile.real_lengths: only a text model has a sequence axis"),
    ({"seq_lens": [0, 128]}, "profile.seq_lens: seq_lens must be positive numbers of tokens"),
    ({"real_lengths": {"sample": 64}}, "profile.real_lengths.sample: unknown key"),
    ({"real_lengths": {"batching": "sorted"}}, "profile.real_lengths.batching: Input should be 'arrival' or 'length'"),
])
def test_validate_refuses_bad_shape_keys_with_exit_2(cli, write_recipe, recipe_dict, profile, message):
    from compress.cli import app

    recipe_dict["profile"].update(profile)
    result = cli.invoke(app, ["validate", str(write_recipe(recipe_dict))])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.stderr.split())
    assert "Traceback" not in result.output


def test_an_image_recipe_may_switch_real_lengths_off(recipe_dict):
    from compress.recipe import parse_recipe

    recipe_dict["profile"]["real_lengths"] = False
    profile = parse_recipe(recipe_dict).profile
    assert profile.real_lengths_config(text=False) is None and profile.real_lengths_config(text=True) is None


def test_real_lengths_must_name_a_split_the_data_has(tmp_path):
    from compress.errors import RecipeError
    from compress.recipe import parse_recipe
    from tests.test_hf_text import text_recipe, write_bert, write_reviews

    write_bert(tmp_path / "bert")
    write_reviews(tmp_path / "reviews.csv")
    recipe = text_recipe()
    recipe["profile"].update(seq_lens=[16, 32], real_lengths={"split": "tuning"})
    with pytest.raises(RecipeError, match=r"profile.real_lengths.split: the data has no tuning split; use one "
                                          r"of calibration, heldout, train"):
        parse_recipe(recipe, base_dir=tmp_path)
    recipe["profile"]["real_lengths"] = True
    profile = parse_recipe(recipe, base_dir=tmp_path).profile
    assert profile.seq_lens == [16, 32] and profile.real_lengths_config(text=True).split == "heldout"


@pytest.mark.slow
def test_a_text_run_reports_the_grid_and_the_real_lengths(tmp_path):
    import json

    import yaml
    from typer.testing import CliRunner

    from compress.cli import app
    from tests.test_hf_text import text_recipe, write_bert, write_reviews

    write_bert(tmp_path / "bert")
    write_reviews(tmp_path / "reviews.csv")
    recipe = text_recipe()
    recipe["baseline"]["train"]["epochs"] = 1
    recipe["profile"].update(seq_lens=[8, 32], real_lengths={"batch_size": 8, "samples": 40})
    recipe["targets"][0]["usd_per_hour"] = 0.1
    recipe["gate"] = {"reference": "onnx"}  # the torch baseline is not timed on ONNX Runtime
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(tmp_path / "runs"), "--quiet"])
    assert result.exit_code == 0, result.output
    (run_dir,) = [p for p in (tmp_path / "runs").iterdir() if p.is_dir() and not p.name.startswith(".")]
    results = json.loads((run_dir / "results.json").read_text())  # written only after the schema accepted it
    onnx = results["variants"]["onnx"]
    grid = onnx["latency_by_seq_len"]["ort-cpu"]
    assert {n: sorted(c, key=int) for n, c in grid.items()} == {"8": ["1", "8"], "32": ["1", "8"]}
    assert onnx["latency"]["ort-cpu"]["8"]["seq_len"] == 32  # the gate and $ / 1M read the longest length
    speed = onnx["speedup_by_seq_len"]["ort-cpu"]
    assert set(speed) == {"8", "32"} and speed["32"] == onnx["speedup"]["ort-cpu"]
    real = onnx["real_lengths"]["ort-cpu"]
    assert real["split"] == "heldout" and real["n_samples"] == 40 and real["max_length"] == 32
    assert real["padding_fraction"] < real["padding_fraction_max_length"]
    report = (run_dir / "report.md").read_text()
    assert "| variant | b1 × 8 tokens | b1 × 32 tokens | b8 × 8 tokens | b8 × 32 tokens |" in report
    assert "**At the heldout split's own lengths** (40 samples" in report
    assert "- `onnx`: " in report and "faster than padding to 32 tokens" in report


def test_compress_profile_times_a_text_onnx_file_on_the_grid(bert_pair, cli, tmp_path):
    import json

    from compress.cli import app

    out = tmp_path / "p.json"
    result = cli.invoke(app, ["profile", str(bert_pair[0].path), "--target", "onnxruntime:cpu,threads=1",
                              "-b", "1", "-b", "2", "--seq-len", "8", "--seq-len", "32", "--rounds", "1",
                              "--min-round-s", "0.01", "--no-memory", "--json", str(out)])
    assert result.exit_code == 0, result.output
    got = json.loads(out.read_text())
    assert got["inputs"] == "input_ids, attention_mask (up to 32 tokens, vocabulary 64)"  # read from the file
    entry = got["targets"]["onnxruntime-cpu"]
    assert {n: sorted(c) for n, c in entry["latency_by_seq_len"].items()} == {"8": ["1", "2"], "32": ["1", "2"]}
    assert entry["latency"] == entry["latency_by_seq_len"]["32"]
    assert "| variant | b1 × 8 tokens | b1 × 32 tokens | b2 × 8 tokens | b2 × 32 tokens |" in result.stdout


def test_compress_profile_refuses_seq_len_for_an_image_model(tiny_onnx_artifact, cli):
    from compress.cli import app

    result = cli.invoke(app, ["profile", str(tiny_onnx_artifact.path), "--seq-len", "16", "--no-memory"])
    assert result.exit_code == 2
    assert "--seq-len applies to text models (token inputs); this model takes pixel_values" in " ".join(
        result.stderr.split())
