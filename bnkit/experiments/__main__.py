"""``python -m bnkit.experiments``: see :mod:`bnkit.experiments.cli`."""

import sys

from .cli import main

sys.exit(main())
