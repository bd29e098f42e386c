"""bnkit's imports point one way: no module imports itself in a circle, not even at call time.

Every module of the package is read with ``ast`` by tools/import_graph.py (nothing is
imported), and every import anywhere in it counts: at the top, inside functions (a deferred
import is still a dependency), under ``if`` and ``try``, ``importlib.import_module("...")``.
The walker itself is tested on small packages in tests/test_import_graph.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from import_graph import cycles, describe, import_graph

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bnkit_graph() -> dict[str, set[str]]:
    return import_graph(ROOT / "bnkit")


def test_every_bnkit_module_is_walked(bnkit_graph):
    assert len(bnkit_graph) == len(list((ROOT / "bnkit").rglob("*.py"))) > 20
    assert "bnkit.torch.functional" in bnkit_graph["bnkit.torch"]  # the walk sees real edges


def test_bnkit_has_no_import_cycle(bnkit_graph):
    found = cycles(bnkit_graph)
    assert not found, "modules of bnkit that import each other in a circle (imports must " \
        "point down only, deferred ones included):\n" + "\n".join(
            f"  {', '.join(group)}:\n{describe(bnkit_graph, group)}" for group in found)
