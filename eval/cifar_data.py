"""Loaders for the real CIFAR-10 test data in the shared data directory (see its PROVENANCE.md).

Two copies of the CIFAR-10 test set:
- the exact (lossless) images 0-999, with `jpeg_row` naming each one's twin in the JPEG set;
- all 10,000 images JPEG re-encoded at quality 75, a natural distribution shift of the same images.

The project never requires this data: every entry point takes the directory as an argument and
`shared_data_dir` exits with a clear message when it is absent.

    python eval/cifar_data.py --out DIR [--data DIR]    # writes the npz splits the toolkit reads
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

ENV_VAR = "COMPRESS_SHARED_DATA"
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data"

EXACT_1000 = "cifar10-test/cifar10_test_lossless_first1000.npz"
JPEG_10K = "cifar10-test/cifar10_test_jpegq75_full10k.npz"
WEIGHTS = "cifar-resnet-weights"

# What the akamaster models were trained with: ToTensor() then ImageNet mean/std, no resize.
MEAN_RGB = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD_RGB = np.array([0.229, 0.224, 0.225], dtype=np.float32)

CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)


def shared_data_dir(arg: str | Path | None = None, needs: tuple[str, ...] = (EXACT_1000, JPEG_10K, WEIGHTS)) -> Path:
    """Resolve the shared data directory: `arg`, else $COMPRESS_SHARED_DATA, else ../shared/data
    beside the repository. When it lacks one of `needs` (paths inside it), prints how to point at it
    and exits with status 2 (the eval scripts' "data missing" code), so scripts need no handling of
    their own."""
    if arg is not None:
        path, how = Path(arg), "--data"
    elif os.environ.get(ENV_VAR):
        path, how = Path(os.environ[ENV_VAR]), f"${ENV_VAR}"
    else:
        path, how = DEFAULT_DATA_DIR, "the default location"
    missing = [rel for rel in needs if not (path / rel).exists()]
    if missing:
        print(
            f"CIFAR-10 reference data not found at {path} ({how}); missing: {', '.join(missing)}.\n"
            "eval/ needs the shared data directory (see its PROVENANCE.md). "
            f"Pass --data DIR or set {ENV_VAR}=DIR; the default is {DEFAULT_DATA_DIR}.",
            file=sys.stderr,
        )
        raise SystemExit(2)
    return path


def weights_dir(data_dir: str | Path) -> Path:
    return Path(data_dir) / WEIGHTS


def load_exact_1000(data_dir: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Test images 0-999 with exact pixels: (images uint8 [1000,32,32,3] RGB, labels int64,
    jpeg_row int64 = the row of the same image in the 10k JPEG set)."""
    with np.load(Path(data_dir) / EXACT_1000) as f:
        return f["images"], f["labels"].astype(np.int64), f["jpeg_row"].astype(np.int64)


def load_jpeg_10k(data_dir: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """All 10,000 test images after JPEG q75: (images uint8 [10000,32,32,3] RGB, labels int64).
    Rows are sorted by class, then by index within the class."""
    with np.load(Path(data_dir) / JPEG_10K) as f:
        return f["images"], f["labels"].astype(np.int64)


def non_twin_jpeg_rows(data_dir: str | Path) -> np.ndarray:
    """Rows of the 10k JPEG set that are not twins of the exact 1000 (9,000 rows, ascending)."""
    _, _, jpeg_row = load_exact_1000(data_dir)
    _, labels = load_jpeg_10k(data_dir)
    is_twin = np.zeros(len(labels), dtype=bool)
    is_twin[jpeg_row] = True
    return np.flatnonzero(~is_twin)


def preprocess(images: np.ndarray, mean: np.ndarray = MEAN_RGB, std: np.ndarray = STD_RGB) -> np.ndarray:
    """uint8 NHWC RGB -> float32 NCHW: /255, then per-channel mean/std (default ImageNet's, what the
    ResNets were trained with), no resize."""
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected uint8 NHWC RGB images, got {images.dtype} {images.shape}")
    x = images.astype(np.float32) / 255.0
    x = (x - mean) / std
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def _save_npz(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    # Write under a temporary name and rename, so a half-written file never looks complete.
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, images=images.astype(np.uint8), labels=labels.astype(np.int64))
    os.replace(tmp, path)


def write_npz_splits(
    data_dir: str | Path, out_dir: str | Path, *, seed: int = 0
) -> dict[str, Path]:
    """Write the disjoint splits the toolkit's `npz:` data source reads (keys `images`, `labels`):

    - heldout_exact1000.npz: the exact 1,000 images, in test-set order;
    - jpeg_twins.npz: the JPEG copies of those same 1,000 images, row k the twin of heldout row k
      (a drift set: same images, natural JPEG shift, so it can be compared pairwise);
    - jpeg_nontwin.npz: the other 9,000 JPEG images, shuffled with `seed` (the source file is sorted
      by class, so any prefix would be one class), for fine-tuning and calibration.

    No image appears in both the held-out set and the fine-tuning/calibration set.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    exact_images, exact_labels, jpeg_row = load_exact_1000(data_dir)
    jpeg_images, jpeg_labels = load_jpeg_10k(data_dir)
    if not np.array_equal(jpeg_labels[jpeg_row], exact_labels):
        raise ValueError("jpeg_row does not map the exact images to JPEG images of the same labels")
    rest = non_twin_jpeg_rows(data_dir)
    rest = rest[np.random.default_rng(seed).permutation(len(rest))]
    if np.intersect1d(rest, jpeg_row).size:
        raise AssertionError("non-twin rows overlap the twins")

    paths = {
        "heldout_exact1000": out / "heldout_exact1000.npz",
        "jpeg_twins": out / "jpeg_twins.npz",
        "jpeg_nontwin": out / "jpeg_nontwin.npz",
    }
    _save_npz(paths["heldout_exact1000"], exact_images, exact_labels)
    _save_npz(paths["jpeg_twins"], jpeg_images[jpeg_row], jpeg_labels[jpeg_row])
    _save_npz(paths["jpeg_nontwin"], jpeg_images[rest], jpeg_labels[rest])
    return paths


def write_role_splits(
    data_dir: str | Path, out_dir: str | Path, *, calibration_n: int, seed: int = 0
) -> dict[str, Path]:
    """The three splits a compress recipe's `data.sources` names, as npz files in `out_dir`:
    `heldout` = the exact 1,000 images; `calibration` = the first `calibration_n` of the shuffled
    non-twin JPEGs; `train` = the rest of them (for fine-tuning). Built on `write_npz_splits`, so
    no held-out image or its JPEG twin is in calibration or train."""
    out = Path(out_dir)
    paths = write_npz_splits(data_dir, out, seed=seed)
    with np.load(paths["jpeg_nontwin"]) as z:
        images, labels = z["images"], z["labels"]
    if not 0 < calibration_n < len(images):
        raise ValueError(f"calibration_n must be in (0, {len(images)}), got {calibration_n}")
    roles = {"heldout": paths["heldout_exact1000"], "calibration": out / "calibration.npz", "train": out / "train.npz"}
    _save_npz(roles["calibration"], images[:calibration_n], labels[:calibration_n])
    _save_npz(roles["train"], images[calibration_n:], labels[calibration_n:])
    return roles


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Write the CIFAR-10 npz splits for compress recipes."
    )
    parser.add_argument(
        "--data", help=f"shared data directory (default: ${ENV_VAR} or ../shared/data)"
    )
    parser.add_argument("--out", required=True, help="directory for the npz files")
    parser.add_argument("--seed", type=int, default=0, help="shuffle seed for jpeg_nontwin.npz")
    args = parser.parse_args()
    paths = write_npz_splits(shared_data_dir(args.data), args.out, seed=args.seed)
    for name, path in paths.items():
        with np.load(path) as f:
            print(f"{name}: {path} images {f['images'].shape} labels {f['labels'].shape}")


if __name__ == "__main__":
    main()
