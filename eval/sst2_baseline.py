"""Can a small BERT trained from scratch reach 78% on the SST-2 dev set in minutes on a CPU?

Trains a WordPiece vocabulary on SST-2 train (compress.sources.wordpiece), builds a
``BertForSequenceClassification`` from a config (eager attention), trains it on length-bucketed,
per-batch padded batches (compress.sources.text) and reports top-1 on the 872 GLUE dev sentences,
evaluating every ``--eval-every`` steps so the learning curve shows how long a recipe must train.

    python eval/sst2_baseline.py --data /work/shared/data --out /tmp/sst2 [--train-samples N]

Needs the `transformers` extra. Writes OUT/result.json (and OUT/tokenizer/).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from compress.sources.text import (
    encode,
    iter_batches,
    length_batches,
    padding_fraction,
    read_text_file,
)
from compress.sources.wordpiece import train_wordpiece

SST2 = "text-classification/sst2"


def build_model(vocab_size: int, num_labels: int, args):
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        intermediate_size=4 * args.hidden,
        max_position_embeddings=max(128, args.max_length),
        num_labels=num_labels,
        hidden_dropout_prob=args.dropout,
        attention_probs_dropout_prob=args.dropout,
        attn_implementation="eager",
    )
    return BertForSequenceClassification(config)


@torch.no_grad()
def accuracy(model, encoded, labels, batch_size: int = 128) -> float:
    model.eval()
    correct = 0
    for batch in iter_batches(encoded, batch_size, shuffle=False):
        inputs = {k: torch.from_numpy(v) for k, v in batch.inputs.items()}
        pred = model(**inputs).logits.argmax(-1).numpy()
        correct += int((pred == labels[batch.indices]).sum())
    model.train()
    return correct / len(labels)


def length_report(enc_train, enc_dev, batch_size: int) -> dict:
    """Token lengths, and the share of padded slots in dev batches: by length vs in file order."""
    n = len(enc_dev.lengths)
    in_order = [np.arange(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
    return {
        "train_tokens_mean": round(float(enc_train.lengths.mean()), 1),
        "dev_tokens_mean": round(float(enc_dev.lengths.mean()), 1),
        "dev_tokens_max": int(enc_dev.lengths.max()),
        "dev_padding_by_length": round(padding_fraction(enc_dev, length_batches(enc_dev.lengths, batch_size, shuffle=False)), 3),
        "dev_padding_bucketed": round(padding_fraction(enc_dev, length_batches(enc_dev.lengths, batch_size)), 3),
        "dev_padding_file_order": round(padding_fraction(enc_dev, in_order), 3),
        "dev_padding_to_max_length": round(1 - float(enc_dev.lengths.mean()) / int(enc_dev.lengths.max()), 3),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=Path(os.environ.get("COMPRESS_SHARED_DATA", "../shared/data")))
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--train-samples", type=int, default=0, help="subsample train (0 = all)")
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--warmup", type=float, default=0.06, help="fraction of steps")
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--vocab-size", type=int, default=8000)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lengths-only", action="store_true", help="print token lengths and padding, no training")
    args = p.parse_args(argv)

    train_path, dev_path = args.data / SST2 / "train.tsv", args.data / SST2 / "dev.tsv"
    if not train_path.is_file():
        print(f"SST-2 not found at {train_path}: pass --data or set COMPRESS_SHARED_DATA", file=sys.stderr)
        return 2
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    started, cpu_started = time.perf_counter(), time.process_time()
    train = read_text_file(train_path, text_column="sentence")
    dev = read_text_file(dev_path, text_column="sentence", label_names=train.label_names)
    if args.train_samples:
        keep = np.random.default_rng(args.seed).permutation(len(train))[: args.train_samples]
        train_texts = [train.texts[i] for i in keep]
        train_labels = train.labels[keep]
        train = type(train)(train.path, train_texts, None, train_labels, train.label_names)
    overlap = len(set(train.sample_hashes()) & set(dev.sample_hashes()))
    tokenizer = train_wordpiece(train.texts, args.out / "tokenizer", vocab_size=args.vocab_size)
    tokenizer_s = time.perf_counter() - started
    enc_train = encode(train, tokenizer, args.max_length)
    enc_dev = encode(dev, tokenizer, args.max_length)
    lengths = length_report(enc_train, enc_dev, args.batch_size)
    print(json.dumps(lengths), flush=True)
    if args.lengths_only:
        return 0
    model = build_model(len(tokenizer), len(train.label_names), args)
    params = sum(p.numel() for p in model.parameters())
    steps_per_epoch = math.ceil(len(train) / args.batch_size)
    total_steps = max(1, int(steps_per_epoch * args.epochs))
    warmup = max(1, int(args.warmup * total_steps))
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (total_steps - s) / (total_steps - warmup)))
    )
    print(f"train {len(train)} (overlap with dev: {overlap}), dev {len(dev)}, vocab {len(tokenizer)}, "
          f"params {params:,}, steps {total_steps}, tokenizer {tokenizer_s:.1f}s", flush=True)
    curve, step, epoch = [], 0, 0
    model.train()
    train_started = time.perf_counter()
    while step < total_steps:
        for batch in iter_batches(enc_train, args.batch_size, seed=args.seed + epoch):
            inputs = {k: torch.from_numpy(v) for k, v in batch.inputs.items()}
            labels = torch.from_numpy(train.labels[batch.indices])
            loss = model(**inputs, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            if step % args.eval_every == 0 or step == total_steps:
                acc = accuracy(model, enc_dev, dev.labels)
                elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
                curve.append({"step": step, "elapsed_s": round(elapsed, 1), "cpu_s": round(cpu, 1),
                              "dev_top1": acc, "loss": loss.item()})
                print(f"step {step}/{total_steps} {elapsed:.0f}s (cpu {cpu:.0f}s) loss {loss.item():.3f} "
                      f"dev {acc:.4f}", flush=True)
            if step >= total_steps:
                break
        epoch += 1
    train_s = time.perf_counter() - train_started
    from scipy.stats import binomtest

    correct = round(curve[-1]["dev_top1"] * len(dev))
    wilson = binomtest(correct, len(dev)).proportion_ci(0.95, method="wilson")
    result = {
        "dev_top1": curve[-1]["dev_top1"],
        "dev_top1_wilson95": [round(wilson.low, 4), round(wilson.high, 4)],
        "dev_samples": len(dev),
        "train_samples": len(train),
        "train_dev_overlap": overlap,
        "wall_s": round(time.perf_counter() - started, 1),
        # CPU seconds of this process: with one thread, about the wall time on an idle core.
        "cpu_s": round(time.process_time() - cpu_started, 1),
        "train_s": round(train_s, 1),
        "tokenizer_s": round(tokenizer_s, 1),
        "params": params,
        "lengths": lengths,
        "settings": vars(args) | {"data": str(args.data), "out": str(args.out)},
        "curve": curve,
        "torch": torch.__version__,
        "host": platform.processor() or platform.machine(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "curve"}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
