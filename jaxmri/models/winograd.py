"""Winograd F(2x2, 3x3): a 3x3 'same' convolution with 2.25x fewer multiplications (Lavin & Gray, 2016).

A 3x3 convolution computes every 2x2 block of outputs from the 4x4 input tile around it with 36
multiply-adds per channel pair. Winograd's minimal filtering algorithm computes the same four numbers
with 16: transform the tile (``V = B^T d B``, additions only), the kernel (``U = G g G^T``), multiply
elementwise, and transform back (``Y = A^T (U * V) A``, additions only). Summed over input channels,
the elementwise products become 16 independent matrix products, (tiles x C_in) @ (C_in x C_out), so
the convolution is 16 matmuls of 4/9 of the direct FLOPs plus memory-bound transforms.

When it pays: on XLA's CPU backend the transforms cost little once the matmuls are large. Each VGG19
layer alone, batch 8, compiled as the train step is (``python benchmarks/winograd.py --parts layers``,
2 cores, AMD Zen 5, same process, alternating), direct / Winograd:

=========================  =====  ==========================  =====
layer                      ratio  layer                       ratio
=========================  =====  ==========================  =====
224 x 224 x 3 -> 64        0.41   56 x 56 x 128 -> 256        1.52
224 x 224 x 64 -> 64       0.93   56 x 56 x 256 -> 256        1.75
112 x 112 x 64 -> 128      1.06   28 x 28 x 256 -> 512        1.92
112 x 112 x 128 -> 128     1.33   28 x 28 x 512 -> 512        1.81
14 x 14 x 512 -> 512       1.66
=========================  =====  ==========================  =====

With few channels the matmuls are small and the 4x larger transformed tiles dominate, so ``conv3x3``
uses Winograd from ``WINOGRAD_MIN_CHANNELS`` input channels, on CPU only: GPU and TPU convolution
libraries choose their own algorithms (cuDNN has Winograd kernels of its own), so a program compiled for
them gets XLA's plain convolution.

Rounding: the transforms' coefficients are 0, +-1 and +-1/2. Against a float64 convolution, float32
Winograd is off by 4-6e-7 of the output's RMS, XLA's float32 direct convolution by 3e-7 (F(4x4, 3x3),
with coefficients up to 8, would be off by 3e-6: not used). A full-size VGG19 matches PyTorch's float64
logits to 1.0e-6 either way (``tests/test_weights.py``'s full-size check). Gradients are those of the
same arithmetic (autodiff through the transforms and the matmuls).
"""

from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxmri.models.layers import conv3x3_same, max_pool_2x2

# F(2, 3)'s matrices (Lavin & Gray 2016, Section 4.1): data transform B^T (4 x 4), kernel transform
# G (4 x 3) and output transform A^T (2 x 4).
_BT = ((1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1))
_G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float32)
_AT = ((1, 1, 1, 0), (0, 1, -1, -1))

# Input channels from which ``conv3x3`` uses Winograd on CPU (see the module docstring's table): VGG19's
# conv2_2 onward, 13 of its 16 convolutions and 85% of its FLOPs.
WINOGRAD_MIN_CHANNELS = 128


def winograd_pays(kernel_shape: tuple[int, ...]) -> bool:
    """Whether ``conv3x3`` runs a (3, 3, I, O) kernel as Winograd on CPU: ``I >= WINOGRAD_MIN_CHANNELS``."""
    return kernel_shape[2] >= WINOGRAD_MIN_CHANNELS


def _combine(coefficients, terms):
    """sum(c * t) over the nonzero coefficients, with +-1 as an add or a subtract."""
    total = None
    for c, t in zip(coefficients, terms):
        if c == 0:
            continue
        t = t if c == 1 else -t if c == -1 else t * c
        total = t if total is None else total + t
    return total


def _tile_rows(x: jnp.ndarray, axis: int, tiles: int) -> list[jnp.ndarray]:
    """The four overlapping 4-wide windows at stride 2 along ``axis`` (of length 2 * tiles + 2), as four
    arrays with ``tiles`` there: element r of window t is ``x[2t + r]``. Reshapes and slices, no gather."""
    shape = x.shape[:axis] + (tiles + 1, 2) + x.shape[axis + 1:]
    pairs = x.reshape(shape)
    windows = []
    for r in range(4):
        index = [slice(None)] * len(shape)
        index[axis], index[axis + 1] = slice(r // 2, r // 2 + tiles), r % 2
        windows.append(pairs[tuple(index)])
    return windows


def kernel_transform(kernel: jnp.ndarray) -> jnp.ndarray:
    """``U = G g G^T`` for every channel pair: (3, 3, I, O) HWIO -> (16, I, O), row-major over the 4 x 4 tile.

    Written as sums of the nine taps (coefficients 0, +-1/2, 1) so that XLA fuses it into one pass; as an
    einsum it became a small-matrix dot that took 1.8x as long (512 x 512 channels: 5.7 against 3.2 ms).
    """
    g = _G.astype(kernel.dtype)
    rows = [_combine(g[a], [kernel[d] for d in range(3)]) for a in range(4)]  # (3, I, O): G applied down
    return jnp.stack([_combine(g[b], [row[e] for e in range(3)]) for row in rows for b in range(4)])


def conv3x3_winograd(x: jnp.ndarray, kernel: jnp.ndarray, *, pool: bool = False,
                     transformed: Sequence[jnp.ndarray] | None = None) -> jnp.ndarray:
    """``layers.conv3x3_same(x, kernel)`` computed as Winograd F(2x2, 3x3): (N, H, W, I) -> (N, H, W, O).

    ``x`` is float32 NHWC of any H, W >= 1 (odd sizes are padded to whole tiles and cropped),
    ``kernel`` (3, 3, I, O) HWIO. Zero padding 1 on every side, as ``nnx.Conv(..., padding=1)``.
    With ``pool``, returns ``max_pool_2x2`` of that, (N, H // 2, W // 2, O): each output tile is one
    pooling window, so the max is taken over the tile before the full-size map is ever written.
    ``transformed``: ``kernel_transform(kernel)`` when the caller already has it (a fixed kernel
    transformed once, ``VGG19Classifier.winograd_cache``), stacked (16, I, O) or as 16 (I, O) arrays;
    ``kernel`` then only gives the shape, and no gradient reaches it. Separate arrays are what a cache
    should hold: each is a matmul operand as it is, where slicing a stacked parameter makes XLA copy
    every slice first.
    """
    n, h, w, c = x.shape
    if kernel.shape[:3] != (3, 3, c):
        raise ValueError(f"conv3x3_winograd: needs a (3, 3, {c}, O) kernel for input {x.shape}, got {kernel.shape}.")
    o = kernel.shape[-1]
    t, s = -(-h // 2), -(-w // 2)  # tiles down and across
    if transformed is not None:
        if len(transformed) != 16 or any(u.shape != (c, o) for u in transformed):
            raise ValueError(f"conv3x3_winograd: transformed kernel must be 16 matrices ({c}, {o}), got "
                             f"{[u.shape for u in transformed]}.")
        u = transformed
    else:
        # Tie the kernel to this layer's input, so that XLA transforms each kernel when its layer runs
        # instead of hoisting all of them to the start of the program: 13 transformed kernels alive at once
        # made the frozen VGG19 step's scratch memory 494 MB instead of 365, and under glibc's default
        # allocator every scratch page is faulted in again on each step (against PyTorch: 1.10x -> 1.34x).
        x, kernel = lax.optimization_barrier((x, kernel))
        u = kernel_transform(kernel)
    x = jnp.pad(x, ((0, 0), (1, 2 * t + 1 - h), (1, 2 * s + 1 - w), (0, 0)))
    v = []
    for row_coefficients in _BT:
        rows = _combine(row_coefficients, _tile_rows(x, 1, t))  # (N, t, 2s + 2, I)
        cols = _tile_rows(rows, 2, s)
        v.extend(_combine(col_coefficients, cols).reshape(n * t * s, c) for col_coefficients in _BT)
    m = [(v[k] @ u[k]).reshape(n, t, s, o) for k in range(16)]  # 16 matmuls, the only multiplications
    per_row = [[_combine(a, m[4 * i:4 * i + 4]) for a in _AT] for i in range(4)]  # [tile row i][out col]
    y = [[_combine(a, [per_row[i][col] for i in range(4)]) for col in range(2)] for a in _AT]  # [out row][out col]
    if pool:
        return jnp.maximum(jnp.maximum(y[0][0], y[0][1]), jnp.maximum(y[1][0], y[1][1]))[:, : h // 2, : w // 2]
    y = jnp.stack([jnp.stack(y[0], axis=3), jnp.stack(y[1], axis=3)], axis=2)  # (N, t, 2, s, 2, O)
    return y.reshape(n, 2 * t, 2 * s, o)[:, :h, :w]


def conv3x3(x: jnp.ndarray, kernel: jnp.ndarray, bias: jnp.ndarray, *, pool: bool = False,
            winograd: bool = True, transformed: Sequence[jnp.ndarray] | None = None) -> jnp.ndarray:
    """A 3x3 'same' convolution plus bias, as ``nnx.Conv(I, O, (3, 3), padding=1)``: (N, H, W, I) -> (N, H, W, O).

    With ``pool``, the 2x2 max pool of the convolution plus bias, (N, H // 2, W // 2, O), so that
    ``relu(conv3x3(..., pool=True))`` is ``max_pool_2x2(relu(conv(x) + bias))`` exactly (the bias is the
    same in the four pixels of a window, and ReLU and rounded addition are monotonic).

    Winograd F(2x2, 3x3) when ``winograd`` is on, ``winograd_pays`` for the kernel and the program is
    compiled for CPU, else XLA's convolution. The platform is chosen per lowering
    (``lax.platform_dependent``), so a program compiled for GPU or TPU contains only the plain convolution.
    ``transformed`` (optional): ``kernel_transform(kernel)`` computed beforehand; only the Winograd path
    reads it, and then no gradient reaches ``kernel`` (see ``conv3x3_winograd``).
    """

    def direct(x, kernel, *_transformed):
        y = conv3x3_same(x, kernel)
        return max_pool_2x2(y) if pool else y

    def cpu(x, kernel, *transformed):
        return conv3x3_winograd(x, kernel, pool=pool, transformed=transformed[0] if transformed else None)

    if not (winograd and winograd_pays(kernel.shape)):
        return direct(x, kernel) + bias
    operands = (x, kernel) if transformed is None else (x, kernel, transformed)
    return lax.platform_dependent(*operands, cpu=cpu, default=direct) + bias
