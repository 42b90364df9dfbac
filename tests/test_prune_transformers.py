"""Structured pruning of transformers: attention heads and FFN neurons (tiny Hugging Face BERT and
ViT, a hand-written nn.TransformerEncoder ViT), whole encoder layers, hidden-state distillation from
the baseline, and the options that are refused."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from compress.artifacts import Artifact, Cache
from compress.errors import RecipeError, StepError
from compress.pruning.channels import count_macs_params
from compress.pruning.report import pruning_table
from compress.pruning.transformers import attention_modules, ffn_layers, layer_pairs
from compress.recipe import parse_recipe
from compress.sources.data import Split, Splits
from compress.sources.inputs import InputSpec, call_module, to_torch
from compress.sources.models import ModelSpec
from compress.steps.base import StepContext
from compress.steps.export import ExportConfig
from compress.steps.export import apply as export
from compress.steps.finetune import FinetuneConfig
from compress.steps.finetune import apply as finetune
from compress.steps.prune import PruneConfig
from compress.steps.prune import apply as prune
from compress.training import FeatureTaps

transformers = pytest.importorskip("transformers")

NUM_CLASSES = 3
VOCAB = 100
SEQ_LEN = 16
TEXT = InputSpec.text(["input_ids", "attention_mask", "token_type_ids"], SEQ_LEN, VOCAB)
PIXELS = (3, 16, 16)

MODELS = '''
import torch
from transformers import BertConfig, BertForSequenceClassification, ViTConfig, ViTForImageClassification

# the wrappers the hf: source puts around a Hugging Face classifier (forward returns the logits)
from compress.sources.hf_module import HFClassifier, HFImageClassifier


def tiny_bert(layers=4, num_classes=3):
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64, num_labels=num_classes,
                     attn_implementation="eager")
    return HFClassifier(BertForSequenceClassification(cfg))


def tiny_vit(num_classes=3):
    torch.manual_seed(0)
    cfg = ViTConfig(image_size=16, patch_size=4, num_channels=3, hidden_size=32, num_hidden_layers=2,
                    num_attention_heads=4, intermediate_size=64, num_labels=num_classes,
                    attn_implementation="eager")
    return HFImageClassifier(ViTForImageClassification(cfg))


def hand_vit(num_classes=3):
    from eval.vit_cifar import ViT

    torch.manual_seed(0)
    return ViT(num_classes=num_classes, image_size=16, dim=32, depth=3, heads=4, mlp_dim=64)
'''


class TokenSplit:
    """A text split as the data sources give one: named int64 token inputs, labels, batches by rows."""

    def __init__(self, role: str, ids: np.ndarray, lengths: np.ndarray, labels: np.ndarray):
        self.role, self.ids, self.lengths_, self.labels = role, ids, lengths, labels
        self.input_spec, self.source = TEXT, "test"

    def __len__(self) -> int:
        return len(self.labels)

    def inputs(self, idx=None) -> dict[str, np.ndarray]:
        rows = np.arange(len(self)) if idx is None else np.asarray(idx)
        width = int(self.lengths_[rows].max())  # padded to the longest of the batch
        ids = self.ids[rows, :width]
        mask = (np.arange(width)[None] < self.lengths_[rows, None]).astype(np.int64)
        return {"input_ids": ids * mask, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}

    def lengths(self) -> np.ndarray:
        return self.lengths_

    def batches(self, batch_size: int, idx=None):
        rows = np.arange(len(self)) if idx is None else np.asarray(idx)
        for i in range(0, len(rows), batch_size):
            yield self.inputs(rows[i:i + batch_size]), self.labels[rows[i:i + batch_size]]

    def subset(self, idx, role=None, source=None):
        idx = np.asarray(idx)
        return TokenSplit(role or self.role, self.ids[idx], self.lengths_[idx], self.labels[idx])


def _text_splits(n: int = 96) -> Splits:
    rng = np.random.default_rng(0)
    ids = rng.integers(1, VOCAB, (n, SEQ_LEN)).astype(np.int64)
    lengths = rng.integers(4, SEQ_LEN + 1, n)
    labels = (ids[:, 1] % NUM_CLASSES).astype(np.int64)  # learnable from the second token
    splits = Splits()
    splits["train"] = TokenSplit("train", ids[:64], lengths[:64], labels[:64])
    splits["calibration"] = TokenSplit("calibration", ids[64:], lengths[64:], labels[64:])
    splits.classes = [str(i) for i in range(NUM_CLASSES)]
    return splits


def _image_splits(n: int = 48) -> Splits:
    rng = np.random.default_rng(0)
    x = rng.random((n, *PIXELS)).astype(np.float32)
    y = rng.integers(0, NUM_CLASSES, n)
    mean, std = np.full((1, 3, 1, 1), 0.5, np.float32), np.full((1, 3, 1, 1), 0.25, np.float32)
    splits = Splits()
    splits["train"] = Split.from_arrays("train", x[:32], y[:32], mean, std, "test")
    splits["calibration"] = Split.from_arrays("calibration", x[32:], y[32:], mean, std, "test")
    splits.classes = [str(i) for i in range(NUM_CLASSES)]
    return splits


@pytest.fixture
def models_file(tmp_path):
    path = tmp_path / "tiny_transformers.py"
    path.write_text(MODELS)
    return path


def _baseline(models_file, factory: str, spec) -> Artifact:
    model_spec = ModelSpec(f"python:{models_file.name}:{factory}", {}, models_file.parent)
    module = model_spec.build().eval()
    art = Artifact(kind="torch", digest=factory, module=module, model_spec=model_spec)
    art.meta["macs"], art.meta["params"] = count_macs_params(module, spec)
    return art


@pytest.fixture
def bert(models_file) -> Artifact:
    return _baseline(models_file, "tiny_bert", TEXT)


def _ctx(tmp_path, baseline, spec=TEXT, splits=None) -> StepContext:
    splits = splits or (_text_splits() if spec is TEXT else _image_splits())
    spec = spec if isinstance(spec, InputSpec) else InputSpec.image(spec)
    return StepContext(splits=splits, model_spec=baseline.model_spec, input_spec=spec, seed=0,
                       workdir=tmp_path, baseline=baseline, log=lambda _m: None)


def _tokens(batch: int, seq_len: int) -> dict[str, torch.Tensor]:
    return to_torch(TEXT.example(batch, fill="normal", seed=seq_len, seq_len=seq_len))


def _heads(module) -> list[int]:
    return [a.heads for a in attention_modules(module)]


def test_heads_and_ffn_pruning_shrinks_bert_and_its_config_follows(tmp_path, bert):
    out = prune(bert, PruneConfig(granularity="heads", head_ratio=0.5, ffn_ratio=0.5), _ctx(tmp_path, bert))
    module, pr = out.module, out.meta["pruning"]
    assert _heads(module) == [2, 2, 2, 2]
    assert [lin.out_features for _, lin in ffn_layers(module)] == [32, 32, 32, 32]
    assert module.config.num_attention_heads == 2 and module.config.intermediate_size == 32
    assert module.config.hidden_size == 32  # the width is never cut
    assert pr["params_after"] < pr["params_before"] and pr["macs_after"] < pr["macs_before"]
    assert pr["transformer"]["before"] == {"heads": 16, "ffn_neurons": 256, "layers": 4}
    assert pr["transformer"]["after"] == {"heads": 8, "ffn_neurons": 128, "layers": 4}
    assert (pr["head_ratio"], pr["ffn_ratio"]) == (0.5, 0.5)
    with torch.inference_mode():
        for seq_len in (7, 29):  # the sequence axis stays dynamic
            logits = call_module(module, _tokens(3, seq_len))
            assert logits.shape == (3, NUM_CLASSES) and torch.isfinite(logits).all()
    assert "heads" in out.lineage[-1]
    # the report's pruning table shows the cut and the MAC promise next to the measured speed-up
    results = {"variants": {"p": {"status": "ok", "artifact": {"facts": {"pruning": pr}},
                                  "speedup": {"cpu": {32: {"estimate": 1.25}}}}}}
    row = pruning_table(results, "cpu").splitlines()[-1]
    assert "heads 0.5, FFN 0.5 (heads 16 → 8, FFN 256 → 128, layers 4 → 4)" in row
    assert f"{pr['macs_before'] / pr['macs_after']:.2f}x | 1.25x (b32)" in row


@pytest.mark.slow
def test_head_pruned_bert_saves_and_reloads_exactly(tmp_path, bert):
    out = prune(bert, PruneConfig(granularity="heads", ratio=0.5), _ctx(tmp_path, bert))
    out = prune(out, PruneConfig(granularity="blocks", blocks=["*encoder.layer.*"], ratio=0.5),
                _ctx(tmp_path, bert))
    out.digest = "pruned"
    Cache(tmp_path / "cache").put(out)
    again = Cache(tmp_path / "cache").get("pruned", bert.model_spec)
    x = _tokens(2, 11)
    with torch.inference_mode():
        assert torch.equal(call_module(out.module, x), call_module(again.module, x))
    cfg = again.module.config
    assert (cfg.num_attention_heads, cfg.intermediate_size, cfg.num_hidden_layers) == (2, 32, 2)
    assert _heads(again.module) == [2, 2]


@pytest.mark.slow
def test_an_hf_source_bert_pruned_to_3_of_4_heads_reloads_from_its_saved_config(tmp_path):
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                                     intermediate_size=64, max_position_embeddings=64, num_labels=NUM_CLASSES)
    transformers.BertForSequenceClassification(config).save_pretrained(tmp_path / "bert")
    spec = ModelSpec(f"hf:{tmp_path / 'bert'}", {}, tmp_path)
    base = Artifact(kind="torch", digest="hf-bert", module=spec.build().eval(), model_spec=spec)
    ctx = _ctx(tmp_path, base)
    out = prune(base, PruneConfig(granularity="heads", head_ratio=0.25, ffn_ratio=0.5), ctx)
    out = prune(out, PruneConfig(granularity="blocks", blocks=["*encoder.layer.*"], ratio=0.34), ctx)
    out.digest = "pruned"
    Cache(tmp_path / "cache").put(out)  # the state_dict and the pruned HF config beside it
    again = Cache(tmp_path / "cache").get("pruned", spec)
    # 3 heads do not divide the width 32: built at full width, narrowed by the stored weights
    cfg = again.module.config
    assert (cfg.num_attention_heads, cfg.head_dim, cfg.intermediate_size, cfg.num_hidden_layers) == (3, 8, 32, 2)
    assert _heads(again.module) == [3, 3]
    x = _tokens(2, 13)
    with torch.inference_mode():
        assert torch.equal(call_module(out.module, x), call_module(again.module, x))


def test_a_head_pruned_bert_exports_with_attention_fused_in_every_layer(tmp_path, bert):
    ctx = _ctx(tmp_path, bert)
    out = prune(bert, PruneConfig(granularity="heads", head_ratio=0.5, ffn_ratio=0.25), ctx)
    onnx_art = export(out, ExportConfig(optimize="auto"), ctx)  # verified against torch on padded calibration batches
    facts = onnx_art.meta["transformer_fusions"]
    # ONNX Runtime fuses attention only when told the attention width (2 heads x 8), not the model's (32)
    assert (facts["num_heads"], facts["hidden_size"]) == (2, 16)
    assert facts["fused"]["Attention"] == 4 and facts["max_rel_error"] < 1e-3


def test_vit_heads_and_ffn_pruning_reloads_from_its_own_hugging_face_config(tmp_path, models_file):
    vit = _baseline(models_file, "tiny_vit", PIXELS)
    out = prune(vit, PruneConfig(granularity="heads", head_ratio=0.25, ffn_ratio=0.5),
                _ctx(tmp_path, vit, spec=PIXELS))
    assert _heads(out.module) == [3, 3]
    cfg = out.module.config
    assert (cfg.num_attention_heads, cfg.head_dim, cfg.intermediate_size) == (3, 8, 32)
    # the config alone rebuilds the pruned architecture: save_pretrained / from_pretrained round trip
    out.module.model.save_pretrained(tmp_path / "pruned-vit")
    again = transformers.ViTForImageClassification.from_pretrained(tmp_path / "pruned-vit").eval()
    x = torch.randn(2, *PIXELS)
    with torch.inference_mode():
        torch.testing.assert_close(again(pixel_values=x).logits, out.module(x))


@pytest.mark.slow
def test_hand_written_vit_loses_ffn_neurons_and_layers_not_heads(tmp_path, models_file):
    vit = _baseline(models_file, "hand_vit", PIXELS)
    ctx = _ctx(tmp_path, vit, spec=PIXELS)
    out = prune(vit, PruneConfig(granularity="heads", head_ratio=0, ffn_ratio=0.5), ctx)
    assert [lin.out_features for _, lin in ffn_layers(out.module)] == [32, 32, 32]
    assert out.meta["pruning"]["params_after"] < out.meta["pruning"]["params_before"]
    with pytest.raises(StepError, match="torch.nn.MultiheadAttention, whose heads cannot be removed.*head_ratio: 0"):
        prune(vit, PruneConfig(granularity="heads", ratio=0.5), ctx)
    fewer = prune(out, PruneConfig(granularity="blocks", blocks=["transformer.layers.*"], ratio=0.34), ctx)
    assert len(fewer.module.transformer.layers) == 2 and fewer.module.transformer.num_layers == 2
    fewer.digest = "fewer"
    Cache(tmp_path / "cache").put(fewer)
    again = Cache(tmp_path / "cache").get("fewer", vit.model_spec)
    x = torch.randn(2, *PIXELS)
    with torch.inference_mode():
        assert torch.equal(fewer.module(x), again.module(x))


def test_layer_removal_updates_num_hidden_layers_and_records_the_kept_layers(tmp_path, bert):
    out = prune(bert, PruneConfig(granularity="blocks", blocks=["*encoder.layer.*"], ratio=0.5, importance="taylor"),
                _ctx(tmp_path, bert))
    pr = out.meta["pruning"]
    layers = out.module.model.bert.encoder.layer
    assert len(layers) == 2 and out.module.config.num_hidden_layers == 2
    removed = {int(n.rsplit(".", 1)[1]) for n in pr["removed_blocks"]}
    assert len(removed) == 2 and layers.compress_kept_layers.tolist() == sorted({0, 1, 2, 3} - removed)
    assert pr["transformer"]["config"]["num_hidden_layers"] == 2
    with torch.inference_mode():
        assert call_module(out.module, _tokens(2, 9)).shape == (2, NUM_CLASSES)


def test_layers_go_until_the_mac_budget_is_met(tmp_path, bert):
    macs0 = bert.meta["macs"]
    out = prune(bert, PruneConfig(granularity="blocks", blocks=["*encoder.layer.*"], macs_budget=0.6),
                _ctx(tmp_path, bert))
    assert out.meta["pruning"]["macs_after"] <= 0.6 * macs0
    assert len(out.module.model.bert.encoder.layer) == 2  # 3 layers keep more than 60%


@pytest.mark.slow
def test_heads_and_ffn_meet_a_mac_budget(tmp_path, bert):
    out = prune(bert, PruneConfig(granularity="heads", macs_budget=0.7), _ctx(tmp_path, bert))
    pr = out.meta["pruning"]
    assert pr["macs_after"] <= 0.7 * bert.meta["macs"]
    assert pr["head_ratio"] == pr["ffn_ratio"] < 0.75  # one searched ratio for both, at least one head kept


@pytest.mark.slow
def test_iterative_head_pruning_reaches_the_same_counts(tmp_path, bert):
    cfg = PruneConfig(granularity="heads", ratio=0.5, iterative_steps=2, finetune={"epochs": 1, "optimizer": "adamw"})
    out = prune(bert, cfg, _ctx(tmp_path, bert))
    assert _heads(out.module) == [2, 2, 2, 2]
    assert [lin.out_features for _, lin in ffn_layers(out.module)] == [32] * 4
    assert [h["optimizer"] for h in out.meta["pruning"]["finetune"]] == ["adamw", "adamw"]


def test_macs_are_counted_for_named_token_inputs_at_the_spec_length(bert):
    short = count_macs_params(bert.module, InputSpec.text(["input_ids", "attention_mask"], 8, VOCAB))[0]
    long = count_macs_params(bert.module, InputSpec.text(["input_ids", "attention_mask"], 16, VOCAB))[0]
    assert 1.9 < long / short <= 2.0  # the linear layers scale with tokens


def _layer_gap(student, teacher, x) -> float:
    with FeatureTaps(student, teacher, layer_pairs(student, teacher)) as taps, torch.no_grad():
        call_module(student, x)
        call_module(teacher, x)
        return float(taps.loss())


@pytest.mark.slow
def test_hidden_state_distillation_pairs_kept_layers_and_pulls_them_to_the_teacher(tmp_path, bert):
    ctx = _ctx(tmp_path, bert)
    cut = prune(bert, PruneConfig(granularity="blocks", blocks=["*encoder.layer.*"], ratio=0.5), ctx)
    kept = cut.module.model.bert.encoder.layer.compress_kept_layers.tolist()
    pairs = layer_pairs(cut.module, bert.module)
    assert pairs == [(f"model.bert.encoder.layer.{i}", f"model.bert.encoder.layer.{j}") for i, j in enumerate(kept)]
    x = to_torch(ctx.splits["train"].inputs(np.arange(32)))
    gaps = {}
    for hidden_states in (False, True):
        cfg = FinetuneConfig(epochs=4, optimizer="adamw", lr=2e-3, batch_size=16,
                             distill={"alpha": 0.5, "hidden_states": hidden_states, "feature_weight": 10.0})
        tuned = finetune(cut, cfg, ctx)
        history = tuned.meta["finetune"]
        assert history["distilled"] and history["optimizer"] == "adamw" and history["lr"] == 2e-3
        assert history["loss"][-1] < history["loss"][0]
        gaps[hidden_states] = _layer_gap(tuned.module, bert.module, x)
    # the same cut and fine-tuning, with and without the hidden-state term
    assert gaps[True] < 0.5 * gaps[False]


def test_finetune_refuses_image_augmentation_on_text(tmp_path, bert):
    with pytest.raises(StepError, match="augment needs image inputs.*holds text: remove augment"):
        finetune(bert, FinetuneConfig(epochs=1, augment={}), _ctx(tmp_path, bert))


def test_channel_pruning_of_a_transformer_points_to_heads_or_blocks(tmp_path, bert):
    with pytest.raises(StepError, match="granularity: heads .* or blocks"):
        prune(bert, PruneConfig(ratio=0.5), _ctx(tmp_path, bert))


def test_a_head_ratio_that_removes_every_head_is_refused(tmp_path, bert):
    with pytest.raises(StepError, match="head_ratio 0.9 removes all 4 heads.*at most 0.75"):
        prune(bert, PruneConfig(granularity="heads", head_ratio=0.9, ffn_ratio=0), _ctx(tmp_path, bert))


@pytest.mark.parametrize("bad, message", [
    ({"head_ratio": 0.5}, "head_ratio apply to granularity: heads"),
    ({"granularity": "heads", "importance": "bn"}, "for heads use one of l1, l2, taylor, random"),
    ({"granularity": "heads", "head_ratio": 0.5, "macs_budget": 0.5}, "head_ratio fix the cut, and macs_budget"),
    ({"granularity": "heads", "head_ratio": 0, "ffn_ratio": 0}, "nothing would be pruned"),
    ({"granularity": "heads", "global_pruning": True}, "global_pruning only apply to granularity: channels"),
    ({"granularity": "heads", "blocks": ["*layer.*"]}, "blocks is for granularity: blocks"),
    ({"granularity": "heads", "ffn_ratio": 1.0}, "ffn_ratio"),
])
def test_transformer_prune_options_are_checked_when_the_recipe_loads(bad, message):
    with pytest.raises(ValidationError, match=message):
        PruneConfig(**bad)


@pytest.mark.parametrize("step, key", [
    ({"prune": {"granularity": "heads", "head_ratio": 1.5}}, "variants.p.steps[0].prune.head_ratio"),
    ({"prune": {"granularity": "heads", "ratio": 0.5, "finetune": {"optimizer": "adam"}}},
     "variants.p.steps[0].prune.finetune.optimizer"),
    ({"prune": {"granularity": "heads", "finetune": {"distill": {"hidden_state": True}}}},
     "variants.p.steps[0].prune.finetune.distill.hidden_state"),
])
def test_invalid_transformer_options_are_recipe_errors_naming_the_key(recipe_dict, step, key):
    recipe_dict["variants"] = {"p": {"steps": [step, {"export": {}}]}}
    with pytest.raises(RecipeError, match=re.escape(key)) as info:
        parse_recipe(recipe_dict)
    assert info.value.exit_code == 2


@pytest.mark.slow
def test_a_text_recipe_prunes_heads_and_layers_with_distillation_end_to_end(tmp_path):


    from tests.test_hf_text import run_text_recipe, text_recipe, write_bert, write_reviews

    write_bert(tmp_path / "bert", layers=4)  # 2 heads of 16, FFN 64
    write_reviews(tmp_path / "reviews.csv")
    recipe = text_recipe()
    tune = {"epochs": 3, "optimizer": "adamw", "lr": 0.003, "batch_size": 16,
            "distill": {"alpha": 0.5, "hidden_states": True}}
    recipe["variants"] = {
        "heads": {"steps": [{"prune": {"granularity": "heads", "head_ratio": 0.5, "ffn_ratio": 0.5,
                                       "finetune": tune}}, {"export": {"optimize": "auto"}}]},
        "layers": {"steps": [{"prune": {"granularity": "blocks", "blocks": ["*encoder.layer.*"], "ratio": 0.5,
                                        "finetune": tune}}, {"export": {"optimize": "auto"}}]},
    }
    run_dir, results = run_text_recipe(recipe, tmp_path)
    for name, after in (("heads", {"heads": 4, "ffn_neurons": 128, "layers": 4}),
                        ("layers", {"heads": 4, "ffn_neurons": 128, "layers": 2})):
        v = results["variants"][name]
        facts = v["artifact"]["facts"]
        assert v["status"] == "ok" and facts["pruning"]["transformer"]["after"] == after
        assert facts["pruning"]["finetune"][0]["distilled"]
        assert facts["transformer_fusions"]["fused"]["Attention"] == after["layers"]  # every layer fused
        assert v["accuracy"]["heldout"]["top1"] > 70  # one word gives the class away
    report = (run_dir / "report.md").read_text()
    assert "heads 0.5, FFN 0.5 (heads 8 → 4, FFN 256 → 128, layers 4 → 4)" in report
