"""Fixtures shared by the unit tests: a seeded RNG, the torch devices to run on, a tiny MNIST."""

import os

import numpy as np
import pytest
import torch

from bnkit.data import load_mnist_5k

SEED = 20240607

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Each xdist worker is its own process: with torch's default thread pool in every
    # one, the workers oversubscribe the cores, and the tests' tiny tensors gain nothing.
    torch.set_num_threads(1)


def _devices():
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices.append("cuda")
    return devices


@pytest.fixture(params=_devices())
def device(request):
    """Every torch test runs on the CPU, and on CUDA too when a GPU is present."""
    return torch.device(request.param)


@pytest.fixture
def rng():
    """A fresh generator with a fixed seed, so every test sees the same data on every run."""
    return np.random.default_rng(SEED)


@pytest.fixture(scope="session")
def tiny_data():
    """300 training and 100 test images of the embedded MNIST subset."""
    x_train, y_train = load_mnist_5k("train")
    x_test, y_test = load_mnist_5k("test")
    rng = np.random.default_rng(0)
    tr = rng.choice(len(x_train), 300, replace=False)
    te = rng.choice(len(x_test), 100, replace=False)
    return {"x_train": x_train[tr], "y_train": y_train[tr], "x_test": x_test[te], "y_test": y_test[te]}
