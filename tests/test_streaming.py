"""Data that streams: a split reads only the rows a batch asks for, and every number computed batch by
batch (pixels, corruptions, hashes, fingerprints) is the one the whole array would give."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from compress.errors import InputError
from compress.measure.corruptions import CORRUPTIONS, corrupt
from compress.recipe import DataConfig, TransformConfig
from compress.sources import data as data_mod
from compress.sources.data import Split, load_source, make_splits
from compress.sources.readers import ArraySamples

SPLIT = {"train": 0.6, "calibration": 0.1, "heldout": 0.3}


def _npz(tmp_path, n=40, compressed=False) -> Path:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, 6, 6, 3), dtype=np.uint8)
    save = np.savez_compressed if compressed else np.savez
    save(tmp_path / "d.npz", images=images, labels=np.arange(n) % 4)
    return tmp_path / "d.npz"


def test_uncompressed_npz_is_memory_mapped_and_reads_rows_in_any_order(tmp_path):
    _npz(tmp_path)
    ds = load_source("npz:d.npz", tmp_path)
    assert isinstance(ds.images, np.memmap)  # nothing is loaded until rows are read
    whole = ds.read()
    idx = np.array([7, 2, 30, 2])
    np.testing.assert_array_equal(ds.read(idx), whole[idx])
    assert whole.shape == (40, 3, 6, 6) and whole.dtype == np.float32


def test_compressed_npz_reads_the_same_pixels(tmp_path):
    mapped = load_source("npz:d.npz", Path(_npz(tmp_path)).parent).read()
    (tmp_path / "c").mkdir()
    _npz(tmp_path / "c", compressed=True)
    packed = load_source("npz:d.npz", tmp_path / "c")
    assert not isinstance(packed.images, np.memmap)
    np.testing.assert_array_equal(packed.read(), mapped)


def test_float_npz_out_of_range_is_refused_when_opened(tmp_path):
    np.savez(tmp_path / "f.npz", images=np.full((3, 4, 4), 2.0, np.float32), labels=np.zeros(3, int))
    with pytest.raises(InputError, match=r"float images must be in \[0, 1\] \(got 0\.\.2\)"):
        load_source("npz:f.npz", tmp_path)


def test_imagefolder_decodes_only_the_rows_a_batch_asks_for(image_folder, monkeypatch):
    from PIL import Image

    ds = load_source(f"imagefolder:{image_folder}", Path("."), TransformConfig(resize=4))
    opened = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda f, *a, **k: opened.append(Path(f).name) or real_open(f, *a, **k))
    batch = ds.read([4, 0])
    assert batch.shape == (2, 3, 4, 4)
    assert len(opened) == 2  # two files decoded, not nine


def test_imagefolder_of_mixed_sizes_without_resize_is_refused_when_opened(image_folder):
    from PIL import Image

    Image.fromarray(np.zeros((5, 9, 3), np.uint8)).save(image_folder / "moose" / "odd.png")
    with pytest.raises(InputError, match=r"images have different sizes .*set data.transform.resize"):
        load_source(f"imagefolder:{image_folder}", Path("."))


def test_batches_cover_the_split_in_order_with_named_inputs():
    splits = make_splits(DataConfig(source="sklearn:digits", split=SPLIT), Path("."), 0)
    held = splits["heldout"]
    xs, ys = zip(*held.batches(64), strict=True)
    assert all(set(x) == {"pixel_values"} for x in xs)
    np.testing.assert_array_equal(np.concatenate([x["pixel_values"] for x in xs]),
                                  held.inputs()["pixel_values"])
    np.testing.assert_array_equal(np.concatenate(ys), held.labels)
    stream = held.stream(100, labels=True)
    assert len(stream) == -(-len(held) // 100)
    assert [len(y) for _, y in stream] == [len(y) for _, y in stream]  # re-iterable


def test_streamed_fingerprint_and_hashes_equal_the_whole_arrays(monkeypatch):
    monkeypatch.setattr(data_mod, "SCAN_BATCH_BYTES", 4096)  # many chunks: their seams are tested
    splits = make_splits(DataConfig(source="sklearn:digits", split=SPLIT,
                                    transform={"resize": 16, "channels": 3}), Path("."), 0)
    train = splits["train"]
    whole = train.pixels()
    want = hashlib.sha256(whole.tobytes() + train.labels.tobytes()).hexdigest()[:16]
    assert train.fingerprint() == want
    assert train.sample_hashes() == [hashlib.sha1(img.tobytes()).hexdigest() for img in whole]


def test_splits_are_the_ones_compress_made_before_streaming(monkeypatch):
    """The same seeded indices as the in-memory implementation: fingerprints pinned from it."""
    cfg = DataConfig(source="sklearn:digits", split=SPLIT, transform={"resize": 16, "channels": 3},
                     drift={"corruption": "brightness", "severity": 2})
    monkeypatch.setattr(data_mod, "SCAN_BATCH_BYTES", 4096)  # read in many chunks
    got = {r: s.fingerprint() for r, s in make_splits(cfg, Path("."), 0).items()}
    assert got == {"train": "54962b6f3ed6fff8", "calibration": "70e7f1fd0f34c681",
                   "heldout": "15c052a813a6c7cc", "drift": "afac6bb826d6b82c"}


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_a_corruption_read_batch_by_batch_equals_the_whole_array_corrupted(name):
    rng = np.random.default_rng(1)
    images = rng.random((10, 3, 12, 12), dtype=np.float32)
    ones = np.ones((1, 3, 1, 1), np.float32)
    held = Split.from_arrays("heldout", images, np.arange(10) % 2, 0 * ones, ones, "t")
    view = held.corrupted(name, 3, seed=5)
    whole = corrupt(images, name, 3, seed=5)
    parts = np.concatenate([view.pixels(np.arange(i, min(i + 3, 10))) for i in range(0, 10, 3)])
    np.testing.assert_allclose(parts, whole, atol=1e-6)
    np.testing.assert_allclose(view.pixels([7, 1]), whole[[7, 1]], atol=1e-6)
    np.testing.assert_array_equal(held.pixels(), images)  # the source is untouched


def test_a_python_source_may_return_its_own_reader(tmp_path):
    (tmp_path / "mydata.py").write_text(
        "import numpy as np\n"
        "from compress.sources.readers import Samples\n"
        "class Counting(Samples):\n"
        "    source, classes = 'python:counting', ['a', 'b']\n"
        "    labels = np.arange(30) % 2\n"
        "    reads = []\n"
        "    def read_rows(self, idx):\n"
        "        self.reads.append(len(idx))\n"
        "        return np.full((len(idx), 1, 4, 4), 0.5, np.float32)\n"
        "def data():\n"
        "    return Counting()\n"
    )
    cfg = DataConfig(source="python:mydata.py:data", split=SPLIT, transform={"resize": 2, "channels": 3})
    splits = make_splits(cfg, tmp_path, 0)
    held = splits["heldout"]
    assert len(held) == 8 and splits.classes == ["a", "b"]
    assert held.sample_shape == (3, 2, 2)  # the recipe's transform applies to a reader's pixels too
    reads = held.samples.inner.reads
    reads.clear()
    list(held.batches(3))
    assert reads == [3, 3, 2]


def test_split_subset_reads_through_to_the_source_rows():
    samples = ArraySamples(np.arange(10, dtype=np.float32).reshape(10, 1, 1, 1) / 10, np.arange(10) % 2, "t")
    ones = np.ones((1, 1, 1, 1), np.float32)
    split = Split("train", samples, np.array([1, 3, 5, 7]), 0 * ones, ones, "t")
    sub = split.subset([3, 0], role="validation")
    assert sub.role == "validation" and sub.labels.tolist() == [1, 1]
    np.testing.assert_allclose(sub.pixels().ravel(), [0.7, 0.1])
