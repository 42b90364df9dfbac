"""hf: model directories and text data sources (csv / tsv / jsonl / Hugging Face datasets) in the
recipe, the splits, training, evaluation and artifacts; a whole text run through the CLI."""

from __future__ import annotations

import csv
import json
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

pytest.importorskip("transformers")

from compress.artifacts import Artifact, Cache  # noqa: E402
from compress.cli import app  # noqa: E402
from compress.errors import InputError, MissingDependency, RecipeError  # noqa: E402
from compress.recipe import parse_recipe  # noqa: E402
from compress.recipe.schema import DataConfig, ModelConfig  # noqa: E402
from compress.sources.data import make_splits  # noqa: E402
from compress.sources.inputs import call_module, to_torch  # noqa: E402
from compress.sources.models import ModelSpec  # noqa: E402

POSITIVE = ["good", "great", "fine", "lovely", "superb", "nice"]
NEGATIVE = ["bad", "awful", "poor", "dull", "terrible", "boring"]
FILLER = ["the", "movie", "was", "a", "film", "plot", "and", "acting", "story"]


def write_bert(folder: Path, *, weights: bool = False, num_labels: int = 2, vocab_size: int = 200,
               layers: int = 2) -> Path:
    """A 2-layer BERT of hidden 32: config.json (and model.safetensors when ``weights``)."""
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, num_labels=num_labels,
                        architectures=["BertForSequenceClassification"])
    folder.mkdir(parents=True, exist_ok=True)
    if weights:
        import torch

        torch.manual_seed(0)
        BertForSequenceClassification(config).save_pretrained(str(folder))
    else:
        config.save_pretrained(str(folder))
    return folder


def write_reviews(path: Path, n: int = 300, seed: int = 0, *, label_column: str = "label") -> Path:
    """Sentences whose class is given away by one word, labelled 'negative' / 'positive'."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = i % 2
        words = rng.sample(FILLER, rng.randint(2, 8)) + [rng.choice(POSITIVE if label else NEGATIVE)]
        rng.shuffle(words)
        rows.append({"sentence": " ".join(words), label_column: "positive" if label else "negative"})
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        with path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter="\t" if path.suffix == ".tsv" else ",")
            w.writeheader()
            w.writerows(rows)
    return path


def run_text_recipe(recipe: dict, folder: Path) -> tuple[Path, dict]:
    """Write ``recipe`` into ``folder``, `compress run` it (exit 0 asserted): its run directory and results.json."""
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    out = folder / "runs"
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    (run_dir,) = [p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return run_dir, json.loads((run_dir / "results.json").read_text())


def text_recipe(**data) -> dict:
    return {
        "name": "text",
        "model": {"source": "hf:bert"},
        "data": {"source": "csv:reviews.csv", "text": {"column": "sentence", "max_length": 32},
                 "split": {"train": 0.6, "calibration": 0.1, "heldout": 0.3}, **data},
        "baseline": {"train": {"epochs": 6, "lr": 0.003, "optimizer": "adamw", "warmup": 0.1,
                               "batch_size": 16, "max_grad_norm": 1.0}},
        "variants": {"onnx": {"steps": [{"export": {}}]}},
        "targets": [{"name": "ort-cpu", "runtime": "onnxruntime", "device": "cpu"}],
        "profile": {"batch_sizes": [1, 8], "rounds": 2, "warmup": 1, "min_round_s": 0.02, "memory": False},
    }


@pytest.fixture
def project(tmp_path) -> Path:
    write_bert(tmp_path / "bert")
    write_reviews(tmp_path / "reviews.csv")
    return tmp_path


def splits_of(folder: Path, recipe: dict, cache_dir: Path | None = None):
    r = parse_recipe(recipe, base_dir=folder)
    return make_splits(r.data, folder, r.seed, r.model, cache_dir), r


# --- hf: model directories ------------------------------------------------------------------------


def test_config_only_dir_builds_an_untrained_eager_model_returning_logits(tmp_path):
    module = ModelSpec("hf:bert", {}, tmp_path).build() if write_bert(tmp_path / "bert") else None
    assert module.config.num_hidden_layers == 2 and module.config._attn_implementation == "eager"
    ids = np.array([[2, 7, 9, 3], [2, 5, 3, 0]], dtype=np.int64)
    batch = {"input_ids": ids, "attention_mask": (ids > 0).astype(np.int64)}
    logits = call_module(module, to_torch(batch))
    assert tuple(logits.shape) == (2, 2)  # a tensor, not a ModelOutput


def test_dir_with_weights_loads_them(tmp_path):
    import torch
    from transformers import BertForSequenceClassification

    write_bert(tmp_path / "bert", weights=True)
    saved = BertForSequenceClassification.from_pretrained(str(tmp_path / "bert")).eval()
    module = ModelSpec("hf:bert", {}, tmp_path).build()
    ids = torch.tensor([[2, 11, 12, 3]])
    with torch.inference_mode():
        assert torch.allclose(module(input_ids=ids), saved(input_ids=ids).logits)


def test_a_pruned_model_is_rebuilt_from_its_saved_config(tmp_path):
    """A cached artifact whose architecture differs from the directory's (fewer layers, narrower
    FFN, as pruning leaves it) reloads from the config saved beside its weights."""
    import torch

    write_bert(tmp_path / "bert")
    spec = ModelSpec("hf:bert", {}, tmp_path)
    from transformers import AutoConfig

    from compress.sources import hf

    small = AutoConfig.from_pretrained(str(tmp_path / "bert"))
    small.num_hidden_layers, small.intermediate_size = 1, 48
    module = hf._from_config(small, "test")
    cache = Cache(tmp_path / "cache")
    art = cache.put(Artifact(kind="torch", digest="pruned", module=module, model_spec=spec))
    assert (art.path.parent / hf.SAVED_CONFIG).is_file() and art.path.parent / hf.SAVED_CONFIG in art.files()
    back = cache.get("pruned", spec).module
    assert back.config.num_hidden_layers == 1 and back.config.intermediate_size == 48
    ids = torch.tensor([[2, 11, 12, 3]])
    with torch.inference_mode():
        assert torch.allclose(back(input_ids=ids), module.eval()(input_ids=ids))


@pytest.mark.parametrize(("setup", "message"), [
    (lambda d: None, "Hugging Face model folder .* does not exist"),
    (lambda d: d.mkdir(), "has no config.json"),
    (lambda d: write_bert(d), "has a config.json but no weights .* baseline.train is not set"),
])
def test_bad_model_dirs_are_recipe_errors(tmp_path, setup, message):
    setup(tmp_path / "bert")
    write_reviews(tmp_path / "reviews.csv")
    recipe = text_recipe()
    del recipe["baseline"]
    with pytest.raises(RecipeError, match=message) as info:
        parse_recipe(recipe, base_dir=tmp_path)
    assert info.value.exit_code == 2


def test_no_weights_and_no_train_split_is_a_recipe_error(project):
    write_reviews(project / "held.csv", seed=1)
    recipe = text_recipe()
    recipe["data"] = {"sources": {"heldout": "csv:held.csv"}, "text": {"column": "sentence"}}
    with pytest.raises(RecipeError, match="no weights, so the baseline must be trained, and the data has no train split"):
        parse_recipe(recipe, base_dir=project)


def test_num_labels_must_match_the_classes(project):
    from compress.run.build import build_baseline

    write_bert(project / "bert", num_labels=3)
    splits, recipe = splits_of(project, text_recipe())
    with pytest.raises(InputError, match=r"num_labels=3 but the data has 2 classes \(negative, positive\)"):
        build_baseline(recipe, project, splits, Cache(None), log=lambda _m: None)


def test_tokenizer_larger_than_the_embedding_is_refused(project):
    from compress.sources.wordpiece import train_wordpiece

    write_bert(project / "bert", vocab_size=20)
    train_wordpiece([" ".join(POSITIVE + NEGATIVE + FILLER)] * 3, project / "bert", vocab_size=200, min_frequency=1)
    with pytest.raises(InputError, match="model.source: the tokenizer has .* tokens but the model's embedding has only 20 rows"):
        splits_of(project, text_recipe())


def test_missing_transformers_names_the_extra(project, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(MissingDependency, match=r"\[transformers\]") as info:
        ModelSpec("hf:bert", {}, project).build()
    assert info.value.exit_code == 2


# --- text data ------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl"])
def test_text_files_split_stratified_and_pad_per_batch(tmp_path, suffix):
    write_bert(tmp_path / "bert")
    write_reviews(tmp_path / f"reviews{suffix}")
    recipe = text_recipe(source=f"{suffix[1:]}:reviews{suffix}")
    splits, _ = splits_of(tmp_path, recipe, tmp_path / "cache")
    assert {r: len(s) for r, s in splits.items()} == {"train": 180, "calibration": 30, "heldout": 90}
    assert splits.classes == ["negative", "positive"]
    for s in splits.values():
        assert abs(s.labels.mean() - 0.5) < 0.02  # stratified
    held = splits["heldout"]
    assert not set(held.rows) & set(splits["train"].rows)
    spec = held.input_spec
    assert spec.kind == "text" and spec.names == ("input_ids", "attention_mask", "token_type_ids")
    lengths = held.lengths()
    idx = np.argsort(lengths)[:4]
    batch = held.inputs(idx)
    assert set(batch) == set(spec.names)
    assert batch["input_ids"].shape == (4, lengths[idx].max())  # the batch's longest, not max_length
    assert batch["attention_mask"].sum(1).tolist() == lengths[idx].tolist()
    again, _ = splits_of(tmp_path, recipe, tmp_path / "cache")
    assert again["heldout"].fingerprint() == held.fingerprint()  # seeded, and the trained vocabulary reused
    assert len(list((tmp_path / "cache").glob("wordpiece-*"))) == 1


def test_missing_label_column_names_it_and_the_columns(tmp_path):
    write_bert(tmp_path / "bert")
    write_reviews(tmp_path / "reviews.csv", label_column="sentiment")
    with pytest.raises(InputError, match=r"no column 'label'; its columns are 'sentence', 'sentiment': "
                                         r"set data.text.label_column") as info:
        splits_of(tmp_path, text_recipe())
    assert info.value.exit_code == 2


def test_wordpiece_is_trained_on_train_only(project):
    write_reviews(project / "train.csv", seed=1)
    (project / "held.csv").write_text("sentence,label\nzyzzyva quokkas,positive\nbad film,negative\n")
    recipe = text_recipe()
    recipe["data"] = {"sources": {"train": "csv:train.csv", "heldout": "csv:held.csv"},
                      "text": {"column": "sentence", "max_length": 32}}
    splits, _ = splits_of(project, recipe)
    vocab = splits.tokenizer.tokenizer.get_vocab()
    assert "zyzzyva" not in vocab and "quokkas" not in vocab and "terrible" in vocab
    assert splits.tokenizer.origin == "trained on the train split"


def test_the_model_directorys_tokenizer_is_used(project):
    from compress.sources.wordpiece import train_wordpiece

    train_wordpiece(["a film"] * 3, project / "bert", vocab_size=50, min_frequency=1)
    splits, _ = splits_of(project, text_recipe())
    assert splits.tokenizer.origin.startswith("model directory")
    assert "terrible" not in splits.tokenizer.tokenizer.get_vocab()


def test_saved_dataset_directory_with_class_labels(tmp_path):
    datasets = pytest.importorskip("datasets")
    write_bert(tmp_path / "bert")
    rows = [{"sentence": f"{w} movie {i}", "label": int(w in POSITIVE)}
            for i, w in enumerate((POSITIVE + NEGATIVE) * 10)]
    features = datasets.Features({"sentence": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["neg", "pos"])})
    ds = datasets.Dataset.from_list(rows, features=features)
    datasets.DatasetDict({"train": ds, "validation": ds.select(range(20))}).save_to_disk(str(tmp_path / "ds"))
    recipe = text_recipe()
    recipe["data"] = {"sources": {"train": "hf-disk:ds@train", "heldout": "hf-disk:ds@validation"},
                      "text": {"column": "sentence"}}
    splits, _ = splits_of(tmp_path, recipe)
    assert splits.classes == ["neg", "pos"] and len(splits["heldout"]) == 20
    assert splits["train"].labels.tolist() == [r["label"] for r in rows]
    recipe["data"]["sources"]["heldout"] = "hf-disk:ds@test"
    with pytest.raises(InputError, match="has no split 'test'; splits: train, validation"):
        splits_of(tmp_path, recipe)


@pytest.mark.slow  # datasets' offline resolution takes ~20 s here
def test_unreachable_hub_dataset_says_how_to_work_offline(tmp_path, monkeypatch):
    pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    write_bert(tmp_path / "bert")
    recipe = text_recipe(source="hf-dataset:no-such-owner/no-such-set/default@train")
    with pytest.raises(InputError, match="cannot load the Hugging Face dataset 'no-such-owner/no-such-set' "
                                         r"\(config 'default'\) split 'train'.*hf-disk:DIR@SPLIT"):
        splits_of(tmp_path, recipe)


def test_evaluation_by_length_keeps_predictions_in_row_order(project):
    """Batches are sorted by length for evaluation; the i-th prediction is still sample i's."""
    import torch

    from compress.measure.accuracy import evaluate
    from compress.runtimes.base import RUNTIMES
    from compress.runtimes.target import TargetConfig

    splits, _ = splits_of(project, text_recipe())
    held = splits["heldout"]
    torch.manual_seed(0)
    module = ModelSpec("hf:bert", {}, project).build()
    art = Artifact(kind="torch", digest="x", module=module)
    session = RUNTIMES.get("torch").load(art, TargetConfig(name="t", runtime="torch", device="cpu"))
    got = evaluate(session, held, batch_size=8)
    one_by_one = np.concatenate([np.asarray(session.run(held.inputs([i]))) for i in range(len(held))])
    assert not np.array_equal(np.argsort(held.lengths(), kind="stable"), np.arange(len(held)))
    np.testing.assert_allclose(got.logits, one_by_one, atol=1e-4)
    assert got.labels.tolist() == held.labels.tolist()


def test_text_corruptions_for_drift_and_robustness(project):
    splits, recipe = splits_of(project, text_recipe(drift={"corruption": "typo", "severity": 5}))
    held, drift = splits["heldout"], splits["drift"]
    assert drift.labels.tolist() == held.labels.tolist()
    assert drift.texts()[0] != held.texts()[0]
    assert drift.fingerprint() != held.fingerprint()
    assert recipe.evaluate.robustness.corruptions_for(splits.is_text) == ["typo", "case", "dropped_words"]
    with pytest.raises(RecipeError, match="data.drift.corruption: 'jpeg' is not a corruption of text data"):
        parse_recipe(text_recipe(drift={"corruption": "jpeg"}), base_dir=project)
    bad = text_recipe()
    bad["evaluate"] = {"robustness": {"corruptions": ["gaussian_blur"]}}
    with pytest.raises(RecipeError, match="evaluate.robustness.corruptions: gaussian_blur do not apply to text"):
        parse_recipe(bad, base_dir=project)


def test_overlap_is_found_by_normalised_content(project):
    from compress.measure.overlap import heldout_overlap

    write_reviews(project / "train.csv", seed=1)
    first = (project / "train.csv").read_text().splitlines()[1].split(",")[0]
    (project / "held.csv").write_text(f"sentence,label\n  {first.upper()} ,positive\nunseen words here,negative\n")
    recipe = text_recipe()
    recipe["data"] = {"sources": {"train": "csv:train.csv", "heldout": "csv:held.csv"},
                      "text": {"column": "sentence"}}
    splits, _ = splits_of(project, recipe)
    assert heldout_overlap(splits, ["train"]) == {"train": 1}


def test_text_keys_refused_for_images():
    with pytest.raises(ValueError, match="data.text applies to text sources"):
        DataConfig(source="sklearn:digits", text={"column": "x"})
    with pytest.raises(ValueError, match="mixes text and image sources"):
        DataConfig(sources={"train": "csv:a.csv", "heldout": "npz:b.npz"})
    assert ModelConfig(source="hf:x").input_shape is None


def test_text_model_keys_checked_against_the_data(project, new_tiny_recipe):
    with_shape = text_recipe()
    with_shape["model"]["input_shape"] = [3, 8, 8]
    with pytest.raises(RecipeError, match="model.input_shape: text models take token arrays"):
        parse_recipe(with_shape, base_dir=project)
    image = new_tiny_recipe()
    image["model"]["tokenizer"] = "tok"
    with pytest.raises(RecipeError, match="model.tokenizer: a tokenizer applies to text data"):
        parse_recipe(image)
    del image["model"]["tokenizer"], image["model"]["input_shape"]
    with pytest.raises(RecipeError, match=r"model.input_shape: image data needs one sample's shape"):
        parse_recipe(image)


# --- a whole run ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_text_recipe_runs_end_to_end(project):
    run_dir, results = run_text_recipe(text_recipe(), project)
    tok = results["data"]["tokenizer"]
    assert tok["origin"] == "trained on the train split" and tok["path"] == "artifacts/tokenizer"
    assert (run_dir / tok["path"] / "tokenizer.json").is_file()
    assert all(s["fingerprint"] for s in results["data"]["splits"].values())
    variant = results["variants"]["onnx"]
    assert variant["status"] == "ok" and variant["heldout_overlap"] == {"calibration": 0, "train": 0}
    assert results["baseline"]["accuracy"]["heldout"]["top1"] > 90  # one word gives the class away
    assert abs(variant["accuracy"]["heldout"]["top1"] - results["baseline"]["accuracy"]["heldout"]["top1"]) < 2
    assert set(results["baseline"]["drift"]["robustness"]["cells"]) == {f"{c}@{s}" for c in ("typo", "case", "dropped_words")
                                                               for s in (1, 3, 5)}
    report = (run_dir / "report.md").read_text()
    assert "| **onnx** |" in report
    assert f"- tokenizer: trained on the train split ({tok['vocab_size']:,} tokens, sha256 {tok['sha256_20']})" in report
    parse_recipe(yaml.safe_load((run_dir / "recipe.yaml").read_text()))  # the recorded recipe is valid


# --- more sources: a vision transformer, an explicit tokenizer, a model without token types ---------


def test_hf_vision_transformer_trains_on_images(tmp_path, tiny_npz):
    from transformers import ViTConfig

    from compress.run.build import build_baseline

    ViTConfig(image_size=8, patch_size=4, num_channels=3, hidden_size=32, num_hidden_layers=1,
              num_attention_heads=2, intermediate_size=64, num_labels=10,
              architectures=["ViTForImageClassification"]).save_pretrained(str(tmp_path / "vit"))
    recipe = parse_recipe({
        "name": "vit", "model": {"source": "hf:vit", "input_shape": [3, 8, 8]},
        "data": {"source": "npz:tiny.npz"}, "baseline": {"train": {"epochs": 1, "optimizer": "adamw", "lr": 1e-3}},
        "variants": {"onnx": {"steps": [{"export": {}}]}},
        "targets": [{"name": "cpu", "runtime": "onnxruntime", "device": "cpu"}],
    }, base_dir=tmp_path)
    splits = make_splits(recipe.data, tmp_path, 0, recipe.model)
    art, info = build_baseline(recipe, tmp_path, splits, Cache(None), log=lambda _m: None)
    assert info["trained"] and type(art.module.model).__name__ == "ViTForImageClassification"
    logits = call_module(art.module, to_torch(splits["heldout"].inputs([0, 1])))
    assert tuple(logits.shape) == (2, 10)


def test_explicit_tokenizer_and_the_inputs_a_model_accepts(tmp_path):
    """model.tokenizer is used as given; a DistilBERT takes no token_type_ids, so none are fed."""
    from transformers import DistilBertConfig

    from compress.sources.wordpiece import train_wordpiece

    DistilBertConfig(vocab_size=200, dim=32, n_layers=1, n_heads=2, hidden_dim=64, max_position_embeddings=64,
                     architectures=["DistilBertForSequenceClassification"]).save_pretrained(str(tmp_path / "bert"))
    write_reviews(tmp_path / "reviews.csv")
    train_wordpiece([" ".join(POSITIVE + NEGATIVE + FILLER)] * 3, tmp_path / "tok", vocab_size=100, min_frequency=1)
    recipe = text_recipe()
    recipe["model"]["tokenizer"] = "tok"
    splits, _ = splits_of(tmp_path, recipe)
    assert splits.tokenizer.origin.endswith("(model.tokenizer)")
    assert splits.input_spec.names == ("input_ids", "attention_mask")
    module = ModelSpec("hf:bert", {}, tmp_path).build()
    assert tuple(call_module(module, to_torch(splits["heldout"].inputs([0, 1, 2]))).shape) == (3, 2)


def test_unlabelled_production_text(project):
    (project / "prod.csv").write_text("sentence\na dull film\nlovely acting\n")
    splits, _ = splits_of(project, text_recipe(production={"source": "csv:prod.csv"}))
    prod = splits["production"]
    assert len(prod) == 2 and prod.texts()[0] == ["a dull film", "lovely acting"]
    assert set(prod.inputs()) == set(splits.input_spec.names)


def test_labelled_drift_text_file_shares_the_label_mapping(project):
    (project / "newer.csv").write_text("sentence,label\nan awful sequel,negative\na superb sequel,positive\n")
    splits, _ = splits_of(project, text_recipe(drift={"source": "csv:newer.csv"}))
    assert splits["drift"].labels.tolist() == [0, 1] and splits["drift"].source == "csv:newer.csv"
    (project / "odd.csv").write_text("sentence,label\nmeh,neutral\n")
    with pytest.raises(InputError, match=r"data.drift.source: odd.csv has labels \['neutral'\] that the label mapping"):
        splits_of(project, text_recipe(drift={"source": "csv:odd.csv"}))
