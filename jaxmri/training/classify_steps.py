"""Train and eval steps for the classifiers (SmallCNN, VGG19Classifier): one ``nnx.jit`` boundary each.

A batch is a dict of device arrays with a fixed batch size (the last batch is padded, so every epoch
reuses one compiled step):
  ``batch["image"]``  uint8 (B, H, W, 3), the cached, cropped, resized images in [0, 255]
  ``batch["label"]``  int32 (B,)
  ``batch["weight"]`` float32 (B,), 1 for real examples and 0 for padding

Both steps use ``nnx.jit(graph_updates=False)`` (``train_step`` is ``plain_train_step`` compiled with
one CPU option through ``jaxmri.training.compiled.CompiledStep``, like the U-Net's): the compiled
function then returns only the Variables it changed (the trainable parameters, optimizer state and RNG counters), and NNX writes those back into
the model and optimizer. With the default graph updates every Variable comes back out, so XLA copies
each frozen VGG19 weight (548 MB) on every train step and every eval call: about 10% of a VGG19 step
on a 2-core CPU (``benchmarks/train_step.py``).
"""

from functools import partial

import jax
import jax.numpy as jnp
from flax import nnx

from jaxmri.data.augment import MAX_ANGLE, augment, to_float
from jaxmri.training.compiled import YNN_REDUCE_ONLY, CompiledStep
from jaxmri.training.losses import cross_entropy


_STATIC = ("max_angle", "label_smoothing")  # compile-time settings: one executable per value


@partial(nnx.jit, graph_updates=False, static_argnames=_STATIC)
def plain_train_step(model: nnx.Module, optimizer: nnx.Optimizer, batch: dict, key: jax.Array | None = None, *,
                     max_angle: float = MAX_ANGLE, label_smoothing: float = 0.0) -> dict:
    """One Adam step on a batch; augments it on device first when ``key`` is given.

    Only ``optimizer.wrt`` (the model's trainable parameters) is differentiated, so frozen layers get
    no gradient at all and XLA prunes their backward pass. Returns summed loss / correct / count so the
    caller can average exactly over an epoch.
    """
    images = to_float(batch["image"]) if key is None else augment(key, batch["image"], max_angle=max_angle)

    def loss_fn(model):
        logits = model(images)
        return cross_entropy(logits, batch["label"], batch["weight"], label_smoothing), logits

    grad_fn = nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, optimizer.wrt), has_aux=True)
    (loss, logits), grads = grad_fn(model)
    optimizer.update(model, grads)
    correct = jnp.sum((jnp.argmax(logits, -1) == batch["label"]) * batch["weight"])
    count = jnp.sum(batch["weight"])
    return {"loss_sum": loss * count, "correct": correct, "count": count}


# What the library calls: the same step compiled with a CPU option (YNNPACK for reduce fusions only:
# Eigen for the convolutions, XLA's own code for the augmentation; SmallCNN with augmentation
# 1.22-1.36x faster than YNNPACK for elementwise and reduce fusions, VGG19 the same;
# ``compiled.YNN_REDUCE_ONLY``).
TRAIN_COMPILER_OPTIONS = YNN_REDUCE_ONLY
train_step = CompiledStep(plain_train_step, TRAIN_COMPILER_OPTIONS, static_argnames=_STATIC)


@nnx.jit(graph_updates=False)
def eval_step(model: nnx.Module, batch: dict) -> jnp.ndarray:
    """Logits (B, num_classes) of un-augmented images; call ``model.eval()`` first to switch dropout off."""
    return model(to_float(batch["image"]))
