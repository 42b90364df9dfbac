"""A tiny ONNX BERT with dynamic batch and sequence axes, and a stand-in text split (lengths and
per-batch padded inputs), for the profiler's and the quantize step's text tests."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

VOCAB = 64


def export_tiny_bert(path: Path, *, trained_like: bool = False) -> Path:
    """A 2-layer BERT of hidden 32 (eager attention), exported with input_ids and attention_mask
    whose batch and sequence axes are dynamic. ``trained_like``: weights of a larger spread and no
    two biases or norm scales identical (the exporter would share one initializer between equal
    ones, which a trained model never has), so quantization error is measured on real logits."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, num_labels=2,
                        attn_implementation="eager", initializer_range=0.2 if trained_like else 0.02)
    model = BertForSequenceClassification(config).eval()
    if trained_like:
        with torch.no_grad():
            for param in model.parameters():
                param.add_(0.05 * torch.randn_like(param))

    class Logits(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask).logits

    ids = torch.ones((2, 16), dtype=torch.int64)
    axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
            "logits": {0: "batch"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Logits(model), (ids, torch.ones_like(ids)), str(path), dynamo=False,
                          input_names=["input_ids", "attention_mask"], output_names=["logits"],
                          dynamic_axes=axes, opset_version=17)
    return path


class StandInTextSplit:
    """What the profiler reads of a text split: ``lengths()`` and ``inputs(idx)`` padded to the
    longest sample of the batch (token ids below VOCAB, pad id 0)."""

    role = "heldout"

    def __init__(self, lengths, seed: int = 0):
        self._lengths = np.asarray(lengths, dtype=np.int64)
        rng = np.random.default_rng(seed)
        self.tokens = [rng.integers(1, VOCAB, n) for n in self._lengths]
        self.labels = rng.integers(0, 2, len(self._lengths))

    def __len__(self) -> int:
        return len(self._lengths)

    def lengths(self) -> np.ndarray:
        return self._lengths.copy()

    def inputs(self, idx) -> dict[str, np.ndarray]:
        idx = np.asarray(idx)
        width = int(self._lengths[idx].max())
        ids = np.zeros((len(idx), width), np.int64)
        for row, i in enumerate(idx):
            ids[row, : self._lengths[i]] = self.tokens[i]
        mask = (np.arange(width)[None, :] < self._lengths[idx][:, None]).astype(np.int64)
        return {"input_ids": ids, "attention_mask": mask}

    def stream(self, batch_size: int, idx=None, *, labels: bool = False):
        """Batches of rows ``idx`` (all when None), each padded to its own longest sample."""
        idx = np.arange(len(self)) if idx is None else np.asarray(idx)
        chunks = [idx[i:i + batch_size] for i in range(0, len(idx), batch_size)]
        split = self

        class Stream:
            def __len__(self):
                return len(chunks)

            def __iter__(self):
                for rows in chunks:
                    yield (split.inputs(rows), split.labels[rows]) if labels else split.inputs(rows)

        return Stream()

    def sample_hashes(self) -> list[str]:
        return [f"{self.role}-{i}" for i in range(len(self))]
