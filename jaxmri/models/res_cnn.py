"""ResCNN: our from-scratch recipe, not the paper's (``--arch rescnn``; issue "beat the paper, honestly").

SmallCNN puts 99.9% of its 12.85 M parameters in one 100,352 x 128 Linear that sees every pixel
position separately, so it memorises 157 training images. ResCNN keeps the parameters in convolutions
(weights shared over positions), normalises every layer with batch norm, and ends in global average
pooling, so where in the crop a tumor sits does not matter:

=========  ==========================================  ========================
stage      layers                                      output (224 input)
=========  ==========================================  ========================
stem       3x3 conv stride 2, BN, ReLU                 112 x 112 x w
1          2 residual blocks, w                        112 x 112 x w
2          2 residual blocks, 2w (first: stride 2)     56 x 56 x 2w
3          2 residual blocks, 4w (first: stride 2)     28 x 28 x 4w
4          2 residual blocks, 8w (first: stride 2)     14 x 14 x 8w
head       global average pool, dropout 0.3, Linear   num_classes
=========  ==========================================  ========================

A residual block is ResNet's "basic block": conv 3x3, BN, ReLU, conv 3x3, BN, plus the input (through
a 1x1 stride-2 conv + BN where the shape changes), ReLU. With ``width`` w = 16: 0.70 M parameters.
"""

import jax.numpy as jnp
from flax import nnx

from jaxmri.models.layers import normalize


class _Block(nnx.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(c_in, c_out, (3, 3), strides=stride, padding=1, use_bias=False, rngs=rngs)
        self.bn1 = nnx.BatchNorm(c_out, rngs=rngs)
        self.conv2 = nnx.Conv(c_out, c_out, (3, 3), padding=1, use_bias=False, rngs=rngs)
        self.bn2 = nnx.BatchNorm(c_out, rngs=rngs)
        if stride != 1 or c_in != c_out:
            self.skip = nnx.Sequential(nnx.Conv(c_in, c_out, (1, 1), strides=stride, use_bias=False, rngs=rngs),
                                       nnx.BatchNorm(c_out, rngs=rngs))
        else:
            self.skip = None

    def __call__(self, x):
        y = nnx.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return nnx.relu(y + (x if self.skip is None else self.skip(x)))


class ResCNN(nnx.Module):
    """A small residual CNN with batch norm and global average pooling (table in the module docstring).

    Args:
      num_classes: output width (2: no tumor / tumor).
      width: channels of the stem and stage 1 (stages double it); 16 by default.
      dropout: dropout rate before the last Linear.
      rngs: ``nnx.Rngs`` with ``params`` and ``dropout`` streams.

    Call: ``model(images)`` with float32 NHWC RGB images in [0, 1], ``(N, H, W, 3)``, H and W multiples of
    16 (any size: the pooling is global); normalized with ImageNet mean/std inside like SmallCNN.
    Returns logits ``(N, num_classes)``. Batch norm uses batch statistics after ``model.train()`` and
    the running averages after ``model.eval()``.

    Example:
      >>> model = ResCNN(2, rngs=nnx.Rngs(0))
      >>> model(jnp.zeros((2, 64, 64, 3))).shape
      (2, 2)
    """

    def __init__(self, num_classes: int = 2, *, width: int = 16, dropout: float = 0.3, rngs: nnx.Rngs):
        if num_classes < 2:
            raise ValueError(f"ResCNN: num_classes must be at least 2, got {num_classes}.")
        self.stem = nnx.Conv(3, width, (3, 3), strides=2, padding=1, use_bias=False, rngs=rngs)
        self.stem_bn = nnx.BatchNorm(width, rngs=rngs)
        blocks, c_in = [], width
        for stage in range(4):
            c_out = width * 2 ** stage
            for b in range(2):
                blocks.append(_Block(c_in, c_out, 2 if (stage and not b) else 1, rngs))
                c_in = c_out
        self.blocks = nnx.List(blocks)
        self.dropout = nnx.Dropout(dropout, rngs=rngs)
        self.head = nnx.Linear(c_in, num_classes, rngs=rngs)

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        if x.ndim != 4 or x.shape[-1] != 3 or x.shape[1] % 16 or x.shape[2] % 16:
            raise ValueError(f"ResCNN expects NHWC RGB images (N, H, W, 3) with H, W multiples of 16, got {x.shape}.")
        return self.from_last_conv(self.last_conv(x))

    def last_conv(self, x: jnp.ndarray) -> jnp.ndarray:
        """Stem and the four stages: (N, H, W, 3) -> (N, H/16, W/16, 8w), Grad-CAM's layer."""
        x = nnx.relu(self.stem_bn(self.stem(normalize(x))))
        for block in self.blocks:
            x = block(x)
        return x

    def from_last_conv(self, maps: jnp.ndarray) -> jnp.ndarray:
        """Global average pooling, dropout and the Linear head: maps -> logits (N, num_classes)."""
        return self.head(self.dropout(maps.mean(axis=(1, 2))))

    def trainable_filter(self):
        """Every parameter trains (batch norm's running statistics are ``nnx.BatchStat``, not parameters)."""
        return nnx.Param
