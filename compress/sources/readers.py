"""Samples of one data source, read on demand: ``read(idx)`` decodes only the rows asked for.

A reader holds its labels (small) and knows where its samples are; pixels are produced per batch as
float32 NCHW in [0, 1], after resize and channel conversion (normalisation comes later, when a batch
is handed to a model, so corruptions act on real pixel values). Nothing here holds every sample
of a large source in memory: an image folder keeps file names, an uncompressed npz is
memory-mapped.
"""

from __future__ import annotations

import zipfile
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from compress.errors import InputError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}


class Samples(ABC):
    """Random access to a source's samples. Subclass it (``labels``, ``classes``, ``source``,
    ``read_rows``) to stream from your own storage through a ``python:`` data source."""

    source: str
    labels: np.ndarray  # int64 [n]
    classes: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    @abstractmethod
    def read_rows(self, idx: np.ndarray) -> np.ndarray:
        """Pixels of rows ``idx`` (any order): float32 NCHW in [0, 1], transform applied."""

    def read(self, idx=None) -> np.ndarray:
        """Rows ``idx`` (an index array, a list or a slice; all rows when None), C-contiguous."""
        if idx is None or isinstance(idx, slice):
            rows = np.arange(len(self))[slice(None) if idx is None else idx]
        else:  # an index array: no array the size of the whole source per batch
            rows = np.asarray(idx, dtype=np.int64)
        return np.ascontiguousarray(self.read_rows(np.atleast_1d(rows)), dtype=np.float32)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """One sample's shape (C, H, W), read from the first sample."""
        if not hasattr(self, "_sample_shape"):
            self._sample_shape = tuple(self.read(np.arange(1)).shape[1:])
        return self._sample_shape


class ArraySamples(Samples):
    """Samples already in memory (float32 NCHW in [0, 1]): sklearn digits, a python: function's arrays."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, source: str, classes: list[str] | None = None):
        self.images, self.labels, self.source = images, labels, source
        self.classes = classes or [str(i) for i in range(int(labels.max(initial=-1)) + 1)]

    def read_rows(self, idx: np.ndarray) -> np.ndarray:
        return self.images[idx]


class TransformedSamples(Samples):
    """A user's reader (``python:`` source) with the recipe's resize/channel transform applied per read."""

    def __init__(self, inner: Samples, transform):
        self.inner, self.transform = inner, transform
        self.labels = np.asarray(inner.labels, dtype=np.int64)
        self.source, self.classes = inner.source, list(inner.classes)

    def read_rows(self, idx: np.ndarray) -> np.ndarray:
        return apply_transform(self.inner.read(idx), self.transform)


class ArrayFileSamples(Samples):
    """An npz ``images`` array: memory-mapped when stored uncompressed (np.savez), else held in its
    stored dtype (np.savez_compressed cannot be read by row); scaled and transformed per batch."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, source: str, classes, transform):
        self.images, self.labels, self.source, self.transform = images, labels, source, transform
        self.classes = classes
        self.channels_last = _channels_last(images.shape, source)

    def read_rows(self, idx: np.ndarray) -> np.ndarray:
        # a memmap reads fastest in file order; put the rows back in the order asked for
        order = np.argsort(idx, kind="stable")
        a = np.empty_like(order)
        a[order] = np.arange(len(idx))
        x = np.asarray(self.images[idx[order]])[a]
        x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2) if self.channels_last else x
        x = _scaled(x) if x.dtype == np.uint8 else x.astype(np.float32)
        return apply_transform(x, self.transform)


class ImageFolderSamples(Samples):
    """DIR/<class>/<image>: file names and labels in memory, images decoded when read."""

    def __init__(self, files: list[Path], labels: np.ndarray, classes: list[str], source: str, transform):
        self.files, self.labels, self.classes, self.source = files, labels, classes, source
        self.transform = transform

    def read_rows(self, idx: np.ndarray) -> np.ndarray:
        from PIL import Image

        resize = self.transform.resize if self.transform is not None else None
        images = []
        for i in idx:
            f = self.files[int(i)]
            try:
                with Image.open(f) as im:
                    im = im.convert("RGB")
                    if resize is not None:
                        hw = (resize, resize) if isinstance(resize, int) else tuple(resize)
                        if im.size != (hw[1], hw[0]):
                            im = im.resize((hw[1], hw[0]), Image.BILINEAR)
                    images.append(np.asarray(im, dtype=np.uint8))
            except OSError as err:
                raise InputError(f"imagefolder: cannot read image {f}: {err}") from None
        shapes = {im.shape for im in images}
        if len(shapes) > 1:
            raise InputError(f"imagefolder {self.source}: images have different sizes "
                             f"{sorted(shapes)[:3]}...; set data.transform.resize")
        # NCHW here, where the layout is known: guessing it from the shape fails for 4x4 images
        return apply_transform(_scaled(np.stack(images).transpose(0, 3, 1, 2)), self.transform)


def _scaled(pixels: np.ndarray) -> np.ndarray:
    """uint8 -> float32 / 255 into one new C-contiguous array (no intermediate copy)."""
    out = np.empty(pixels.shape, np.float32)
    np.divide(pixels, np.float32(255), out=out, dtype=np.float32)
    return out


def _channels_last(shape: tuple[int, ...], origin: str) -> bool:
    if len(shape) == 3:
        return False
    if len(shape) != 4:
        raise InputError(f"{origin}: images must be (N,H,W), (N,H,W,C) or (N,C,H,W); got shape {shape}")
    return shape[-1] in (1, 3, 4) and shape[1] not in (1, 3, 4)


def to_nchw01(images: np.ndarray, origin: str) -> np.ndarray:
    """Whole arrays in memory (sklearn, python:) -> float32 NCHW in [0, 1]."""
    a = np.asarray(images)
    if _channels_last(a.shape, origin):
        a = a.transpose(0, 3, 1, 2)
    elif a.ndim == 3:
        a = a[:, None]
    if a.dtype == np.uint8:
        return _scaled(a)
    a = np.ascontiguousarray(a, dtype=np.float32)
    check_float_range(a, origin)
    return a


def check_float_range(a: np.ndarray, origin: str, chunk: int = 1024) -> None:
    """Float pixels must be in [0, 1]; read in chunks, so a memory-mapped array stays on disk."""
    if a.dtype == np.uint8:
        return
    for i in range(0, len(a), chunk):
        part = np.asarray(a[i : i + chunk], dtype=np.float32)
        lo, hi = float(part.min(initial=0)), float(part.max(initial=0))
        if lo < -1e-6 or hi > 1 + 1e-6:
            raise InputError(
                f"{origin}: float images must be in [0, 1] (got {lo:.3g}..{hi:.3g}); give uint8 "
                "pixels or scale them, normalisation is applied by data.transform.normalize"
            )


def check_labels(labels: np.ndarray, n: int, origin: str) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1 or len(y) != n:
        raise InputError(f"{origin}: labels must be a 1-D array of {n} class indices; got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer) or (len(y) and y.min() < 0):
        raise InputError(f"{origin}: labels must be non-negative integers (class indices)")
    return y.astype(np.int64)


def apply_transform(x: np.ndarray, transform) -> np.ndarray:
    """Channel conversion, then resize (per sample, so a batch reads as the whole array would)."""
    if transform is not None:
        if transform.channels is not None:
            x = _channels(x, transform.channels)
        if transform.resize is not None:
            x = _resize(x, transform.resize)
    return x


def _resize(images: np.ndarray, size) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    hw = (size, size) if isinstance(size, int) else tuple(size)
    if images.shape[2:] == hw:
        return images
    out = F.interpolate(torch.from_numpy(np.ascontiguousarray(images)), size=hw, mode="bilinear",
                        align_corners=False, antialias=True)
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


def image_folder(path: Path, source: str, transform) -> ImageFolderSamples:
    """List DIR/<class>/<image> (classes sorted by name, as torchvision's ImageFolder); decode nothing
    but, without a resize, each image's header (sizes must agree)."""
    from PIL import Image

    if not path.is_dir():
        raise InputError(f"imagefolder {str(path)!r} is not a directory")
    classes = sorted(d.name for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise InputError(f"imagefolder {path} has no class sub-folders; expected DIR/<class>/<image>")
    files, labels = [], []
    for label, cls in enumerate(classes):
        for f in sorted((path / cls).rglob("*")):
            if f.suffix.lower() in IMAGE_SUFFIXES:
                files.append(f)
                labels.append(label)
    if not files:
        raise InputError(
            f"imagefolder {path} contains no images (looked for {', '.join(sorted(IMAGE_SUFFIXES))} "
            f"in {', '.join(classes)})"
        )
    if transform is None or transform.resize is None:
        sizes: dict[tuple[int, int], Path] = {}
        for f in files:
            try:
                with Image.open(f) as im:
                    sizes.setdefault(im.size, f)
            except OSError as err:
                raise InputError(f"imagefolder: cannot read image {f}: {err}") from None
        if len(sizes) > 1:
            shown = ", ".join(f"{w}x{h} ({f.name})" for (w, h), f in list(sizes.items())[:3])
            raise InputError(f"imagefolder {path}: images have different sizes ({shown}...); "
                             "set data.transform.resize")
    return ImageFolderSamples(files, np.array(labels, dtype=np.int64), classes, source, transform)


def npz_images(path: Path, source: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The ``images`` array of an npz (memory-mapped when stored uncompressed) and its other arrays."""
    try:
        with np.load(path, allow_pickle=False) as z:
            names = list(z.files)
            others = {k: z[k] for k in names if k != "images"}
        images = _memmap_member(path, "images.npy") if "images" in names else None
        if images is None and "images" in names:
            with np.load(path, allow_pickle=False) as z:
                images = z["images"]
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise InputError(f"data source {source!r}: not a readable .npz file ({err})") from None
    return images, others


def _memmap_member(path: Path, member: str) -> np.ndarray | None:
    """A read-only memmap of an uncompressed .npy inside a zip, or None when it cannot be mapped."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(member)
        if info.compress_type != zipfile.ZIP_STORED:
            return None
        with open(path, "rb") as f:
            f.seek(info.header_offset)
            local = f.read(30)
            name_len, extra_len = int.from_bytes(local[26:28], "little"), int.from_bytes(local[28:30], "little")
            f.seek(info.header_offset + 30 + name_len + extra_len)
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                return None
            offset = f.tell()
    if dtype.hasobject or fortran:
        return None
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)
