"""Train and predict steps for the U-Net (paper Section 3): one jit boundary each.

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

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxmri.augment import MAX_ANGLE, augment, to_float

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


# XLA's CPU backend (jax 0.12) hands every convolution to YNNPACK by default. YNNPACK's weight-gradient
# convolution is slow on the U-Net's large, few-channel maps, so this one step is compiled with YNNPACK
# fusion limited to elementwise and reduce fusions: the forward convolutions still go to YNNPACK, fused
# with their bias and ReLU, while the gradient convolutions run on XLA's own (Eigen) convolutions.
# Whole train step on 2 cores, batch 4, 256 x 256, medians of 8 alternating rounds: width 32 1,660 ms
# with XLA's default, 1,390 ms with YNNPACK off, 1,320 ms with this setting; width 64 4,410 ms off and
# 4,190 ms with this (the default's gradient alone took 7,600 ms). ``predict_step`` and the classifiers
# keep XLA's default, which is faster for them. Passed per jit, unlike the process-wide ``XLA_FLAGS``,
# so nothing else in the process changes; other backends ignore it. The option is experimental: a
# jaxlib that knows neither it nor its values gets the plain jit (see ``train_step``).
TRAIN_COMPILER_OPTIONS = {
    "xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_ELTWISE,LIBRARY_FUSION_TYPE_REDUCE",
}


def _pure_train_step(graphdef: nnx.GraphDef, state: nnx.State, batch: dict, key: jax.Array | None, *,
                     loss: str, max_angle: float) -> tuple[nnx.State, dict]:
    """The pure step: (model, optimizer) state in, updated state and loss sums out."""
    model, optimizer = nnx.merge(graphdef, state)
    if key is None:
        images, masks = to_float(batch["image"]), batch["mask"].astype(jnp.float32)
    else:
        images, masks = augment(key, batch["image"], batch["mask"], max_angle=max_angle)

    def loss_fn(model):
        return segmentation_loss(model(images), masks, batch["weight"], loss)

    value, grads = nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, optimizer.wrt))(model)
    optimizer.update(model, grads)
    count = jnp.sum(batch["weight"])
    return nnx.state((model, optimizer)), {"loss_sum": value * count, "count": count}


_STATIC = ("graphdef", "loss", "max_angle")
_jitted_steps = [jax.jit(_pure_train_step, static_argnames=_STATIC, compiler_options=TRAIN_COMPILER_OPTIONS),
                 jax.jit(_pure_train_step, static_argnames=_STATIC)]


def train_step(model: nnx.Module, optimizer: nnx.Optimizer, batch: dict, key: jax.Array | None = None, *,
               loss: str = "bce", max_angle: float = MAX_ANGLE) -> dict:
    """One optimizer step; with ``key`` the image and mask get the same random flip and rotation first.

    The jit boundary is ``_pure_train_step``, a pure function of ``nnx.split((model, optimizer))`` (plain
    ``jax.jit``, because ``nnx.jit`` does not take ``compiler_options``); this wrapper splits, calls it
    and writes the new state back, so callers use it like the ``nnx.jit`` steps in ``classify_steps``.
    """
    graphdef, state = nnx.split((model, optimizer))
    try:
        new_state, out = _jitted_steps[0](graphdef, state, batch, key, loss=loss, max_angle=max_angle)
    except jax.errors.JaxRuntimeError as error:
        if "xla_cpu_experimental_ynn_fusion_type" not in str(error) or len(_jitted_steps) == 1:
            raise
        _jitted_steps.pop(0)  # this jaxlib does not know the option: use the plain jit from now on
        new_state, out = _jitted_steps[0](graphdef, state, batch, key, loss=loss, max_angle=max_angle)
    nnx.update((model, optimizer), new_state)
    return out


@nnx.jit(graph_updates=False)
def predict_step(model: nnx.Module, batch: dict) -> jnp.ndarray:
    """Tumor probabilities (B, H, W, 1) in [0, 1] for un-augmented images."""
    return jax.nn.sigmoid(model(to_float(batch["image"])))
