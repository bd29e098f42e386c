"""Command line: ``python -m bnkit.experiments <command> [options]``.

The commands are the table :data:`COMMANDS`, written out here and nowhere
else: each is a help line, a function that adds its options to a parser, and
a function that runs it. Nothing registers itself by being imported, and no
default lives here: every option's default is the one of the experiment
function the command runs. Adding a command is one line in the table.

``python -m bnkit.experiments.cli`` and ``python -m bnkit.experiments`` are
the same program.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Dict, NamedTuple, Optional, Sequence

from . import figure1, santurkar

__all__ = ["Command", "COMMANDS", "build_parser", "main"]


class Command(NamedTuple):
    """One subcommand: its help line, ``configure(parser)`` for its options, ``run(args) -> exit code``."""

    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


#: Every subcommand, by name.
COMMANDS: Dict[str, Command] = {
    "figure1": Command("Ioffe & Szegedy's Figure 1: sigmoid MLP with and without BN (one run per seed)",
                       figure1.configure, figure1.run),
    "ics": Command("Santurkar et al.'s internal covariate shift (Definition 2.1) over training",
                   santurkar.configure_ics, santurkar.run_ics),
    "landscape": Command("Santurkar et al.'s loss landscape along the gradient over training",
                         santurkar.configure_landscape, santurkar.run_landscape),
}


def build_parser(commands: Optional[Dict[str, Command]] = None) -> argparse.ArgumentParser:
    """The parser of ``python -m bnkit.experiments``, one subparser per entry of ``commands`` (default :data:`COMMANDS`)."""
    parser = argparse.ArgumentParser(prog="python -m bnkit.experiments",
                                     description="The batch-norm book's experiments.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    for name, cmd in (COMMANDS if commands is None else commands).items():
        p = sub.add_parser(name, help=cmd.help, description=cmd.help)
        cmd.configure(p)
        p.set_defaults(run=cmd.run)
    return parser


def main(argv: Optional[Sequence[str]] = None, commands: Optional[Dict[str, Command]] = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``) and run the chosen command; returns its exit code."""
    args = build_parser(commands).parse_args(argv)
    return int(args.run(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
