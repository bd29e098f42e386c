"""The experiments package is layered: imports point one way, no cycles, no private names across modules.

The imports are read from the source with ``ast`` -- every ``import`` and
``from ... import`` statement, at module level or deferred inside a function --
so a cycle hidden in a function body is found as well. The checker itself is
tested on small packages written to a temporary directory, so it can fail.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import bnkit.experiments

PACKAGE = "bnkit.experiments"
PACKAGE_DIR = Path(bnkit.experiments.__file__).parent


def sibling_imports(package_dir: Path, package: str):
    """``{module: [(imported sibling module, [names taken from it])]}`` for every ``.py`` in ``package_dir``.

    ``__init__`` stands for the package itself. ``from . import x`` is an
    import of the sibling ``x`` when ``x.py`` exists, else a name taken from
    ``__init__``; imports from outside the package are ignored.
    """
    modules = {p.stem for p in package_dir.glob("*.py")}
    graph = {}
    for path in sorted(package_dir.glob("*.py")):
        me = path.stem
        edges = []
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name == package:
                        edges.append(("__init__", []))
                    elif alias.name.startswith(package + "."):
                        edges.append((alias.name[len(package) + 1:].split(".")[0], []))
            elif isinstance(node, ast.ImportFrom):
                if node.level == 1:
                    target = node.module
                elif node.level == 0 and node.module and (node.module == package
                                                          or node.module.startswith(package + ".")):
                    target = node.module[len(package) + 1:] or None
                else:
                    continue  # outside the package (from .. import x, import numpy, ...)
                names = [a.name for a in node.names]
                if target is None:  # from . import a, b
                    for name in names:
                        edges.append((name, []) if name in modules else ("__init__", [name]))
                else:
                    edges.append((target.split(".")[0], names))
        graph[me] = [(t, n) for t, n in edges if t != me]
    return graph


def find_cycle(graph):
    """One import cycle as a list of modules (first == last), or None."""
    adjacency = {m: sorted({t for t, _ in edges}) for m, edges in graph.items()}
    state = {}  # 1: on the current path, 2: done

    def visit(m, path):
        state[m] = 1
        for t in adjacency.get(m, []):
            if state.get(t) == 1:
                return path[path.index(t):] + [t]
            if t not in state:
                found = visit(t, path + [t])
                if found:
                    return found
        state[m] = 2
        return None

    for m in sorted(adjacency):
        if m not in state:
            found = visit(m, [m])
            if found:
                return found
    return None


def private_imports(graph):
    """``(module, sibling, name)`` for every ``_name`` a module takes from a sibling."""
    return [(m, t, n) for m, edges in graph.items() for t, names in edges for n in names
            if n.startswith("_") and not n.startswith("__")]


# --------------------------------------------------------------------------- #
# the checker, on packages written for the purpose
# --------------------------------------------------------------------------- #
def write_package(root: Path, files):
    pkg = root / "bnkit" / "fake"
    pkg.mkdir(parents=True)
    for name, text in files.items():
        (pkg / f"{name}.py").write_text(text)
    return pkg


def test_checker_finds_a_cycle_hidden_in_a_function(tmp_path):
    pkg = write_package(tmp_path, {
        "__init__": "",
        "a": "from .b import thing\n",
        "b": "def thing():\n    from . import c\n    return c\n",
        "c": "def f():\n    from bnkit.fake.a import thing\n",
    })
    graph = sibling_imports(pkg, "bnkit.fake")
    cycle = find_cycle(graph)
    assert cycle is not None and cycle[0] == cycle[-1] and set(cycle) == {"a", "b", "c"}


def test_checker_accepts_layers_and_finds_private_names(tmp_path):
    pkg = write_package(tmp_path, {
        "__init__": "from .low import api\n",
        "low": "import numpy\n\ndef api():\n    pass\n\ndef _helper():\n    pass\n",
        "mid": "from .low import api, _helper\nfrom .. import something_outside\n",
        "top": "from . import mid, low\nimport bnkit.fake.mid\n",
    })
    graph = sibling_imports(pkg, "bnkit.fake")
    assert find_cycle(graph) is None
    assert sorted({t for t, _ in graph["top"]}) == ["low", "mid"]
    assert private_imports(graph) == [("mid", "low", "_helper")]


def test_checker_sees_an_import_of_the_package_itself(tmp_path):
    pkg = write_package(tmp_path, {"__init__": "from .models import f\n", "models": "from . import g\n"})
    assert find_cycle(sibling_imports(pkg, "bnkit.fake")) is not None  # models -> __init__ -> models


# --------------------------------------------------------------------------- #
# the real package
# --------------------------------------------------------------------------- #
def test_no_import_cycles_in_the_experiments_package():
    graph = sibling_imports(PACKAGE_DIR, PACKAGE)
    assert len(graph) >= 10 and "cli" in graph
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"


def test_no_module_takes_a_private_name_from_a_sibling():
    assert private_imports(sibling_imports(PACKAGE_DIR, PACKAGE)) == []


def test_the_command_line_is_the_leaf():
    graph = sibling_imports(PACKAGE_DIR, PACKAGE)
    importers = {m for m, edges in graph.items() for t, _ in edges if t in ("cli", "__main__")}
    assert importers <= {"__main__"}, f"modules importing the CLI: {sorted(importers)}"


def test_every_module_declares_its_public_names():
    for path in sorted(PACKAGE_DIR.glob("*.py")):
        if path.stem == "__main__":
            continue
        tree = ast.parse(path.read_text())
        names = [t.id for node in tree.body if isinstance(node, (ast.Assign, ast.AnnAssign))
                 for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
                 if isinstance(t, ast.Name)]
        assert "__all__" in names, f"{path.name} has no __all__"


@pytest.mark.parametrize("module", ["bnkit.experiments", "bnkit.experiments.cli"])
def test_help_lists_every_command(module):
    from bnkit.experiments.cli import COMMANDS

    r = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    listed = r.stdout.split("positional arguments:")[1]
    for name in COMMANDS:
        assert name in listed, f"{module} --help does not list {name!r}:\n{r.stdout}"
    assert set(COMMANDS) == {"figure1", "ics", "landscape"}
