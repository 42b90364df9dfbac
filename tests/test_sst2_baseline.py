"""eval/sst2_baseline.py end to end on a tiny SST-2-shaped folder: it trains, judges and records."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("transformers", reason="the SST-2 baseline needs the 'transformers' extra")

from eval.sst2_baseline import SST2, main  # noqa: E402

POSITIVE = ["a gorgeous movie", "witty and charming", "a delight", "truly astounding work"]
NEGATIVE = ["a dull mess", "lifeless and bleak", "a disaster", "boring from start to finish"]


def write_sst2(root, train_repeat: int = 6):
    folder = root / SST2
    folder.mkdir(parents=True)
    rows = [(t, 1) for t in POSITIVE] + [(t, 0) for t in NEGATIVE]
    (folder / "train.tsv").write_text("sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in rows * train_repeat))
    dev = [("gorgeous and witty", 1), ("dull and boring", 0)]
    (folder / "dev.tsv").write_text("sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in dev))


def test_tiny_run_writes_result(tmp_path):
    write_sst2(tmp_path / "data")
    out = tmp_path / "out"
    args = ["--data", str(tmp_path / "data"), "--out", str(out), "--layers", "1", "--hidden", "32",
            "--heads", "2", "--vocab-size", "60", "--batch-size", "8", "--epochs", "2", "--eval-every", "3"]
    assert main(args) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["train_samples"] == 48 and result["dev_samples"] == 2
    assert result["train_dev_overlap"] == 0
    assert [c["step"] for c in result["curve"]] == [3, 6, 9, 12]  # 2 epochs of 6 batches
    assert 0.0 <= result["dev_top1"] <= 1.0 and result["cpu_s"] > 0
    assert (out / "tokenizer" / "tokenizer.json").is_file()
    assert result["lengths"]["dev_padding_by_length"] <= result["lengths"]["dev_padding_file_order"]


def test_missing_data_exits_2(tmp_path, capsys):
    assert main(["--data", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "pass --data" in capsys.readouterr().err
