"""Data sources and the seeded, stratified, disjoint splits every number depends on.

A split is a dataset read in batches, never one array of everything: it holds its labels and the
row numbers of its source's samples (``compress.sources.readers``), and decodes pixels only for
the rows a batch asks for. Pixels are float32 NCHW in [0, 1] after resize/channel conversion;
normalisation is applied when a batch is handed to a model, as named inputs (``pixel_values``).

- ``sklearn:digits``: 1,797 8x8 digits that ship inside scikit-learn (no download), in memory.
- ``imagefolder:DIR``: DIR/<class>/<image>, classes sorted by name, as torchvision's ImageFolder;
  images are decoded (and resized) per batch.
- ``npz:FILE``: arrays ``images`` (N,H,W | N,H,W,C | N,C,H,W; uint8 is scaled by 1/255) and ``labels``;
  ``images`` is memory-mapped when the file is stored uncompressed (``np.savez``).
- ``python:MODULE_OR_FILE.py:FN``: FN() returns (images, labels) arrays, or a
  ``compress.sources.readers.Samples`` that reads its own rows. This RUNS YOUR CODE.
- Text: ``csv:`` / ``tsv:`` / ``jsonl:`` files and Hugging Face datasets, ``compress.sources.text_splits``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np

from compress.errors import InputError
from compress.sources.inputs import PIXEL_VALUES, InputSpec
from compress.sources.readers import (
    ArrayFileSamples,
    ArraySamples,
    Samples,
    TransformedSamples,
    check_float_range,
    check_labels,
    image_folder,
    npz_images,
    to_nchw01,
)
from compress.sources.text_splits import TEXT_SCHEMES

DATA_SCHEMES = {
    "sklearn": "digits",
    "imagefolder": "DIR",
    "npz": "FILE",
    "python": "MODULE_OR_FILE.py:FN",
    **TEXT_SCHEMES,
}
#: bytes of pixels read per batch when a split is scanned whole (hashes, fingerprint)
SCAN_BATCH_BYTES = 32 << 20


def load_source(source: str, base_dir, transform=None, *, labelled: bool = True) -> Samples:
    """Open one data source; resize/channel conversion (not normalisation) is applied per read.

    ``labelled=False`` (a production sample): an npz file may omit ``labels`` (they read as 0 and
    are never scored)."""
    from compress.sources.models import load_python_object, resolve
    from compress.sources.readers import apply_transform

    scheme, _, ref = source.partition(":")
    origin = f"data source {source!r}"
    if scheme == "imagefolder":
        return image_folder(resolve(ref, base_dir), source, transform)
    classes: list[str] | None = None
    if scheme == "sklearn":
        if ref != "digits":
            raise InputError(f"{origin}: only sklearn:digits is embedded")
        from sklearn.datasets import load_digits

        d = load_digits()
        images, labels = (d.images / 16.0).astype(np.float32), d.target  # 0..16 -> [0, 1]
        classes = [str(c) for c in d.target_names]
    elif scheme == "npz":
        path = resolve(ref, base_dir)
        if not path.is_file():
            raise InputError(f"{origin}: file {str(path)!r} does not exist")
        images, arrays = npz_images(path, source)
        if not labelled and "labels" not in arrays and images is not None:
            arrays["labels"] = np.zeros(len(images), dtype=np.int64)
        found = sorted([*arrays, *(["images"] if images is not None else [])])
        if images is None or "labels" not in arrays:
            raise InputError(f"{origin}: needs arrays 'images' and 'labels'; found {found}")
        labels = check_labels(arrays["labels"], len(images), origin)
        if len(labels) == 0:
            raise InputError(f"{origin} is empty")
        check_float_range(images, origin)
        named = [str(c) for c in arrays["classes"]] if "classes" in arrays else None
        return ArrayFileSamples(images, labels, source, _classes(named, labels), transform)
    elif scheme == "python":
        result = load_python_object(ref, base_dir, "data source")()
        if isinstance(result, Samples):
            if len(result) == 0:
                raise InputError(f"{origin} is empty")
            check_labels(result.labels, len(result), origin)  # as for arrays: integers >= 0
            return TransformedSamples(result, transform)
        if not (isinstance(result, tuple) and len(result) == 2):
            raise InputError(f"{origin} must return (images, labels) or a compress Samples reader")
        images, labels = result
    else:
        raise InputError(f"unknown data source scheme {scheme!r}; valid: {', '.join(DATA_SCHEMES)}")
    x = to_nchw01(images, origin)
    y = check_labels(labels, len(x), origin)
    if len(x) == 0:
        raise InputError(f"{origin} is empty")
    return ArraySamples(apply_transform(x, transform), y, source, _classes(classes, y))


def _classes(named: list[str] | None, labels: np.ndarray) -> list[str]:
    n_classes = int(labels.max()) + 1
    return named if named is not None and len(named) >= n_classes else [str(i) for i in range(n_classes)]


@dataclass(frozen=True)
class Corruption:
    """A synthetic corruption applied to every batch read (seeded per sample)."""

    name: str
    severity: int
    seed: int = 0


@dataclass(eq=False)
class Split:
    """Rows ``rows`` of a source's ``samples``, read in batches, for one role."""

    role: str
    samples: Samples = field(repr=False)
    rows: np.ndarray = field(repr=False)  # int64 indices into samples
    mean: np.ndarray = field(repr=False)  # (1, C, 1, 1)
    std: np.ndarray = field(repr=False)
    source: str
    corruption: Corruption | None = None
    labels: np.ndarray = field(init=False, repr=False)
    _scan: tuple[str, list[str]] | None = field(default=None, init=False, repr=False)

    def __post_init__(self):
        self.rows = np.asarray(self.rows, dtype=np.int64)
        self.labels = self.samples.labels[self.rows]

    @classmethod
    def from_arrays(cls, role: str, images: np.ndarray, labels: np.ndarray, mean, std, source: str) -> Split:
        """A split over arrays in memory (float32 NCHW in [0, 1]), e.g. in tests."""
        samples = ArraySamples(np.asarray(images, np.float32), np.asarray(labels, np.int64), source)
        return cls(role, samples, np.arange(len(labels)), mean, std, source)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return self.samples.sample_shape

    def pixels(self, idx=None) -> np.ndarray:
        """Pixels of rows ``idx`` of this split (all when None; mind the memory), corruption applied."""
        rows = self.rows if idx is None else np.atleast_1d(self.rows[idx])
        x = self.samples.read(rows)
        if self.corruption is not None:
            from compress.measure.corruptions import corrupt

            c = self.corruption
            x = corrupt(x, c.name, c.severity, seed=c.seed, sample_ids=rows)
        return x

    def inputs(self, idx=None) -> dict[str, np.ndarray]:
        """Normalised named model inputs of rows ``idx`` (all when None)."""
        return {PIXEL_VALUES: ((self.pixels(idx) - self.mean) / self.std).astype(np.float32)}

    def batches(self, batch_size: int, idx=None) -> Iterator[tuple[Mapping[str, np.ndarray], np.ndarray]]:
        """(inputs, labels) for consecutive chunks of rows ``idx`` (all rows when None), in order."""
        order = np.arange(len(self)) if idx is None else np.asarray(idx, dtype=np.int64)
        for i in range(0, len(order), batch_size):
            chunk = order[i : i + batch_size]
            yield self.inputs(chunk), self.labels[chunk]

    def stream(self, batch_size: int, idx=None, *, labels: bool = False) -> Batches:
        """A re-iterable of the batches of ``batches`` (inputs alone unless ``labels``), read
        afresh on every pass: what a calibrator that iterates more than once needs."""
        return Batches(self, batch_size, idx, labels)

    def subset(self, idx, role: str | None = None, source: str | None = None) -> Split:
        """The split restricted to its rows ``idx`` (nothing is read)."""
        return Split(role or self.role, self.samples, self.rows[idx], self.mean, self.std,
                     source or self.source, self.corruption)

    def corrupted(self, name: str, severity: int, *, seed: int = 0, role: str | None = None,
                  source: str | None = None) -> Split:
        """The same rows, with corruption ``name`` at ``severity`` applied to every batch read."""
        from compress.measure.corruptions import check_corruption

        check_corruption(name, severity, self.sample_shape[0])
        return Split(role or self.role, self.samples, self.rows, self.mean, self.std,
                     source or f"{self.source} + {name} (severity {severity})",
                     Corruption(name, severity, seed))

    def _scanned(self) -> tuple[str, list[str]]:
        """(fingerprint, per-sample hashes) in one streaming pass; remembered."""
        if self._scan is None:
            whole, hashes = hashlib.sha256(), []
            rows = max(1, SCAN_BATCH_BYTES // (4 * int(np.prod(self.sample_shape))))
            for i in range(0, len(self), rows):
                x = self.pixels(np.arange(i, min(i + rows, len(self))))
                whole.update(x.tobytes())  # C-contiguous batches: the bytes of the whole array
                hashes.extend(hashlib.sha1(img.tobytes()).hexdigest() for img in x)
            whole.update(self.labels.tobytes())
            self._scan = (whole.hexdigest()[:16], hashes)
        return self._scan

    def sample_hashes(self) -> list[str]:
        """A content hash per sample (pixels only), for the held-out overlap check."""
        return self._scanned()[1]

    def fingerprint(self) -> str:
        """A hash of every pixel and label, in order (cache keys, results.json)."""
        return self._scanned()[0]


class Batches:
    """Re-iterable batches over rows of a split (``Split.stream``); nothing is held between passes."""

    def __init__(self, split: Split, batch_size: int, idx=None, labels: bool = False):
        self.split, self.batch_size, self.labels = split, batch_size, labels
        self.idx = np.arange(len(split)) if idx is None else np.asarray(idx, dtype=np.int64)

    def __len__(self) -> int:
        return -(-len(self.idx) // self.batch_size)

    def __iter__(self):
        for x, y in self.split.batches(self.batch_size, self.idx):
            yield (x, y) if self.labels else x


class Splits(dict):
    """role -> Split. ``num_classes`` and ``classes`` describe the label space; text splits share
    one ``tokenizer`` (``compress.sources.text_splits.TextTokenizer``; None for images)."""

    classes: list[str]
    tokenizer = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def is_text(self) -> bool:
        return self.tokenizer is not None

    @property
    def input_spec(self) -> InputSpec:
        """The model inputs this data gives: token arrays for text, else one image's pixels."""
        held = self["heldout"]
        return held.input_spec if self.is_text else InputSpec.image(held.sample_shape)

    def summary(self) -> dict:
        return {
            role: {"n": len(s), "source": s.source, "fingerprint": s.fingerprint()}
            for role, s in self.items()
        }


def _norm_arrays(transform, channels: int):
    if transform is None or transform.normalize is None:
        return np.zeros((1, channels, 1, 1), np.float32), np.ones((1, channels, 1, 1), np.float32)
    mean, std = transform.normalize
    if len(mean) not in (1, channels):
        raise InputError(
            f"data.transform.normalize has {len(mean)} values but the images have {channels} channels"
        )
    m = np.array(mean, np.float32).reshape(1, -1, 1, 1)
    s = np.array(std, np.float32).reshape(1, -1, 1, 1)
    return m, s


def stratified_fractions(labels: np.ndarray, fractions: dict[str, float], seed: int) -> dict[str, np.ndarray]:
    """Disjoint index sets, one per role, each with the class proportions of the whole."""
    rng = np.random.default_rng(seed)
    out = {role: [] for role in fractions}
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n, start, cum = len(idx), 0, 0.0
        for role, f in fractions.items():
            cum += f
            end = int(round(cum * n))
            out[role].append(idx[start:end])
            start = end
    return {role: np.sort(np.concatenate(parts)) for role, parts in out.items()}


def _same_shape(ds: Samples, shape, key: str, other: str) -> None:
    if tuple(ds.sample_shape) != tuple(shape):
        raise InputError(
            f"{key}: images of shape {ds.sample_shape} differ from {other} {tuple(shape)}; "
            "set data.transform.resize/channels"
        )


def make_splits(data_cfg, base_dir, seed: int, model_cfg=None, cache_dir=None) -> Splits:
    """Build the train / calibration / tuning / heldout (and drift, production) splits of a recipe.
    Text data (``compress.sources.text_splits``) is tokenized with the tokenizer ``model_cfg``
    gives (its hf: directory's, or ``model.tokenizer``), else one trained on the train split
    (kept in ``cache_dir``, so that a re-run tokenizes alike)."""
    if data_cfg.is_text:
        from compress.sources.text_splits import make_text_splits

        return make_text_splits(data_cfg, base_dir, seed, model_cfg, cache_dir)
    transform = data_cfg.transform
    splits = Splits()
    if data_cfg.source is not None:
        ds = load_source(data_cfg.source, base_dir, transform)
        # held-out first, so that changing the train fraction never moves held-out samples
        order = ["heldout", "calibration", "tuning", "train"]
        fracs = {r: getattr(data_cfg.split, r) for r in order if getattr(data_cfg.split, r) > 0}
        parts = stratified_fractions(ds.labels, fracs, seed)
        mean, std = _norm_arrays(transform, ds.sample_shape[0])
        for role in ("train", "calibration", "tuning", "heldout"):
            if role in parts:
                if len(parts[role]) == 0:
                    raise InputError(
                        f"data.split.{role} gives an empty split ({len(ds.labels)} samples in all); "
                        "raise the fraction or use more data"
                    )
                splits[role] = Split(role, ds, parts[role], mean, std, ds.source)
        splits.classes = ds.classes
    else:
        classes: list[str] | None = None
        shape = None
        for role, src in data_cfg.sources.items():
            ds = load_source(src, base_dir, transform)
            if shape is not None:
                _same_shape(ds, shape, f"data.sources.{role}", "the other sources'")
            shape = ds.sample_shape
            mean, std = _norm_arrays(transform, ds.sample_shape[0])
            splits[role] = Split(role, ds, np.arange(len(ds)), mean, std, src)
            if classes is None or len(ds.classes) > len(classes):
                classes = ds.classes
        splits.classes = classes
    drift = data_cfg.drift
    if drift is not None:
        held = splits["heldout"]
        if drift.source is not None:
            ds = load_source(drift.source, base_dir, transform)
            _same_shape(ds, held.sample_shape, "data.drift.source", "held-out")
            named = ds.classes != [str(i) for i in range(len(ds.classes))]
            if named and len(ds.classes) != splits.num_classes:
                raise InputError(
                    f"data.drift.source names {len(ds.classes)} classes, but the model's data has "
                    f"{splits.num_classes}: drift data must share the label space (same classes, "
                    "same order)"
                )
            if int(ds.labels.max()) >= splits.num_classes:
                raise InputError(
                    f"data.drift.source has labels up to {int(ds.labels.max())}, but the model's data "
                    f"has {splits.num_classes} classes; drift data must share the label space"
                )
            splits["drift"] = Split("drift", ds, np.arange(len(ds)), held.mean, held.std, drift.source)
        else:
            try:
                splits["drift"] = held.corrupted(
                    drift.corruption, drift.severity, seed=seed, role="drift",
                    source=f"heldout + {drift.corruption} (severity {drift.severity})",
                )
            except ValueError as err:
                raise InputError(f"data.drift: {err}") from None
    production = getattr(data_cfg, "production", None)
    if production is not None:
        held = splits["heldout"]
        ds = load_source(production.source, base_dir, transform, labelled=False)
        _same_shape(ds, held.sample_shape, "data.production.source", "held-out")
        splits["production"] = Split("production", ds, np.arange(len(ds)), held.mean, held.std,
                                     production.source)
    return splits
