"""UNet: the paper's segmentation network (Section 3.2, Table 5), made self-consistent.

The paper's Table 5 cannot be built as printed: Encoder 4 has no pooling, so the bottleneck sits at
32 x 32, yet four decoders each upsample 2x (32 -> 512, not 256), and Decoder 1 keeps 256 x 256 after
an upsampling. The text, however, describes the standard U-Net (Ronneberger et al., 2015): every encoder
block pools, the bottleneck has 1024 filters, and every decoder block upsamples, halves the filters,
concatenates the skip and refines. That is what is built here. Corrected table for a 256 x 256 x 1 input
at ``width=64`` (the paper's filters); ``UNet.stage_shapes`` returns every stage and the tests pin them:

==========  ====================================================  ==============  =======================
Stage       Layers                                                Table 5 output  built output (skip)
==========  ====================================================  ==============  =======================
Input                                                             256x256x1       256x256x1
Encoder 1   2x (Conv3x3+ReLU), MaxPool2x2                         128x128x64      128x128x64 (256x256x64)
Encoder 2   2x (Conv3x3+ReLU), MaxPool2x2                         64x64x128       64x64x128 (128x128x128)
Encoder 3   2x (Conv3x3+ReLU), MaxPool2x2                         32x32x256       32x32x256 (64x64x256)
Encoder 4   2x (Conv3x3+ReLU), MaxPool2x2 (*)                     32x32x512       16x16x512 (32x32x512)
Bottleneck  2x (Conv3x3+ReLU)                                     32x32x1024      16x16x1024
Decoder 4   UpSample2x, Conv2x2, Concat(skip), 2x (Conv3x3+ReLU)  64x64x512       32x32x512
Decoder 3   UpSample2x, Conv2x2, Concat(skip), 2x (Conv3x3+ReLU)  128x128x256     64x64x256
Decoder 2   UpSample2x, Conv2x2, Concat(skip), 2x (Conv3x3+ReLU)  256x256x128     128x128x128
Decoder 1   UpSample2x, Conv2x2, Concat(skip), 2x (Conv3x3+ReLU)  256x256x64 (*)  256x256x64
Output      Conv1x1 (sigmoid in the loss)                         256x256x1       256x256x1
==========  ====================================================  ==============  =======================

(*) Table 5 gives Encoder 4 no pooling and has Decoder 1 keep 256 x 256 after upsampling; here Encoder 4
pools like the others, so the bottleneck and decoders sit one level lower and every decoder doubles the
resolution exactly once. The skip in brackets is the pre-pool map the decoder at that depth concatenates.

Choices the paper leaves open, and why:
  * The decoder's filter-halving convolution is 2x2 with Keras ``padding="same"`` (one extra row and
    column of zeros at the bottom/right), as in Ronneberger's "2x2 up-convolution" and the Keras U-Net
    the table's layer names (``UpSampling2D``, ``Conv2D``) come from. Table 5 gives it no ReLU; nor do we.
  * Upsampling is nearest-neighbour (Keras' ``UpSampling2D`` default), not a transposed convolution.
    ``layers.upsample_conv_2x2`` computes upsample + 2x2 conv exactly but at the small resolution, which
    is faster on CPU; the ``up_convs`` are ordinary ``nnx.Conv`` layers holding the 2x2 kernels.
  * The skip comes after the upsampled map in the concatenation (``[up, skip]``), as in Keras U-Nets.
  * The model returns logits; the sigmoid lives in the loss (numerically stable BCE) and ``predict_proba``.

31,030,593 parameters at ``width=64`` (the paper), 7,759,521 at ``width=32`` (``7574 w**2 + 117 w + 1``
for 1 input / 1 output channel and depth 4).
"""

import jax
import jax.numpy as jnp
from flax import nnx

from jaxmri.models.layers import max_pool_2x2, upsample_conv_2x2


def _is_positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


class DoubleConv(nnx.Module):
    """Two 3x3 'same' convolutions, each followed by ReLU: (N, H, W, in) -> (N, H, W, out)."""

    def __init__(self, in_features: int, out_features: int, *, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(in_features, out_features, kernel_size=(3, 3), padding=1, rngs=rngs)
        self.conv2 = nnx.Conv(out_features, out_features, kernel_size=(3, 3), padding=1, rngs=rngs)

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        return nnx.relu(self.conv2(nnx.relu(self.conv1(x))))


class UNet(nnx.Module):
    """The paper's U-Net (Table 5, corrected as in the module docstring).

    Args:
      in_channels: channels of the input image (1: the paper's grayscale MRI). Positive int.
      out_channels: channels of the output mask (1: tumor / no tumor per pixel). Positive int.
      width: filters of the first encoder block; block ``k`` (1-based) has ``width * 2**(k-1)`` and the
        bottleneck ``width * 2**depth``. 64 is the paper; smaller values make CPU runs affordable.
        Positive int.
      depth: number of encoder (and decoder) blocks, i.e. of 2x poolings. 4 is the paper. Positive int.
      rngs: ``nnx.Rngs`` with a ``params`` stream.

    Call: ``model(images)`` with float32 NHWC images in [0, 1] of shape ``(N, H, W, in_channels)``,
    where ``H`` and ``W`` are positive multiples of ``2**depth`` (16 for the paper; 256 x 256 in
    Table 5). Returns float32 logits ``(N, H, W, out_channels)``; ``predict_proba`` applies the sigmoid.

    Raises:
      ValueError: in the constructor for a non-positive or non-integer argument, and in ``__call__`` for
        an input that is not 4-D, has the wrong channel count, or a side not divisible by ``2**depth``.

    Examples:
      >>> model = UNet(1, 1, width=64, rngs=nnx.Rngs(0))   # the paper's network
      >>> model(jnp.zeros((2, 256, 256, 1))).shape
      (2, 256, 256, 1)
      >>> small = UNet(width=8, depth=3, rngs=nnx.Rngs(0))  # a quick CPU model
      >>> dict(small.stage_shapes((1, 64, 64, 1)))["bottleneck"]
      (1, 8, 8, 64)
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, *, width: int = 64, depth: int = 4,
                 rngs: nnx.Rngs):
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels),
                            ("width", width), ("depth", depth)):
            if not _is_positive_int(value):
                raise ValueError(f"UNet: {name} must be a positive int, got {value!r}.")
        self.in_channels, self.out_channels, self.width, self.depth = in_channels, out_channels, width, depth
        filters = [width * 2**k for k in range(depth + 1)]  # filters[depth] is the bottleneck

        self.encoders = nnx.List(
            [DoubleConv(in_channels if k == 0 else filters[k - 1], filters[k], rngs=rngs) for k in range(depth)]
        )
        self.bottleneck = DoubleConv(filters[depth - 1], filters[depth], rngs=rngs)
        # Decoder lists are ordered deepest first (the paper's "Decoder 4" is index 0 at depth 4).
        # Keras-style 'same' padding for an even kernel pads only after, so the output keeps H x W.
        self.up_convs = nnx.List(
            [nnx.Conv(filters[k + 1], filters[k], kernel_size=(2, 2), padding=((0, 1), (0, 1)), rngs=rngs)
             for k in reversed(range(depth))]
        )
        self.decoders = nnx.List(
            [DoubleConv(2 * filters[k], filters[k], rngs=rngs) for k in reversed(range(depth))]
        )
        self.head = nnx.Conv(width, out_channels, kernel_size=(1, 1), rngs=rngs)

    def _forward(self, x: jnp.ndarray, record: list | None = None) -> jnp.ndarray:
        """The network; appends ``(stage name, output shape)`` to ``record`` when one is given."""

        def keep(name: str, y: jnp.ndarray) -> jnp.ndarray:
            if record is not None:
                record.append((name, tuple(y.shape)))
            return y

        keep("input", x)
        skips = []
        for k, encoder in enumerate(self.encoders, start=1):
            skips.append(keep(f"encoder{k}_skip", encoder(x)))
            x = keep(f"encoder{k}", max_pool_2x2(skips[-1]))
        x = keep("bottleneck", self.bottleneck(x))
        for k, up_conv, decoder, skip in zip(range(self.depth, 0, -1), self.up_convs, self.decoders,
                                             reversed(skips)):
            # == up_conv(upsample_2x(x)), computed without the 4x larger upsampled map (see layers.py).
            up = keep(f"decoder{k}_up", upsample_conv_2x2(x, up_conv.kernel[...], up_conv.bias[...]))
            cat = keep(f"decoder{k}_concat", jnp.concatenate([up, skip], axis=-1))
            x = keep(f"decoder{k}", decoder(cat))
        return keep("output", self.head(x))

    def _check_input(self, shape: tuple) -> None:
        multiple = 2**self.depth
        if len(shape) != 4 or shape[-1] != self.in_channels:
            raise ValueError(
                f"UNet expects NHWC images of shape (N, H, W, {self.in_channels}), got {tuple(shape)}."
            )
        if shape[1] <= 0 or shape[2] <= 0 or shape[1] % multiple or shape[2] % multiple:
            raise ValueError(
                f"UNet with depth={self.depth} needs H and W to be positive multiples of {multiple}, got "
                f"{shape[1]} x {shape[2]}; resize or pad the images."
            )

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        self._check_input(x.shape)
        return self._forward(x)

    def predict_proba(self, x: jnp.ndarray) -> jnp.ndarray:
        """Per-pixel tumor probabilities in [0, 1], shape ``(N, H, W, out_channels)``."""
        return jax.nn.sigmoid(self(x))

    def stage_shapes(self, x_shape: tuple) -> list[tuple[str, tuple]]:
        """``[(stage name, output shape), ...]`` in execution order for an input of shape ``x_shape``.

        Traces the real network abstractly (no FLOPs), so the shapes are the ones ``__call__`` produces.
        Names: ``input``, ``encoder{k}_skip`` / ``encoder{k}`` (pre- / post-pool), ``bottleneck``,
        ``decoder{k}_up`` / ``decoder{k}_concat`` / ``decoder{k}``, ``output``.
        """
        self._check_input(tuple(x_shape))
        record: list = []
        nnx.eval_shape(lambda model, x: model._forward(x, record), self,
                       jax.ShapeDtypeStruct(tuple(x_shape), jnp.float32))
        return record

    def trainable_filter(self):
        """Every parameter trains (the paper trains its U-Net from scratch)."""
        return nnx.Param
