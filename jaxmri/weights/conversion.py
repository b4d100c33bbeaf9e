"""Convert a torchvision ``.pth`` or Keras ``.h5`` VGG19 file into ``VGG19Classifier``'s safetensors layout.

The output holds Flax-layout float32 arrays keyed by the model's nnx state paths (``convs.0.kernel``,
``fc1.kernel``, ``head.bias``, ...; see ``name_map``) and text metadata: which file it came from, that
file's SHA-256 and format, and the preprocessing the arrays now expect (always RGB in [0, 1] normalized
with ImageNet mean/std inside the model, as ``VGG19Classifier`` does).
"""

import hashlib
import os
import time
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from jaxmri.errors import WeightsError
from jaxmri.weights.keras_h5 import HDF5_SIGNATURE, read_keras_h5
from jaxmri.weights.name_map import keras_to_flax, torchvision_to_flax, vgg19_config
from jaxmri.weights.pth_reader import read_state_dict

# Written into every converted file; load_vgg19 refuses safetensors files without it.
LAYOUT = "jaxmri.VGG19Classifier/flax-nnx/1"
PREPROCESSING = "RGB float32 in [0, 1], normalized inside the model with ImageNet mean/std (torchvision's)"

# The released files, and the digest each publisher gives for it. torchvision names a file after the
# first 8 hex digits of its SHA-256 (torch.hub checks that prefix); keras.utils.get_file checks an MD5.
KNOWN_FILES = {
    "vgg19-dcbb9e9d.pth": ("sha256", "dcbb9e9d"),
    "vgg19_weights_tf_dim_ordering_tf_kernels.h5": ("md5", "cbe5617147190e668d6c5d5026f83318"),
    "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5": ("md5", "253f8cb515780f3b799900260a226db6"),
}


def file_digests(path, chunk: int = 1 << 22) -> dict[str, str]:
    """``{"sha256": hex, "md5": hex}`` of a file, read in 4 MiB chunks."""
    sha256, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            sha256.update(block)
            md5.update(block)
    return {"sha256": sha256.hexdigest(), "md5": md5.hexdigest()}


def matches_release(path, digests: dict[str, str]) -> bool | None:
    """True/False when ``path`` carries a released file's name and its digest does/does not match; else None."""
    known = KNOWN_FILES.get(Path(path).name)
    if known is None:
        return None
    algorithm, expected = known
    return digests[algorithm].startswith(expected)


def detect_format(path) -> str:
    """``"pth-zip"``, ``"pth-legacy"`` or ``"keras-h5"``, from the file's first bytes (not its name)."""
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(b"PK\x03\x04"):
        return "pth-zip"
    if head == HDF5_SIGNATURE:
        return "keras-h5"
    if head.startswith(b"\x80"):  # a pickle protocol marker: torch's legacy format starts with pickles
        return "pth-legacy"
    raise WeightsError(f"{path} is neither a PyTorch .pth nor a Keras .h5 file; pass vgg19-dcbb9e9d.pth or "
                       "vgg19_weights_tf_dim_ordering_tf_kernels.h5 (or its _notop version).")


def convert(src_path, out_path) -> dict:
    """Convert a VGG19 weights file and write ``out_path`` (safetensors, Flax layout); return a report.

    ``src_path``: torchvision ``vgg19`` state_dict (``.pth``, zip or legacy format) or a Keras VGG19
    ``.h5`` (with or without the classifier: ``_notop`` files give conv weights only). The format is found
    from the file's contents. Keras' BGR 0-255 preprocessing is folded into the first conv (see
    ``name_map.fold_caffe_preprocessing``), so every output takes the same RGB [0, 1] input.

    Returns ``{"source", "out", "format", "sha256", "release_match", "source_keys", "keys", "parameters",
    "widths", "hidden", "num_classes", "bytes", "seconds"}``; ``release_match`` is True/False when the
    source has a released file's name (see ``KNOWN_FILES``) and None otherwise.
    Raises ``WeightsError`` (one sentence naming the file) for anything it cannot convert.
    """
    start = time.perf_counter()
    src, out = Path(src_path), Path(out_path)
    if src.is_dir():
        raise WeightsError(f"{src} is a folder; pass the path of a downloaded vgg19-dcbb9e9d.pth or Keras VGG19 .h5 "
                           "file inside it.")
    if not src.is_file():
        raise WeightsError(f"{src} does not exist; pass the path of a downloaded vgg19-dcbb9e9d.pth or Keras "
                           "VGG19 .h5 file.")
    if out.suffix != ".safetensors":
        raise WeightsError(f"--out {out} must end in .safetensors (e.g. weights/vgg19_imagenet.safetensors).")
    fmt = detect_format(src)
    if fmt == "keras-h5":
        layers = read_keras_h5(src)
        arrays = keras_to_flax(layers, src)
        source_keys = sum(len(w) for w in layers.values())
        fmt = "keras-h5" if "fc1.kernel" in arrays else "keras-h5-notop"
    else:
        state_dict, fmt = read_state_dict(src)
        arrays = torchvision_to_flax(state_dict, src)
        source_keys = len(state_dict)
    widths, hidden, num_classes = vgg19_config(arrays, src)
    digests = file_digests(src)
    metadata = {
        "layout": LAYOUT,
        "preprocessing": PREPROCESSING,
        "source_file": src.name,
        "source_sha256": digests["sha256"],
        "source_format": fmt,
        "num_classes": str(num_classes or 0),  # 0: no classifier (Keras _notop)
    }
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # a file where a folder of the path should be
        raise WeightsError(f"--out {out}: cannot create its folder {out.parent} ({err.strerror}); choose another "
                           "--out.") from None
    if out.is_dir():
        raise WeightsError(f"--out {out} is a folder; pass a file name ending in .safetensors.")
    partial = out.with_name(out.name + ".partial")  # never leave a half-written file under the real name
    save_file(arrays, partial, metadata=metadata)
    umask = os.umask(0)  # safetensors creates files as 0600: give the output the user's usual permissions
    os.umask(umask)
    os.chmod(partial, 0o666 & ~umask)
    os.replace(partial, out)
    return {
        "source": str(src), "out": str(out), "format": fmt, "sha256": digests["sha256"],
        "release_match": matches_release(src, digests), "source_keys": source_keys, "keys": len(arrays),
        "parameters": int(sum(np.size(a) for a in arrays.values())), "widths": widths, "hidden": hidden,
        "num_classes": num_classes, "bytes": out.stat().st_size, "seconds": round(time.perf_counter() - start, 3),
    }
