"""The three benchmark models of eval/bench_transformers.py with their data, as one ``Setup`` each.

- ``sst2`` / ``agnews``: the 4 x 256 BERTs of eval/text_models.py (trained once, cached); held-out
  sentences in length-sorted batches padded per batch; timing at batch 32 x 128 tokens (real
  held-out sentences padded to 128); calibration and fine-tuning from the train split only.
- ``vit``: eval/vit_cifar.py's CIFAR-10 ViT with the shared weights; held out: the exact 1,000;
  calibration and fine-tuning: JPEG test images that are not twins of them (non_twin_jpeg_rows).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

SEQ_LEN = 128
TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass
class Setup:
    name: str
    module: object  # the fp32 torch module (forward(*inputs in `names` order) -> logits)
    names: list[str]
    dynamic_axes: dict
    heldout: list[tuple[dict, np.ndarray]]  # (inputs, sample indices)
    labels: np.ndarray
    timing_batch: dict  # batch 32 (x 128 tokens for text)
    calibration: list[dict]  # batch-1 samples
    fusion: tuple[str, int, int]  # ORT optimizer model_type, num_heads, hidden_size
    prune: Callable  # (module, ffn_keep, layers) -> module
    layers: int
    finetune: Callable  # epoch -> iterable of (torch inputs dict, torch labels)
    finetune_lr: float = 1e-4
    notes: dict = field(default_factory=dict)
    extra_exports: dict = field(default_factory=dict)  # name -> module exported besides fp32
    dev_batches: Callable | None = None  # (pad_to or None) -> list of batch-32 dicts (text only)

    def call(self, module, inputs: dict):
        return module(*[inputs[n] for n in self.names])


def _pad_to(enc, indices, width: int) -> dict:
    from compress.sources.text import pad_batch

    batch = pad_batch(enc, indices).inputs
    out = {}
    for name in TEXT_INPUTS:
        arr = batch.get(name)
        if arr is None:
            arr = np.zeros_like(batch["input_ids"])
        fill = enc.pad_token_id if name == "input_ids" else 0
        padded = np.full((arr.shape[0], width), fill, dtype=np.int64)
        padded[:, : arr.shape[1]] = arr
        out[name] = padded
    return out


def _per_batch(enc, indices) -> dict:
    return _pad_to(enc, indices, int(enc.lengths[indices].max()))


def text_setup(task_name: str, data_dir: Path, log=print) -> Setup:
    import torch
    from text_models import TASKS, trained_model
    from transformer_variants import Logits, prune_bert

    from compress.sources.text import encode, length_batches

    task = TASKS[task_name]
    model, data = trained_model(task, data_dir, log)
    enc_held = encode(data.heldout, data.tokenizer, SEQ_LEN)
    enc_train = encode(data.train, data.tokenizer, SEQ_LEN)
    heldout = [(_per_batch(enc_held, b), b) for b in length_batches(enc_held.lengths, 32, shuffle=False)]
    rng = np.random.default_rng(0)
    cal_idx = rng.choice(len(data.train.labels), size=300, replace=False)
    calibration = [_per_batch(enc_train, np.array([i])) for i in cal_idx]
    timing = _pad_to(enc_held, np.arange(32), SEQ_LEN)
    train_labels = torch.from_numpy(data.train.labels)
    ft_samples = rng.permutation(len(data.train.labels))[:8000]  # a subsample keeps distillation short
    cut_enc = encode(type(data.train)(data.train.path, [data.train.texts[i] for i in ft_samples], None,
                                      data.train.labels[ft_samples], data.train.label_names),
                     data.tokenizer, task.max_length)

    def finetune(epoch: int):
        for b in length_batches(cut_enc.lengths, 32, seed=100 + epoch):
            yield ({k: torch.from_numpy(v) for k, v in _per_batch(cut_enc, b).items()},
                   train_labels[ft_samples[b]])

    def dev_batches(pad_to):
        order = length_batches(enc_held.lengths, 32, shuffle=False)
        return [_pad_to(enc_held, b, pad_to) if pad_to else _per_batch(enc_held, b) for b in order]

    cfg = model.config
    return Setup(
        name=task_name, module=Logits(model), names=list(TEXT_INPUTS),
        dynamic_axes={n: {0: "batch", 1: "sequence"} for n in TEXT_INPUTS},
        heldout=heldout, labels=data.heldout.labels, timing_batch=timing, calibration=calibration,
        fusion=("bert", cfg.num_attention_heads, cfg.hidden_size),
        prune=lambda m, ffn_keep, layers: Logits(prune_bert(m.inner, ffn_keep, layers)),
        layers=cfg.num_hidden_layers, finetune=finetune, finetune_lr=1e-4, dev_batches=dev_batches,
        notes={"heldout_mean_tokens": float(enc_held.lengths.mean()),
               "heldout_n": len(data.heldout.labels), "train_n": len(data.train.labels)},
    )


class EagerViTLayer:
    """A torch TransformerEncoderLayer (post-norm, ReLU) computed with explicit q/k/v MatMuls, the
    pattern ORT's attention fusion recognises (nn.MultiheadAttention's export it does not)."""

    def __new__(cls, layer):
        import torch
        from torch import nn

        class _Layer(nn.Module):
            def __init__(self, src):
                super().__init__()
                attn = src.self_attn
                d, self.heads = attn.embed_dim, attn.num_heads
                self.q, self.k, self.v = (nn.Linear(d, d) for _ in range(3))
                with torch.no_grad():
                    for i, lin in enumerate((self.q, self.k, self.v)):
                        lin.weight.copy_(attn.in_proj_weight[i * d:(i + 1) * d])
                        lin.bias.copy_(attn.in_proj_bias[i * d:(i + 1) * d])
                self.out = attn.out_proj
                self.linear1, self.linear2 = src.linear1, src.linear2
                self.norm1, self.norm2 = src.norm1, src.norm2

            def forward(self, x):
                b, s, d = x.shape
                h = self.heads

                def split(t):
                    return t.view(b, s, h, d // h).permute(0, 2, 1, 3)

                q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
                scores = torch.matmul(q, k.transpose(-1, -2)) / float(np.sqrt(d // h))
                ctx = torch.matmul(torch.softmax(scores, dim=-1), v).permute(0, 2, 1, 3).reshape(b, s, d)
                x = self.norm1(x + self.out(ctx))
                return self.norm2(x + self.linear2(torch.relu(self.linear1(x))))

        return _Layer(layer)


def eager_vit(model):
    """The same ViT (same weights) with EagerViTLayer layers: the export ORT can fuse."""
    import copy

    import torch

    m = copy.deepcopy(model)
    m.transformer = torch.nn.Sequential(*[EagerViTLayer(lay) for lay in m.transformer.layers])
    return m.eval()


def vit_setup(data_dir: Path, log=print) -> Setup:
    import torch
    from cifar_data import load_jpeg_10k, non_twin_jpeg_rows
    from transformer_variants import prune_vit
    from vit_cifar import MEAN_RGB, STD_RGB, load_exact_1000, pretrained

    torch.set_num_threads(1)
    model = pretrained(data_dir / "vit-cifar10" / "vit_cifar10.pth")
    images, labels = load_exact_1000(data_dir)
    jpeg, jpeg_labels = load_jpeg_10k(data_dir)
    rows = non_twin_jpeg_rows(data_dir)
    x = ((jpeg[rows].astype(np.float32) / 255 - MEAN_RGB) / STD_RGB).transpose(0, 3, 1, 2)
    x, y = np.ascontiguousarray(x), jpeg_labels[rows]
    rng = np.random.default_rng(0)
    calibration = [{"pixel_values": x[i:i + 1]} for i in rng.choice(len(x), 300, replace=False)]
    heldout = [({"pixel_values": images[i:i + 100]}, np.arange(i, min(i + 100, len(images))))
               for i in range(0, len(images), 100)]

    def finetune(epoch: int):
        r = np.random.default_rng(100 + epoch)
        order = r.permutation(len(x))
        for i in range(0, len(order) - 63, 64):
            b = x[order[i:i + 64]].copy()
            flip = r.random(len(b)) < 0.5
            b[flip] = b[flip, :, :, ::-1]
            yield {"pixel_values": torch.from_numpy(np.ascontiguousarray(b))}, torch.from_numpy(y[order[i:i + 64]])

    eager = eager_vit(model)
    with torch.no_grad():
        gap = float((eager(torch.from_numpy(images[:100])) - model(torch.from_numpy(images[:100]))).abs().max())
    log(f"  [vit] eager-attention rewrite: max |eager - original| logit {gap:.2e} on 100 images")
    return Setup(
        name="vit", module=model, names=["pixel_values"], dynamic_axes={"pixel_values": {0: "batch"}},
        heldout=heldout, labels=labels, timing_batch={"pixel_values": images[:32]},
        calibration=calibration, fusion=("vit", 8, 128),
        prune=lambda m, ffn_keep, layers: prune_vit(m, ffn_keep, layers), layers=6,
        finetune=finetune, finetune_lr=2e-4, extra_exports={"eager": eager},
        notes={"eager_max_logit_gap": gap, "finetune_images": len(x), "heldout_n": len(labels)},
    )
