"""Small functional layers shared by the paper's models.

Pooling is written as reshape-and-max instead of ``nnx.max_pool`` / ``lax.reduce_window``: on XLA's CPU
backend the gradient of ``reduce_window`` lowers to a slow select-and-scatter, while the gradient of a
plain ``max`` over reshaped axes is cheap. The results are identical to PyTorch's ``MaxPool2d(2, 2)``
(odd trailing rows/columns are dropped, as PyTorch's floor mode does).
"""

import jax
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


# _POOL_PHASE[a, p, u, d] is 1 when kernel row d, for output row 2i + u, reads row p of 2x2 block i + a of
# the padded input (padded row 2(i + a) + p = 2i + u + d, so d = 2a + p - u). The same holds for columns.
_POOL_PHASE = np.zeros((2, 2, 2, 3), np.float32)
for _a, _p, _u in np.ndindex(2, 2, 2):
    if 0 <= 2 * _a + _p - _u <= 2:
        _POOL_PHASE[_a, _p, _u, 2 * _a + _p - _u] = 1.0


def conv3x3_same(x: jnp.ndarray, kernel: jnp.ndarray) -> jnp.ndarray:
    """XLA's 3x3 'same' convolution, stride 1: (N, H, W, I) NHWC with a (3, 3, I, O) HWIO kernel -> (N, H, W, O)."""
    return lax.conv_general_dilated(x, kernel, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _blocks(x: jnp.ndarray) -> jnp.ndarray:
    """The 'same'-padded input cut into 2x2 blocks (space-to-depth): (N, H, W, I) -> (N, H/2 + 1, W/2 + 1, 4I)."""
    n, h, w, i = x.shape
    x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    return x.reshape(n, h // 2 + 1, 2, w // 2 + 1, 2, i).transpose(0, 1, 3, 2, 4, 5).reshape(n, h // 2 + 1, w // 2 + 1, 4 * i)


def _folded(kernel: jnp.ndarray) -> jnp.ndarray:
    """The (3, 3, I, O) kernel placed as a 2x2 kernel over ``_blocks``: (2, 2, 4I, 4O), output channels (u, v, O)."""
    i, o = kernel.shape[2], kernel.shape[3]
    phase = jnp.asarray(_POOL_PHASE, kernel.dtype)
    return jnp.einsum("apud,bqve,deio->abpqiuvo", phase, phase, kernel).reshape(2, 2, 4 * i, 4 * o)


def _conv3x3_phases(x: jnp.ndarray, kernel: jnp.ndarray) -> jnp.ndarray:
    """``conv3x3_same(x, kernel)`` as (N, H/2, W/2, 2, 2, O): the output at (2i + u, 2j + v) is [:, i, j, u, v]."""
    n, h, w, i = x.shape
    if h % 2 or w % 2 or kernel.shape[:3] != (3, 3, i):
        raise ValueError(f"conv3x3_relu_max_pool_2x2: needs even H and W and a (3, 3, {i}, O) kernel, got {x.shape} and {kernel.shape}.")
    y = lax.conv_general_dilated(_blocks(x), _folded(kernel), (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y.reshape(n, h // 2, w // 2, 2, 2, kernel.shape[-1])


def _kernel_grad(x: jnp.ndarray, kernel: jnp.ndarray, g_phases: jnp.ndarray) -> jnp.ndarray:
    """The gradient of ``kernel`` given the phases' cotangent ``g_phases`` (N, H/2, W/2, 2, 2, O).

    One matrix product per image, (16I x H/2 W/2) @ (H/2 W/2 x 4O), of the blocked convolution's 2x2
    patches with ``g_phases`` as they lie in memory, summed over the batch, then taken back from the
    folded kernel to the 3x3 taps by ``_folded``'s own transpose. XLA's weight-gradient convolution would
    instead first transpose the full-resolution cotangent (the batch becomes its reduced feature axis):
    SmallCNN's step spent 32 ms of its 190 in that one transpose. A product per image, not one over
    the whole batch: XLA's CPU dot is several times slower when it reduces over millions of rows.
    """
    n, h2, w2 = g_phases.shape[:3]
    blocks = _blocks(x)
    patches = jnp.concatenate([blocks[:, a : a + h2, b : b + w2] for a in range(2) for b in range(2)], axis=-1)
    g_folded = jnp.einsum("nrk,nro->nko", patches.reshape(n, h2 * w2, -1), g_phases.reshape(n, h2 * w2, -1)).sum(0)
    _, fold_vjp = jax.vjp(_folded, kernel)
    return fold_vjp(g_folded.reshape(2, 2, g_folded.shape[0] // 4, g_folded.shape[1]))[0]


def _relu_max_over_phases(phases: jnp.ndarray, bias: jnp.ndarray) -> jnp.ndarray:
    # max then bias then ReLU equals ReLU(. + bias) then max: the bias is the same in the four phases and
    # ReLU is monotonic.
    return jax.nn.relu(phases.max(axis=(3, 4)) + bias)


@jax.custom_vjp
def conv3x3_relu_max_pool_2x2(x: jnp.ndarray, kernel: jnp.ndarray, bias: jnp.ndarray) -> jnp.ndarray:
    """``max_pool_2x2(relu(conv3x3(x) + bias))`` for a 'same' 3x3 convolution: (N, H, W, I) -> (N, H/2, W/2, O).

    ``kernel`` is (3, 3, I, O) HWIO and ``bias`` (O,), as in ``nnx.Conv(I, O, kernel_size=(3, 3),
    padding=1)``; H and W must be even. SmallCNN's first layer (Table 2, layers 1-2) with I = 3.

    Why not the plain layers: a convolution with 3 input channels is a poor matrix product (27 numbers
    reduced per output), and XLA's CPU backend runs it at about a tenth of its matmul speed. Here the
    padded input is cut into 2x2 blocks (space-to-depth, 4I channels) and one 2x2 convolution with 4O
    output channels computes the four pixels of every pooling window at once, from a kernel made by
    placing the 3x3 taps (``_POOL_PHASE``); the pool is then a max over those four phases, so the
    full-resolution map is never built. That is 16/9 of the multiply-adds, on a shape XLA runs fast
    (SmallCNN, 32 x 224 x 224 x 3 -> 16, forward: 64 -> 27 ms on two cores).

    The gradient is the plain layers' gradient: the input's is the phases' cotangent laid back out at full
    resolution and pushed through the ordinary 3x3 convolution's transpose; the kernel's is a matrix
    product per image over the blocks on CPU (``_kernel_grad``; SmallCNN's train step 1.16x faster than
    with XLA's weight-gradient convolution there) and that convolution on GPU and TPU. Results equal the
    plain layers up to float32 rounding; where two pixels of a window are within rounding of each other
    the max (and so the gradient) may pick the other one.
    """
    return _relu_max_over_phases(_conv3x3_phases(x, kernel), bias)


def _conv_pool_fwd(x, kernel, bias):
    phases = _conv3x3_phases(x, kernel)
    return _relu_max_over_phases(phases, bias), (x, kernel, phases, bias)


def _full_resolution(g_phases: jnp.ndarray) -> jnp.ndarray:
    """(N, H/2, W/2, 2, 2, O) phases laid back out as the (N, H, W, O) map."""
    n, h2, w2, _, _, o = g_phases.shape
    return g_phases.transpose(0, 1, 3, 2, 4, 5).reshape(n, 2 * h2, 2 * w2, o)


def _conv_kernel_grad(x: jnp.ndarray, kernel: jnp.ndarray, g_phases: jnp.ndarray) -> jnp.ndarray:
    """The kernel's gradient as XLA's weight-gradient convolution (GPU, TPU)."""
    return jax.vjp(lambda k: conv3x3_same(x, k), kernel)[1](_full_resolution(g_phases))[0]


def _conv_pool_bwd(residuals, g):
    x, kernel, phases, bias = residuals
    _, pool_vjp = jax.vjp(_relu_max_over_phases, phases, bias)
    g_phases, g_bias = pool_vjp(g)
    # vjp evaluates the plain convolution too, but nothing reads that output, so XLA removes it (and the
    # whole input gradient where x is the data, as in SmallCNN).
    _, conv_vjp = jax.vjp(lambda x: conv3x3_same(x, kernel), x)
    # The matrix products win on XLA's CPU backend (see _kernel_grad); other backends keep the convolution.
    g_kernel = lax.platform_dependent(x, kernel, g_phases, cpu=_kernel_grad, default=_conv_kernel_grad)
    return conv_vjp(_full_resolution(g_phases))[0], g_kernel, g_bias


conv3x3_relu_max_pool_2x2.defvjp(_conv_pool_fwd, _conv_pool_bwd)
