"""SmallCNN's first layer (Table 2, layers 1-2) as one blocked convolution: conv 3x3 + ReLU + 2x2 max pool.

``conv3x3_relu_max_pool_2x2`` computes ``max_pool_2x2(relu(conv3x3(x) + bias))`` without building the
full-resolution map, and its custom gradient computes the kernel's gradient as matrix products instead of
XLA's weight-gradient convolution on CPU. Both are written out in its docstring; the arithmetic is the
plain layers' up to float32 rounding (``tests/test_small_cnn.py`` compares values and gradients).
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxmri.models.layers import conv3x3_same

# _POOL_PHASE[a, p, u, d] is 1 when kernel row d, for output row 2i + u, reads row p of 2x2 block i + a of
# the padded input (padded row 2(i + a) + p = 2i + u + d, so d = 2a + p - u). The same holds for columns.
_POOL_PHASE = np.zeros((2, 2, 2, 3), np.float32)
for _a, _p, _u in np.ndindex(2, 2, 2):
    if 0 <= 2 * _a + _p - _u <= 2:
        _POOL_PHASE[_a, _p, _u, 2 * _a + _p - _u] = 1.0


def _blocks(x: jnp.ndarray) -> jnp.ndarray:
    """The 'same'-padded input cut into 2x2 blocks (space-to-depth): (N, H, W, I) -> (N, H/2 + 1, W/2 + 1, 4I)."""
    n, h, w, i = x.shape
    x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0))).reshape(n, h // 2 + 1, 2, w // 2 + 1, 2, i)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(n, h // 2 + 1, w // 2 + 1, 4 * i)


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
    """The gradient of ``kernel`` (3, 3, I, O) given the input ``x`` (N, H, W, I) and the phases' cotangent
    ``g_phases`` (N, H/2, W/2, 2, 2, O): (3, 3, I, O).

    One matrix product per image, (16I x H/2 W/2) @ (H/2 W/2 x 4O), of the blocked convolution's 2x2
    patches with ``g_phases`` as they lie in memory, summed over the batch, then taken back from the
    folded kernel to the 3x3 taps by ``_folded``'s own transpose. XLA's weight-gradient convolution would
    instead first transpose the full-resolution cotangent (the batch becomes its reduced feature axis):
    32 ms of a 190 ms SmallCNN step in a profile, an upper bound (on two cores a profile also counts the
    other thread's work); the whole step measured 1.1-1.3x faster this way. A product per image, not one over
    the whole batch: XLA's CPU dot is several times slower when it reduces over hundreds of thousands of rows.
    """
    n, h2, w2, _, _, o = g_phases.shape
    i = x.shape[-1]
    blocks = _blocks(x)
    # (N, H/2, W/2, 16I), channels ordered (a, b, p, q, i) as _folded's (2, 2, 4I) input axes
    patches = jnp.concatenate([blocks[:, a : a + h2, b : b + w2] for a in range(2) for b in range(2)], axis=-1)
    per_image = jnp.einsum("nrk,nro->nko", patches.reshape(n, h2 * w2, 16 * i), g_phases.reshape(n, h2 * w2, 4 * o))
    _, fold_vjp = jax.vjp(_folded, kernel)
    return fold_vjp(per_image.sum(0).reshape(2, 2, 4 * i, 4 * o))[0]


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
    product per image over the blocks on CPU (``_kernel_grad``; SmallCNN's train step 1.1-1.3x faster than
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
    """``_kernel_grad``'s result, (3, 3, I, O), from XLA's weight-gradient convolution (what GPU and TPU run)."""
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
