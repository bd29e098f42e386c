"""The stored outputs do not depend on the torch build or on the GPU of the machine that wrote them.

nbval compares every stored output, so an output that shows ``torch 2.13.0+cpu`` or "No
CUDA GPU visible" fails on a CUDA build of the same torch (a GPU workstation, Colab, a
CI runner with a GPU). The book may *show* such facts, but only in cells that nbval does
not compare (tag ``nbval-ignore-output``). Two tests hold that line:

- **static**, every notebook: no output that nbval compares (after the rules of
  ``tests/sanitize.cfg``) contains a torch build string (``+cpu``, ``+cu128``,
  ``+rocm6.2``) or a GPU report ("No CUDA", "CUDA GPU:").
- **under another build**, the notebooks whose code reads the build or asks about CUDA
  (``torch.__version__``, ``torch.version``, ``cuda``): strict nbval in an interpreter
  whose torch reports ``2.13.0+cu128`` with CUDA 12.8 (``tests/fake_cuda/sitecustomize.py``).
  A notebook whose code mentions ``cuda`` runs as if one GPU were visible, as far as a CPU
  can follow: up to the first cell that sends work to the fake GPU (torch's "Torch not
  compiled with CUDA enabled"), which stops the run; every compared output before it must
  still match. The others run whole, as on a CUDA build with no GPU.

What no CPU can show: the outputs of cells after that stop, on a real GPU. Those cells'
outputs must not be compared either; the static test and review keep them so.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from nbval.plugin import find_comment_markers, find_metadata_tags, get_sanitize_patterns

pytestmark = pytest.mark.notebooks  # run by `make nbval`, next to the notebooks themselves

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
SANITIZE = ROOT / "tests" / "sanitize.cfg"
FAKE_CUDA = ROOT / "tests" / "fake_cuda"  # its sitecustomize.py patches torch on import

# What a compared output must never contain: a torch build's local version, a GPU report.
MACHINE_SPECIFIC = re.compile(r"\+cpu\b|\+cu\d+|\+rocm\d|No CUDA|CUDA GPU:")
# Code that may print something build- or GPU-dependent: such notebooks run under the fake.
READS_BUILD = re.compile(r"torch\.__version__|torch\.version\b")
ASKS_CUDA = re.compile(r"cuda", re.IGNORECASE)
# nbval does not compare images (without --nbdime) and never compares these keys.
NOT_COMPARED = {"image/png", "image/jpeg", "metadata", "traceback", "execution_count",
                "output_type", "name", "application/vnd.jupyter.widget-view+json"}
# What torch raises when anything is sent to a GPU of a CPU-only build: a CPU stops here.
NO_REAL_GPU = "Torch not compiled with CUDA enabled"


def _text(value) -> str:
    return "".join(value) if isinstance(value, list) else value if isinstance(value, str) \
        else json.dumps(value)


def _code_cells(path: Path) -> list[dict]:
    return [c for c in json.loads(path.read_text(encoding="utf8"))["cells"]
            if c["cell_type"] == "code"]


def _nbval_options(cell: dict) -> dict:
    """nbval's own reading of a cell's tags and comment markers (check, skip, ...)."""
    options = dict(find_comment_markers(_text(cell["source"])))
    options.update(find_metadata_tags(cell.get("metadata", {})))
    return options


def compared_texts(cell: dict):
    """The text of each output of ``cell`` that nbval compares, as nbval sanitizes it."""
    options = _nbval_options(cell)
    if options.get("skip") or options.get("check", True) is False:
        return
    patterns = dict(get_sanitize_patterns(SANITIZE.read_text(encoding="utf8")))
    for output in cell.get("outputs", []):
        for key, value in output.items():
            if key in NOT_COMPARED:
                continue
            values = value.items() if key == "data" else [(key, value)]
            for mime, item in values:
                if mime in NOT_COMPARED:
                    continue
                text = _text(item)
                for regex, replacement in patterns.items():
                    text = re.sub(regex, replacement, text)
                yield text


def _sources(path: Path) -> str:
    return "\n".join(_text(c["source"]) for c in _code_cells(path))


def fake_gpu(path: Path) -> bool:
    return bool(ASKS_CUDA.search(_sources(path)))


def runs_under_fake_build(path: Path) -> bool:
    return bool(READS_BUILD.search(_sources(path))) or fake_gpu(path)


# --------------------------------------------------------------------------- static


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_build_or_gpu_string_in_compared_outputs(notebook):
    found = []
    for number, cell in enumerate(_code_cells(notebook)):
        for text in compared_texts(cell):
            for line in text.splitlines():
                if MACHINE_SPECIFIC.search(line):
                    found.append(f"Cell {number}: {line.strip()[:120]!r}")
    assert not found, (
        f"{notebook.name} stores machine-specific text in outputs that nbval compares (cells "
        "numbered as nbval numbers them); show it only in a cell tagged nbval-ignore-output "
        "(with a comment saying why):\n  "
        + "\n  ".join(found))


def test_static_check_sees_what_nbval_compares():
    def cell(text, tags=(), source="print(x)"):
        return {"cell_type": "code", "source": source, "metadata": {"tags": list(tags)},
                "outputs": [{"output_type": "stream", "name": "stdout", "text": text}]}

    line = "numpy 2.4.6 | torch 2.13.0+cpu\n"
    assert list(compared_texts(cell(line))) == [line]
    assert list(compared_texts(cell(line, tags=["nbval-ignore-output"]))) == []
    assert list(compared_texts(cell(line, source="# NBVAL_IGNORE_OUTPUT\nprint(x)"))) == []
    assert list(compared_texts(cell(line, tags=["nbval-skip"]))) == []
    image = {"output_type": "display_data", "metadata": {},
             "data": {"image/png": "iVBOR+cu68887", "text/plain": "<Figure size 640x480>"}}
    assert list(compared_texts({"source": "", "metadata": {}, "outputs": [image]})) \
        == ["<Figure size 640x480>"]
    for text, specific in (("torch 2.13.0+cpu", True), ("2.13.0+cu128", True),
                           ("No CUDA GPU visible", True), ("CUDA GPU: A100", True),
                           ("+rocm6.2", True), ("torch 2.13.0", False), ("cpu time", False)):
        assert bool(MACHINE_SPECIFIC.search(text)) is specific, text


# --------------------------------------------------------------------------- under a CUDA build


def _run_nbval(notebook: Path, report: Path, gpu: bool) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(FAKE_CUDA), env.get("PYTHONPATH")]))
    env["BNKIT_FAKE_GPU"] = "1" if gpu else "0"
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-x",
               "--nbval", str(notebook), "--nbval-sanitize-with", str(SANITIZE),
               f"--junitxml={report}"]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=900)


@pytest.mark.parametrize("notebook", [p for p in NOTEBOOKS if runs_under_fake_build(p)],
                         ids=lambda p: p.stem)
def test_notebook_validates_on_a_cuda_build(notebook, tmp_path):
    gpu = fake_gpu(notebook)
    report = tmp_path / "nbval.xml"
    done = _run_nbval(notebook, report, gpu)
    where = "CUDA 12.8 build of torch" + (" with a (fake) visible GPU" if gpu else ", no GPU")
    if done.returncode == 0:
        return
    assert report.is_file(), f"nbval did not run ({done.returncode}):\n{done.stdout[-3000:]}"
    cases = ET.parse(report).getroot().iter("testcase")
    first_failure = next(((case.get("name"), problem) for case in cases
                          for problem in case if problem.tag in ("failure", "error")), None)
    assert first_failure is not None, f"nbval failed without a failing cell:\n{done.stdout[-3000:]}"
    name, problem = first_failure
    # nbval colours its report; the XML keeps the escapes as text
    detail = re.sub(r"(\x1b|#x1B)\[[0-9;]*m", "", problem.text or problem.get("message") or "")
    if gpu and NO_REAL_GPU in detail:
        # The fake GPU cannot compute: every compared output up to this cell matched.
        print(f"{notebook.name}: validated on a {where} up to {name}, which sends work to "
              "the GPU (no CPU can follow further)")
        return
    pytest.fail(f"{notebook.name} does not validate on a {where} (stored outputs must not "
                f"depend on the torch build or the GPU); first failure, {name}:\n"
                f"{detail[-4000:]}", pytrace=False)
