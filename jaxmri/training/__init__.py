"""Training: the optimizer, the losses, the jitted steps, and one epoch loop per task.

==================  ==========================================================================
``optim``           Adam with PyTorch-style weight decay (Table 3); freezing via ``wrt``
``losses``          cross-entropy (classification), BCE / Dice (segmentation)
``classify_steps``  the classifiers' ``train_step`` / ``eval_step`` (one ``nnx.jit`` each)
``segment_steps``   the U-Net's ``train_step`` / ``predict_step``
``compiled``        a step compiled with CPU-only XLA options (both train steps)
``compile_clock``   seconds spent compiling, from JAX's compile events (printed after epoch 1)
``classify``        classification: ``train_epoch``, ``evaluate``, ``fit``, ``train_on_split``, ``run``
``segment``         segmentation: ``train_epoch``, ``evaluate``, ``fit``, ``train_on_split``, ``run``
``rundir``          run directories, ``split.json``, orbax checkpoints
==================  ==========================================================================

``python -m jaxmri.train`` calls ``classify.run`` / ``segment.run``; the lessons call ``train_epoch``
and ``evaluate`` (or ``fit``) themselves, so every loop in the project is one of these two.
"""

from jaxmri.training.losses import cross_entropy, segmentation_loss
from jaxmri.training.optim import make_optimizer, make_tx

__all__ = ["cross_entropy", "make_optimizer", "make_tx", "segmentation_loss"]
