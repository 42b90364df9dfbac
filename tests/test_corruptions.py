import numpy as np
import pytest

from compress.measure.corruptions import CORRUPTIONS, SEVERITY_PARAMS, corrupt


def smooth_images(channels: int, size: int = 32, n: int = 3) -> np.ndarray:
    """Images with edges and texture at several scales, values well inside (0, 1)."""
    rng = np.random.default_rng(123)
    coarse = rng.uniform(0.2, 0.8, size=(n, channels, size // 4, size // 4))
    images = np.kron(coarse, np.ones((1, 1, 4, 4)))  # blocky edges
    images += rng.normal(0, 0.05, size=images.shape)  # fine texture
    return np.clip(images, 0, 1).astype(np.float32)


@pytest.fixture
def images() -> np.ndarray:
    return smooth_images(channels=3)


def test_every_corruption_has_five_severities():
    assert {"gaussian_noise", "gaussian_blur", "jpeg", "brightness", "contrast"} == CORRUPTIONS
    assert all(len(SEVERITY_PARAMS[name]) == 5 for name in CORRUPTIONS)


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
@pytest.mark.parametrize("channels", [1, 3])
def test_output_is_a_valid_image_batch_and_input_is_untouched(name: str, channels: int):
    images = smooth_images(channels)
    before = images.copy()
    out = corrupt(images, name, 3)
    np.testing.assert_array_equal(images, before)
    assert out is not images
    assert out.shape == images.shape
    assert out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert np.abs(out - images).mean() > 0.005  # it actually corrupts


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_higher_severity_changes_images_more(name: str, images: np.ndarray):
    changes = [float(np.abs(corrupt(images, name, s) - images).mean()) for s in range(1, 6)]
    assert all(a < b for a, b in zip(changes[:-1], changes[1:], strict=True)), changes


def test_seeded_noise_is_reproducible(images: np.ndarray):
    a = corrupt(images, "gaussian_noise", 2, seed=7)
    np.testing.assert_array_equal(a, corrupt(images, "gaussian_noise", 2, seed=7))
    assert not np.array_equal(a, corrupt(images, "gaussian_noise", 2, seed=8))


def test_noise_has_the_documented_strength():
    # Mid-grey images: nothing clips, so the added noise has std 0.08 at severity 1.
    grey = np.full((4, 3, 64, 64), 0.5, dtype=np.float32)
    noise = corrupt(grey, "gaussian_noise", 1) - grey
    assert noise.std() == pytest.approx(0.08, rel=0.05)


def test_blur_does_not_mix_images_or_channels():
    images = np.zeros((2, 3, 32, 32), dtype=np.float32)
    images[0, 1] = 1.0  # only image 0, channel 1 is lit
    out = corrupt(images, "gaussian_blur", 5)
    assert out[1].max() == 0.0
    assert out[0, 0].max() == 0.0 and out[0, 2].max() == 0.0
    np.testing.assert_allclose(out[0, 1], 1.0, atol=1e-6)  # a flat image stays flat


def test_brightness_keeps_hue_and_raises_value():
    # An RGB pixel (0.4, 0.2, 0.1): V = 0.4 -> 0.5 at severity 1, every channel scaled by 1.25.
    pixel = np.array([0.4, 0.2, 0.1], dtype=np.float32).reshape(1, 3, 1, 1)
    out = corrupt(pixel, "brightness", 1)
    np.testing.assert_allclose(out.ravel(), [0.5, 0.25, 0.125], rtol=1e-6)
    black = np.zeros((1, 3, 1, 1), dtype=np.float32)
    np.testing.assert_allclose(corrupt(black, "brightness", 1).ravel(), [0.1, 0.1, 0.1])


def test_contrast_pulls_towards_each_channels_mean():
    images = np.zeros((1, 2, 1, 2), dtype=np.float32)
    images[0, 0, 0] = [0.0, 1.0]  # mean 0.5
    images[0, 1, 0] = [0.2, 0.4]  # mean 0.3
    out = corrupt(images, "contrast", 1)  # factor 0.4
    np.testing.assert_allclose(out[0, 0, 0], [0.3, 0.7], rtol=1e-6)
    np.testing.assert_allclose(out[0, 1, 0], [0.26, 0.34], rtol=1e-5)


@pytest.mark.parametrize(
    ("name", "severity", "message"),
    [
        ("fog", 1, "unknown corruption 'fog': choose one of brightness, contrast, gaussian_blur"),
        ("jpeg", 0, r"severity must be one of \[1, 2, 3, 4, 5\], got 0"),
        ("jpeg", 6, r"severity must be one of \[1, 2, 3, 4, 5\], got 6"),
        ("jpeg", 2.5, "severity must be one of"),
        ("jpeg", 2.0, "severity must be one of"),
        ("jpeg", True, "severity must be one of"),
    ],
)
def test_bad_name_or_severity_lists_valid_choices(images, name, severity, message):
    with pytest.raises(ValueError, match=message):
        corrupt(images, name, severity)


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (np.zeros((3, 32, 32), dtype=np.float32), "4-D NCHW"),
        (np.zeros((1, 3, 8, 8), dtype=np.uint8), "must be float32, got uint8"),
        (np.full((1, 3, 8, 8), -0.5, dtype=np.float32), "corrupt before normalising"),
    ],
)
def test_bad_images_are_rejected(images, message):
    with pytest.raises(ValueError, match=message):
        corrupt(images, "contrast", 1)


def test_jpeg_rejects_unsupported_channel_counts():
    with pytest.raises(ValueError, match="1- or 3-channel"):
        corrupt(np.zeros((1, 4, 8, 8), dtype=np.float32), "jpeg", 1)
