"""bnkit.images: the sample photograph and the crop batch built from it.

Pillow (which matplotlib itself uses to read JPEG files) is the oracle for the
pixel values; the crops are checked against plain slices of the image.
"""

import subprocess
import sys

import numpy as np
import pytest
from matplotlib import cbook
from PIL import Image

from bnkit.images import SAMPLE_IMAGE, load_sample_image, random_crops, sample_image_batch


@pytest.fixture(scope="module")
def image():
    return load_sample_image()


def test_importing_bnkit_images_imports_neither_torch_nor_matplotlib():
    code = "import sys, bnkit.images; print('torch' in sys.modules, 'matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_sample_image_is_the_photograph_scaled_to_unit_interval(image):
    with Image.open(cbook.get_sample_data(SAMPLE_IMAGE, asfileobj=False)) as pil:
        expected = np.asarray(pil.convert("RGB"), dtype=np.float64) / 255.0
    assert image.shape == (600, 512, 3)
    assert image.dtype == np.float32
    np.testing.assert_allclose(image, expected, rtol=0, atol=1e-7)
    assert image.min() >= 0.0 and image.max() <= 1.0
    assert image.max() - image.min() > 0.9     # a real photograph, not a flat array


def test_load_sample_image_float64_equals_float32_to_rounding(image):
    image64 = load_sample_image(dtype=np.float64)
    assert image64.dtype == np.float64
    np.testing.assert_allclose(image64, image, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(np.round(image64 * 255), np.round(image.astype(np.float64) * 255))


def test_load_sample_image_drops_the_alpha_channel_of_a_png():
    png = load_sample_image("logo2.png")
    with Image.open(cbook.get_sample_data("logo2.png", asfileobj=False)) as pil:
        expected = np.asarray(pil.convert("RGBA"), dtype=np.float64)[:, :, :3] / 255.0
    assert png.shape == (130, 542, 3) and png.dtype == np.float32
    np.testing.assert_allclose(png, expected, rtol=0, atol=1e-6)


def test_load_sample_image_rejects_a_grayscale_image(monkeypatch):
    from matplotlib import image as mpimg
    monkeypatch.setattr(mpimg, "imread", lambda path: np.zeros((4, 5), np.uint8))
    with pytest.raises(ValueError, match=r"is not an RGB image \(got an array of shape \(4, 5\)\)"):
        load_sample_image()


@pytest.mark.parametrize("n, size", [(1, 1), (5, 17), (16, 64), (3, 512)])
def test_crops_are_slices_of_the_image_in_nchw_layout(image, n, size):
    batch, corners = random_crops(image, n, size, seed=7)
    assert batch.shape == (n, 3, size, size)
    assert batch.dtype == image.dtype
    assert batch.flags["C_CONTIGUOUS"]
    assert corners.shape == (n, 2)
    height, width = image.shape[:2]
    for k, (r, c) in enumerate(corners):
        assert 0 <= r <= height - size and 0 <= c <= width - size
        np.testing.assert_array_equal(batch[k], image[r:r + size, c:c + size].transpose(2, 0, 1))
        # one pixel by hand: channel 1 of pixel (i, j) of crop k
        i, j = size // 2, size - 1
        assert batch[k, 1, i, j] == image[r + i, c + j, 1]


def test_crops_cover_the_whole_range_of_positions():
    # 4 x 4 image, 3 x 3 crops: exactly two possible rows and columns, both must occur
    image = np.arange(48, dtype=np.float64).reshape(4, 4, 3)
    _, corners = random_crops(image, 200, 3, seed=0)
    assert set(corners[:, 0]) == {0, 1} and set(corners[:, 1]) == {0, 1}


def test_same_seed_same_batch_other_seed_other_batch():
    a = sample_image_batch(4, 32, seed=3)
    b = sample_image_batch(4, 32, seed=3)
    c = sample_image_batch(4, 32, seed=4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_sample_image_batch_is_random_crops_of_the_sample_image(image):
    x = sample_image_batch(6, 48, seed=11)
    expected, _ = random_crops(image, 6, 48, seed=11)
    np.testing.assert_array_equal(x, expected)
    assert x.shape == (6, 3, 48, 48) and x.dtype == np.float32
    assert x.min() >= 0.0 and x.max() <= 1.0


def test_sample_image_batch_keeps_the_requested_dtype():
    assert sample_image_batch(2, 8, dtype=np.float64).dtype == np.float64


@pytest.mark.parametrize("n, size, match", [
    (0, 8, "n must be a positive int"),
    (2, 0, "size must be an int in 1..4"),
    (2, 5, "size must be an int in 1..4"),
    (2.0, 3, "n must be a positive int"),
])
def test_random_crops_rejects_bad_arguments(n, size, match):
    image = np.zeros((4, 6, 3))
    with pytest.raises(ValueError, match=match):
        random_crops(image, n, size)


def test_random_crops_rejects_an_image_without_a_channel_axis():
    with pytest.raises(ValueError, match=r"expected an image of shape \(H, W, C\)"):
        random_crops(np.zeros((4, 4)), 1, 2)
