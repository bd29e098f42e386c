"""The book's experiments (Chapters 5-7): models, training, measurements, figures, command line.

The package's modules, from the bottom up (each imports only modules listed
before it):

* ``models`` -- :func:`mlp`, the paper's sigmoid MLP,
  BN optional per layer, a hook after BN;
  ``training`` -- :func:`train`, minibatch SGD
  returning a :class:`History`, with callbacks, checkpoints and resume.
* :mod:`~bnkit.experiments.noise` -- noisy BN;
  :mod:`~bnkit.experiments.probes` -- losses and gradients at other weights,
  preserved model state, weight layers;
  :mod:`~bnkit.experiments.ics` and :mod:`~bnkit.experiments.landscape` --
  Santurkar et al.'s measurements.
* :mod:`~bnkit.experiments.figures` -- the plots;
  :mod:`~bnkit.experiments.runs` -- saved runs;
  :mod:`~bnkit.experiments.arguments` -- shared command-line options.
* :mod:`~bnkit.experiments.figure1`, :mod:`~bnkit.experiments.santurkar`,
  :mod:`~bnkit.experiments.small_batch` -- the experiments of Chapters 5, 6, 7.
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
