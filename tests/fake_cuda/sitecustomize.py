"""Make this interpreter's torch look like a CUDA build: for tests/test_portable_outputs.py.

Put this folder first on ``PYTHONPATH`` (Python imports ``sitecustomize`` at start-up, so
a Jupyter kernel and every process it starts, torchrun's workers included, get it too).
Once ``torch`` has been imported, it reports

- ``torch.__version__`` = the same version with the local part ``+cu128`` (``2.13.0+cu128``
  instead of ``2.13.0+cpu``), also as ``torch.version.__version__``;
- ``torch.version.cuda`` = ``"12.8"`` and cuDNN 9.10 (``torch.backends.cudnn.version()``);
- with ``BNKIT_FAKE_GPU=1`` also one visible GPU: ``torch.cuda.is_available()`` is True,
  ``torch.cuda.device_count()`` is 1 and its name is ``"NVIDIA Fake GPU"``. Nothing can
  run on it: the first tensor sent there raises torch's own "Torch not compiled with CUDA
  enabled", which the test takes as the point where a CPU cannot follow.

Nothing else changes: the computations are this machine's CPU build.
"""

import importlib.abc
import importlib.util
import os
import sys

LOCAL_VERSION = "cu128"
CUDA_VERSION = "12.8"
CUDNN_VERSION = 91000
GPU_NAME = "NVIDIA Fake GPU"


def _patch(torch) -> None:
    from torch.torch_version import TorchVersion

    version = TorchVersion(f"{str(torch.__version__).split('+')[0]}+{LOCAL_VERSION}")
    torch.__version__ = version
    torch.version.__version__ = version
    torch.version.cuda = CUDA_VERSION
    torch.backends.cudnn.version = lambda: CUDNN_VERSION
    torch.backends.cudnn.is_available = lambda: True
    if os.environ.get("BNKIT_FAKE_GPU") == "1":
        torch.cuda.is_available = lambda: True
        torch.cuda.device_count = lambda: 1
        torch.cuda.get_device_name = lambda device=None: GPU_NAME


class _PatchTorchOnImport(importlib.abc.MetaPathFinder):
    """Finds the real torch, and patches it as soon as its import has finished."""

    def find_spec(self, fullname, path, target=None):
        if fullname != "torch":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec("torch")
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_and_patch(module):
            exec_module(module)
            _patch(module)

        spec.loader.exec_module = exec_and_patch
        return spec


if "torch" in sys.modules:
    _patch(sys.modules["torch"])
else:
    sys.meta_path.insert(0, _PatchTorchOnImport())
