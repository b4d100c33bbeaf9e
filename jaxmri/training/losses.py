"""The losses of both tasks, over fixed-size batches whose padding rows carry weight 0.

- ``cross_entropy``: classification (Section 2.2), PyTorch's ``CrossEntropyLoss``.
- ``segmentation_loss``: segmentation (Section 3), named by ``SegmentConfig.loss``:
  ``"bce"``       the paper's "cross entropy": mean pixel-wise sigmoid binary cross-entropy
  ``"dice"``      soft Dice loss ``1 - (2 sum(p t) + 1) / (sum(p) + sum(t) + 1)`` per image (the +1 keeps
                  empty masks finite and rewards predicting them empty)
  ``"bce+dice"``  their sum
"""

import jax
import jax.numpy as jnp
import optax

from jaxmri.config import LOSSES


def cross_entropy(logits: jnp.ndarray, labels: jnp.ndarray, weight: jnp.ndarray, smoothing: float = 0.0) -> jnp.ndarray:
    """Mean softmax cross-entropy over the real (weight 1) examples: PyTorch's ``CrossEntropyLoss``.

    ``logits`` float32 (B, C), ``labels`` int32 (B,), ``weight`` float32 (B,) in {0, 1}. ``smoothing`` > 0
    trains against ``(1 - smoothing) * one_hot + smoothing / C`` (label smoothing, PyTorch's
    ``label_smoothing``), which keeps the logits of a small data set from growing without bound.
    """
    if smoothing:
        targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), smoothing)
        losses = optax.softmax_cross_entropy(logits, targets)
    else:
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return jnp.sum(losses * weight) / jnp.maximum(jnp.sum(weight), 1.0)


def segmentation_loss(logits: jnp.ndarray, masks: jnp.ndarray, weight: jnp.ndarray, loss: str = "bce") -> jnp.ndarray:
    """Weighted mean over images of the per-image loss named by ``loss``; logits and masks (B, H, W, 1)."""
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}.")
    per_image = jnp.zeros(logits.shape[0])
    if loss in ("bce", "bce+dice"):
        per_image += optax.sigmoid_binary_cross_entropy(logits, masks).mean(axis=(1, 2, 3))
    if loss in ("dice", "bce+dice"):
        probs = jax.nn.sigmoid(logits)
        inter = jnp.sum(probs * masks, axis=(1, 2, 3))
        total = jnp.sum(probs, axis=(1, 2, 3)) + jnp.sum(masks, axis=(1, 2, 3))
        per_image += 1.0 - (2.0 * inter + 1.0) / (total + 1.0)
    return jnp.sum(per_image * weight) / jnp.maximum(jnp.sum(weight), 1.0)
