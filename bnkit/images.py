r"""Real images for the book's examples, from the sample data matplotlib ships.

No download: matplotlib installs a few sample files with itself, among them a
photograph (``grace_hopper.jpg``, 600 x 512 pixels, RGB). Chapter 3 cuts it
into a batch of square crops and feeds them to a convolution, so batch
normalization sees real feature maps rather than Gaussian noise.

Images here are float arrays with values in :math:`[0, 1]`: a single image in
channels-last layout ``(H, W, 3)`` as matplotlib reads it, a batch in PyTorch's
channels-first layout ``(N, 3, size, size)`` (NCHW).
"""

from __future__ import annotations

from typing import Tuple

import numpy as np

__all__ = ["SAMPLE_IMAGE", "load_sample_image", "random_crops", "sample_image_batch"]

#: The photograph in matplotlib's sample data used by default.
SAMPLE_IMAGE = "grace_hopper.jpg"


def load_sample_image(name: str = SAMPLE_IMAGE, dtype=np.float32) -> np.ndarray:
    """Read an RGB image from matplotlib's sample data, scaled to :math:`[0, 1]`.

    Parameters
    ----------
    name : str, default ``"grace_hopper.jpg"``
        A file of ``matplotlib/mpl-data/sample_data`` (see
        :func:`matplotlib.cbook.get_sample_data`).
    dtype : floating dtype, default float32

    Returns
    -------
    image : ndarray of shape (H, W, 3)
        Channels last, as stored in the file; 8-bit values divided by 255
        (an alpha channel, if any, is dropped).
    """
    from matplotlib import cbook
    from matplotlib import image as mpimg

    path = cbook.get_sample_data(name, asfileobj=False)
    raw = mpimg.imread(path)
    if raw.ndim != 3 or raw.shape[2] < 3:
        raise ValueError(f"{name} is not an RGB image (got an array of shape {raw.shape})")
    raw = raw[:, :, :3]
    if np.issubdtype(raw.dtype, np.integer):
        return (raw / np.iinfo(raw.dtype).max).astype(dtype)
    return raw.astype(dtype)  # PNG files are read as floats in [0, 1] already


def random_crops(image: np.ndarray, n: int, size: int,
                 seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    r"""Cut ``n`` square crops at random positions and stack them as an NCHW batch.

    Crop :math:`k` with top-left corner :math:`(r_k, c_k)` is

    .. math::

        \text{batch}[k, :, i, j] = \text{image}[r_k + i,\ c_k + j,\ :],
        \qquad 0 \le i, j < \text{size},

    with :math:`r_k` uniform on :math:`0 \dots H - \text{size}` and :math:`c_k` on
    :math:`0 \dots W - \text{size}` (drawn with ``np.random.default_rng(seed)``,
    so the same seed gives the same crops).

    Parameters
    ----------
    image : ndarray of shape (H, W, C)
        Channels-last image.
    n : int >= 1
        Number of crops.
    size : int, 1 <= size <= min(H, W)
        Side of each square crop, in pixels.
    seed : int, default 0

    Returns
    -------
    batch : ndarray of shape (n, C, size, size), dtype of ``image``
        Channels first (NCHW), contiguous.
    corners : ndarray of shape (n, 2), int
        The top-left corner (row, column) of each crop in ``image``.
    """
    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"expected an image of shape (H, W, C) (got shape {image.shape})")
    height, width = image.shape[:2]
    if not (isinstance(n, (int, np.integer)) and n >= 1):
        raise ValueError(f"n must be a positive int (got {n!r})")
    if not (isinstance(size, (int, np.integer)) and 1 <= size <= min(height, width)):
        raise ValueError(f"size must be an int in 1..{min(height, width)} for an image of "
                         f"{height} x {width} pixels (got {size!r})")
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, height - size, size=n, endpoint=True)
    cols = rng.integers(0, width - size, size=n, endpoint=True)
    crops = np.stack([image[r:r + size, c:c + size] for r, c in zip(rows, cols)])
    batch = np.ascontiguousarray(crops.transpose(0, 3, 1, 2))   # NHWC -> NCHW
    return batch, np.stack([rows, cols], axis=1)


def sample_image_batch(n: int = 16, size: int = 64, seed: int = 0,
                       dtype=np.float32) -> np.ndarray:
    """A batch of ``n`` random ``size`` x ``size`` crops of matplotlib's sample photograph.

    :func:`load_sample_image` followed by :func:`random_crops`.

    Parameters
    ----------
    n : int, default 16
    size : int, default 64
        At most 512 (the photograph is 600 x 512 pixels).
    seed : int, default 0
    dtype : floating dtype, default float32

    Returns
    -------
    x : ndarray of shape (n, 3, size, size)
        RGB values in :math:`[0, 1]`, channels first (NCHW).

    Examples
    --------
    >>> from bnkit.images import sample_image_batch
    >>> x = sample_image_batch(4, 32, seed=1)
    >>> x.shape, x.dtype
    ((4, 3, 32, 32), dtype('float32'))
    """
    batch, _ = random_crops(load_sample_image(dtype=dtype), n, size, seed)
    return batch
