"""The command line of the experiments: one explicit table of commands, all listed by ``--help``.

How the package's modules import each other (the CLI a leaf that nothing imports, no
cycles, no private names across modules, ``__all__`` everywhere) is checked for the whole
of bnkit in tests/test_imports.py.
"""

import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["bnkit.experiments", "bnkit.experiments.cli"])
def test_help_lists_every_command(module):
    from bnkit.experiments.cli import COMMANDS

    r = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    listed = r.stdout.split("positional arguments:")[1]
    for name in COMMANDS:
        assert name in listed, f"{module} --help does not list {name!r}:\n{r.stdout}"
    assert set(COMMANDS) == {"figure1", "ics", "landscape", "santurkar", "small-batch", "sync-cost", "sync-benefit"}
