"""Train and predict steps for the U-Net (paper Section 3): one ``nnx.jit`` boundary each.

A batch is a dict of device arrays with a fixed batch size (padding rows carry weight 0):
  ``batch["image"]``  uint8 (B, H, W, 1) gray images in [0, 255], cropped and resized
  ``batch["mask"]``   uint8 (B, H, W, 1) tumor masks in {0, 1}
  ``batch["weight"]`` float32 (B,)

The losses are in ``jaxmri.training.losses`` (``loss=`` is static, so each choice compiles once).
Both steps are written like the classifier steps, under ``nnx.jit(graph_updates=False)``; the train
step is additionally compiled with one CPU compiler option (``TRAIN_COMPILER_OPTIONS``, through
``jaxmri.training.compiled.CompiledStep``).
"""

from functools import partial

import jax
import jax.numpy as jnp
from flax import nnx

from jaxmri.data.augment import MAX_ANGLE, augment, to_float
from jaxmri.training.compiled import YNN_WITHOUT_CONVOLUTIONS, CompiledStep
from jaxmri.training.losses import segmentation_loss

# The train step's CPU compile option (``compiled.YNN_WITHOUT_CONVOLUTIONS``: gradient convolutions on
# Eigen, not YNNPACK). History of the choice, whole step, batch 4, 256 x 256, 2 cores: width 32
# 1,660 ms with XLA's default, 1,390 ms with YNNPACK off, 1,320 ms with this setting; width 64 4,410 ms
# off, 4,190 ms with this (the default's weight gradient alone took 7,600 ms). ``predict_step`` keeps the default.
TRAIN_COMPILER_OPTIONS = YNN_WITHOUT_CONVOLUTIONS
_STATIC = ("loss", "max_angle")


@partial(nnx.jit, graph_updates=False, static_argnames=_STATIC)
def plain_train_step(model: nnx.Module, optimizer: nnx.Optimizer, batch: dict, key: jax.Array | None = None, *,
                     loss: str = "bce", max_angle: float = MAX_ANGLE) -> dict:
    """One optimizer step; with ``key`` the image and mask get the same random flip and rotation first.

    Only ``optimizer.wrt`` is differentiated. Returns summed loss and count so the caller can average
    exactly over an epoch. Call ``train_step`` (this step with ``TRAIN_COMPILER_OPTIONS``).
    """
    if key is None:
        images, masks = to_float(batch["image"]), batch["mask"].astype(jnp.float32)
    else:
        images, masks = augment(key, batch["image"], batch["mask"], max_angle=max_angle)

    def loss_fn(model):
        return segmentation_loss(model(images), masks, batch["weight"], loss)

    value, grads = nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, optimizer.wrt))(model)
    optimizer.update(model, grads)
    count = jnp.sum(batch["weight"])
    return {"loss_sum": value * count, "count": count}


train_step = CompiledStep(plain_train_step, TRAIN_COMPILER_OPTIONS, static_argnames=_STATIC)


@nnx.jit(graph_updates=False)
def predict_step(model: nnx.Module, batch: dict) -> jnp.ndarray:
    """Tumor probabilities (B, H, W, 1) in [0, 1] for un-augmented images."""
    return jax.nn.sigmoid(model(to_float(batch["image"])))
