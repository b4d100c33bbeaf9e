"""Read the weights of a Keras 2 ``.h5`` file (``model.save_weights`` layout) with h5py.

Layout of ``vgg19_weights_tf_dim_ordering_tf_kernels[_notop].h5`` (and of any Keras 2 weights file):
the root attribute ``layer_names`` lists every layer in order; group ``<layer>`` has the attribute
``weight_names`` (``[b"block1_conv1_W_1:0", b"block1_conv1_b_1:0"]`` in the 2016 VGG files,
``[b"block1_conv1/kernel:0", ...]`` in later ones) and each name is a dataset path inside that group.
Layers without weights (input, pooling, flatten) have an empty ``weight_names``. A whole-model file
(``model.save``) keeps the same structure under ``model_weights``.

h5py is an optional dependency (``pip install 'jaxmri[keras]'``); it is imported only when a Keras file
is read, and reading an HDF5 file executes nothing from it.
"""

from pathlib import Path

import numpy as np

from jaxmri.errors import WeightsError

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def read_keras_h5(path) -> dict[str, list[tuple[str, np.ndarray]]]:
    """``{layer_name: [(weight_name, array), ...]}`` for every layer that has weights, in file order.

    Arrays are float32 NumPy copies in Keras' layout (conv ``(kH, kW, in, out)``, dense ``(in, out)``).
    """
    path = Path(path)
    try:
        import h5py
    except ImportError:
        raise WeightsError(f"Reading the Keras file {path} needs h5py; install it with "
                           "`pip install 'jaxmri[keras]'` (or `pip install h5py`) and run the command again.") from None
    try:
        with h5py.File(path, "r") as f:
            root = f["model_weights"] if "model_weights" in f else f
            if "layer_names" not in root.attrs:
                raise WeightsError(f"{path} has no 'layer_names' attribute, so it is not a Keras 2 weights file; "
                                   "use vgg19_weights_tf_dim_ordering_tf_kernels.h5 (or _notop.h5).")
            layers = {}
            for layer in map(_text, root.attrs["layer_names"]):
                names = [_text(n) for n in root[layer].attrs.get("weight_names", [])]
                if names:
                    layers[layer] = [(name, np.asarray(root[layer][name], dtype=np.float32)) for name in names]
            return layers
    except WeightsError:
        raise
    except (OSError, KeyError, ValueError) as exc:
        raise WeightsError(f"{path} is not a readable Keras weights file ({exc}); download it again.") from None
