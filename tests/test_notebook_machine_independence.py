"""Stored outputs that nbval compares must not depend on the machine (issue 12, section 1).

The torch build string (``+cpu``, ``+cu128``), whether a GPU is visible, the CPU model and the
core or thread count may be shown, in cells tagged ``nbval-ignore-output``, but never in a cell
whose output nbval compares: on a CUDA build, a GPU workstation or a CI runner with more cores
the comparison would fail. Two checks per notebook, both on the committed file (nothing is
executed): no compared cell *calls* anything machine-dependent, and no compared output *shows*
anything that looks like it. Notebooks join the list once they follow the rule."""

import re
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
CHECKED = ["09_speed.ipynb"]

#: Calls whose result differs between machines, by the source text that makes them (a name in
#: an import or a string, like the label "torch.cuda", is no call).
MACHINE_DEPENDENT_CALLS = re.compile(
    r"torch\.__version__|torch\.version\.|torch\.cuda\.|torch\.backends\.cudnn\."
    r"|available_implementations\(|os\.cpu_count\(|get_num_threads\(|platform\.\w+\("
    r"|get_device_name\(|/proc/cpuinfo|/sys/devices")
#: What such a result looks like in an output.
MACHINE_DEPENDENT_TEXT = re.compile(r"\+cpu|\+cu\d|\+rocm|\bCUDA\b|\bGPU|cuDNN|logical cores",
                                    re.IGNORECASE)


def _compared_code_cells(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    return [(i, c) for i, c in enumerate(nb.cells) if c.cell_type == "code"
            and "nbval-ignore-output" not in c.metadata.get("tags", [])]


def _output_text(cell):
    parts = []
    for out in cell.get("outputs", []):
        parts.append(out.get("text", ""))
        parts.append(out.get("data", {}).get("text/plain", ""))
        parts.append(out.get("evalue", ""))
    return "".join(p if isinstance(p, str) else "".join(p) for p in parts)


@pytest.mark.parametrize("name", CHECKED)
def test_compared_cells_call_nothing_machine_dependent(name):
    offenders = [(i, m.group(0)) for i, c in _compared_code_cells(name)
                 for m in MACHINE_DEPENDENT_CALLS.finditer(c.source)]
    assert offenders == [], f"{name}: compared cells (index, call) {offenders}"


@pytest.mark.parametrize("name", CHECKED)
def test_compared_outputs_show_nothing_machine_dependent(name):
    offenders = [(i, m.group(0)) for i, c in _compared_code_cells(name)
                 for m in MACHINE_DEPENDENT_TEXT.finditer(_output_text(c))]
    assert offenders == [], f"{name}: compared outputs (index, text) {offenders}"


@pytest.mark.parametrize("name", CHECKED)
def test_every_ignored_cell_says_why(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    silent = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"
              and "nbval-ignore-output" in c.metadata.get("tags", [])
              and not c.source.lstrip().startswith("# nbval-ignore-output:")]
    assert silent == [], f"{name}: ignored cells without a comment saying why: {silent}"


def test_the_checks_catch_what_the_old_chapter_9_did():
    # the chapter's cell before this rule: the build string in a compared output
    cell = nbformat.v4.new_code_cell('print("numpy", np.__version__, "| torch", torch.__version__)')
    cell.outputs = [nbformat.v4.new_output("stream", text="numpy 2.4.6 | torch 2.13.0+cpu\n")]
    assert MACHINE_DEPENDENT_CALLS.search(cell.source).group(0) == "torch.__version__"
    assert MACHINE_DEPENDENT_CALLS.search("if torch.cuda.is_available():")
    assert not MACHINE_DEPENDENT_CALLS.search('LABELS = {"torch.cuda": "torch on CUDA"}')
    assert MACHINE_DEPENDENT_TEXT.search(_output_text(cell)).group(0) == "+cpu"
    assert MACHINE_DEPENDENT_TEXT.search("No CUDA GPU visible to torch")
