"""Small functional layers shared by the paper's models.

Pooling is written as reshape-and-max instead of ``nnx.max_pool`` / ``lax.reduce_window``: on XLA's CPU
backend the gradient of ``reduce_window`` lowers to a slow select-and-scatter, while the gradient of a
plain ``max`` over reshaped axes is cheap. The results are identical to PyTorch's ``MaxPool2d(2, 2)``
(odd trailing rows/columns are dropped, as PyTorch's floor mode does).
"""

import jax.numpy as jnp
import numpy as np
from jax import lax

# ImageNet statistics that torchvision's pretrained VGG19 expects on RGB images in [0, 1].
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def max_pool_2x2(x: jnp.ndarray) -> jnp.ndarray:
    """2x2 max pooling with stride 2 on NHWC input: (N, H, W, C) -> (N, H // 2, W // 2, C)."""
    n, h, w, c = x.shape
    x = x[:, : h - h % 2, : w - w % 2, :]
    return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def normalize(x: jnp.ndarray, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> jnp.ndarray:
    """Channel-wise ``(x - mean) / std`` on NHWC images in [0, 1] (torchvision's ``Normalize``)."""
    mean = jnp.asarray(mean, x.dtype)
    std = jnp.asarray(std, x.dtype)
    return (x - mean) / std


def adaptive_avg_pool(x: jnp.ndarray, out_h: int, out_w: int) -> jnp.ndarray:
    """PyTorch ``AdaptiveAvgPool2d((out_h, out_w))`` on NHWC input.

    Bin ``i`` averages rows ``floor(i * H / out_h)`` to ``ceil((i + 1) * H / out_h)``, exactly as PyTorch
    does, so a 1x1 map is replicated and a 7x7 map (VGG19 at 224x224) passes through unchanged.
    """
    n, h, w, c = x.shape
    if (h, w) == (out_h, out_w):
        return x
    rows = []
    for i in range(out_h):
        r0, r1 = (i * h) // out_h, -(-((i + 1) * h) // out_h)
        cols = []
        for j in range(out_w):
            c0, c1 = (j * w) // out_w, -(-((j + 1) * w) // out_w)
            cols.append(x[:, r0:r1, c0:c1, :].mean(axis=(1, 2)))
        rows.append(jnp.stack(cols, axis=1))
    return jnp.stack(rows, axis=1)


def upsample_2x(x: jnp.ndarray) -> jnp.ndarray:
    """Nearest-neighbour 2x upsampling on NHWC input: (N, H, W, C) -> (N, 2H, 2W, C).

    Keras' ``UpSampling2D(2)`` and PyTorch's ``Upsample(scale_factor=2, mode="nearest")``. Written as
    broadcast-and-reshape so that XLA fuses it and its gradient is a cheap sum over the copies, instead of
    the gather / scatter that ``jax.image.resize`` lowers to.
    """
    n, h, w, c = x.shape
    x = jnp.broadcast_to(x[:, :, None, :, None, :], (n, h, 2, w, 2, c))
    return x.reshape(n, 2 * h, 2 * w, c)


# _UPSAMPLE_PHASE[a, r, d] is 1 when kernel row d, applied at upsampled row 2i + a, reads small-map row
# i + r (nearest-neighbour: upsampled row p holds small row p // 2, so r = (a + d) // 2).
_UPSAMPLE_PHASE = np.array([[[1, 1], [0, 0]], [[1, 0], [0, 1]]], np.float32)


def upsample_conv_2x2(x: jnp.ndarray, kernel: jnp.ndarray, bias: jnp.ndarray) -> jnp.ndarray:
    """``upsample_2x`` then a 2x2 'same' convolution, computed on the small map: (N, H, W, I) -> (N, 2H, 2W, O).

    Equal to ``conv(upsample_2x(x), kernel, padding=((0, 1), (0, 1))) + bias`` (Keras ``padding="same"``
    for a 2x2 kernel: zeros after, none before), with ``kernel`` (2, 2, I, O) HWIO and ``bias`` (O,).

    Nearest-neighbour upsampling repeats every pixel, so each of the four output phases (row parity a,
    column parity b) is a 2x2 convolution of the *small* map with a kernel made by summing taps of
    ``kernel``. Running those four as one convolution with 4 * O output channels and interleaving the
    phases (depth-to-space) does the same arithmetic without building the 4x larger upsampled map, and
    its weight gradient runs at the small resolution, where XLA's CPU convolutions are more efficient
    (U-Net train step on one CPU core: 3-10% faster; on two cores the same within noise).
    """
    i, o = kernel.shape[2], kernel.shape[3]
    phase = jnp.asarray(_UPSAMPLE_PHASE, kernel.dtype)
    folded = jnp.einsum("ard,bse,deio->rsiabo", phase, phase, kernel).reshape(2, 2, i, 4 * o)
    y = lax.conv_general_dilated(x, folded, (1, 1), ((0, 1), (0, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"))
    n, h, w, _ = y.shape
    y = y.reshape(n, h, w, 2, 2, o).transpose(0, 1, 3, 2, 4, 5).reshape(n, 2 * h, 2 * w, o)
    return y + bias


def conv3x3_same(x: jnp.ndarray, kernel: jnp.ndarray) -> jnp.ndarray:
    """XLA's 3x3 'same' convolution, stride 1: (N, H, W, I) NHWC with a (3, 3, I, O) HWIO kernel -> (N, H, W, O)."""
    return lax.conv_general_dilated(x, kernel, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"))
