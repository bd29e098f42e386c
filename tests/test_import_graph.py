"""tools/import_graph.py reads imports the way Python runs them: checked on small packages."""

from __future__ import annotations

from pathlib import Path

from import_graph import cycles, describe, import_graph, module_files, package_exports, used_modules


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf8")
    return root / "pkg"


def test_walker_sees_deferred_relative_and_dynamic_imports(tmp_path):
    package = _write(tmp_path, {
        "pkg/__init__.py": "from .a import f\n",
        "pkg/a.py": "def f():\n    from pkg.sub import b\n    return b\n",
        "pkg/sub/__init__.py": "",
        "pkg/sub/b.py": "from .. import c\nfrom ..c import g\n",
        "pkg/c.py": "import importlib\ndef g():\n    return importlib.import_module('pkg.d')\n",
        "pkg/d.py": "import numpy\nimport pkg.sub.b as b\nfrom pkg import a as _a\n",
    })
    graph = import_graph(package)
    assert graph == {
        "pkg": {"pkg.a"},
        "pkg.a": {"pkg.sub.b"},
        "pkg.sub": set(),
        "pkg.sub.b": {"pkg.c"},
        "pkg.c": {"pkg.d"},
        "pkg.d": {"pkg.sub.b", "pkg.a"},
    }
    # a -> b -> c -> d -> a, and d -> b -> c -> d: one group, reported once
    assert cycles(graph) == [["pkg.a", "pkg.c", "pkg.d", "pkg.sub.b"]]
    assert "    pkg.d imports pkg.a, pkg.sub.b" in describe(graph, cycles(graph)[0])


def test_walker_finds_a_cycle_through_a_package_init(tmp_path):
    package = _write(tmp_path, {
        "pkg/__init__.py": "from .x import X\n",
        "pkg/x.py": "def make():\n    from pkg import helper\n    return helper\nX = 1\n",
    })
    # `from pkg import helper`: helper is not a module, so x depends on the package itself
    assert cycles(import_graph(package)) == [["pkg", "pkg.x"]]


def test_walker_accepts_imports_that_point_one_way(tmp_path):
    package = _write(tmp_path, {
        "pkg/__init__.py": "from . import top\n",
        "pkg/top.py": "from pkg import low\ndef f():\n    from pkg.low import g\n",
        "pkg/low.py": "import math\n",
    })
    graph = import_graph(package)
    assert graph["pkg.top"] == {"pkg.low"} and cycles(graph) == []


def test_used_modules_follow_names_through_the_package_init(tmp_path):
    package = _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/nn/__init__.py": "from .layers import Dense\nfrom .ops import relu\n",
        "pkg/nn/layers.py": "",
        "pkg/nn/ops.py": "",
        "pkg/plot.py": "",
    })
    known, exports = set(module_files(package)), package_exports(package)
    assert exports["pkg.nn"] == {"Dense": "pkg.nn.layers", "relu": "pkg.nn.ops"}
    source = "import pkg.nn as nn\nfrom pkg import plot\nlayer = nn.Dense()\n"
    assert used_modules(source, known, exports) == {"pkg.nn.layers", "pkg.plot"}
    assert used_modules("from pkg.nn import relu\n", known, exports) == {"pkg.nn.ops"}
    # a package used as a whole, with no name to trace, stays the package
    assert used_modules("import pkg.nn as nn\nprint(nn)\n", known, exports) == {"pkg.nn"}
