"""On-device data augmentation: the paper's training transform in jit-compiled JAX (Section 2.1).

The paper (PyTorch ``transforms``) resizes to 224, flips horizontally with p = 0.5, rotates with p = 0.5,
applies a Gaussian blur with kernel size 3, and normalizes; test images are only resized and normalized.
In jaxmri the resize happens once when the data are cached (``jaxmri.data.dataset``), normalization lives in
each model's ``__call__`` (so every caller feeds images in [0, 1]), and this module does the random
part. Every function takes an explicit ``jax.random`` key and is a pure function of it, so the same key
gives the same batch bit for bit.

Choices the paper leaves open, stated here:
- Rotation angle: uniform in [-``max_angle``, ``max_angle``] degrees (default 15), about the image
  centre, bilinear for images, nearest-neighbour for masks (so masks stay exactly binary), zero fill
  outside (torchvision's ``RandomRotation`` fill).
- Blur: always applied to images (never masks), sigma uniform in [0.1, 2.0] per image, reflect
  padding; both are torchvision's ``GaussianBlur(kernel_size=3)`` defaults.
"""

import jax
import jax.numpy as jnp

MAX_ANGLE = 15.0
BLUR_SIGMA = (0.1, 2.0)


def to_float(images: jnp.ndarray) -> jnp.ndarray:
    """uint8 images in [0, 255] -> float32 in [0, 1]; float input is returned as float32 unchanged."""
    if images.dtype == jnp.uint8:
        return images.astype(jnp.float32) / 255.0
    return images.astype(jnp.float32)


def _source_coords(h: int, w: int, angle_deg: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Inverse map of a rotation about the image centre: for every output pixel, where it came from."""
    theta = jnp.deg2rad(angle_deg)
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    yy, xx = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32), indexing="ij")
    cos, sin = jnp.cos(theta), jnp.sin(theta)
    src_x = cos * (xx - cx) - sin * (yy - cy) + cx
    src_y = sin * (xx - cx) + cos * (yy - cy) + cy
    return src_y, src_x


def _rotate(image: jnp.ndarray, angle_deg: jnp.ndarray, order: int, flip=False) -> jnp.ndarray:
    """Rotate one (H, W, C) image about its centre by ``angle_deg`` (counter-clockwise), zero fill.

    ``order=1`` is bilinear and ``order=0`` nearest-neighbour (halves round away from zero), exactly as
    ``jax.scipy.ndimage.map_coordinates(..., mode="constant")``. With ``flip`` true the image is first
    mirrored left-right; the mirror is applied to the integer column of each sample, which is exact
    and costs nothing.
    """
    h, w, c = image.shape
    # One materialized copy of the coordinates: left to itself XLA recomputes them separately for the
    # integer corner and for its weight, and a coordinate within rounding of an integer could then take
    # its corner from one rounding and its weight from the other (a one-pixel jump).
    src_y, src_x = jax.lax.optimization_barrier(_source_coords(h, w, angle_deg))
    if order == 0:
        corners = [(jax.lax.round(src_y), jax.lax.round(src_x), None)]
    else:
        y0, x0 = jnp.floor(src_y), jnp.floor(src_x)
        wy1, wx1 = src_y - y0, src_x - x0
        wy0, wx0 = 1 - wy1, 1 - wx1
        corners = [(y0, x0, wy0 * wx0), (y0, x0 + 1, wy0 * wx1), (y0 + 1, x0, wy1 * wx0), (y0 + 1, x0 + 1, wy1 * wx1)]
    # Each corner is a gather of single floats from the flat image (one index per pixel and channel):
    # on CPU this is several times faster than vmapping map_coordinates over the channels.
    flat = image.reshape(-1)
    channel = jnp.arange(c, dtype=jnp.int32)
    out = None
    for y, x, weight in corners:
        y, x = y.astype(jnp.int32), x.astype(jnp.int32)
        inside = ((y >= 0) & (y < h) & (x >= 0) & (x < w))[..., None]
        x = jnp.where(flip, w - 1 - x, x)
        index = jnp.where(inside, (y * w + x)[..., None] * c + channel, 0)
        value = jnp.where(inside, flat[index], 0.0)
        value = value if weight is None else weight[..., None] * value
        out = value if out is None else out + value
    return out


def _blur3(image: jnp.ndarray, sigma: jnp.ndarray) -> jnp.ndarray:
    """Separable 3x3 Gaussian blur of one (H, W, C) image with reflect padding."""
    taps = jnp.exp(-0.5 * (jnp.array([-1.0, 0.0, 1.0]) / sigma) ** 2)
    taps = taps / taps.sum()
    x = jnp.pad(image, ((1, 1), (0, 0), (0, 0)), mode="reflect")
    x = taps[0] * x[:-2] + taps[1] * x[1:-1] + taps[2] * x[2:]
    x = jnp.pad(x, ((0, 0), (1, 1), (0, 0)), mode="reflect")
    return taps[0] * x[:, :-2] + taps[1] * x[:, 1:-1] + taps[2] * x[:, 2:]


def _augment_one(key, image, mask, max_angle):
    k_flip, k_rot_p, k_angle, k_sigma = jax.random.split(key, 4)
    flip = jax.random.bernoulli(k_flip, 0.5)
    rotate = jax.random.bernoulli(k_rot_p, 0.5)
    angle = jnp.where(rotate, jax.random.uniform(k_angle, minval=-max_angle, maxval=max_angle), 0.0)
    # Materialize the rotated image: otherwise XLA fuses the four gathers and their weights into every
    # tap of the blur and recomputes them there (+350 ms per 32 x 224 x 224 x 3 train step on 2 CPU cores).
    image = jax.lax.optimization_barrier(_rotate(image, angle, order=1, flip=flip))
    mask = _rotate(mask, angle, order=0, flip=flip)
    sigma = jax.random.uniform(k_sigma, minval=BLUR_SIGMA[0], maxval=BLUR_SIGMA[1])
    image = jnp.clip(_blur3(image, sigma), 0.0, 1.0)
    return image, mask


def augment(key: jax.Array, images: jnp.ndarray, masks: jnp.ndarray | None = None, *, max_angle: float = MAX_ANGLE):
    """The paper's random training transform on a batch, one independent draw per image.

    Args:
      key: a ``jax.random`` key; the output is a deterministic function of it.
      images: (N, H, W, C) uint8 in [0, 255] or float in [0, 1].
      masks: optional (N, H, W, K) masks with values in {0, 1}; they get the same flip and rotation as
        their image (nearest-neighbour, so they stay exactly binary) and no blur.
      max_angle: rotation range in degrees.

    Returns:
      float32 images (N, H, W, C) in [0, 1], or ``(images, masks)`` when masks are given (masks as float32).
    """
    images = to_float(images)
    keys = jax.random.split(key, images.shape[0])
    if masks is None:
        dummy = jnp.zeros(images.shape[:3] + (1,), jnp.float32)
        out, _ = jax.vmap(_augment_one, in_axes=(0, 0, 0, None))(keys, images, dummy, max_angle)
    else:
        out = jax.vmap(_augment_one, in_axes=(0, 0, 0, None))(keys, images, masks.astype(jnp.float32), max_angle)
    # A model reads its input more than once (the first conv and that conv's weight gradient); without
    # the barrier XLA recomputes the blur inside each reader instead of reading one stored batch.
    return jax.lax.optimization_barrier(out)
