"""SmallCNN: the paper's from-scratch classifier (Section 2.2, Table 2).

=====  =========================  ==============  ==================
Layer  PyTorch (paper)            jaxmri          output (224 input)
=====  =========================  ==============  ==================
1      Conv2d(3, 16, 3, 1, 1)     ``conv1`` +ReLU 224 x 224 x 16
2      MaxPool2d(2, 2)            (with layer 1)  112 x 112 x 16
3      Conv2d(16, 32, 3, 1, 1)    ``conv2`` +ReLU 112 x 112 x 32
4      MaxPool2d(2, 2)            max_pool_2x2    56 x 56 x 32
5      Linear(32*56*56, 128)      ``fc1`` +ReLU   128
6      Linear(128, 2)             ``fc2``         2 (logits)
=====  =========================  ==============  ==================

12,850,530 parameters at 224 x 224 with 2 classes (99.9% of them in ``fc1``).

Layers 1-2 run as one function, ``conv_pool.conv3x3_relu_max_pool_2x2``: the same arithmetic, arranged so
that XLA's CPU backend does not run a 3-input-channel convolution (its slowest shape; see there).
"""

import jax.numpy as jnp
from flax import nnx

from jaxmri.models.conv_pool import conv3x3_relu_max_pool_2x2
from jaxmri.models.layers import max_pool_2x2, normalize


class SmallCNN(nnx.Module):
    """Two conv + two linear layers, exactly as the paper's Table 2.

    Args:
      num_classes: width of the output layer (2 in the paper: no tumor / tumor).
      image_size: side of the square input; must be divisible by 4 (224 in the paper). It fixes
        ``fc1``'s input size, ``32 * (image_size // 4) ** 2``.
      rngs: ``nnx.Rngs`` with a ``params`` stream.

    Call: ``model(images)`` with float32 NHWC RGB images in [0, 1] of shape
    ``(N, image_size, image_size, 3)``; they are normalized with ImageNet mean/std inside (the paper's
    ``transforms.Normalize``). Returns float32 logits ``(N, num_classes)``.

    Example:
      >>> model = SmallCNN(num_classes=2, rngs=nnx.Rngs(0))
      >>> model(jnp.zeros((4, 224, 224, 3))).shape
      (4, 2)
    """

    def __init__(self, num_classes: int = 2, *, image_size: int = 224, rngs: nnx.Rngs):
        if image_size <= 0 or image_size % 4:
            raise ValueError(f"SmallCNN: image_size must be a positive multiple of 4, got {image_size}.")
        if num_classes < 2:
            raise ValueError(f"SmallCNN: num_classes must be at least 2, got {num_classes}.")
        self.image_size = image_size
        self.conv1 = nnx.Conv(3, 16, kernel_size=(3, 3), padding=1, rngs=rngs)
        self.conv2 = nnx.Conv(16, 32, kernel_size=(3, 3), padding=1, rngs=rngs)
        self.fc1 = nnx.Linear(32 * (image_size // 4) ** 2, 128, rngs=rngs)
        self.fc2 = nnx.Linear(128, num_classes, rngs=rngs)

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        if x.ndim != 4 or x.shape[1:] != (self.image_size, self.image_size, 3):
            raise ValueError(
                f"SmallCNN expects NHWC images of shape (N, {self.image_size}, {self.image_size}, 3), got {x.shape}."
            )
        return self.from_last_conv(self.last_conv(x))

    def last_conv(self, x: jnp.ndarray) -> jnp.ndarray:
        """Layers 1-3: the last convolution's ReLU map, (N, S, S, 3) -> (N, S/2, S/2, 32) (Grad-CAM's layer)."""
        x = normalize(x)
        x = conv3x3_relu_max_pool_2x2(x, self.conv1.kernel[...], self.conv1.bias[...])
        return nnx.relu(self.conv2(x))

    def from_last_conv(self, maps: jnp.ndarray) -> jnp.ndarray:
        """Layers 4-6: ``last_conv``'s maps -> logits (N, num_classes)."""
        x = max_pool_2x2(maps)
        x = x.reshape(x.shape[0], -1)
        x = nnx.relu(self.fc1(x))
        return self.fc2(x)

    def trainable_filter(self):
        """Every parameter trains (the paper trains SmallCNN from scratch)."""
        return nnx.Param
