"""Explicit maps from torchvision and Keras VGG19 weights to ``VGG19Classifier``'s nnx state paths.

Flax layout, keyed like ``nnx.state(model)`` paths joined with dots (see ``jaxmri/vgg19.py``):
``convs.{k}.kernel`` (3, 3, C_in, C_out) HWIO, ``convs.{k}.bias`` (C_out,), ``fc1|fc2|head.kernel`` (in, out),
``fc1|fc2|head.bias`` (out,). Every source key must be used and every shape is asserted, so a file from a
different network (``vgg19_bn``, VGG16, a Theano-ordered Keras file) fails loudly instead of loading
half-way.

torchvision (``torchvision.models.vgg19``):
  ``features.{i}.weight`` (O, I, 3, 3) -> ``convs.{k}.kernel`` transposed to (3, 3, I, O);
  ``classifier.{0,3,6}.weight`` (out, in) -> ``fc1|fc2|head.kernel`` (in, out). ``classifier.0`` also
  has its rows reordered: torch flattens the 7 x 7 x C map in NCHW order (index ``c*49 + h*7 + w``),
  ``VGG19Classifier`` in NHWC order (index ``(h*7 + w)*C + c``).

Keras (``keras.applications.VGG19``, the ``..._tf_dim_ordering_tf_kernels[_notop].h5`` files):
  ``block{b}_conv{j}`` kernel (3, 3, I, O) is already HWIO, and ``Flatten`` already runs in NHWC order, so
  ``fc1``/``fc2``/``predictions`` map unchanged. The Keras weights expect BGR images in 0-255 minus the
  Caffe means; ``fold_caffe_preprocessing`` moves that into ``convs.0`` so the converted model takes the same
  RGB [0, 1] input as the torchvision one.
"""

from collections.abc import Mapping

import numpy as np

from jaxmri.errors import WeightsError
from jaxmri.models.layers import IMAGENET_MEAN, IMAGENET_STD
from jaxmri.models.vgg19 import VGG19_BLOCKS

# Index of each Conv2d in torchvision's ``features`` Sequential: every conv is followed by a ReLU, every
# block by a MaxPool2d, which take up the indices in between.
TORCHVISION_CONVS = (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34)
TORCHVISION_LINEARS = {"fc1": "classifier.0", "fc2": "classifier.3", "head": "classifier.6"}
KERAS_CONVS = tuple(f"block{b + 1}_conv{j + 1}" for b, n in enumerate(VGG19_BLOCKS) for j in range(n))
KERAS_LINEARS = {"fc1": "fc1", "fc2": "fc2", "head": "predictions"}
# keras.applications.imagenet_utils.preprocess_input(mode="caffe"): BGR channel means on the 0-255 scale.
KERAS_BGR_MEAN = (103.939, 116.779, 123.68)

assert len(TORCHVISION_CONVS) == len(KERAS_CONVS) == sum(VGG19_BLOCKS)


class _Source:
    """The source arrays of one file; remembers which keys were taken so leftovers can be reported."""

    def __init__(self, arrays: Mapping[str, np.ndarray], path):
        self.arrays, self.path, self.used = arrays, path, set()

    def take(self, key: str, ndim: int, hint: str = "") -> np.ndarray:
        if key not in self.arrays:
            raise WeightsError(f"{self.path} has no {key!r}, so it is not a VGG19 in the expected layout{hint}.")
        array = np.asarray(self.arrays[key])
        if array.ndim != ndim:
            raise WeightsError(f"{self.path}: {key!r} has shape {array.shape}, expected {ndim} dimensions{hint}.")
        self.used.add(key)
        return array

    def check_all_used(self):
        unused = sorted(set(self.arrays) - self.used)
        if unused:
            raise WeightsError(f"{self.path} has keys that VGG19 does not use ({', '.join(unused)}), so it is a "
                               "different network (e.g. vgg19_bn or VGG16); convert plain VGG19 weights instead.")


def torch_flatten_to_nhwc(kernel: np.ndarray, channels: int, height: int = 7, width: int = 7) -> np.ndarray:
    """Reorder the rows of ``fc1``'s (in, out) kernel from torch's NCHW flatten order to NHWC order."""
    out = kernel.shape[1]
    return kernel.reshape(channels, height, width, out).transpose(1, 2, 0, 3).reshape(height * width * channels, out)


def torchvision_to_flax(state_dict: Mapping[str, np.ndarray], path) -> dict[str, np.ndarray]:
    """torchvision ``vgg19`` state_dict (PyTorch layout) -> Flax-layout float32 arrays keyed by nnx paths."""
    src = _Source(state_dict, path)
    out = {}
    for k, i in enumerate(TORCHVISION_CONVS):
        out[f"convs.{k}.kernel"] = src.take(f"features.{i}.weight", 4).transpose(2, 3, 1, 0)  # OIHW -> HWIO
        out[f"convs.{k}.bias"] = src.take(f"features.{i}.bias", 1)
    for name, layer in TORCHVISION_LINEARS.items():
        out[f"{name}.kernel"] = src.take(f"{layer}.weight", 2).T  # (out, in) -> (in, out)
        out[f"{name}.bias"] = src.take(f"{layer}.bias", 1)
    channels = out["convs.15.kernel"].shape[-1]
    if out["fc1.kernel"].shape[0] != channels * 49:
        raise WeightsError(f"{path}: classifier.0.weight takes {out['fc1.kernel'].shape[0]} inputs, expected "
                           f"{channels} x 7 x 7 = {channels * 49}; it is not a torchvision VGG19.")
    out["fc1.kernel"] = torch_flatten_to_nhwc(out["fc1.kernel"], channels)
    src.check_all_used()
    out = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}
    vgg19_config(out, path)
    return out


def fold_caffe_preprocessing(kernel: np.ndarray, bias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rewrite Keras' first conv so it takes torchvision-normalized RGB instead of Caffe-style BGR.

    ``VGG19Classifier`` feeds ``convs.0`` with ``z_c = (r_c - mean_c) / std_c`` (RGB, r in [0, 1]); Keras
    fed it ``x_{2-c} = 255 r_c - bgr_mean_{2-c}``. Since ``x_{2-c} = 255 std_c z_c + d_c`` with
    ``d_c = 255 mean_c - bgr_mean_{2-c}``, the conv on ``x`` equals a conv on ``z`` with kernel
    ``K[:, :, 2-c, :] * 255 std_c`` and bias ``b + sum K[:, :, 2-c, :] d_c``. This is exact away from the
    image border; on the one-pixel zero padding the two models differ by ``d`` = (-0.005, -0.50, -0.41)
    grey levels (0-255 scale) in R, G, B: less than one 8-bit grey level, because Keras' means are not
    exactly 255 x torchvision's.
    """
    std = np.asarray(IMAGENET_STD, np.float64)
    shift = 255.0 * np.asarray(IMAGENET_MEAN, np.float64) - np.asarray(KERAS_BGR_MEAN[::-1], np.float64)
    rgb = kernel[:, :, ::-1, :].astype(np.float64)  # input channels BGR -> RGB
    folded_kernel = rgb * (255.0 * std)[None, None, :, None]
    folded_bias = bias.astype(np.float64) + np.einsum("hwco,c->o", rgb, shift)
    return folded_kernel.astype(np.float32), folded_bias.astype(np.float32)


def keras_to_flax(layers: Mapping[str, list], path, fold_preprocessing: bool = True) -> dict[str, np.ndarray]:
    """Keras VGG19 weights ``{layer: [(weight_name, array), ...]}`` -> Flax-layout float32 arrays.

    A ``_notop`` file (no ``fc1``/``fc2``/``predictions``) gives the 32 conv arrays only.
    ``fold_preprocessing=False`` keeps Keras' BGR 0-255 input convention (used by tests to check the
    name map exactly, without the border effect described in ``fold_caffe_preprocessing``).
    """
    arrays = {}
    for layer, weights in layers.items():
        if len(weights) != 2:
            raise WeightsError(f"{path}: layer {layer!r} has {len(weights)} weights, expected a kernel and a bias, "
                               "so it is not a Keras VGG19 file.")
        for _, array in weights:
            # Tell kernel from bias by rank: the weight names differ between Keras versions
            # ("block1_conv1_W_1:0" in the 2016 files, "block1_conv1/kernel:0" later).
            arrays[f"{layer}/{'kernel' if np.ndim(array) > 1 else 'bias'}"] = array
    src = _Source(arrays, path)
    hint = " (Keras VGG19 kernels are (3, 3, in, out): use the _tf_dim_ordering_tf_kernels file)"
    out = {}
    for k, layer in enumerate(KERAS_CONVS):
        out[f"convs.{k}.kernel"] = src.take(f"{layer}/kernel", 4, hint)
        out[f"convs.{k}.bias"] = src.take(f"{layer}/bias", 1, hint)
    if fold_preprocessing:
        folded = fold_caffe_preprocessing(out["convs.0.kernel"], out["convs.0.bias"])
        out["convs.0.kernel"], out["convs.0.bias"] = folded
    if "fc1/kernel" in arrays:  # the full ("top") file; _notop stops after block5_pool
        for name, layer in KERAS_LINEARS.items():
            out[f"{name}.kernel"] = src.take(f"{layer}/kernel", 2)
            out[f"{name}.bias"] = src.take(f"{layer}/bias", 1)
    src.check_all_used()
    out = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}
    vgg19_config(out, path)
    return out


def vgg19_config(arrays: Mapping[str, np.ndarray], path) -> tuple[tuple[int, ...], int | None, int | None]:
    """Assert every shape of a Flax-layout VGG19 and return ``(widths, hidden, num_classes)``.

    ``hidden`` and ``num_classes`` are None for a convolutions-only (Keras ``_notop``) file. Raises
    ``WeightsError`` naming the first key that is missing or whose shape does not chain with the layer before.
    """

    def require(key, shape=None):
        if key not in arrays:
            raise WeightsError(f"{path} has no {key!r}; convert the original weights again with "
                               "`python -m jaxmri.weights convert`.")
        if shape is not None and tuple(arrays[key].shape) != tuple(shape):
            raise WeightsError(f"{path}: {key!r} has shape {tuple(arrays[key].shape)}, expected {tuple(shape)}.")
        return arrays[key].shape

    widths, c_in, k = [], 3, 0
    for n_convs in VGG19_BLOCKS:
        width = int(require(f"convs.{k}.kernel")[-1])  # every conv of a block has the block's width
        for _ in range(n_convs):
            require(f"convs.{k}.kernel", (3, 3, c_in, width))
            require(f"convs.{k}.bias", (width,))
            c_in, k = width, k + 1
        widths.append(width)
    expected = {f"convs.{i}.{p}" for i in range(k) for p in ("kernel", "bias")}
    hidden = num_classes = None
    if any(key.startswith(("fc1.", "fc2.", "head.")) for key in arrays):
        hidden = int(require("fc1.kernel")[-1])
        require("fc1.kernel", (c_in * 7 * 7, hidden))
        require("fc1.bias", (hidden,))
        require("fc2.kernel", (hidden, hidden))
        require("fc2.bias", (hidden,))
        num_classes = int(require("head.kernel")[-1])
        require("head.kernel", (hidden, num_classes))
        require("head.bias", (num_classes,))
        expected |= {f"{n}.{p}" for n in ("fc1", "fc2", "head") for p in ("kernel", "bias")}
    extra = sorted(set(arrays) - expected)
    if extra:
        raise WeightsError(f"{path} holds arrays that VGG19Classifier does not have ({', '.join(extra)}); "
                           "convert the original weights again with `python -m jaxmri.weights convert`.")
    return tuple(widths), hidden, num_classes
