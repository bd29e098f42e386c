"""Data for the book's experiments: real MNIST digits, offline.

Three sources, one output format (``images``: float32, shape ``(n, 784)``,
pixels scaled to ``[0, 1]``; ``labels``: int64, shape ``(n,)``, values 0..9):

* :func:`load_mnist_5k` -- 5,000 real MNIST training digits (500 per class)
  shipped inside bnkit (``bnkit/_data/mnist_5k.npz``; provenance and licence in
  ``bnkit/_data/README.md``). No network, no extra dependency. Split
  deterministically and stratified into 4,000 training and 1,000 test images.
* :func:`load_mnist` / :func:`load_fashion_mnist` -- the full 60,000/10,000
  data sets, read from the standard IDX ``.gz`` files in a directory you give
  (argument or environment variable). Debian's ``dataset-fashion-mnist``
  package installs Fashion-MNIST in ``/usr/share/datasets/fashion-mnist``,
  which is used when present.
* :func:`download_mnist` -- an explicit helper for online users that fetches
  the IDX files and verifies their SHA-256 checksums. Nothing else in bnkit
  touches the network.

:func:`read_idx` is the pure IDX parser underneath; :func:`load_dataset`
dispatches on a name (``"mnist-5k"``, ``"mnist"``, ``"fashion-mnist"``) for
the command line.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
import urllib.request
from pathlib import Path
from typing import Dict, Mapping, Optional, Tuple, Union

import numpy as np

__all__ = [
    "load_mnist_5k",
    "mnist_5k_split_indices",
    "load_mnist",
    "load_fashion_mnist",
    "load_dataset",
    "read_idx",
    "download_mnist",
    "IDX_FILES",
    "MNIST_SHA256",
    "FASHION_MNIST_SHA256",
    "MNIST_URL",
    "FASHION_MNIST_URL",
    "DATASETS",
    "stored_result",
    "stored_results",
]

PathLike = Union[str, os.PathLike]

_DATA_DIR = Path(__file__).resolve().parent / "_data"
_MNIST_5K = _DATA_DIR / "mnist_5k.npz"
_RESULTS_DIR = _DATA_DIR / "results"

#: The four standard file names, by split, as a pair (images file, labels file).
IDX_FILES: Dict[str, Tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

#: SHA-256 of the original MNIST files (LeCun, Cortes & Burges).
MNIST_SHA256: Dict[str, str] = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}

#: SHA-256 of the Fashion-MNIST files (Zalando Research; identical to Debian's package).
FASHION_MNIST_SHA256: Dict[str, str] = {
    "train-images-idx3-ubyte.gz": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
    "train-labels-idx1-ubyte.gz": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
    "t10k-images-idx3-ubyte.gz": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
    "t10k-labels-idx1-ubyte.gz": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
}

#: A mirror of the MNIST files (the one torchvision uses).
MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
#: Zalando's host of the Fashion-MNIST files.
FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"

_FASHION_DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")

#: Names accepted by :func:`load_dataset`.
DATASETS = ("mnist-5k", "mnist", "fashion-mnist")

# IDX type codes -> NumPy dtypes (multi-byte types are big-endian).
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _check_split(split: str, allowed) -> None:
    if split not in allowed:
        raise ValueError(f"split must be one of {tuple(allowed)}, got {split!r}")


def _as_float_images(images: np.ndarray) -> np.ndarray:
    """uint8 images of shape (n, 28, 28) -> float32 (n, 784) in [0, 1]."""
    flat = images.reshape(images.shape[0], -1)
    return flat.astype(np.float32) / np.float32(255.0)


# --------------------------------------------------------------------------- #
# The embedded 5,000-image subset
# --------------------------------------------------------------------------- #
def _mnist_5k_raw() -> Tuple[np.ndarray, np.ndarray]:
    with np.load(_MNIST_5K) as f:
        return f["images"], f["labels"]


def mnist_5k_split_indices(seed: int = 0, n_test_per_class: int = 100) -> Tuple[np.ndarray, np.ndarray]:
    """Indices of the stratified train/test split of the embedded subset.

    For each class c (500 images), a permutation drawn from
    ``np.random.default_rng(seed)`` puts ``n_test_per_class`` of its images in
    the test set and the rest in the training set. Both index arrays are
    returned sorted, so the split does not depend on anything but ``seed``.

    Returns ``(train_idx, test_idx)``, int64 arrays of lengths 4,000 and 1,000
    with the defaults.
    """
    _, labels = _mnist_5k_raw()
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in range(10):
        idx = np.flatnonzero(labels == c)
        perm = rng.permutation(idx)
        test.append(perm[:n_test_per_class])
        train.append(perm[n_test_per_class:])
    return np.sort(np.concatenate(train)).astype(np.int64), np.sort(np.concatenate(test)).astype(np.int64)


def load_mnist_5k(split: str = "train") -> Tuple[np.ndarray, np.ndarray]:
    """5,000 real MNIST digits shipped with bnkit, split 4,000 / 1,000.

    Parameters
    ----------
    split : ``"train"`` (4,000 images, 400 per class), ``"test"`` (1,000,
        100 per class) or ``"all"`` (5,000, in the stored order).

    Returns
    -------
    images : float32 array, shape ``(n, 784)``, pixel values ``p / 255`` in ``[0, 1]``.
    labels : int64 array, shape ``(n,)``, digits 0..9.

    The split is stratified and fixed (:func:`mnist_5k_split_indices` with
    seed 0): every call returns the same images in the same order.
    """
    _check_split(split, ("train", "test", "all"))
    images, labels = _mnist_5k_raw()
    if split != "all":
        train_idx, test_idx = mnist_5k_split_indices()
        idx = train_idx if split == "train" else test_idx
        images, labels = images[idx], labels[idx]
    return _as_float_images(images), labels.astype(np.int64)


# --------------------------------------------------------------------------- #
# IDX files
# --------------------------------------------------------------------------- #
def read_idx(path: PathLike) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed) into a NumPy array.

    The IDX format (LeCun et al.): two zero bytes, a type code (``0x08`` for
    uint8, ...), the number of dimensions k, then k big-endian uint32 sizes,
    then the data in C order. A file whose name ends in ``.gz`` is
    decompressed first.

    Returns an array of shape ``(d_1, ..., d_k)`` and the stored dtype
    (converted to native byte order). Raises ``ValueError`` on a malformed
    header or a data size that does not match it.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path}: not an IDX file (bad magic number)")
    code, ndim = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        raise ValueError(f"{path}: unknown IDX type code 0x{code:02x}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(
            f"{path}: IDX header promises shape {shape} ({expected} bytes of data), "
            f"file holds {len(raw) - header}"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="), copy=True)


def _load_idx_dir(directory: Path, split: str, what: str) -> Tuple[np.ndarray, np.ndarray]:
    _check_split(split, ("train", "test"))
    img_name, lab_name = IDX_FILES[split]
    img_path, lab_path = directory / img_name, directory / lab_name
    for p in (img_path, lab_path):
        if not p.is_file():
            raise FileNotFoundError(f"{what}: {p} not found (expected the standard IDX .gz files in {directory})")
    images, labels = read_idx(img_path), read_idx(lab_path)
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise ValueError(f"{what}: images {images.shape} and labels {labels.shape} do not match")
    return _as_float_images(images), labels.astype(np.int64)


def _resolve_dir(path: Optional[PathLike], env: str, default: Optional[Path], what: str) -> Path:
    if path is not None:
        return Path(path)
    if os.environ.get(env):
        return Path(os.environ[env])
    if default is not None and default.is_dir():
        return default
    hint = f" (or install Debian's dataset-fashion-mnist, which uses {default})" if default else ""
    raise FileNotFoundError(
        f"{what}: no directory given. Pass path=..., or set {env} to a directory holding "
        f"{', '.join(IDX_FILES['train'] + IDX_FILES['test'])}{hint}; "
        f"bnkit.data.download_mnist can fetch them."
    )


def load_mnist(path: Optional[PathLike] = None, split: str = "train") -> Tuple[np.ndarray, np.ndarray]:
    """Full MNIST (60,000 train / 10,000 test) from the standard IDX ``.gz`` files.

    ``path`` is the directory holding ``train-images-idx3-ubyte.gz`` etc.; when
    ``None``, the environment variable ``BNKIT_MNIST_DIR`` is used.
    Returns float32 images ``(n, 784)`` in ``[0, 1]`` and int64 labels ``(n,)``.
    """
    directory = _resolve_dir(path, "BNKIT_MNIST_DIR", None, "MNIST")
    return _load_idx_dir(directory, split, "MNIST")


def load_fashion_mnist(path: Optional[PathLike] = None, split: str = "train") -> Tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST (60,000 / 10,000) from the standard IDX ``.gz`` files.

    The directory is ``path``, else ``$BNKIT_FASHION_MNIST_DIR``, else
    ``/usr/share/datasets/fashion-mnist`` when it exists (Debian's
    ``dataset-fashion-mnist`` package). Same output format as :func:`load_mnist`.
    """
    directory = _resolve_dir(path, "BNKIT_FASHION_MNIST_DIR", _FASHION_DEBIAN_DIR, "Fashion-MNIST")
    return _load_idx_dir(directory, split, "Fashion-MNIST")


def load_dataset(name: str, path: Optional[PathLike] = None) -> Dict[str, np.ndarray]:
    """Train and test arrays of a data set by name, for the command line.

    ``name`` is one of :data:`DATASETS`: ``"mnist-5k"`` (embedded),
    ``"mnist"``, ``"fashion-mnist"`` (IDX files, see :func:`load_mnist`).
    Returns a dict with ``x_train``, ``y_train``, ``x_test``, ``y_test``.
    """
    if name == "mnist-5k":
        loader = lambda split: load_mnist_5k(split)  # noqa: E731
    elif name == "mnist":
        loader = lambda split: load_mnist(path, split)  # noqa: E731
    elif name == "fashion-mnist":
        loader = lambda split: load_fashion_mnist(path, split)  # noqa: E731
    else:
        raise ValueError(f"unknown data set {name!r}; choose one of {DATASETS}")
    x_train, y_train = loader("train")
    x_test, y_test = loader("test")
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


# --------------------------------------------------------------------------- #
# Download helper (explicit, for online users)
# --------------------------------------------------------------------------- #
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download_mnist(
    dest: PathLike,
    base_url: str = MNIST_URL,
    checksums: Optional[Mapping[str, str]] = None,
    timeout: float = 60.0,
) -> Path:
    """Download the four IDX ``.gz`` files into ``dest`` and verify them.

    Each file ``name`` in ``checksums`` (default :data:`MNIST_SHA256`; pass
    :data:`FASHION_MNIST_SHA256` with ``base_url=FASHION_MNIST_URL`` for
    Fashion-MNIST) is fetched from ``base_url + name`` into a temporary file
    in ``dest``, its SHA-256 is compared with the expected hex digest, and
    only then is it renamed to ``dest / name``. A file already present with
    the right checksum is not downloaded again.

    Raises ``ValueError`` on a checksum mismatch (the temporary file is
    deleted, so no partial or wrong file is left behind). Returns ``dest``.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    checksums = dict(MNIST_SHA256 if checksums is None else checksums)
    if not base_url.endswith("/"):
        base_url += "/"
    for name, expected in checksums.items():
        target = dest / name
        if target.is_file() and _sha256(target) == expected.lower():
            continue
        fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=dest)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(base_url + name, timeout=timeout) as resp:
                for block in iter(lambda: resp.read(1 << 20), b""):
                    out.write(block)
            got = _sha256(tmp)
            if got != expected.lower():
                raise ValueError(
                    f"checksum mismatch for {name} from {base_url + name}: "
                    f"expected SHA-256 {expected.lower()}, got {got}; the file was discarded"
                )
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                tmp.unlink()
    return dest


def stored_results() -> Tuple[str, ...]:
    """Names of the result files shipped with bnkit, sorted (see :func:`stored_result`)."""
    return tuple(sorted(p.name for p in _RESULTS_DIR.iterdir() if not p.name.startswith(".")))


def stored_result(name: str) -> Path:
    """The path of a result file that ships with bnkit, the record of a long experiment.

    Chapters 5-7 show experiments that take an hour or more of CPU time (many
    networks over several seeds); they ran once from the command line, and their
    results ship inside the package (``bnkit/_data/results``), so that a
    chapter reads them with no download, in a clone and after ``pip install``
    alike. Each file records the command that wrote it; ``bnkit/_data/README.md``
    lists them.

    Parameters
    ----------
    name : str
        A file name, one of :func:`stored_results`.

    Raises
    ------
    ValueError
        For a name that is not shipped.
    """
    names = stored_results()
    if name not in names:
        raise ValueError(f"no stored result named {name!r}; bnkit ships {', '.join(names)}")
    return _RESULTS_DIR / name
