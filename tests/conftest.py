"""Fixtures shared by the unit tests: a seeded RNG and the torch devices to run on."""

import os

import numpy as np
import pytest
import torch

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
