"""Labelled text files: read, hash, tokenize and batch by length.

A csv / tsv / jsonl file has a text column (or a pair of columns, e.g. premise and hypothesis)
and a label column whose values are class names or integers. Batches are formed by length (sorted
inside seeded buckets) and padded to their own longest sample, not to ``max_length``, because
real sentences are short. Tokenizers come from Hugging Face (`transformers`); when there is none,
``compress.sources.wordpiece.train_wordpiece`` trains one on the train texts.
"""

from __future__ import annotations

import csv
import hashlib
import json
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compress.errors import InputError, MissingDependency

TEXT_SUFFIXES = {".csv": ",", ".tsv": "\t", ".jsonl": None}
# The arrays a batch may hold, in the order models take them.
from compress.sources.inputs import TEXT_INPUTS as INPUT_NAMES  # noqa: E402


@dataclass(frozen=True)
class TextSamples:
    """The samples of one text file, with labels as class ids and the mapping used."""

    path: Path
    texts: list[str]
    text_pairs: list[str] | None
    labels: np.ndarray  # int64 class ids
    label_names: list[str]  # class id -> the label as written in the file

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def label_mapping(self) -> dict[str, int]:
        """The label as written in the file -> class id (recorded with the results)."""
        return {name: i for i, name in enumerate(self.label_names)}

    def sample_hashes(self) -> list[str]:
        """A content hash per sample of its normalised text, for the held-out overlap check."""
        pairs = self.text_pairs or [None] * len(self.texts)
        return [content_hash(t, p) for t, p in zip(self.texts, pairs, strict=True)]

    def fingerprint(self) -> str:
        """Identifies the exact samples, labels and label names (a cache key), like image splits'."""
        h = hashlib.sha256()
        for part in (self.texts, self.text_pairs or [], self.label_names):
            h.update(json.dumps(part, ensure_ascii=False).encode("utf-8"))
        h.update(self.labels.astype(np.int64).tobytes())
        return h.hexdigest()[:16]


def normalise_text(text: str) -> str:
    """Unicode NFKC, case-folded, whitespace collapsed: the same sentence typed twice hashes alike."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def content_hash(text: str, pair: str | None = None) -> str:
    joined = normalise_text(text) if pair is None else f"{normalise_text(text)}\x1f{normalise_text(pair)}"
    return hashlib.sha1(joined.encode("utf-8")).hexdigest()


def read_text_file(
    path: str | Path,
    *,
    text_column: str | Sequence[str] = "text",
    label_column: str = "label",
    label_names: Sequence[str] | None = None,
    where: str = "data",
    column_keys: tuple[str, str] | None = None,
) -> TextSamples:
    """Read a csv / tsv (with a header row) or jsonl file of labelled text.

    ``text_column`` is one name or a pair of names. ``label_names`` fixes the class order (pass
    the train split's ``label_names`` when reading held-out data so ids agree); without it,
    integer labels are their own ids (1-based labels leave class 0 empty: pass ``label_names``)
    and names are sorted. ``where`` is the recipe key prefix that
    error messages tell the user to set; ``column_keys`` the key paths of the text and the label
    column (default: ``where.text_column``, ``where.label_column``).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{where}: text file {str(path)!r} does not exist")
    if path.suffix.lower() not in TEXT_SUFFIXES:
        raise InputError(
            f"{where}: {path.name} is not a text file compress reads: use one of "
            f"{', '.join(sorted(TEXT_SUFFIXES))}"
        )
    columns = [text_column] if isinstance(text_column, str) else list(text_column)
    if not 1 <= len(columns) <= 2:
        raise InputError(f"{where}.text_column: give one column or a pair, got {len(columns)}")
    try:
        header, rows = _read_rows(path)
    except (UnicodeDecodeError, csv.Error) as err:
        raise InputError(f"{where}: cannot read {path} as UTF-8 {path.suffix[1:]}: {err}") from err
    if not rows:
        raise InputError(f"{where}: {path} has no samples (it is empty or has only a header)")
    text_key, label_key = column_keys or (f"{where}.text_column", f"{where}.label_column")
    for key, name in [(text_key, c) for c in columns] + [(label_key, label_column)]:
        if name not in header:
            raise InputError(
                f"{where}: {path.name} has no column {name!r}; its columns are "
                f"{', '.join(repr(h) for h in header)}: set {key} to one of them"
            )
    texts = [_cell(row, columns[0], path, i) for i, row in enumerate(rows)]
    pairs = [_cell(row, columns[1], path, i) for i, row in enumerate(rows)] if len(columns) == 2 else None
    raw_labels = [_cell(row, label_column, path, i).strip() for i, row in enumerate(rows)]
    labels, names = _label_ids(raw_labels, label_names, path, where)
    return TextSamples(path=path, texts=texts, text_pairs=pairs, labels=labels, label_names=names)


def _read_rows(path: Path) -> tuple[list[str], list[dict]]:
    if path.suffix.lower() == ".jsonl":
        rows = []
        with path.open(encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise InputError(f"{path}:{number}: not a JSON object: {err}") from err
                if not isinstance(row, dict):
                    raise InputError(f"{path}:{number}: each line must be a JSON object")
                rows.append({k: "" if v is None else str(v) for k, v in row.items()})
        header = list(dict.fromkeys(k for row in rows for k in row))
        return header, rows
    # GLUE-style tsv files are unquoted: a quote character is part of the sentence.
    delimiter = TEXT_SUFFIXES[path.suffix.lower()]
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter=delimiter, quoting=quoting)
        header = next(reader, None)
        if header is None:
            return [], []
        header = [h.strip() for h in header]
        rows = [dict(zip(header, r, strict=False)) for r in reader if any(c.strip() for c in r)]
    return header, rows


def _cell(row: dict, column: str, path: Path, index: int) -> str:
    value = row.get(column)
    if value is None:
        raise InputError(f"{path}: sample {index} has no value in column {column!r}")
    return value


def _label_ids(raw: list[str], names: Sequence[str] | None, path: Path, where: str):
    if names is not None:
        names = [str(n) for n in names]
        index = {n: i for i, n in enumerate(names)}
        unknown = sorted(set(raw) - set(index))
        if unknown:
            raise InputError(
                f"{where}: {path.name} has labels {unknown[:5]} that the label mapping "
                f"({', '.join(names)}) does not know: held-out labels must be train's labels"
            )
        return np.array([index[v] for v in raw], dtype=np.int64), names
    distinct = set(raw)
    if all(v.lstrip("-").isdigit() for v in distinct):
        ids = sorted(int(v) for v in distinct)
        if ids[0] < 0:
            raise InputError(f"{where}: {path.name} has a negative integer label {ids[0]}")
        names = [str(i) for i in range(ids[-1] + 1)]
        return np.array([int(v) for v in raw], dtype=np.int64), names
    names = sorted(distinct)
    index = {n: i for i, n in enumerate(names)}
    return np.array([index[v] for v in raw], dtype=np.int64), names


# --- tokenizing and batching -------------------------------------------------------------------


@dataclass(frozen=True)
class Encoded:
    """Token ids per sample, unpadded (truncated to max_length)."""

    features: dict[str, list[list[int]]]  # input name -> one id list per sample
    pad_token_id: int

    @property
    def lengths(self) -> np.ndarray:
        return np.array([len(ids) for ids in self.features["input_ids"]], dtype=np.int64)


@dataclass(frozen=True)
class TextBatch:
    """Named int64 arrays for the model (padded to this batch's longest sample) and the samples' indices."""

    inputs: dict[str, np.ndarray]
    indices: np.ndarray


def require_transformers(purpose: str):
    try:
        import transformers
    except ImportError as err:
        raise MissingDependency("transformers", "transformers", purpose) from err
    return transformers


def load_tokenizer(path: str | Path, where: str = "model.tokenizer"):
    """A Hugging Face tokenizer saved in ``path`` (offline: nothing is downloaded)."""
    transformers = require_transformers("Tokenizing text")
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"{where}: tokenizer directory {str(path)!r} does not exist")
    try:
        return transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as err:
        raise InputError(f"{where}: {path} holds no loadable tokenizer: {err}") from err


def encode(samples: TextSamples, tokenizer, max_length: int) -> Encoded:
    """Tokenize every sample, truncated to ``max_length`` tokens, without padding."""
    if max_length < 2:
        raise InputError(f"max_length must be at least 2 (room for the special tokens), got {max_length}")
    if tokenizer.pad_token_id is None:
        raise InputError(
            f"the tokenizer {type(tokenizer).__name__} has no padding token, so batches cannot be "
            "padded: save the tokenizer with a pad_token"
        )
    out = tokenizer(
        samples.texts, samples.text_pairs, truncation=True, max_length=max_length, padding=False
    )
    features = {name: list(out[name]) for name in INPUT_NAMES if name in out}
    return Encoded(features=features, pad_token_id=int(tokenizer.pad_token_id))


def length_batches(
    lengths: np.ndarray, batch_size: int, *, seed: int = 0, shuffle: bool = True, bucket_batches: int = 50
) -> list[np.ndarray]:
    """Sample indices grouped into batches of similar length.

    With ``shuffle`` (training): the samples are shuffled with ``seed``, cut into buckets of
    ``bucket_batches`` batches, sorted by length inside each bucket, and the batches shuffled.
    Without it (evaluation): all samples sorted by length (stable), batches in that order.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    lengths = np.asarray(lengths)
    if not shuffle:
        order = np.argsort(lengths, kind="stable")
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(lengths))
    bucket = batch_size * bucket_batches
    batches = []
    for start in range(0, len(order), bucket):
        chunk = order[start:start + bucket]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def pad_batch(encoded: Encoded, indices: np.ndarray) -> TextBatch:
    """The samples at ``indices`` as int64 arrays right-padded to the longest of them."""
    indices = np.asarray(indices, dtype=np.int64)
    ids = encoded.features["input_ids"]
    width = max(len(ids[i]) for i in indices)
    inputs = {}
    for name, values in encoded.features.items():
        fill = encoded.pad_token_id if name == "input_ids" else 0
        array = np.full((len(indices), width), fill, dtype=np.int64)
        for row, i in enumerate(indices):
            array[row, : len(values[i])] = values[i]
        inputs[name] = array
    if "attention_mask" not in inputs:
        inputs["attention_mask"] = (np.arange(width)[None, :] < encoded.lengths[indices][:, None]).astype(np.int64)
    return TextBatch(inputs=inputs, indices=indices)


def iter_batches(
    encoded: Encoded, batch_size: int, *, seed: int = 0, shuffle: bool = True
) -> Iterator[TextBatch]:
    """Length-bucketed, per-batch padded batches of ``encoded`` (see ``length_batches``)."""
    for indices in length_batches(encoded.lengths, batch_size, seed=seed, shuffle=shuffle):
        yield pad_batch(encoded, indices)


def padding_fraction(encoded: Encoded, batches: Sequence[np.ndarray]) -> float:
    """Share of the token slots in ``batches`` that are padding (0 = none wasted)."""
    lengths = encoded.lengths
    slots = sum(len(b) * int(lengths[b].max()) for b in batches)
    return 1.0 - float(lengths.sum()) / slots if slots else 0.0


def check_tokenizer_fits(tokenizer, vocab_size: int, where: str = "model") -> None:
    """Refuse a tokenizer whose ids run past the model's embedding table (``vocab_size`` rows)."""
    size = len(tokenizer)
    if size > vocab_size:
        raise InputError(
            f"{where}: the tokenizer has {size} tokens but the model's embedding has only "
            f"{vocab_size} rows, so ids {vocab_size}..{size - 1} would index past it: use the "
            "tokenizer the model was trained with, or build the model with "
            f"vocab_size >= {size}"
        )
