"""Text data sources, the tokenizer a run uses, and ``TextSplit``: the image ``Split``'s interface
for labelled text.

Sources: ``csv:FILE``, ``tsv:FILE``, ``jsonl:FILE`` (``compress.sources.text.read_text_file``),
``hf-dataset:NAME[/CONFIG]@SPLIT`` (``datasets.load_dataset``: the local cache, or the Hub when
reachable) and ``hf-disk:DIR[@SPLIT]`` (``datasets.load_from_disk``). A split tokenizes the rows a
batch asks for and pads them to the batch's longest sample, not to ``max_length``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from compress.errors import InputError
from compress.sources.inputs import TEXT_INPUTS, InputSpec
from compress.sources.text import TextSamples, content_hash, read_text_file

if TYPE_CHECKING:
    from compress.sources.data import Corruption

TEXT_SCHEMES = {
    "csv": "FILE",
    "tsv": "FILE",
    "jsonl": "FILE",
    "hf-dataset": "NAME[/CONFIG]@SPLIT",
    "hf-disk": "DIR[@SPLIT]",
}


COLUMN_KEYS = ("data.text.column", "data.text.label_column")


def is_text_source(source: str) -> bool:
    return source.partition(":")[0] in TEXT_SCHEMES


def load_text_source(source: str, base_dir, text_cfg, *, label_names: Sequence[str] | None = None,
                     where: str = "data.source", labelled: bool = True) -> TextSamples:
    """The labelled samples of one text source (labels as ids of ``label_names`` when given).
    ``labelled=False`` (a production sample): a missing label column reads as class 0."""
    from compress.sources.models import resolve

    scheme, _, ref = source.partition(":")
    names = label_names if label_names is not None else text_cfg.label_names
    column = text_cfg.column
    if scheme in ("csv", "tsv", "jsonl"):
        path = resolve(ref, base_dir)
        if path.suffix.lower() != f".{scheme}":
            raise InputError(f"{where}: {source!r} names a {path.suffix or 'suffix-less'} file; "
                             f"the {scheme}: scheme reads .{scheme} files")
        if not labelled:
            return _unlabelled_file(path, text_cfg, names, where)
        return read_text_file(path, text_column=column, label_column=text_cfg.label_column,
                              label_names=names, where=where, column_keys=COLUMN_KEYS)
    if scheme in ("hf-dataset", "hf-disk"):
        from compress.sources.hf_datasets import from_dataset, open_dataset

        return from_dataset(open_dataset(scheme, ref, base_dir, where), source, text_cfg, names, where, labelled)
    raise InputError(f"{where}: unknown text source scheme {scheme!r}; valid: {', '.join(TEXT_SCHEMES)}")


def _unlabelled_file(path: Path, text_cfg, names, where: str) -> TextSamples:
    from compress.sources.text import _read_rows

    if not path.is_file():
        raise InputError(f"{where}: text file {str(path)!r} does not exist")
    header, rows = _read_rows(path)
    if text_cfg.label_column in header:
        return read_text_file(path, text_column=text_cfg.column, label_column=text_cfg.label_column,
                              label_names=names, where=where, column_keys=COLUMN_KEYS)
    columns = _columns(text_cfg.column)
    _check_columns(header, columns, None, path.name, where)
    texts = [r.get(columns[0], "") for r in rows]
    pairs = [r.get(columns[1], "") for r in rows] if len(columns) == 2 else None
    return TextSamples(path, texts, pairs, np.zeros(len(texts), np.int64), list(names or ["0"]))


def _columns(column) -> list[str]:
    return [column] if isinstance(column, str) else list(column)


def _check_columns(header, columns, label_column, what: str, where: str) -> None:
    for key, name in [(COLUMN_KEYS[0], c) for c in columns] + [(COLUMN_KEYS[1], label_column)]:
        if name is not None and name not in header:
            raise InputError(
                f"{where}: {what} has no column {name!r}; its columns are "
                f"{', '.join(repr(h) for h in header)}: set {key} to one of them"
            )


# --- the tokenizer of a run ---------------------------------------------------------------------


@dataclass
class TextTokenizer:
    """A Hugging Face tokenizer with the run's ``max_length`` and the inputs the model takes."""

    tokenizer: object = field(repr=False)
    max_length: int
    names: tuple[str, ...]  # what the tokenizer produces and the model accepts, in TEXT_INPUTS order
    origin: str  # "model directory DIR" | "DIR (model.tokenizer)" | "trained on the train split"
    digest: str = ""
    path: str | None = None  # where the run saved it (relative to the run directory)

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    def __call__(self, texts: list[str], pairs: list[str] | None) -> dict[str, np.ndarray]:
        """Named int64 arrays, padded to the longest sample (right padding)."""
        out = self.tokenizer(texts, pairs, truncation=True, max_length=self.max_length, padding="longest",
                             return_tensors="np")
        return {n: np.asarray(out[n], dtype=np.int64) for n in self.names}

    def lengths(self, texts: list[str], pairs: list[str] | None) -> np.ndarray:
        out = self.tokenizer(texts, pairs, truncation=True, max_length=self.max_length, padding=False)
        return np.array([len(ids) for ids in out["input_ids"]], dtype=np.int64)

    def info(self) -> dict:
        return {"origin": self.origin, "sha256_20": self.digest, "vocab_size": self.vocab_size,
                "max_length": self.max_length, "inputs": list(self.names), "path": self.path}


# --- the split ------------------------------------------------------------------------------------


@dataclass(eq=False)
class TextSplit:
    """Rows ``rows`` of a text source's ``samples`` for one role, tokenized per batch."""

    role: str
    samples: TextSamples = field(repr=False)
    rows: np.ndarray = field(repr=False)
    tokenizer: TextTokenizer = field(repr=False)
    source: str
    corruption: Corruption | None = None  # the image splits' type
    labels: np.ndarray = field(init=False, repr=False)
    _lengths: np.ndarray | None = field(default=None, init=False, repr=False)
    _scan: tuple[str, list[str]] | None = field(default=None, init=False, repr=False)

    def __post_init__(self):
        self.rows = np.asarray(self.rows, dtype=np.int64)
        self.labels = self.samples.labels[self.rows]

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def input_spec(self) -> InputSpec:
        t = self.tokenizer
        return InputSpec.text(t.names, t.max_length, t.vocab_size)

    def texts(self, idx=None) -> tuple[list[str], list[str] | None]:
        """(texts, pairs or None) of rows ``idx`` (all when None), corruption applied."""
        rows = self.rows if idx is None else np.atleast_1d(self.rows[idx])
        texts = [self.samples.texts[r] for r in rows]
        pairs = None if self.samples.text_pairs is None else [self.samples.text_pairs[r] for r in rows]
        if self.corruption is not None:
            from compress.measure.text_corruptions import corrupt_texts

            c = self.corruption
            texts = corrupt_texts(texts, c.name, c.severity, seed=c.seed)
            if pairs is not None:
                pairs = corrupt_texts(pairs, c.name, c.severity, seed=c.seed)
        return texts, pairs

    def inputs(self, idx=None) -> dict[str, np.ndarray]:
        """Token arrays of rows ``idx`` (all when None), padded to the longest of them."""
        return self.tokenizer(*self.texts(idx))

    def lengths(self) -> np.ndarray:
        """Token count of every sample (after truncation to max_length)."""
        if self._lengths is None:
            self._lengths = self.tokenizer.lengths(*self.texts())
        return self._lengths

    def batches(self, batch_size: int, idx=None) -> Iterator[tuple[Mapping[str, np.ndarray], np.ndarray]]:
        """(inputs, labels) for consecutive chunks of rows ``idx`` (all rows when None), in order."""
        order = np.arange(len(self)) if idx is None else np.asarray(idx, dtype=np.int64)
        for i in range(0, len(order), batch_size):
            chunk = order[i : i + batch_size]
            yield self.inputs(chunk), self.labels[chunk]

    def stream(self, batch_size: int, idx=None, *, labels: bool = False):
        from compress.sources.data import Batches

        return Batches(self, batch_size, idx, labels)

    def subset(self, idx, role: str | None = None, source: str | None = None) -> TextSplit:
        return TextSplit(role or self.role, self.samples, self.rows[idx], self.tokenizer,
                         source or self.source, self.corruption)

    def corrupted(self, name: str, severity: int, *, seed: int = 0, role: str | None = None,
                  source: str | None = None) -> TextSplit:
        """The same rows with text corruption ``name`` (typo, case, dropped_words) at ``severity``."""
        from compress.measure.text_corruptions import check_text_corruption
        from compress.sources.data import Corruption

        check_text_corruption(name, severity)
        return TextSplit(role or self.role, self.samples, self.rows, self.tokenizer,
                         source or f"{self.source} + {name} (severity {severity})",
                         Corruption(name, severity, seed))

    def _scanned(self) -> tuple[str, list[str]]:
        """(fingerprint, per-sample hashes), remembered."""
        if self._scan is None:
            texts, pairs = self.texts()
            h = hashlib.sha256()
            for part in (texts, pairs or [], self.samples.label_names,
                         [self.tokenizer.digest, self.tokenizer.max_length, list(self.tokenizer.names)]):
                h.update(json.dumps(part, ensure_ascii=False).encode("utf-8"))
            h.update(self.labels.astype(np.int64).tobytes())
            hashes = [content_hash(t, p) for t, p in zip(texts, pairs or [None] * len(texts), strict=True)]
            self._scan = (h.hexdigest()[:16], hashes)
        return self._scan

    def sample_hashes(self) -> list[str]:
        """A content hash per sample of its normalised text (pair included), for the overlap check."""
        return self._scanned()[1]

    def fingerprint(self) -> str:
        """A hash of the texts, labels, label names, tokenizer and max_length (cache keys, results)."""
        return self._scanned()[0]


def length_order(split) -> np.ndarray:
    """Evaluation order: a text split's rows by token count (stable), so batches pad little; an
    image split's rows as they are. Predictions are put back in row order by the caller."""
    lengths = getattr(split, "lengths", None)
    return np.argsort(lengths(), kind="stable") if lengths is not None else np.arange(len(split))


def model_input_names(tokenizer, accepted: Sequence[str] | None) -> tuple[str, ...]:
    """Inputs the tokenizer produces and the model's forward accepts (all it produces when unknown)."""
    produced = set(getattr(tokenizer, "model_input_names", TEXT_INPUTS)) | {"input_ids", "attention_mask"}
    names = [n for n in TEXT_INPUTS if n in produced and (accepted is None or n in accepted)]
    return tuple(names)


# --- a recipe's text splits -----------------------------------------------------------------------


def _model_facts(model_cfg, base_dir) -> tuple[object | None, Path | None]:
    """(the hf: model's config, its directory) or (None, None) for another source."""
    if model_cfg is None or not model_cfg.source.startswith("hf:"):
        return None, None
    from compress.sources import hf
    from compress.sources.models import resolve

    path = resolve(model_cfg.source.partition(":")[2], base_dir)
    return hf.load_config(path), path


def run_tokenizer(data_cfg, model_cfg, base_dir, train: TextSplit | None,
                  cache_dir: Path | None = None) -> TextTokenizer:
    """The tokenizer of a run: ``model.tokenizer``, else the hf: directory's, else a WordPiece
    vocabulary trained on the train split (never on held-out). A trained one is kept in
    ``cache_dir`` under a hash of what it was trained on: the `tokenizers` trainer breaks ties
    between equally frequent pieces differently in every process, so retraining would change the
    vocabulary (and the cache key of everything trained with it)."""
    from compress.sources import hf
    from compress.sources.models import resolve
    from compress.sources.text import check_tokenizer_fits, load_tokenizer

    text_cfg = data_cfg.text
    config, model_dir = _model_facts(model_cfg, base_dir)
    given = getattr(model_cfg, "tokenizer", None) if model_cfg is not None else None
    if given is not None:
        path = resolve(given, base_dir)
        tok, origin = load_tokenizer(path, "model.tokenizer"), f"{path} (model.tokenizer)"
    elif model_dir is not None and hf.has_tokenizer(model_dir):
        tok, origin = load_tokenizer(model_dir, "model.source"), f"model directory {model_dir}"
    else:
        if train is None:
            raise InputError(
                "data: there is no tokenizer (model.tokenizer is not set and the model directory has none) "
                "and no train split to train one on: give model.tokenizer: DIR, or a train split"
            )
        size = text_cfg.vocab_size or (config.vocab_size if config is not None else 8000)
        texts, pairs = train.texts()
        tok = _trained_wordpiece(texts + (pairs or []), size, text_cfg.max_length, cache_dir)
        origin = "trained on the train split"
    where = "model.tokenizer" if given is not None else "model.source"
    if config is not None:
        check_tokenizer_fits(tok, int(config.vocab_size), where)
    if tok.pad_token_id is None:
        raise InputError(f"{where}: the tokenizer has no padding token, so batches cannot be padded: "
                         "save the tokenizer with a pad_token")
    accepted = hf.forward_input_names(config) if config is not None else None
    return TextTokenizer(tok, text_cfg.max_length, model_input_names(tok, accepted), origin,
                         hf.tokenizer_digest(tok))


def _trained_wordpiece(texts: list[str], vocab_size: int, max_length: int, cache_dir: Path | None):
    """A WordPiece tokenizer trained on ``texts``: from ``cache_dir`` when it was trained before."""
    import os
    import shutil
    import tempfile

    from compress.artifacts import digest_of
    from compress.sources.text import load_tokenizer
    from compress.sources.wordpiece import train_wordpiece

    if cache_dir is None:
        with tempfile.TemporaryDirectory() as tmp:
            return train_wordpiece(texts, tmp, vocab_size=vocab_size, model_max_length=max_length)
    entry = Path(cache_dir) / f"wordpiece-{digest_of(texts, vocab_size, max_length)}"
    if not (entry / "tokenizer.json").is_file():
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.tmp-", dir=entry.parent))
        try:
            train_wordpiece(texts, tmp, vocab_size=vocab_size, model_max_length=max_length)
            os.replace(tmp, entry)
        except OSError:  # another run put the same tokenizer there first
            if not (entry / "tokenizer.json").is_file():
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return load_tokenizer(entry, "data")


def make_text_splits(data_cfg, base_dir, seed: int, model_cfg=None, cache_dir: Path | None = None):
    """The train / calibration / tuning / heldout (and drift, production) splits of text data."""
    from compress.sources.data import Splits, stratified_fractions

    text_cfg = data_cfg.text
    parts: dict[str, tuple[TextSamples, np.ndarray, str]] = {}
    if data_cfg.source is not None:
        samples = load_text_source(data_cfg.source, base_dir, text_cfg)
        order = ["heldout", "calibration", "tuning", "train"]
        fracs = {r: getattr(data_cfg.split, r) for r in order if getattr(data_cfg.split, r) > 0}
        for role, rows in stratified_fractions(samples.labels, fracs, seed).items():
            if len(rows) == 0:
                raise InputError(f"data.split.{role} gives an empty split ({len(samples)} samples in all); "
                                 "raise the fraction or use more data")
            parts[role] = (samples, rows, data_cfg.source)
        label_names = samples.label_names
    else:
        roles = sorted(data_cfg.sources, key=lambda r: r != "train")  # train's labels name the classes
        label_names = text_cfg.label_names
        for role in roles:
            src = data_cfg.sources[role]
            samples = load_text_source(src, base_dir, text_cfg, label_names=label_names,
                                       where=f"data.sources.{role}")
            label_names = samples.label_names
            parts[role] = (samples, np.arange(len(samples)), src)
    placeholder = TextTokenizer(None, text_cfg.max_length, ("input_ids",), "")
    train = TextSplit("train", *parts["train"][:2], placeholder, parts["train"][2]) if "train" in parts else None
    tokenizer = run_tokenizer(data_cfg, model_cfg, base_dir, train, cache_dir)
    splits = Splits()
    for role in ("train", "calibration", "tuning", "heldout"):
        if role in parts:
            samples, rows, src = parts[role]
            splits[role] = TextSplit(role, samples, rows, tokenizer, src)
    splits.classes = list(label_names)
    splits.tokenizer = tokenizer
    held = splits["heldout"]
    drift = data_cfg.drift
    if drift is not None and drift.source is not None:
        ds = load_text_source(drift.source, base_dir, text_cfg, label_names=label_names, where="data.drift.source")
        splits["drift"] = TextSplit("drift", ds, np.arange(len(ds)), tokenizer, drift.source)
    elif drift is not None:
        try:
            splits["drift"] = held.corrupted(drift.corruption, drift.severity, seed=seed, role="drift",
                                             source=f"heldout + {drift.corruption} (severity {drift.severity})")
        except ValueError as err:
            raise InputError(f"data.drift: {err}") from None
    production = getattr(data_cfg, "production", None)
    if production is not None:
        ds = load_text_source(production.source, base_dir, text_cfg, label_names=label_names,
                              where="data.production.source", labelled=False)
        splits["production"] = TextSplit("production", ds, np.arange(len(ds)), tokenizer, production.source)
    return splits
