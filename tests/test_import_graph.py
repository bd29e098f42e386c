"""tools/import_graph.py reads imports the way Python runs them: checked on small packages."""

from __future__ import annotations

from pathlib import Path

from import_graph import (cycles, declared_all, describe, import_graph, module_files, package_exports,
                          private_imports, reachable, undeclared_exports, used_modules)


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


def test_walker_finds_a_cycle_hidden_in_a_function_and_ignores_imports_from_outside(tmp_path):
    package = _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "from .b import thing\nfrom .. import something_outside\n",
        "pkg/b.py": "def thing():\n    from . import c\n    return c\n",
        "pkg/c.py": "def f():\n    from pkg.a import thing\n",
    })
    graph = import_graph(package)
    assert graph["pkg.a"] == {"pkg.b"} and graph["pkg.b"] == {"pkg.c"}
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.c"]]


def test_reachable_follows_imports_through_other_modules(tmp_path):
    graph = {"top": {"mid"}, "mid": {"low", "side"}, "low": set(), "side": set(), "loop": {"loop2"},
             "loop2": {"loop"}}
    assert reachable(graph, "top") == {"mid", "low", "side"}
    assert reachable(graph, "low") == set()
    assert reachable(graph, "loop") == {"loop", "loop2"}  # a module in a cycle reaches itself


def test_private_names_taken_from_another_module_are_found_however_they_are_taken(tmp_path):
    package = _write(tmp_path, {
        "pkg/__init__.py": "__version__ = '1'\n",
        "pkg/_util.py": "def check():\n    pass\n",
        "pkg/low.py": "def api():\n    pass\n\ndef _helper():\n    return _helper\n",
        # a private function from a sibling; a private module of the package, four ways
        "pkg/mid.py": "from .low import api, _helper\nfrom . import _util\n",
        "pkg/top.py": "import pkg._util\nfrom pkg._util import check\n"
                      "def f():\n    import importlib\n    return importlib.import_module('pkg._util')\n",
        # an attribute read on a module bound by an import, with or without an alias
        "pkg/sub/__init__.py": "from ..low import api as _api\nfrom pkg import __version__\n",
        "pkg/sub/user.py": "from .. import low as L\nimport pkg.low\nx = L._helper\ny = pkg.low._helper\n"
                           "z = L.api\n",
    })
    assert private_imports(package) == [
        ("pkg.mid", "pkg", "_util"),
        ("pkg.mid", "pkg.low", "_helper"),
        ("pkg.sub.user", "pkg.low", "_helper"),
        ("pkg.top", "pkg", "_util"),
    ]
    # not listed: a public name bound to a private alias (`api as _api`), a dunder
    # (`__version__`), and low using its own `_helper`


def test_a_private_name_belongs_to_the_module_that_holds_it(tmp_path):
    package = _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/_impl/__init__.py": "from ._core import run\n",
        "pkg/_impl/_core.py": "def run():\n    pass\n",
        "pkg/_impl/extra.py": "from pkg._impl._core import run\nfrom . import _core\n",
        "pkg/api.py": "from ._impl import run\n",
    })
    # `_impl` belongs to pkg: the modules inside pkg._impl may name it, pkg.api may not (even
    # for a public name behind it). `_core` belongs to pkg._impl (its __init__): a module of
    # the same package importing its package's private helper takes it too.
    assert private_imports(package) == [("pkg._impl.extra", "pkg._impl", "_core"),
                                        ("pkg.api", "pkg", "_impl")]


def test_declared_all_reads_only_an_explicit_list_of_names():
    assert declared_all("__all__ = ['f', 'G']\ndef f(): pass\nclass G: pass\n") == ["f", "G"]
    assert declared_all("__all__ = ('f',)\n") == ["f"]
    assert declared_all("def f(): pass\n") is None
    assert declared_all("__all__ = [name for name in dir()]\n") is None
    assert declared_all("__all__ = ['f']\n__all__ += ['g']\n") is None
    assert declared_all("def f():\n    __all__ = ['f']\n") is None  # not at module level


def test_undeclared_exports_are_names_the_module_never_binds():
    source = ("import numpy as np\nfrom .x import y as z\ntry:\n    import a.b\nexcept ImportError:\n"
              "    C = None\nK: int = 1\nP, (Q, R) = 1, (2, 3)\ndef f():\n    hidden = 1\n"
              "__all__ = ['np', 'z', 'a', 'C', 'K', 'P', 'R', 'f', 'hidden', 'y', 'missing']\n")
    assert undeclared_exports(source) == ["hidden", "y", "missing"]


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


def test_readme_map_is_what_the_sources_say():
    """README.md's chapter -> modules -> tests map is regenerated, not edited by hand:
    after a change of imports, run `python tools/module_map.py --write`."""
    import subprocess
    import sys
    from pathlib import Path

    tool = Path(__file__).resolve().parents[1] / "tools" / "module_map.py"
    r = subprocess.run([sys.executable, str(tool), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
