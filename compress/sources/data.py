"""Data sources, transforms and the seeded, stratified, disjoint splits every number depends on.

Images are held in memory as float32 NCHW in [0, 1] after resize/channel conversion; normalisation
is applied when a batch is handed to a model, so corruptions can act on real pixel values.

- ``sklearn:digits``: 1,797 8x8 digits that ship inside scikit-learn (no download).
- ``imagefolder:DIR``: DIR/<class>/<image>, classes sorted by name, as torchvision's ImageFolder.
- ``npz:FILE``: arrays ``images`` (N,H,W | N,H,W,C | N,C,H,W; uint8 is scaled by 1/255) and ``labels``.
- ``python:MODULE_OR_FILE.py:FN``: FN() returns (images, labels) arrays. This RUNS YOUR CODE.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from compress.errors import InputError

DATA_SCHEMES = {
    "sklearn": "digits",
    "imagefolder": "DIR",
    "npz": "FILE",
    "python": "MODULE_OR_FILE.py:FN",
}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}


@dataclass
class Dataset:
    images: np.ndarray  # float32 NCHW in [0, 1]
    labels: np.ndarray  # int64
    classes: list[str]
    source: str


def _to_nchw01(images: np.ndarray, origin: str) -> np.ndarray:
    a = np.asarray(images)
    if a.ndim == 3:
        a = a[:, None]
    elif a.ndim == 4:
        if a.shape[-1] in (1, 3, 4) and a.shape[1] not in (1, 3, 4):
            a = a.transpose(0, 3, 1, 2)
    else:
        raise InputError(f"{origin}: images must be (N,H,W), (N,H,W,C) or (N,C,H,W); got shape {a.shape}")
    if a.dtype == np.uint8:
        a = a.astype(np.float32) / 255.0
    else:
        a = a.astype(np.float32)
        lo, hi = float(a.min(initial=0)), float(a.max(initial=0))
        if lo < -1e-6 or hi > 1 + 1e-6:
            raise InputError(
                f"{origin}: float images must be in [0, 1] (got {lo:.3g}..{hi:.3g}); give uint8 "
                "pixels or scale them, normalisation is applied by data.transform.normalize"
            )
    return np.ascontiguousarray(a)


def _labels(labels: np.ndarray, n: int, origin: str) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1 or len(y) != n:
        raise InputError(f"{origin}: labels must be a 1-D array of {n} class indices; got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer) or (len(y) and y.min() < 0):
        raise InputError(f"{origin}: labels must be non-negative integers (class indices)")
    return y.astype(np.int64)


def _resize(images: np.ndarray, size) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    hw = (size, size) if isinstance(size, int) else tuple(size)
    if images.shape[2:] == hw:
        return images
    t = torch.from_numpy(images)
    out = F.interpolate(t, size=hw, mode="bilinear", align_corners=False, antialias=True)
    return out.clamp_(0, 1).numpy()


def _channels(images: np.ndarray, channels: int | None) -> np.ndarray:
    c = images.shape[1]
    if channels is None or c == channels:
        return images
    if c == 4:
        images, c = images[:, :3], 3
    if c == channels:
        return np.ascontiguousarray(images)
    if c == 1 and channels == 3:
        return np.ascontiguousarray(np.repeat(images, 3, axis=1))
    if c == 3 and channels == 1:
        w = np.array([0.299, 0.587, 0.114], dtype=np.float32)[None, :, None, None]
        return (images * w).sum(axis=1, keepdims=True).astype(np.float32)
    raise InputError(f"cannot convert {c}-channel images to {channels} channels")


def _load_imagefolder(path: Path, resize) -> tuple[np.ndarray, np.ndarray, list[str]]:
    from PIL import Image

    if not path.is_dir():
        raise InputError(f"imagefolder {str(path)!r} is not a directory")
    classes = sorted(d.name for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise InputError(f"imagefolder {path} has no class sub-folders; expected DIR/<class>/<image>")
    images, labels = [], []
    for label, cls in enumerate(classes):
        for f in sorted((path / cls).rglob("*")):
            if f.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(f) as im:
                    im = im.convert("RGB")
                    if resize is not None:
                        hw = (resize, resize) if isinstance(resize, int) else tuple(resize)
                        im = im.resize((hw[1], hw[0]), Image.BILINEAR)
                    images.append(np.asarray(im, dtype=np.uint8))
            except OSError as err:
                raise InputError(f"imagefolder: cannot read image {f}: {err}") from None
            labels.append(label)
    if not images:
        raise InputError(
            f"imagefolder {path} contains no images (looked for {', '.join(sorted(IMAGE_SUFFIXES))} "
            f"in {', '.join(classes)})"
        )
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise InputError(
            f"imagefolder {path}: images have different sizes {sorted(shapes)[:3]}...; "
            "set data.transform.resize"
        )
    # NCHW here, where the layout is known: guessing it from the shape fails for 4x4 or 3x3 images
    return np.stack(images).transpose(0, 3, 1, 2), np.array(labels), classes


def load_source(source: str, base_dir: Path, transform=None, *, labelled: bool = True) -> Dataset:
    """Load one data source and apply resize/channel conversion (not normalisation).

    ``labelled=False`` (a production sample): an npz file may omit ``labels`` (they read as 0 and
    are never scored)."""
    from compress.sources.models import load_python_object, resolve

    scheme, _, ref = source.partition(":")
    classes: list[str] | None = None
    if scheme == "sklearn":
        if ref != "digits":
            raise InputError(f"data source {source!r}: only sklearn:digits is embedded")
        from sklearn.datasets import load_digits

        d = load_digits()
        images = (d.images / 16.0).astype(np.float32)  # 0..16 -> [0, 1]
        labels = d.target
        classes = [str(c) for c in d.target_names]
    elif scheme == "npz":
        path = resolve(ref, base_dir)
        if not path.is_file():
            raise InputError(f"data source {source!r}: file {str(path)!r} does not exist")
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError) as err:
            raise InputError(f"data source {source!r}: not a readable .npz file ({err})") from None
        if not labelled and "labels" not in arrays and "images" in arrays:
            arrays["labels"] = np.zeros(len(arrays["images"]), dtype=np.int64)
        missing = {"images", "labels"} - set(arrays)
        if missing:
            raise InputError(
                f"data source {source!r}: needs arrays 'images' and 'labels'; found {sorted(arrays)}"
            )
        images, labels = arrays["images"], arrays["labels"]
        if "classes" in arrays:
            classes = [str(c) for c in arrays["classes"]]
    elif scheme == "imagefolder":
        images, labels, classes = _load_imagefolder(
            resolve(ref, base_dir), transform.resize if transform else None
        )
    elif scheme == "python":
        fn = load_python_object(ref, base_dir, "data source")
        result = fn()
        if not (isinstance(result, tuple) and len(result) == 2):
            raise InputError(f"data source {source!r} must return (images, labels)")
        images, labels = result
    else:
        raise InputError(f"unknown data source scheme {scheme!r}; valid: {', '.join(DATA_SCHEMES)}")
    x = _to_nchw01(images, f"data source {source!r}")
    y = _labels(labels, len(x), f"data source {source!r}")
    if len(x) == 0:
        raise InputError(f"data source {source!r} is empty")
    if transform is not None:
        if transform.channels is not None:
            x = _channels(x, transform.channels)
        if transform.resize is not None:
            x = _resize(x, transform.resize)
    n_classes = int(y.max()) + 1
    if classes is None or len(classes) < n_classes:
        classes = [str(i) for i in range(n_classes)]
    return Dataset(x, y, classes, source)


@dataclass
class Split:
    role: str
    images: np.ndarray  # float32 NCHW in [0, 1]
    labels: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    source: str
    _hashes: list[str] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.labels)

    def inputs(self, idx=None) -> np.ndarray:
        """Normalised model inputs (all, or rows ``idx``)."""
        x = self.images if idx is None else self.images[idx]
        return ((x - self.mean) / self.std).astype(np.float32)

    def batches(self, batch_size: int):
        for i in range(0, len(self), batch_size):
            yield self.inputs(slice(i, i + batch_size)), self.labels[i : i + batch_size]

    def sample_hashes(self) -> list[str]:
        """A content hash per sample (pixels only), for the held-out overlap check."""
        if self._hashes is None:
            self._hashes = [hashlib.sha1(img.tobytes()).hexdigest() for img in self.images]
        return self._hashes

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        h.update(self.images.tobytes())
        h.update(self.labels.tobytes())
        return h.hexdigest()[:16]


class Splits(dict):
    """role -> Split. ``num_classes`` and ``classes`` describe the label space."""

    classes: list[str]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

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


def make_splits(data_cfg, base_dir: Path, seed: int) -> Splits:
    """Build the train / calibration / tuning / heldout (and drift) splits of a recipe."""
    transform = data_cfg.transform
    splits = Splits()
    if data_cfg.source is not None:
        ds = load_source(data_cfg.source, base_dir, transform)
        # held-out first, so that changing the train fraction never moves held-out samples
        order = ["heldout", "calibration", "tuning", "train"]
        fracs = {r: getattr(data_cfg.split, r) for r in order if getattr(data_cfg.split, r) > 0}
        parts = stratified_fractions(ds.labels, fracs, seed)
        mean, std = _norm_arrays(transform, ds.images.shape[1])
        for role in ("train", "calibration", "tuning", "heldout"):
            if role in parts:
                if len(parts[role]) == 0:
                    raise InputError(
                        f"data.split.{role} gives an empty split ({len(ds.labels)} samples in all); "
                        "raise the fraction or use more data"
                    )
                idx = parts[role]
                splits[role] = Split(role, ds.images[idx], ds.labels[idx], mean, std, ds.source)
        splits.classes = ds.classes
    else:
        classes: list[str] | None = None
        shape = None
        for role, src in data_cfg.sources.items():
            ds = load_source(src, base_dir, transform)
            if shape is not None and ds.images.shape[1:] != shape:
                raise InputError(
                    f"data.sources.{role}: images of shape {ds.images.shape[1:]} differ from the "
                    f"other sources' {shape}; set data.transform.resize/channels"
                )
            shape = ds.images.shape[1:]
            mean, std = _norm_arrays(transform, ds.images.shape[1])
            splits[role] = Split(role, ds.images, ds.labels, mean, std, src)
            if classes is None or len(ds.classes) > len(classes):
                classes = ds.classes
        splits.classes = classes
    drift = data_cfg.drift
    if drift is not None:
        held = splits["heldout"]
        if drift.source is not None:
            ds = load_source(drift.source, base_dir, transform)
            if ds.images.shape[1:] != held.images.shape[1:]:
                raise InputError(
                    f"data.drift.source: images of shape {ds.images.shape[1:]} differ from held-out "
                    f"{held.images.shape[1:]}; set data.transform.resize/channels"
                )
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
            splits["drift"] = Split("drift", ds.images, ds.labels, held.mean, held.std, drift.source)
        else:
            from compress.measure.corruptions import corrupt

            imgs = corrupt(held.images, drift.corruption, drift.severity, seed=seed)
            splits["drift"] = Split(
                "drift", imgs, held.labels, held.mean, held.std,
                f"heldout + {drift.corruption} (severity {drift.severity})",
            )
    production = getattr(data_cfg, "production", None)
    if production is not None:
        held = splits["heldout"]
        ds = load_source(production.source, base_dir, transform, labelled=False)
        if ds.images.shape[1:] != held.images.shape[1:]:
            raise InputError(
                f"data.production.source: images of shape {ds.images.shape[1:]} differ from "
                f"held-out {held.images.shape[1:]}; set data.transform.resize/channels"
            )
        splits["production"] = Split(
            "production", ds.images, ds.labels, held.mean, held.std, production.source
        )
    return splits
