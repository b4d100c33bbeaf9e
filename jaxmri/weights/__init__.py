"""Pretrained ImageNet weights for ``VGG19Classifier`` (paper Section 2.2: VGG19, frozen, new 2-way head).

The weights cannot ship with the code (548 MB), and nothing here touches the network unless asked:
``python -m jaxmri.weights download vgg19`` fetches torchvision's ``vgg19-dcbb9e9d.pth``, checks its
hash and converts it; ``python -m jaxmri.weights convert PATH --out weights/vgg19_imagenet.safetensors``
converts a file you fetched yourself (torchvision ``.pth`` in zip or legacy format, or Keras
``vgg19_weights_tf_dim_ordering_tf_kernels[_notop].h5``). See ``weights/README.md``.

Conversion reads ``.pth`` files without torch and without executing code from them (``pth_reader``),
maps every name explicitly (``name_map``) and writes safetensors in Flax layout (``conversion``);
``load_vgg19`` builds the model from that file. Importing this package imports neither torch nor h5py.

Example:
  >>> model = load_vgg19(DEFAULT_WEIGHTS, num_classes=1000)        # doctest: +SKIP
  >>> logits = model(images)  # (N, H, W, 3) float32 RGB in [0, 1] -> (N, 1000), as torchvision's vgg19
"""

import warnings
from functools import partial
from pathlib import Path

import jax.numpy as jnp
from flax import nnx
from safetensors import SafetensorError, safe_open

from jaxmri.errors import WeightsError
from jaxmri.models.params import build_except, param_name
from jaxmri.models.vgg19 import VGG19Classifier
from jaxmri.weights.conversion import LAYOUT, convert
from jaxmri.weights.name_map import vgg19_config

__all__ = ["DEFAULT_WEIGHTS", "WeightsError", "convert", "load_vgg19", "read_weights"]

# Relative to the current directory, i.e. the project root when run as documented.
DEFAULT_WEIGHTS = Path("weights/vgg19_imagenet.safetensors")

HOW_TO_GET = ("run `python -m jaxmri.weights download vgg19` (needs internet), or download vgg19-dcbb9e9d.pth by hand "
              "and run `python -m jaxmri.weights convert vgg19-dcbb9e9d.pth --out {path}`")


def read_weights(path) -> tuple[dict, dict[str, str]]:
    """Read a converted file: ``({nnx path: float32 NumPy array}, metadata)``, every shape checked.

    Raises ``WeightsError`` when the file is missing, is not a safetensors file, or was not written by
    ``jaxmri.weights.convert`` (a ``.pth``/``.h5`` passed here is answered with the ``convert`` command).
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"Weights file {path} not found; {HOW_TO_GET.format(path=path)}.")
    if path.suffix != ".safetensors":
        raise WeightsError(f"{path} is not a converted weights file; run `python -m jaxmri.weights convert {path} "
                           f"--out {DEFAULT_WEIGHTS}` and pass the .safetensors file instead.")
    try:
        with safe_open(path, framework="numpy") as f:
            metadata = f.metadata() or {}
            arrays = {key: f.get_tensor(key) for key in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"{path} is not a readable safetensors file ({exc}); convert the weights again.") from None
    if metadata.get("layout") != LAYOUT:
        raise WeightsError(f"{path} was not written by `python -m jaxmri.weights convert` (layout "
                           f"{metadata.get('layout')!r}); convert the original .pth or .h5 file with it.")
    vgg19_config(arrays, path)
    return arrays, metadata


def load_vgg19(path, num_classes: int = 1000, *, rngs: nnx.Rngs | None = None, freeze_backbone: bool = True,
               seed: int = 0) -> VGG19Classifier:
    """``VGG19Classifier`` with the converted ImageNet weights of ``path`` (paper Section 2.2).

    Args:
      path: a ``.safetensors`` file written by ``convert`` (``DEFAULT_WEIGHTS`` by convention).
      num_classes: 1000 loads the ImageNet classifier too, so ``model(images)`` gives torchvision's
        ImageNet logits; any other value (2 in the paper) keeps a freshly initialised ``head`` of that width.
      rngs: initialises the parts not loaded (``head`` when num_classes != 1000) and the dropout stream;
        default ``nnx.Rngs(seed)``.
      freeze_backbone: passed to ``VGG19Classifier`` (True in the paper: only ``head`` trains).

    Widths and hidden size are read from the file, so channel-reduced test files load the same way.
    A Keras ``_notop`` file has convolutions only: num_classes=1000 then raises ``WeightsError``; otherwise
    ``fc1``/``fc2``/``head`` stay random (and frozen if ``freeze_backbone``), with a warning.

    The model comes back in eval mode (dropout off), so ``model(images)`` with float32 NHWC RGB images in
    [0, 1], ``(N, H, W, 3)``, H, W >= 32, gives the logits at once (it normalizes with ImageNet mean/std
    itself); call ``model.train()`` before training.
    """
    arrays, metadata = read_weights(path)
    widths, hidden, file_classes = vgg19_config(arrays, path)
    if file_classes is None:
        if num_classes == 1000:
            raise WeightsError(f"{path} was converted from a Keras _notop file and has no ImageNet classifier; convert "
                               "vgg19-dcbb9e9d.pth or the Keras file with the top, or pass num_classes=2.")
        warnings.warn(f"{path} has no classifier (Keras _notop): fc1, fc2 and head are randomly initialised"
                      + (" and fc1/fc2 are frozen" if freeze_backbone else "") + ".", stacklevel=2)
    elif num_classes == 1000 and file_classes != 1000:
        raise WeightsError(f"{path} has a {file_classes}-way head, not ImageNet's 1000; pass "
                           f"num_classes={file_classes} or convert the original ImageNet file.")
    wanted = {k for k in arrays if num_classes == 1000 or not k.startswith("head.")}
    constructor = partial(VGG19Classifier, num_classes, widths=widths, hidden=hidden or 4096,
                          freeze_backbone=freeze_backbone)
    # Built abstractly: only what the file does not hold (the new head, the dropout streams) is
    # initialised, then the file's arrays are put in place (no 548 MB of random weights first).
    model = build_except(constructor, rngs if rngs is not None else nnx.Rngs(seed), skip=wanted)
    flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
    missing = set(wanted)
    for model_path, variable in flat:
        key = param_name(model_path)
        if key in missing:
            if tuple(variable.shape) != arrays[key].shape:
                raise WeightsError(f"{path}: {key!r} has shape {arrays[key].shape} but the model expects "
                                   f"{tuple(variable.shape)}; convert the weights again.")
            variable.set_value(jnp.asarray(arrays.pop(key)))  # pop: one host copy at a time
            missing.discard(key)
    if missing:  # every array meant for the model must have found its parameter
        raise WeightsError(f"{path} has arrays with no VGG19Classifier parameter ({', '.join(sorted(missing))}); "
                           "convert it again.")
    nnx.update(model, nnx.from_flat_state(flat))
    model.eval()
    return model
