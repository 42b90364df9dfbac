"""Text files: reading, label mappings, content hashes, WordPiece training, length-bucketed batches."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from compress.errors import InputError, MissingDependency
from compress.sources.text import (
    check_tokenizer_fits,
    content_hash,
    encode,
    iter_batches,
    length_batches,
    load_tokenizer,
    pad_batch,
    padding_fraction,
    read_text_file,
)
from compress.sources.wordpiece import train_wordpiece

SHARED_DATA = Path(os.environ.get("COMPRESS_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
SENTENCES = [
    "a gorgeous , witty , seductive movie .",
    "the plot is nothing but boilerplate clichés from start to finish",
    "it 's a charming and often affecting journey .",
    "unflinchingly bleak and desperate",
    "the acting , costumes , music , cinematography and sound are all astounding",
    "bad",
    "one of the greatest family-oriented , fantasy-adventure movies ever .",
    "the movie is a disaster , a dull , lifeless mess",
] * 4


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def sst_like(tmp_path) -> Path:
    rows = "".join(f"{s}\t{i % 2}\n" for i, s in enumerate(SENTENCES))
    return write(tmp_path / "train.tsv", "sentence\tlabel\n" + rows)


def needs_transformers():
    for package in ("transformers", "tokenizers"):
        pytest.importorskip(package, reason="tokenizer tests need the 'transformers' extra")


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    needs_transformers()
    return train_wordpiece(SENTENCES, tmp_path_factory.mktemp("tok"), vocab_size=200, min_frequency=1)


# --- reading -----------------------------------------------------------------------------------


def test_tsv_with_integer_labels(sst_like):
    samples = read_text_file(sst_like, text_column="sentence")
    assert len(samples) == len(SENTENCES)
    assert samples.texts[1] == SENTENCES[1]
    assert samples.labels.tolist() == [i % 2 for i in range(len(SENTENCES))]
    assert samples.label_names == ["0", "1"] and samples.label_mapping == {"0": 0, "1": 1}
    assert samples.text_pairs is None


def test_tsv_keeps_quotes_as_text(tmp_path):
    path = write(tmp_path / "q.tsv", 'text\tlabel\n"quoted" start\t0\nit \'s "fine\t1\n')
    assert read_text_file(path).texts == ['"quoted" start', 'it \'s "fine']


def test_csv_with_quoted_commas_and_named_labels(tmp_path):
    path = write(tmp_path / "news.csv", 'text,label\n"Stocks fall, again",Business\nGoal!,Sports\nRates up,Business\n')
    samples = read_text_file(path)
    assert samples.texts[0] == "Stocks fall, again"
    assert samples.label_names == ["Business", "Sports"]  # names sorted into ids
    assert samples.labels.tolist() == [0, 1, 0]


def test_jsonl_pair_of_columns(tmp_path):
    lines = [{"premise": "a man sleeps", "hypothesis": "a person rests", "label": "entailment"},
             {"premise": "a dog runs", "hypothesis": "a cat sleeps", "label": "contradiction"}]
    path = write(tmp_path / "nli.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n\n")
    samples = read_text_file(path, text_column=("premise", "hypothesis"))
    assert samples.texts == ["a man sleeps", "a dog runs"]
    assert samples.text_pairs == ["a person rests", "a cat sleeps"]
    assert samples.label_mapping == {"contradiction": 0, "entailment": 1}


def test_heldout_uses_train_label_mapping(tmp_path):
    # Held-out has only one class; with train's names its ids agree with train's.
    held = write(tmp_path / "held.csv", "text,label\nGoal!,Sports\n")
    assert read_text_file(held, label_names=["Business", "Sports"]).labels.tolist() == [1]
    with pytest.raises(InputError, match=r"labels \['Sports'\].*mapping \(Business, World\)"):
        read_text_file(held, label_names=["Business", "World"])


BAD_FILES = [
    ("no_label.tsv", "sentence\tscore\nfine\t1\n", {"text_column": "sentence"},
     r"no column 'label'; its columns are 'sentence', 'score': set data\.label_column"),
    ("no_text.tsv", "sentence\tlabel\nfine\t1\n", {},
     r"no column 'text'; its columns are 'sentence', 'label': set data\.text_column"),
    ("empty.csv", "", {}, r"has no samples"),
    ("header.csv", "text,label\n", {}, r"has no samples"),
    ("empty.jsonl", "\n", {}, r"has no samples"),
    ("bad.jsonl", '{"text": "a", "label": 1}\nnot json\n', {}, r"bad\.jsonl:2: not a JSON object"),
    ("short.tsv", "text\tlabel\nfine\t1\nonly text\n", {}, r"sample 1 has no value in column 'label'"),
    ("neg.csv", "text,label\na,-1\n", {}, r"negative integer label -1"),
    ("data.txt", "text,label\na,1\n", {}, r"use one of \.csv, \.jsonl, \.tsv"),
]


@pytest.mark.parametrize(("name", "content", "kwargs", "message"), BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_bad_text_files(tmp_path, name, content, kwargs, message):
    path = write(tmp_path / name, content)
    with pytest.raises(InputError, match=message) as err:
        read_text_file(path, **kwargs)
    assert err.value.exit_code == 2


def test_error_names_the_recipe_key(tmp_path):
    path = write(tmp_path / "x.tsv", "sentence\tlabel\nfine\t1\n")
    with pytest.raises(InputError, match=r"set data\.heldout\.text_column"):
        read_text_file(path, where="data.heldout")


def test_a_file_that_is_not_utf8(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes("text,label\ncaf\u00e9,1\n".encode("latin-1"))
    with pytest.raises(InputError, match=r"cannot read .*latin\.csv as UTF-8 csv"):
        read_text_file(path)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_text_file(tmp_path / "nope.tsv")


def test_content_hash_normalises_case_and_whitespace():
    assert content_hash("A  Gorgeous movie ") == content_hash("a gorgeous\tmovie")
    assert content_hash("a gorgeous movie") != content_hash("a gorgeous film")
    assert content_hash("a", "b") != content_hash("a b")  # a pair is not the joined sentence


def test_fingerprint_changes_with_any_text_or_label(tmp_path):
    a = read_text_file(write(tmp_path / "a.tsv", "text\tlabel\nfine\t1\nbad\t0\n"))
    same = read_text_file(write(tmp_path / "b.tsv", "text\tlabel\nfine\t1\nbad\t0\n"))
    text = read_text_file(write(tmp_path / "c.tsv", "text\tlabel\nfine!\t1\nbad\t0\n"))
    label = read_text_file(write(tmp_path / "d.tsv", "text\tlabel\nfine\t1\nbad\t1\n"))
    assert a.fingerprint() == same.fingerprint()
    assert len({a.fingerprint(), text.fingerprint(), label.fingerprint()}) == 3


def test_sample_hashes_find_an_overlap(tmp_path, sst_like):
    train = read_text_file(sst_like, text_column="sentence")
    held = read_text_file(write(tmp_path / "h.tsv", "sentence\tlabel\nBAD\t0\nnew words here\t1\n"),
                          text_column="sentence")
    assert len(set(train.sample_hashes()) & set(held.sample_hashes())) == 1


# --- tokenizer ---------------------------------------------------------------------------------


def test_wordpiece_saves_a_loadable_hf_tokenizer(tmp_path):
    needs_transformers()
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    train_wordpiece(SENTENCES, tmp_path / "tok", vocab_size=200, min_frequency=1)
    loaded = AutoTokenizer.from_pretrained(str(tmp_path / "tok"), local_files_only=True)
    assert isinstance(loaded, PreTrainedTokenizerFast)
    assert load_tokenizer(tmp_path / "tok").get_vocab() == loaded.get_vocab()
    out = loaded("A gorgeous movie", "a dull mess")
    tokens = loaded.convert_ids_to_tokens(out["input_ids"])
    assert tokens[0] == "[CLS]" and tokens.count("[SEP]") == 2 and "movie" in tokens
    assert out["token_type_ids"][-1] == 1 and out["token_type_ids"][0] == 0
    assert loaded.pad_token == "[PAD]" and loaded.pad_token_id == 0


def test_wordpiece_refuses_no_texts(tmp_path):
    needs_transformers()
    with pytest.raises(InputError, match="train split is empty"):
        train_wordpiece([], tmp_path / "tok")


def test_load_tokenizer_errors(tmp_path):
    needs_transformers()
    with pytest.raises(InputError, match="does not exist"):
        load_tokenizer(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no loadable tokenizer"):
        load_tokenizer(tmp_path / "empty")


def test_tokenizer_must_fit_the_embedding(tokenizer):
    check_tokenizer_fits(tokenizer, len(tokenizer))
    with pytest.raises(InputError, match=rf"has {len(tokenizer)} tokens but the model's embedding has only 100 rows"):
        check_tokenizer_fits(tokenizer, 100)


def test_missing_transformers_names_the_extra(monkeypatch, tmp_path, sst_like):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers -> ImportError
    with pytest.raises(MissingDependency, match=r"Tokenizing text needs the 'transformers' package.*pip install .*\[transformers\]") as err:
        load_tokenizer(tmp_path)
    assert err.value.extra == "transformers" and err.value.exit_code == 2
    with pytest.raises(MissingDependency, match=r"\[transformers\]"):
        train_wordpiece(["a b"], tmp_path / "tok")


# --- encoding and batches ----------------------------------------------------------------------


def test_encode_truncates_to_max_length(sst_like, tokenizer):
    samples = read_text_file(sst_like, text_column="sentence")
    full = encode(samples, tokenizer, 512)
    short = encode(samples, tokenizer, 6)
    assert full.lengths.max() > 6 and short.lengths.max() == 6
    assert set(full.features) == {"input_ids", "attention_mask", "token_type_ids"}


def test_encode_needs_a_pad_token(sst_like, tokenizer):
    from transformers import PreTrainedTokenizerFast

    no_pad = PreTrainedTokenizerFast(tokenizer_object=tokenizer.backend_tokenizer)
    with pytest.raises(InputError, match="no padding token"):
        encode(read_text_file(sst_like, text_column="sentence"), no_pad, 16)


def test_length_batches_cover_every_sample_once_and_are_seeded():
    lengths = np.random.default_rng(1).integers(2, 60, size=1000)
    batches = length_batches(lengths, 32, seed=3, bucket_batches=4)
    assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
    # Buckets of 4 x 32 = 128 samples: the last bucket's 1000 - 7 * 128 = 104 make 32, 32, 32, 8.
    assert sorted(len(b) for b in batches) == [8] + [32] * 31
    assert all(np.all(np.diff(lengths[b]) >= 0) for b in batches)  # cut from length-sorted buckets
    again = length_batches(lengths, 32, seed=3, bucket_batches=4)
    assert all(np.array_equal(a, b) for a, b in zip(batches, again, strict=True))
    other = length_batches(lengths, 32, seed=4, bucket_batches=4)
    assert not all(np.array_equal(a, b) for a, b in zip(batches, other, strict=False))


def test_length_batches_pad_less_than_file_order(sst_like, tokenizer):
    samples = read_text_file(sst_like, text_column="sentence")
    encoded = encode(samples, tokenizer, 64)
    in_order = [np.arange(i, min(i + 8, len(samples))) for i in range(0, len(samples), 8)]
    bucketed = length_batches(encoded.lengths, 8, seed=0)
    assert padding_fraction(encoded, bucketed) < padding_fraction(encoded, in_order) / 2
    sorted_batches = length_batches(encoded.lengths, 8, shuffle=False)
    assert np.all(np.diff(encoded.lengths[np.concatenate(sorted_batches)]) >= 0)


def test_batches_are_padded_to_their_own_longest(sst_like, tokenizer):
    samples = read_text_file(sst_like, text_column="sentence")
    encoded = encode(samples, tokenizer, 64)
    seen = []
    for batch in iter_batches(encoded, 5, seed=0):
        lengths = encoded.lengths[batch.indices]
        assert set(batch.inputs) == {"input_ids", "attention_mask", "token_type_ids"}
        assert all(a.dtype == np.int64 and a.shape == (len(batch.indices), lengths.max())
                   for a in batch.inputs.values())
        assert batch.inputs["attention_mask"].sum(axis=1).tolist() == lengths.tolist()
        for row, i in enumerate(batch.indices):
            ids = batch.inputs["input_ids"][row]
            assert ids[: lengths[row]].tolist() == encoded.features["input_ids"][i]
            assert (ids[lengths[row]:] == tokenizer.pad_token_id).all()
        seen += batch.indices.tolist()
    assert sorted(seen) == list(range(len(samples)))


def test_batches_without_token_type_ids(sst_like, tokenizer):
    from transformers import PreTrainedTokenizerFast

    plain = PreTrainedTokenizerFast(tokenizer_object=tokenizer.backend_tokenizer, pad_token="[PAD]",
                                    model_input_names=["input_ids", "attention_mask"])
    encoded = encode(read_text_file(sst_like, text_column="sentence"), plain, 32)
    batch = pad_batch(encoded, np.array([0, 5]))
    assert set(batch.inputs) == {"input_ids", "attention_mask"}


@pytest.mark.skipif(not (SHARED_DATA / "text-classification/sst2/dev.tsv").is_file(),
                    reason="the shared SST-2 data is not here (optional reference data)")
def test_real_sst2_dev():
    dev = read_text_file(SHARED_DATA / "text-classification/sst2/dev.tsv", text_column="sentence")
    assert len(dev) == 872 and np.bincount(dev.labels).tolist() == [428, 444]
