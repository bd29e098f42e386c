"""Everything the project imports directly is declared, not merely present as someone's dependency.

``requirements.txt`` (what ``make venv`` installs, pinned) must name the distribution of
every third-party module imported anywhere: bnkit, the tests, the tools, the benchmarks
and the notebooks' code cells. ``pyproject.toml`` must declare what bnkit itself imports
(``dependencies``, or an extra such as ``torch``). Imports are read with ``ast``, deferred
ones inside functions included; modules are mapped to their distributions by the
installed metadata (``yaml`` -> PyYAML, ``PIL`` -> pillow).
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Local modules: the package, and the helpers that tests/ and tools/ import from themselves.
LOCAL = {"bnkit"} | {p.stem for d in ("tests", "tools") for p in (ROOT / d).rglob("*.py")}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def top_level_imports(source: str) -> set[str]:
    """The top-level names of every absolute import in ``source``, anywhere in it."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def notebook_sources(path: Path) -> str:
    """The code cells of a notebook as Python: IPython magics and shell lines left out."""
    cells = json.loads(path.read_text(encoding="utf8"))["cells"]
    lines = []
    for cell in cells:
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        if source.lstrip().startswith("%%"):
            continue  # a cell magic (%%writefile: a script for another process, read below)
        lines += [line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))]
        lines.append("")
    return "\n".join(lines)


def cell_magic_scripts(path: Path) -> str:
    """The Python scripts that ``%%writefile x.py`` cells write (and the notebook runs)."""
    cells = json.loads(path.read_text(encoding="utf8"))["cells"]
    scripts = []
    for cell in cells:
        source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        first, _, body = source.lstrip().partition("\n")
        if cell["cell_type"] == "code" and re.match(r"%%writefile\s+\S+\.py\b", first):
            scripts.append(body)
    return "\n".join(scripts)


def third_party(names: set[str]) -> set[str]:
    return {n for n in names if n not in sys.stdlib_module_names and n not in LOCAL}


def distributions(modules: set[str]) -> dict[str, set[str]]:
    """Module -> the canonical names of the installed distributions that provide it."""
    provided = importlib.metadata.packages_distributions()
    return {m: {_canonical(d) for d in provided.get(m, [])} for m in modules}


def requirements() -> set[str]:
    names = set()
    for line in (ROOT / "requirements.txt").read_text(encoding="utf8").splitlines():
        line = line.split("#")[0].strip()
        if line:
            names.add(_canonical(re.split(r"[=<>!~\[; ]", line)[0]))
    return names


def imports_of(area: str) -> set[str]:
    if area == "notebooks":
        sources = [notebook_sources(p) + "\n" + cell_magic_scripts(p)
                   for p in sorted((ROOT / "notebooks").glob("*.ipynb"))]
    else:
        sources = [p.read_text(encoding="utf8") for p in sorted((ROOT / area).rglob("*.py"))]
    return third_party(set().union(*(top_level_imports(s) for s in sources)))


@pytest.mark.parametrize("area", ["bnkit", "tests", "tools", "benchmarks", "notebooks"])
def test_requirements_declare_every_direct_import(area):
    modules = imports_of(area)
    assert modules, f"no third-party import found in {area}/: the scan is broken"
    declared = requirements()
    missing = {m: sorted(d) or ["<not installed>"] for m, d in distributions(modules).items()
               if not d & declared}
    assert not missing, (f"{area}/ imports modules that requirements.txt does not declare "
                         f"(module: distribution): {missing}")


def test_pyproject_declares_what_bnkit_imports():
    tomllib = pytest.importorskip("tomllib", reason="tomllib: Python 3.11+")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf8"))["project"]
    specs = project["dependencies"] + [s for extra in project.get("optional-dependencies", {})
                                       .values() for s in extra]
    declared = {_canonical(re.split(r"[=<>!~\[; ]", s)[0]) for s in specs}
    modules = imports_of("bnkit")
    assert {"numpy", "torch"} <= modules
    missing = {m: sorted(d) for m, d in distributions(modules).items() if not d & declared}
    assert not missing, f"bnkit imports modules that pyproject.toml does not declare: {missing}"


def test_scan_reads_deferred_imports_and_skips_magics():
    source = "import os\ndef f():\n    from yaml import safe_load\n    import PIL.Image\n"
    assert top_level_imports(source) == {"os", "yaml", "PIL"}
    assert third_party({"os", "yaml", "bnkit", "book_testing"}) == {"yaml"}
    assert distributions({"yaml"})["yaml"] == {"pyyaml"}
