"""The book's experiments (Chapters 5 and 6): models, training, figures, command line.

* :func:`mlp` -- the paper's sigmoid MLP, BN optional per layer, a hook after BN.
* :func:`train` -- minibatch SGD returning a :class:`History` (test accuracy,
  percentiles of one sigmoid input, BN's beta/gamma), with callbacks,
  checkpoints and resume.
* :mod:`bnkit.experiments.figures` -- the plots (imported on demand).
* ``python -m bnkit.experiments figure1 ...`` -- the command line.

Needs torch (``pip install bnkit[torch]``).
"""

from .models import MLP, Block, Trace, mlp
from .training import BatchStream, History, StepContext, as_tensors, evaluate, steps_to_accuracy, train

__all__ = [
    "mlp", "MLP", "Block", "Trace",
    "train", "History", "StepContext", "BatchStream", "evaluate", "as_tensors", "steps_to_accuracy",
]
