"""The stored outputs do not depend on the machine that wrote them: its torch build, its GPU, its CPU.

nbval compares every stored output, so an output that shows ``torch 2.13.0+cpu`` or "No
CUDA GPU visible" fails on a CUDA build of the same torch (a GPU workstation, Colab, a
CI runner with a GPU); one that shows the core count fails on a machine with more cores.
The book may *show* such facts, but only in cells that nbval does not compare (tag
``nbval-ignore-output``), and such a cell says why. Every notebook in ``notebooks/`` is
held to that line twice:

- **statically** (cheap, run by ``make unit``), on the committed file, reading each cell
  as nbval reads it (its tags and comment markers, ``tests/sanitize.cfg``): no compared
  cell *calls* anything machine-dependent (``torch.__version__``, ``torch.cuda.``,
  ``os.cpu_count()``, ...); no compared output *shows* anything that looks like it (a
  build string ``+cpu``/``+cu128``/``+rocm6.2``, "CUDA", "GPU", "cuDNN", "logical cores");
  every cell whose output is not compared starts with ``# nbval-ignore-output: <why>``
  (after a cell magic, if it has one).
- **under another build** (marked ``notebooks``, run by ``make nbval``), the notebooks
  whose code reads the build or asks about CUDA (``torch.__version__``,
  ``torch.version``, ``cuda``): strict nbval in an interpreter whose torch reports
  ``2.13.0+cu128`` with CUDA 12.8 (``tests/fake_cuda/sitecustomize.py``). A notebook
  whose code mentions ``cuda`` runs as if one GPU were visible, as far as a CPU can
  follow: up to the first cell that sends work to the fake GPU (torch's "Torch not
  compiled with CUDA enabled"), which stops the run; every compared output before it must
  still match. The others run whole, as on a CUDA build with no GPU.

What no CPU can show: the outputs of cells after that stop, on a real GPU. Those cells'
outputs must not be compared either; the static checks and review keep them so.
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

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
SANITIZE = ROOT / "tests" / "sanitize.cfg"
FAKE_CUDA = ROOT / "tests" / "fake_cuda"  # its sitecustomize.py patches torch on import

#: Calls whose result differs between machines, by the source text that makes them (a name in
#: an import or a string, like the label "torch.cuda", is no call).
MACHINE_DEPENDENT_CALLS = re.compile(
    r"torch\.__version__|torch\.version\.|torch\.cuda\.|torch\.backends\.cudnn\."
    r"|available_implementations\(|os\.cpu_count\(|get_num_threads\(|platform\.\w+\("
    r"|get_device_name\(|/proc/cpuinfo|/sys/devices")
#: What such a result looks like in an output: a torch build's local version, a GPU or cuDNN
#: report, a core count.
MACHINE_DEPENDENT_TEXT = re.compile(r"\+cpu|\+cu\d|\+rocm|\bCUDA\b|\bGPU|cuDNN|logical cores",
                                    re.IGNORECASE)
#: How a cell whose output nbval does not compare says why (its first line, after a cell magic).
SAYS_WHY = re.compile(r"# nbval-ignore-output:\s*\S")
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
    """nbval's own reading of a cell's tags and comment markers (check, skip, ...).

    As in nbval, a comment marker wins over a tag that sets the same option.
    """
    options = dict(find_metadata_tags(cell.get("metadata", {})))
    options.update(find_comment_markers(_text(cell["source"])))
    return options


def is_compared(cell: dict) -> bool:
    """nbval runs the cell and compares its outputs (no skip, no ignore-output)."""
    options = _nbval_options(cell)
    return not options.get("skip") and options.get("check", True) is not False


def is_ignored(cell: dict) -> bool:
    """nbval runs the cell but does not compare its outputs (tag or comment marker)."""
    options = _nbval_options(cell)
    return not options.get("skip") and options.get("check", True) is False


def compared_texts(cell: dict):
    """The text of each output of ``cell`` that nbval compares, as nbval sanitizes it."""
    if not is_compared(cell):
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


# --------------------------------------------------------------------------- static, every notebook


def machine_dependent_calls(cells: list[dict]) -> list[str]:
    """``Cell n: 'call' in 'line'`` for each machine-dependent call in a compared cell."""
    return [f"Cell {number}: {match.group(0)!r} in {line.strip()[:100]!r}"
            for number, cell in enumerate(cells) if is_compared(cell)
            for line in _text(cell["source"]).splitlines()
            for match in MACHINE_DEPENDENT_CALLS.finditer(line)]


def machine_dependent_texts(cells: list[dict]) -> list[str]:
    """``Cell n: 'text' in 'line'`` for each machine-dependent text in a compared output."""
    return [f"Cell {number}: {match.group(0)!r} in {line.strip()[:120]!r}"
            for number, cell in enumerate(cells) for text in compared_texts(cell)
            for line in text.splitlines() for match in MACHINE_DEPENDENT_TEXT.finditer(line)]


def says_why(cell: dict) -> bool:
    """The cell's first line (after a cell magic) is ``# nbval-ignore-output: <why>``."""
    lines = _text(cell["source"]).lstrip().splitlines() or [""]
    if lines[0].startswith("%%") and len(lines) > 1:
        lines = lines[1:]
    return bool(SAYS_WHY.match(lines[0].strip()))


WHERE = "(code cells numbered from 0, as nbval numbers them)"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_compared_cells_call_nothing_machine_dependent(notebook):
    found = machine_dependent_calls(_code_cells(notebook))
    assert not found, (
        f"{notebook.name}: cells whose outputs nbval compares call something whose result "
        f"depends on the machine {WHERE}; make the call in a cell tagged nbval-ignore-output "
        "(with a comment saying why):\n  " + "\n  ".join(found))


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_compared_outputs_show_nothing_machine_dependent(notebook):
    found = machine_dependent_texts(_code_cells(notebook))
    assert not found, (
        f"{notebook.name} stores machine-specific text in outputs that nbval compares {WHERE}; "
        "show it only in a cell tagged nbval-ignore-output (with a comment saying why):\n  "
        + "\n  ".join(found))


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_ignored_cell_says_why(notebook):
    silent = [f"Cell {number}: {(_text(cell['source']).lstrip().splitlines() or [''])[0][:100]!r}"
              for number, cell in enumerate(_code_cells(notebook))
              if is_ignored(cell) and not says_why(cell)]
    assert not silent, (
        f"{notebook.name}: cells whose outputs nbval does not compare must start with "
        f"'# nbval-ignore-output: <why>' {WHERE}; these start otherwise:\n  "
        + "\n  ".join(silent))


def _cell(text="", tags=(), source="print(x)"):
    return {"cell_type": "code", "source": source, "metadata": {"tags": list(tags)},
            "outputs": [{"output_type": "stream", "name": "stdout", "text": text}]}


def test_static_checks_see_what_nbval_compares():
    line = "numpy 2.4.6 | torch 2.13.0+cpu\n"
    assert list(compared_texts(_cell(line))) == [line]
    assert list(compared_texts(_cell(line, tags=["nbval-ignore-output"]))) == []
    assert list(compared_texts(_cell(line, source="# NBVAL_IGNORE_OUTPUT\nprint(x)"))) == []
    assert list(compared_texts(_cell(line, tags=["nbval-skip"]))) == []
    image = {"output_type": "display_data", "metadata": {},
             "data": {"image/png": "iVBOR+cu68887", "text/plain": "<Figure size 640x480>"}}
    assert list(compared_texts({"source": "", "metadata": {}, "outputs": [image]})) \
        == ["<Figure size 640x480>"]
    error = {"output_type": "error", "ename": "RuntimeError", "evalue": "No CUDA GPUs are available",
             "traceback": ["+cpu"]}
    assert list(compared_texts({"source": "", "metadata": {}, "outputs": [error]})) \
        == ["RuntimeError", "No CUDA GPUs are available"]
    # a skipped cell is not run at all: neither compared nor ignored
    assert (is_compared(_cell(tags=["nbval-skip"])), is_ignored(_cell(tags=["nbval-skip"]))) \
        == (False, False)
    assert is_ignored(_cell(source="# NBVAL_IGNORE_OUTPUT\nprint(x)"))
    # nbval lets a comment marker override a tag
    assert is_compared(_cell(tags=["nbval-ignore-output"], source="# NBVAL_CHECK_OUTPUT\nprint(x)"))


def test_machine_dependent_text_is_recognised():
    for text, specific in (("torch 2.13.0+cpu", True), ("2.13.0+cu128", True),
                           ("No CUDA GPU visible", True), ("CUDA GPU: A100", True),
                           ("+rocm6.2", True), ("cuDNN 91000", True), ("8 logical cores", True),
                           ("torch 2.13.0", False), ("cpu time", False), ("accuracy", False)):
        assert bool(MACHINE_DEPENDENT_TEXT.search(text)) is specific, text
    # the chapter-9 cell before this rule: the build string in a compared output
    cell = _cell("numpy 2.4.6 | torch 2.13.0+cpu\n",
                 source='print("numpy", np.__version__, "| torch", torch.__version__)')
    assert machine_dependent_texts([cell]) == ["Cell 0: '+cpu' in 'numpy 2.4.6 | torch 2.13.0+cpu'"]
    assert machine_dependent_texts([_cell("numpy 2.4.6 | torch 2.13.0+cpu\n",
                                          tags=["nbval-ignore-output"])]) == []


def test_machine_dependent_calls_are_recognised():
    cell = _cell(source='print("numpy", np.__version__, "| torch", torch.__version__)')
    assert machine_dependent_calls([_cell(), cell]) == [
        "Cell 1: 'torch.__version__' in 'print(\"numpy\", np.__version__, \"| torch\", torch.__version__)'"]
    for source in ("if torch.cuda.is_available():", "n = os.cpu_count()", "torch.get_num_threads()",
                   "platform.processor()", "open('/proc/cpuinfo')", "torch.backends.cudnn.version()"):
        assert MACHINE_DEPENDENT_CALLS.search(source), source
    assert not MACHINE_DEPENDENT_CALLS.search('LABELS = {"torch.cuda": "torch on CUDA"}')
    # a call in a cell whose output is not compared is allowed
    assert machine_dependent_calls([_cell(source="# nbval-ignore-output: why\ntorch.cuda.is_available()",
                                          tags=["nbval-ignore-output"])]) == []


def test_an_ignored_cell_says_why_on_its_first_line():
    assert says_why(_cell(source="# nbval-ignore-output: timings differ between machines\nt()"))
    assert says_why(_cell(source="%%time\n# nbval-ignore-output: a timing\nt()"))
    assert not says_why(_cell(source="# nbval-ignore-output:\nt()"))  # no reason given
    assert not says_why(_cell(source="t()\n# nbval-ignore-output: too late"))
    assert not says_why(_cell(source="# Timings differ (not compared: nbval-ignore-output)\nt()"))


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


@pytest.mark.notebooks  # strict nbval: run by `make nbval`, next to the notebooks themselves
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
