"""The small text BERTs the transformer benchmarks run: trained from a config on real data, cached.

SST-2 (GLUE train -> the 872 dev sentences) and AG News (the 10,001-row train slice -> a seeded
subset of the official test set), both from shared/data/text-classification (PROVENANCE.md). The
recipe is eval/sst2_baseline.py's: a WordPiece vocabulary trained on the train split, a
``BertForSequenceClassification`` of 4 layers x 256 built from its config (eager attention),
AdamW with linear warm-up and decay on length-bucketed batches, one torch thread. The trained model
and tokenizer are saved under ``eval/.cache/<task>-<settings hash>/`` so reruns skip training.

    python eval/text_models.py --task sst2|agnews [--data DIR]   # train (or load) and print top-1
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"


@dataclass(frozen=True)
class TextTask:
    """Where a task's data is and how its model is trained."""

    name: str
    train_file: str
    heldout_file: str
    text_column: str
    max_length: int  # training truncation
    epochs: float
    heldout_samples: int = 0  # 0 = all; else a seeded subset of the held-out file
    lr: float = 5e-4
    warmup: float = 0.1
    batch_size: int = 32
    vocab_size: int = 8000
    layers: int = 4
    hidden: int = 256
    heads: int = 4
    dropout: float = 0.1
    seed: int = 1

    def key(self) -> str:
        return f"{self.name}-" + hashlib.sha1(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:10]


TASKS = {
    # eval/sst2_baseline.py's best setting (81.0% on dev with seed 1, docs/results/transformers.md)
    "sst2": TextTask("sst2", "text-classification/sst2/train.tsv", "text-classification/sst2/dev.tsv",
                     "sentence", max_length=64, epochs=1.0),
    "agnews": TextTask("agnews", "text-classification/agnews/train-slice.tsv",
                       "text-classification/agnews/test.tsv", "text", max_length=128, epochs=3.0,
                       heldout_samples=2000),
}


@dataclass
class TextData:
    """A task's train and held-out samples, tokenized (unpadded)."""

    task: TextTask
    tokenizer: object
    train: object  # TextSamples
    heldout: object
    enc_train: object  # Encoded
    enc_heldout: object


def load_data(task: TextTask, data_dir: Path, tokenizer=None, max_length: int | None = None) -> TextData:
    """Read both splits; train a WordPiece vocabulary on train when no ``tokenizer`` is given."""
    from compress.sources.text import TextSamples, encode, read_text_file
    from compress.sources.wordpiece import train_wordpiece

    train = read_text_file(data_dir / task.train_file, text_column=task.text_column)
    held = read_text_file(data_dir / task.heldout_file, text_column=task.text_column,
                          label_names=train.label_names)
    if task.heldout_samples and task.heldout_samples < len(held):
        keep = np.sort(np.random.default_rng(0).permutation(len(held))[: task.heldout_samples])
        held = TextSamples(held.path, [held.texts[i] for i in keep], None, held.labels[keep], held.label_names)
    overlap = set(train.sample_hashes()) & set(held.sample_hashes())
    if overlap:  # held-out discipline: a sample in both would flatter every variant alike
        keep = [i for i, h in enumerate(train.sample_hashes()) if h not in overlap]
        train = TextSamples(train.path, [train.texts[i] for i in keep], None, train.labels[keep], train.label_names)
    if tokenizer is None:
        tokenizer = train_wordpiece(train.texts, CACHE / task.key() / "tokenizer", vocab_size=task.vocab_size)
    length = max_length or task.max_length
    return TextData(task, tokenizer, train, held, encode(train, tokenizer, length), encode(held, tokenizer, length))


def build_bert(task: TextTask, vocab_size: int, num_labels: int):
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=vocab_size, hidden_size=task.hidden, num_hidden_layers=task.layers,
        num_attention_heads=task.heads, intermediate_size=4 * task.hidden, max_position_embeddings=128,
        num_labels=num_labels, hidden_dropout_prob=task.dropout, attention_probs_dropout_prob=task.dropout,
        attn_implementation="eager",
    )
    return BertForSequenceClassification(config)


def predict(model, encoded, batch_size: int = 128) -> np.ndarray:
    """Logits of a torch HF model on every sample (length-sorted batches, padded per batch)."""
    import torch

    from compress.sources.text import iter_batches

    model.eval()
    out = np.zeros((len(encoded.lengths), model.config.num_labels), dtype=np.float32)
    with torch.no_grad():
        for batch in iter_batches(encoded, batch_size, shuffle=False):
            inputs = {k: torch.from_numpy(v) for k, v in batch.inputs.items()}
            out[batch.indices] = model(**inputs).logits.numpy()
    return out


def train(task: TextTask, data: TextData, log=print):
    """Train the task's BERT from its config (one torch thread); returns the model in eval mode."""
    import torch

    from compress.sources.text import iter_batches

    torch.manual_seed(task.seed)
    model = build_bert(task, len(data.tokenizer), len(data.train.label_names))
    steps = max(1, int(math.ceil(len(data.train.labels) / task.batch_size) * task.epochs))
    warmup = max(1, int(task.warmup * steps))
    optimizer = torch.optim.AdamW(model.parameters(), lr=task.lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (steps - s) / (steps - warmup))))
    step, epoch, t0 = 0, 0, time.perf_counter()
    model.train()
    while step < steps:
        for batch in iter_batches(data.enc_train, task.batch_size, seed=task.seed + epoch):
            inputs = {k: torch.from_numpy(v) for k, v in batch.inputs.items()}
            loss = model(**inputs, labels=torch.from_numpy(data.train.labels[batch.indices])).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            if step % 500 == 0 or step == steps:
                log(f"  [{task.name}] step {step}/{steps} loss {loss.item():.3f} {time.perf_counter() - t0:.0f}s")
            if step >= steps:
                break
        epoch += 1
    return model.eval()


def trained_model(task: TextTask, data_dir: Path, log=print):
    """(model, TextData): from eval/.cache when trained before with the same settings, else trained now."""
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    torch.set_num_threads(1)  # measured faster than 2 on this shared 2-core machine (transformers.md)
    where = CACHE / task.key()
    if (where / "model" / "config.json").is_file():
        tokenizer = AutoTokenizer.from_pretrained(str(where / "tokenizer"), local_files_only=True)
        data = load_data(task, data_dir, tokenizer)
        model = BertForSequenceClassification.from_pretrained(
            str(where / "model"), attn_implementation="eager").eval()
        return model, data
    data = load_data(task, data_dir)
    t0, cpu0 = time.perf_counter(), time.process_time()
    model = train(task, data, log)
    acc = float((predict(model, data.enc_heldout).argmax(-1) == data.heldout.labels).mean())
    model.save_pretrained(str(where / "model"))
    (where / "train.json").write_text(json.dumps({
        "task": asdict(task), "heldout_top1": acc, "heldout_samples": len(data.heldout.labels),
        "train_samples": len(data.train.labels), "wall_s": round(time.perf_counter() - t0, 1),
        "cpu_s": round(time.process_time() - cpu0, 1)}, indent=2))
    log(f"  [{task.name}] trained: held-out top-1 {acc:.4f} ({time.perf_counter() - t0:.0f}s), saved to {where}")
    return model, data


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", choices=sorted(TASKS), required=True)
    p.add_argument("--data", type=Path, default=None)
    args = p.parse_args(argv)
    sys.path.insert(0, str(HERE))
    from cifar_data import shared_data_dir

    data_dir = shared_data_dir(args.data)
    model, data = trained_model(TASKS[args.task], data_dir)
    acc = (predict(model, data.enc_heldout).argmax(-1) == data.heldout.labels).mean()
    print(f"{args.task}: held-out top-1 {acc:.4f} on {len(data.heldout.labels)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
