"""bnkit's modules form layers, as STYLE.md asks: every rule checked on the whole package.

Every module of bnkit is read with ``ast`` by tools/import_graph.py (nothing is imported),
and every import anywhere in it counts: at the top, inside functions (a deferred import is
still a dependency), under ``if`` and ``try``, ``importlib.import_module("...")``. The
walker itself is tested on small packages in tests/test_import_graph.py.

- Imports point down only: no cycle, deferred imports included.
- No module takes a private ``_name`` from another module of bnkit: not from a sibling in
  its package, not from another subpackage, not from its package's ``__init__`` or its
  package's private helper modules (``from .. import _x`` takes the name ``_x``
  of ``bnkit``). A name that two modules need is public in a third.
- The command line ``bnkit.experiments.cli`` is the leaf on top: nothing in bnkit imports
  it except ``python -m bnkit.experiments`` (``bnkit/experiments/__main__.py``), which
  exists only to run it and which nothing imports.
- Every module declares its public names in an explicit ``__all__`` (a literal list of
  names, each bound in the module). ``__main__.py`` is a script run by ``python -m``,
  never imported, so it has no public names to declare.
- Layering facts: the timing code sits below the roofline and the benchmarks, and the
  library does not reach up into the experiments.

(``import bnkit`` and ``import bnkit.numpy`` import no torch: tests/test_numpy_batchnorm.py.)
"""

from __future__ import annotations

from pathlib import Path

import pytest
from import_graph import (cycles, declared_all, describe, import_graph, module_files,
                          private_imports, reachable, undeclared_exports)

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "bnkit"
CLI = "bnkit.experiments.cli"
ENTRY_POINT = "bnkit.experiments.__main__"


@pytest.fixture(scope="module")
def bnkit_graph() -> dict[str, set[str]]:
    return import_graph(PACKAGE)


def _importable_modules() -> dict[str, Path]:
    return {name: path for name, path in module_files(PACKAGE).items()
            if path.name != "__main__.py"}


def test_every_bnkit_module_is_walked(bnkit_graph):
    assert len(bnkit_graph) == len(list(PACKAGE.rglob("*.py"))) > 20
    assert "bnkit.torch.functional" in bnkit_graph["bnkit.torch"]  # the walk sees real edges
    # benchmarking imports bnkit.torch only inside a function: the walk sees it
    assert {"bnkit.torch", "bnkit.roofline", "bnkit.timing"} <= bnkit_graph["bnkit.benchmarking"]
    assert CLI in bnkit_graph and ENTRY_POINT in bnkit_graph


def test_bnkit_has_no_import_cycle(bnkit_graph):
    found = cycles(bnkit_graph)
    assert not found, "modules of bnkit that import each other in a circle (imports must " \
        "point down only, deferred ones included):\n" + "\n".join(
            f"  {', '.join(group)}:\n{describe(bnkit_graph, group)}" for group in found)


def test_no_module_takes_a_private_name_from_another_module():
    found = private_imports(PACKAGE)
    assert not found, "private names taken from another module of bnkit (make the name " \
        "public in a module that both can import):\n" + "\n".join(
            f"  {module} takes {name} from {holder}" for module, holder, name in found)


def test_the_command_line_is_the_leaf_that_nothing_imports(bnkit_graph):
    importers = {module for module, targets in bnkit_graph.items() if CLI in targets}
    assert importers == {ENTRY_POINT}, f"modules of bnkit importing the CLI: {sorted(importers)}"
    assert not {module for module, targets in bnkit_graph.items() if ENTRY_POINT in targets}


def test_every_module_declares_its_public_names_in_all():
    missing = sorted(name for name, path in _importable_modules().items()
                     if declared_all(path.read_text(encoding="utf8")) is None)
    assert not missing, f"modules without an explicit __all__ = [...] of names: {missing}"


def test_every_name_in_all_is_bound_in_its_module():
    unbound = {name: undeclared_exports(path.read_text(encoding="utf8"))
               for name, path in _importable_modules().items()}
    unbound = {name: names for name, names in unbound.items() if names}
    assert not unbound, f"names in __all__ that the module does not define or import: {unbound}"


def test_timing_sits_below_roofline_and_benchmarking(bnkit_graph):
    assert bnkit_graph["bnkit.timing"] == set()  # no bnkit import at all
    assert "bnkit.timing" in bnkit_graph["bnkit.roofline"]
    assert "bnkit.benchmarking" not in reachable(bnkit_graph, "bnkit.roofline")


def test_the_library_does_not_reach_up_into_the_experiments(bnkit_graph):
    upward = {module: sorted(t for t in reachable(bnkit_graph, module)
                             if t.startswith("bnkit.experiments"))
              for module in bnkit_graph if not module.startswith("bnkit.experiments")}
    assert not {m: t for m, t in upward.items() if t}, upward
