"""VGG19Classifier: torchvision's VGG19 with a frozen backbone and a new 2-way head (Section 2.2).

Layout (torchvision ``vgg19``, configuration "E"; names in brackets are torchvision's state_dict keys):

===============  ===========================================  =====================
block            layers                                       output (224 input)
===============  ===========================================  =====================
1                ``convs[0:2]``  [features.0, .2]   64  +pool  112 x 112 x 64
2                ``convs[2:4]``  [features.5, .7]   128 +pool  56 x 56 x 128
3                ``convs[4:8]``  [features.10-16]   256 +pool  28 x 28 x 256
4                ``convs[8:12]`` [features.19-25]   512 +pool  14 x 14 x 512
5                ``convs[12:16]``[features.28-34]   512 +pool  7 x 7 x 512
avgpool          AdaptiveAvgPool2d((7, 7))                     7 x 7 x 512
classifier       ``fc1`` [classifier.0] 25088 -> 4096, ReLU, Dropout(0.5)
                 ``fc2`` [classifier.3] 4096 -> 4096, ReLU, Dropout(0.5)
head             ``head`` [classifier.6] 4096 -> num_classes (replaced, as the paper does)
===============  ===========================================  =====================

Every 3x3 conv has padding 1 and is followed by ReLU; each block's 2x2 max pool is taken with its last
conv (``winograd.conv3x3(..., pool=True)``). On CPU the convolutions with 128 or more input channels
(conv2_2 onward: 85% of the forward's FLOPs) run as Winograd F(2x2, 3x3) (``jaxmri.models.winograd``):
the same convolution with 2.25x fewer multiplications, equal to XLA's direct one up to float32 rounding
(frozen train step 1.4x faster on a 2-core CPU); while a frozen backbone trains, its transformed kernels
are computed once per epoch instead of in every step (``winograd_cache``). ``fc1`` flattens the
7 x 7 x 512 map in NHWC order (torchvision flattens NCHW; ``jaxmri.weights`` permutes the rows when
converting).
"""

import contextlib

import jax
import jax.numpy as jnp
from flax import nnx

from jaxmri.models.layers import adaptive_avg_pool, max_pool_2x2, normalize
from jaxmri.models.winograd import conv3x3, kernel_transform, winograd_pays

# Convolutions per block in VGG19 (configuration "E").
VGG19_BLOCKS = (2, 2, 4, 4, 4)
VGG19_WIDTHS = (64, 128, 256, 512, 512)


class WinogradKernels(nnx.Variable):
    """A fixed 3x3 kernel in the Winograd domain: the 16 (I, O) matrices of ``kernel_transform(kernel)``.

    Derived from a ``Param``, never trained and never saved: it exists only inside
    ``VGG19Classifier.winograd_cache``, so ``nnx.state(model)`` and checkpoints never see it."""


@jax.jit
def _transform_all(kernels: list[jnp.ndarray]) -> list[tuple[jnp.ndarray, ...]]:
    return [tuple(kernel_transform(kernel)) for kernel in kernels]


class VGG19Classifier(nnx.Module):
    """VGG19 in torchvision's layout, frozen except for the replaced last Linear (paper Section 2.2).

    Args:
      num_classes: output width of ``head`` (2 in the paper; 1000 to reproduce ImageNet logits).
      widths: channels of the five conv blocks; ``VGG19_WIDTHS`` is the real network, smaller values give
        the channel-reduced copies that tests and fixtures use.
      hidden: width of ``fc1``/``fc2`` (4096 in VGG19).
      freeze_backbone: when True (the paper), only ``head`` is trainable; see ``trainable_filter``.
      dropout: dropout rate in the classifier (0.5 in torchvision).
      winograd: on CPU, compute the convolutions with 128 or more input channels as Winograd F(2x2, 3x3)
        (``jaxmri.models.winograd``; same results up to float32 rounding). False: XLA's convolution
        everywhere. A plain attribute, so flipping it on a built model makes ``nnx.jit`` trace anew.
      rngs: ``nnx.Rngs`` with ``params`` and ``dropout`` streams.

    Call: ``model(images)`` with float32 NHWC RGB images in [0, 1], shape ``(N, H, W, 3)`` with H, W >= 32;
    they are normalized with ImageNet mean/std inside, as torchvision's weights expect. Returns logits
    ``(N, num_classes)``. Dropout is active after ``model.train()`` and off after ``model.eval()``.
    The random initialisation follows torchvision (He-normal fan-out convs, N(0, 0.01) linears, zero
    biases); ``jaxmri.weights.load_vgg19`` fills it with ImageNet weights.

    Example:
      >>> model = VGG19Classifier(2, widths=(4, 8, 8, 16, 16), hidden=32, rngs=nnx.Rngs(0))
      >>> model(jnp.zeros((2, 64, 64, 3))).shape
      (2, 2)
    """

    def __init__(
        self,
        num_classes: int = 2,
        *,
        widths: tuple[int, ...] = VGG19_WIDTHS,
        hidden: int = 4096,
        freeze_backbone: bool = True,
        dropout: float = 0.5,
        winograd: bool = True,
        rngs: nnx.Rngs,
    ):
        if len(widths) != len(VGG19_BLOCKS):
            raise ValueError(f"VGG19Classifier: widths needs {len(VGG19_BLOCKS)} entries (one per block), got {widths}.")
        if num_classes < 2:
            raise ValueError(f"VGG19Classifier: num_classes must be at least 2, got {num_classes}.")
        conv_init = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")
        linear_init = nnx.initializers.normal(0.01)
        convs, c_in = [], 3
        for n_convs, width in zip(VGG19_BLOCKS, widths):
            for _ in range(n_convs):
                convs.append(nnx.Conv(c_in, width, kernel_size=(3, 3), padding=1, kernel_init=conv_init, rngs=rngs))
                c_in = width
        self.convs = nnx.List(convs)
        self.fc1 = nnx.Linear(c_in * 7 * 7, hidden, kernel_init=linear_init, rngs=rngs)
        self.fc2 = nnx.Linear(hidden, hidden, kernel_init=linear_init, rngs=rngs)
        self.head = nnx.Linear(hidden, num_classes, kernel_init=linear_init, rngs=rngs)
        self.dropout1 = nnx.Dropout(dropout, rngs=rngs)
        self.dropout2 = nnx.Dropout(dropout, rngs=rngs)
        self.freeze_backbone = freeze_backbone
        self.winograd = winograd
        # One WinogradKernels (or None: transformed in the step) per conv while ``winograd_cache`` is active.
        self.winograd_kernels = nnx.data(None)

    @contextlib.contextmanager
    def winograd_cache(self, trainable=None):
        """While active, each Winograd convolution whose kernel does not train reads it transformed once,
        on entry, instead of transforming it on every call (13 kernels, about 140 MB written per train
        step of the full frozen model).

        Args:
          trainable: the filter of what the optimizer trains (``optimizer.wrt``); default
            ``trainable_filter()``. Kernels it selects are never cached: their gradient flows through
            the transform in the step, and an update inside the block would leave a copy stale.

        The classification loop enters it for each epoch (``training.classify.winograd_cache``). With the
        paper's frozen backbone every Winograd layer is cached; with ``freeze_backbone=False`` none is.
        A no-op when Winograd is off or the default backend is not the CPU (where ``conv3x3`` takes XLA's
        convolution). Changing a cached kernel inside the block (loading weights, say) is not supported.

            >>> with model.winograd_cache(optimizer.wrt):  # doctest: +SKIP
            ...     for batch in batches:
            ...         train_step(model, optimizer, batch)
        """
        previous = self.winograd_kernels
        if not (self.winograd and jax.default_backend() == "cpu"):
            yield
            return
        trained = {path for path, _ in nnx.to_flat_state(nnx.state(self, trainable or self.trainable_filter()))}
        fixed = [i for i, conv in enumerate(self.convs)
                 if winograd_pays(conv.kernel.shape) and ("convs", i, "kernel") not in trained]
        transformed = dict(zip(fixed, _transform_all([self.convs[i].kernel[...] for i in fixed])))
        self.winograd_kernels = nnx.List(
            [WinogradKernels(transformed[i]) if i in transformed else None for i in range(len(self.convs))])
        try:
            yield
        finally:
            self.winograd_kernels = previous

    def features(self, x: jnp.ndarray) -> jnp.ndarray:
        """The 16 convolutions and 5 pools: (N, H, W, 3) in [0, 1] -> (N, H/32, W/32, widths[-1])."""
        return max_pool_2x2(self.last_conv(x))

    def last_conv(self, x: jnp.ndarray) -> jnp.ndarray:
        """Blocks 1-5 without the last pool: the last conv block's ReLU map, (N, H/16, W/16, widths[-1])
        (Grad-CAM's layer)."""
        x = normalize(x)
        layer = 0
        for block, n_convs in enumerate(VGG19_BLOCKS):
            for k in range(n_convs):
                conv = self.convs[layer]
                # Blocks 1-4 end in a 2x2 max pool, computed with their last convolution (conv3x3's pool);
                # block 5's is in ``features``, after Grad-CAM's layer.
                pool = k == n_convs - 1 and block < len(VGG19_BLOCKS) - 1
                cached = None if self.winograd_kernels is None else self.winograd_kernels[layer]
                x = nnx.relu(conv3x3(x, conv.kernel[...], conv.bias[...], pool=pool, winograd=self.winograd,
                                     transformed=None if cached is None else cached.get_value()))
                layer += 1
        return x

    def from_last_conv(self, maps: jnp.ndarray) -> jnp.ndarray:
        """``last_conv``'s maps -> logits (N, num_classes): the last pool, the classifier and ``head``."""
        return self.head(self._classifier(max_pool_2x2(maps)))

    def embed(self, x: jnp.ndarray) -> jnp.ndarray:
        """Everything before ``head``: (N, H, W, 3) in [0, 1] -> (N, hidden) features.

        With a frozen backbone and dropout off (``model.eval()``) this is a fixed function of the image,
        so evaluation can compute it once per image and re-run only ``head`` each epoch.
        """
        if x.ndim != 4 or x.shape[-1] != 3 or min(x.shape[1:3]) < 32:
            raise ValueError(f"VGG19Classifier expects NHWC RGB images (N, H, W, 3) with H, W >= 32, got {x.shape}.")
        return self._classifier(self.features(x))

    def _classifier(self, features: jnp.ndarray) -> jnp.ndarray:
        x = adaptive_avg_pool(features, 7, 7)
        x = x.reshape(x.shape[0], -1)
        x = self.dropout1(nnx.relu(self.fc1(x)))
        return self.dropout2(nnx.relu(self.fc2(x)))

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        return self.head(self.embed(x))

    def trainable_filter(self):
        """``head`` only when the backbone is frozen (the paper), else every parameter.

        Pass it to ``nnx.Optimizer(..., wrt=...)`` and ``nnx.DiffState``: frozen parameters then get neither
        gradients nor optimizer state, so they stay bit-identical.
        """
        if self.freeze_backbone:
            return nnx.All(nnx.Param, nnx.PathContains("head"))
        return nnx.Param
