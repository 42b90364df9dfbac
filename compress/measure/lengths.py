"""Text at realistic shapes: batches of a fixed sequence length, and the held-out set's own lengths.

A server that pads every request to ``max_length`` spends most of its work on padding when real
sentences are short; one that pads each batch to its longest sample (dynamic padding) does not.
``served_lengths`` forms the batches such a server would see from a split's real samples (in
arrival order, or grouped by length) and the same batches padded to ``max_length``; the profiler
times one pass over each (``PassSession``) in its interleaved loop.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from compress.measure.timing import check_sizes, speedup, time_sessions

BATCHING = ("arrival", "length")


def fit_length(batch: Mapping[str, np.ndarray], seq_len: int, pad_token_id: int = 0) -> dict[str, np.ndarray]:
    """A text batch (name -> (batch, sequence) arrays) right-padded or truncated to ``seq_len``
    tokens: padding gets ``pad_token_id`` in ``input_ids`` and 0 elsewhere (attention mask 0)."""
    if seq_len < 1:
        raise ValueError(f"seq_len must be a positive number of tokens, got {seq_len}")
    out = {}
    for name, array in batch.items():
        width = array.shape[1]
        if width >= seq_len:
            out[name] = np.ascontiguousarray(array[:, :seq_len])
            continue
        fill = pad_token_id if name == "input_ids" else 0
        padded = np.full((array.shape[0], seq_len), fill, dtype=array.dtype)
        padded[:, :width] = array
        out[name] = padded
    return out


def padded_share(lengths: np.ndarray, batches: Sequence[np.ndarray], pad_to: int | None = None) -> float:
    """Share of the token slots of ``batches`` that are padding, each batch padded to its longest
    sample (``pad_to=None``) or to ``pad_to`` tokens (0 = nothing wasted)."""
    lengths = np.asarray(lengths)
    slots = sum(len(b) * (pad_to if pad_to is not None else int(lengths[b].max())) for b in batches)
    used = sum(int(lengths[b].sum()) for b in batches)
    return 1.0 - used / slots if slots else 0.0


def server_batches(lengths: np.ndarray, batch_size: int, *, batching: str = "arrival",
                   samples: int | None = None, seed: int = 0) -> list[np.ndarray]:
    """Sample indices in batches of ``batch_size`` as a server would form them: ``arrival`` keeps
    the split's order, ``length`` sorts by length first (a server that buckets requests by length).
    With ``samples``, a seeded random subset of that many samples (kept in split order) is used."""
    if batching not in BATCHING:
        raise ValueError(f"batching must be one of {', '.join(BATCHING)}, got {batching!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    lengths = np.asarray(lengths)
    order = np.arange(len(lengths))
    if samples is not None and samples < len(order):
        order = np.sort(np.random.default_rng(seed).choice(len(order), size=samples, replace=False))
    if batching == "length":
        order = order[np.argsort(lengths[order], kind="stable")]
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


@dataclass
class ServedLengths:
    """One pass over real samples as a server batches them: per batch padded to its longest
    sample (``dynamic``) and to ``max_length`` (``padded``), with what the padding costs."""

    dynamic: list[dict[str, np.ndarray]]
    padded: list[dict[str, np.ndarray]]
    facts: dict = field(default_factory=dict)

    @property
    def n_samples(self) -> int:
        return int(self.facts["n_samples"])


def served_lengths(split, *, batch_size: int, max_length: int, batching: Literal["arrival", "length"] = "arrival",
                   samples: int | None = None, seed: int = 0, split_name: str = "heldout") -> ServedLengths:
    """The batches of ``split`` (a text split: ``lengths()``, ``inputs(idx)``) a server would run,
    with and without dynamic padding (see ``ServedLengths``)."""
    lengths = np.minimum(np.asarray(split.lengths()), max_length)
    batches = server_batches(lengths, batch_size, batching=batching, samples=samples, seed=seed)
    dynamic = [fit_length(split.inputs(idx), int(lengths[idx].max())) for idx in batches]
    padded = [fit_length(b, max_length) for b in dynamic]
    n = sum(len(b) for b in batches)
    facts = {
        "split": split_name, "batching": batching, "batch_size": batch_size, "n_samples": n,
        "n_batches": len(batches), "max_length": max_length,
        "tokens": int(sum(int(lengths[b].sum()) for b in batches)),
        "mean_length": float(np.mean(np.concatenate([lengths[b] for b in batches]))),
        "padding_fraction": padded_share(lengths, batches),
        "padding_fraction_max_length": padded_share(lengths, batches, pad_to=max_length),
    }
    return ServedLengths(dynamic, padded, facts)


class PassSession:
    """A session whose one call runs a fixed list of batches (one pass), so the interleaved loop
    times whole passes: its throughput is samples per second over the pass."""

    def __init__(self, session, batches: list[dict[str, np.ndarray]]):
        self.session, self.batches = session, batches
        if hasattr(session, "time_run_ms"):  # a device-timed session: sum its device times
            self.time_run_ms = lambda _batch: sum(float(session.time_run_ms(b)) for b in self.batches)

    def run(self, _batch=None) -> None:
        for b in self.batches:
            self.session.run(b)


def time_grid(sessions: dict, make_batch, batch_sizes: list[int], seq_lens: list[int],
              **timing) -> dict[str, dict[int, dict[int, dict]]]:
    """``{name: {seq_len: {batch_size: summary}}}``: every cell of the batch size x sequence length
    grid, each sequence length one interleaved loop over all sessions (``time_sessions``, which
    also takes ``timing``), with ``make_batch(batch_size, seq_len)`` as the batch."""
    out: dict[str, dict[int, dict[int, dict]]] = {n: {} for n in sessions}
    for seq_len in check_seq_lens(seq_lens):
        timed = time_sessions(sessions, lambda bs, n=seq_len: make_batch(bs, n), batch_sizes, **timing)
        for name, per_bs in timed.items():
            out[name][seq_len] = {bs: {**m, "seq_len": seq_len} for bs, m in per_bs.items()}
    return out


def time_served(sessions: dict, served: ServedLengths, *, seed: int = 0, **timing) -> dict[str, dict]:
    """``{name: {facts, "dynamic": pass summary, "padded": pass summary, "speedup": interval}}``:
    one pass over ``served``'s batches with dynamic padding and padded to max_length, for every
    session, all in one interleaved loop; speed-up = padded median / dynamic median."""
    passes = {}
    for name, session in sessions.items():
        passes[(name, "dynamic")] = PassSession(session, served.dynamic)
        passes[(name, "padded")] = PassSession(session, served.padded)
    n_batches = max(1, int(served.facts["n_batches"]))  # a pass is n_batches calls: fewer fixed warm-up passes
    timing = {**timing, "warmup": -(-int(timing.get("warmup", 5)) // n_batches)}
    timed = time_sessions(passes, lambda _n: None, [served.n_samples], **timing)
    out = {}
    for name in sessions:
        got = {}
        for how in ("dynamic", "padded"):
            m = dict(timed[(name, how)][served.n_samples])
            m.pop("batch_size")  # one call is a pass of n_samples samples in n_batches batches
            got[how] = m
        out[name] = {**served.facts, **got, "speedup": speedup(got["padded"], got["dynamic"], seed=seed)}
    return out


def check_seq_lens(seq_lens: list[int]) -> list[int]:
    """Sorted, distinct, positive sequence lengths (tokens)."""
    return check_sizes(seq_lens, "sequence lengths", "[128]")
