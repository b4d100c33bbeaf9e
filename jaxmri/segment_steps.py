"""Train and eval steps for the U-Net (paper Section 3): one ``nnx.jit`` boundary each.

A batch is a dict of device arrays with a fixed batch size (padding rows carry weight 0):
  ``batch["image"]``  uint8 (B, H, W, 1) gray images in [0, 255], cropped and resized
  ``batch["mask"]``   uint8 (B, H, W, 1) tumor masks in {0, 1}
  ``batch["weight"]`` float32 (B,)

Losses (``loss=`` is static, so each choice compiles once):
  ``"bce"``       the paper's "cross entropy": mean pixel-wise sigmoid binary cross-entropy
  ``"dice"``      soft Dice loss ``1 - (2 sum(p t) + 1) / (sum(p) + sum(t) + 1)`` per image (the +1 keeps
                  empty masks finite and rewards predicting them empty)
  ``"bce+dice"``  their sum
"""

from functools import partial

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxmri.augment import augment, to_float

LOSSES = ("bce", "dice", "bce+dice")


def segmentation_loss(logits: jnp.ndarray, masks: jnp.ndarray, weight: jnp.ndarray, loss: str = "bce") -> jnp.ndarray:
    """Weighted mean over images of the per-image loss named by ``loss``; logits and masks (B, H, W, 1)."""
    per_image = jnp.zeros(logits.shape[0])
    if loss in ("bce", "bce+dice"):
        per_image += optax.sigmoid_binary_cross_entropy(logits, masks).mean(axis=(1, 2, 3))
    if loss in ("dice", "bce+dice"):
        probs = jax.nn.sigmoid(logits)
        inter = jnp.sum(probs * masks, axis=(1, 2, 3))
        total = jnp.sum(probs, axis=(1, 2, 3)) + jnp.sum(masks, axis=(1, 2, 3))
        per_image += 1.0 - (2.0 * inter + 1.0) / (total + 1.0)
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}.")
    return jnp.sum(per_image * weight) / jnp.maximum(jnp.sum(weight), 1.0)


@partial(nnx.jit, static_argnames=("loss", "max_angle"))
def train_step(model: nnx.Module, optimizer: nnx.Optimizer, batch: dict, key: jax.Array | None = None, *,
               loss: str = "bce", max_angle: float = 15.0) -> dict:
    """One optimizer step; with ``key`` the image and mask get the same random flip and rotation first."""
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


@nnx.jit(graph_updates=False)
def predict_step(model: nnx.Module, batch: dict) -> jnp.ndarray:
    """Tumor probabilities (B, H, W, 1) in [0, 1] for un-augmented images."""
    return jax.nn.sigmoid(model(to_float(batch["image"])))
