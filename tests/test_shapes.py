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
    # 64-token batches of mostly ~12-token sentences: padding costs work
    assert real["speedup"]["estimate"] > 1.0
