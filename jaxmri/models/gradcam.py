"""Grad-CAM (Selvaraju et al., 2017) for the paper's classifiers, with ``jax.grad``.

Where does the model look when it says "tumor"? Grad-CAM weighs the last convolution's feature maps
``A`` (N, h, w, K) by how much the class score ``y_c`` grows with each map, averaged over the map:

    alpha_k = mean_{i,j} d y_c / d A_{i,j,k}        cam = ReLU(sum_k alpha_k A_k)      (h, w)

The layer is the model's ``last_conv``: SmallCNN's second convolution (S/2 x S/2 x 32, before its
pool) and VGG19's last conv block (S/16 x S/16 x 512, before the fifth pool). Both models split
their forward pass there (``model(x) == model.from_last_conv(model.last_conv(x))``), so the gradient
is taken with respect to the maps themselves and nothing else.

``gradcam`` is one ``nnx.jit`` step; resizing the map to the scan's own size is in
``jaxmri.inference.outputs``.
"""

from functools import partial

import jax
import jax.numpy as jnp
from flax import nnx

from jaxmri.data.augment import to_float


def maps_gradient(model: nnx.Module, maps: jnp.ndarray, target: int) -> tuple[jnp.ndarray, jnp.ndarray]:
    """``(d score / d maps, logits)`` at last-conv maps (N, h, w, K); the score is the sum over the batch
    of the ``target`` logit, so image n's gradient is that of its own logit (the images do not interact)."""

    def score(maps):
        logits = model.from_last_conv(maps)
        return jnp.sum(logits[:, target]), logits

    return jax.grad(score, has_aux=True)(maps)


def class_score_gradient(model: nnx.Module, images: jnp.ndarray, target: int) -> tuple[jnp.ndarray, ...]:
    """``(maps, d score / d maps, logits)`` for float32 images (N, S, S, 3) in [0, 1]; maps (N, h, w, K)."""
    maps = model.last_conv(images)
    grads, logits = maps_gradient(model, maps, target)
    return maps, grads, logits


def cam_from(maps: jnp.ndarray, grads: jnp.ndarray) -> jnp.ndarray:
    """Grad-CAM maps (N, h, w) in [0, 1] (each divided by its maximum; an all-zero map stays zero)."""
    alpha = jnp.mean(grads, axis=(1, 2), keepdims=True)  # (N, 1, 1, K)
    cam = jax.nn.relu(jnp.sum(alpha * maps, axis=-1))
    peak = jnp.max(cam, axis=(1, 2), keepdims=True)
    return jnp.where(peak > 0, cam / jnp.where(peak > 0, peak, 1.0), 0.0)


@partial(nnx.jit, graph_updates=False, static_argnames=("target",))
def gradcam(model: nnx.Module, batch: dict, target: int = 1) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Grad-CAM of class ``target`` (1 = tumor) and the softmax probabilities, for a batch.

    ``batch["image"]`` uint8 (B, S, S, 3). Returns ``(cam (B, h, w) in [0, 1], probabilities (B, C))``.
    Call ``model.eval()`` first (VGG19's dropout off).
    """
    maps, grads, logits = class_score_gradient(model, to_float(batch["image"]), target)
    return cam_from(maps, grads), jax.nn.softmax(logits, axis=-1)
