"""The book's experiments (Chapters 1 and 5-8): models, training, measurements, figures, command line.

The package's modules, from the bottom up (each imports only modules listed
before it):

* ``models`` -- :func:`mlp`, the paper's sigmoid MLP,
  BN optional per layer, a hook after BN;
  ``training`` -- :func:`train`, minibatch SGD
  returning a :class:`History`, with callbacks, checkpoints and resume.
* :mod:`~bnkit.experiments.noise` -- noisy BN;
  :mod:`~bnkit.experiments.probes` -- losses and gradients at other weights,
  preserved model state, weight layers;
  :mod:`~bnkit.experiments.ics`, :mod:`~bnkit.experiments.landscape` and
  :mod:`~bnkit.experiments.gains` -- Santurkar et al.'s measurements.
* :mod:`~bnkit.experiments.sweeps` -- runs repeated over seeds and sweeps with per-cell
  spreads; :mod:`~bnkit.experiments.figure1_summary` -- Figure 1's metrics and the
  summary of its runs over seeds;
* :mod:`~bnkit.experiments.figures` and :mod:`~bnkit.experiments.seed_figures` -- the plots;
  :mod:`~bnkit.experiments.runs` -- saved runs;
  :mod:`~bnkit.experiments.arguments` -- shared command-line options.
* :mod:`~bnkit.experiments.saturation` -- why normalize: a deep sigmoid network at
  initialisation (Chapter 1);
  :mod:`~bnkit.experiments.data_parallel` -- batch norm on the shards of a batch, live
  over processes and simulated in one;
* :mod:`~bnkit.experiments.figure1`, :mod:`~bnkit.experiments.santurkar`,
  :mod:`~bnkit.experiments.small_batch`, :mod:`~bnkit.experiments.sync_benefit` and
  :mod:`~bnkit.experiments.sync_cost` -- the experiments of Chapters 5, 6, 7 and 8.
* :mod:`~bnkit.experiments.cli` -- ``python -m bnkit.experiments <command>``,
  the leaf on top.

Needs torch (``pip install bnkit[torch]``).
"""

from .models import MLP, Block, Trace, mlp
from .training import BatchStream, History, StepContext, as_tensors, evaluate, steps_to_accuracy, train

__all__ = [
    "mlp", "MLP", "Block", "Trace",
    "train", "History", "StepContext", "BatchStream", "evaluate", "as_tensors", "steps_to_accuracy",
]
