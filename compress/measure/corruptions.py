"""Synthetic corruptions for the drift check when the recipe gives no newer data.

Severities 1..5 follow the parameter ladders of ImageNet-C (Hendrycks & Dietterich, ICLR 2019,
``make_imagenet_c.py``). Images are float32 NCHW in [0, 1], before normalisation.

Every corruption acts on each sample alone, so a split is corrupted batch by batch as it is read:
the noise of sample ``i`` comes from its own generator, seeded by ``(seed, i)``, and is the same
whichever batch the sample is read in.
"""

from __future__ import annotations

import io

import numpy as np

# One parameter per severity 1..5, as in ImageNet-C.
SEVERITY_PARAMS: dict[str, tuple[float, ...]] = {
    # Standard deviation of additive noise, in [0, 1] pixel units.
    "gaussian_noise": (0.08, 0.12, 0.18, 0.26, 0.38),
    # Blur sigma in pixels at 224 px; scaled with the shorter side so that a 32 px image is blurred
    # by the same fraction of its size (CIFAR-10-C uses a somewhat stronger 0.4..1 px at 32 px).
    "gaussian_blur": (1.0, 2.0, 3.0, 4.0, 6.0),
    # Pillow JPEG quality.
    "jpeg": (20, 15, 10, 7, 5),
    # Added to the HSV value channel (hue and saturation kept).
    "brightness": (0.1, 0.2, 0.3, 0.4, 0.5),
    # Factor on each channel's deviation from its spatial mean.
    "contrast": (0.4, 0.3, 0.2, 0.1, 0.05),
}
CORRUPTIONS = frozenset(SEVERITY_PARAMS)
SEVERITIES = (1, 2, 3, 4, 5)
_BLUR_REFERENCE_PX = 224


def check_severity(severity: int) -> None:
    """ValueError unless ``severity`` is an integer in 1..5 (image and text corruptions alike)."""
    is_int = isinstance(severity, (int, np.integer)) and not isinstance(severity, bool)
    if not is_int or severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {list(SEVERITIES)}, got {severity!r}")


def check_corruption(name: str, severity: int, channels: int | None = None) -> None:
    """ValueError naming the fix for an unknown corruption or severity (or jpeg on 2/4 channels)."""
    if name not in CORRUPTIONS:
        raise ValueError(
            f"unknown corruption {name!r}: choose one of {', '.join(sorted(CORRUPTIONS))}"
        )
    check_severity(severity)
    if name == "jpeg" and channels is not None and channels not in (1, 3):
        raise ValueError(
            f"jpeg needs 1- or 3-channel images, got {channels} channels: "
            "choose another corruption for this data"
        )


def corrupt(images: np.ndarray, name: str, severity: int, *, seed: int = 0,
            sample_ids=None) -> np.ndarray:
    """A corrupted copy of ``images`` (float32 NCHW in [0, 1]); the input is left untouched.

    ``sample_ids`` (default 0..n-1) name the samples, so that a batch read later gets the same
    noise as the whole array would."""
    check_corruption(name, severity)
    _check_images(images)
    param = SEVERITY_PARAMS[name][severity - 1]
    if name == "gaussian_noise":
        ids = range(len(images)) if sample_ids is None else sample_ids
        if len(ids) != len(images):
            raise ValueError(f"sample_ids has {len(ids)} entries for {len(images)} images")
        noise = np.stack([np.random.default_rng([seed, int(i)]).normal(0.0, param, size=images.shape[1:])
                          for i in ids]) if len(images) else np.zeros(images.shape)
        out = images + noise.astype(np.float32)
    elif name == "gaussian_blur":
        out = _blur(images, param * min(images.shape[2:]) / _BLUR_REFERENCE_PX)
    elif name == "jpeg":
        out = _jpeg(images, int(param))
    elif name == "brightness":
        out = _brightness(images, param)
    else:  # contrast
        means = images.mean(axis=(2, 3), keepdims=True)
        out = (images - means) * param + means
    return np.clip(out, 0.0, 1.0).astype(np.float32, copy=False)


def _check_images(images: np.ndarray) -> None:
    if not isinstance(images, np.ndarray) or images.ndim != 4:
        shape = getattr(images, "shape", type(images).__name__)
        raise ValueError(f"images must be a 4-D NCHW numpy array, got {shape}")
    if images.dtype != np.float32:
        raise ValueError(
            f"images must be float32, got {images.dtype}: pass images.astype(np.float32) / 255 "
            "for uint8 pixels"
        )
    if images.size and (images.min() < 0.0 or images.max() > 1.0):
        raise ValueError(
            f"images must lie in [0, 1], got [{images.min():.3g}, {images.max():.3g}]: "
            "corrupt before normalising"
        )


def _blur(images: np.ndarray, sigma_px: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    # sigma 0 on N and C: neighbouring images and channels never mix.
    return gaussian_filter(images, sigma=(0, 0, sigma_px, sigma_px), mode="reflect")


def _jpeg(images: np.ndarray, quality: int) -> np.ndarray:
    from PIL import Image

    channels = images.shape[1]
    if channels not in (1, 3):
        raise ValueError(
            f"jpeg needs 1- or 3-channel images, got {channels} channels: "
            "choose another corruption for this data"
        )
    pixels = np.round(images * 255).astype(np.uint8).transpose(0, 2, 3, 1)  # NHWC
    out = np.empty(pixels.shape, dtype=np.float32)
    for i, image in enumerate(pixels):
        pil = Image.fromarray(
            image[..., 0] if channels == 1 else image, "L" if channels == 1 else "RGB"
        )
        buffer = io.BytesIO()
        pil.save(buffer, format="JPEG", quality=quality)
        decoded = np.asarray(Image.open(buffer), dtype=np.float32) / 255
        out[i] = decoded.reshape(out.shape[1:])
    return out.transpose(0, 3, 1, 2)


def _brightness(images: np.ndarray, delta: float) -> np.ndarray:
    # In HSV, RGB = V * f(H, S): raising V to min(V + delta, 1) scales every channel by the same
    # factor. Black pixels (V = 0) have no hue and become grey at V = delta, as in ImageNet-C.
    value = images.max(axis=1, keepdims=True)
    new_value = np.minimum(value + delta, 1.0)
    scale = np.divide(new_value, value, out=np.zeros_like(value), where=value > 0)
    return np.where(value > 0, images * scale, new_value)
