"""Read a PyTorch ``.pth`` state_dict with NumPy alone, never running code from the file.

``torch.load`` unpickles the file, and unpickling may call any function the file names: a ``__reduce__``
that returns ``(os.system, ("rm -rf ~",))`` runs that command. This reader uses a ``pickle.Unpickler``
whose ``find_class`` knows only the handful of globals a state_dict needs (``collections.OrderedDict``,
``torch._utils._rebuild_tensor[_v2]``, ``torch._utils._rebuild_parameter`` and the ``torch.*Storage``
types) and hands back harmless NumPy stand-ins for them; any other global stops the load before anything
is called. Tensors are then cut out of the raw storages with NumPy, bounds-checked.

``torch.save`` writes one of two containers:

* zip (torch >= 1.6): ``<name>/data.pkl`` holds the pickle; each storage is an uncompressed record
  ``<name>/data/<key>``; ``<name>/byteorder`` says ``little`` or ``big``.
* legacy (older torch, or ``_use_new_zipfile_serialization=False``): five pickles back to back (magic
  number, protocol version, system info, the object, the list of storage keys), then for each key an
  int64 element count and the raw little-endian bytes. torchvision's ``vgg19-dcbb9e9d.pth`` (2017) is a
  legacy file whose tensors use ``torch._utils._rebuild_tensor``, the 4-argument predecessor of
  ``_rebuild_tensor_v2``.

Storages are memory-mapped rather than read, so a 548 MB file is not copied before conversion.
"""

import collections
import pickle
import struct
import zipfile
from pathlib import Path

import ml_dtypes
import numpy as np

from jaxmri.errors import WeightsError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER
LEGACY_PROTOCOL = 1001  # torch.serialization.PROTOCOL_VERSION

# The torch.*Storage globals a state_dict may name, and the NumPy dtype of their elements.
STORAGE_DTYPES = {
    "FloatStorage": np.dtype(np.float32),
    "DoubleStorage": np.dtype(np.float64),
    "HalfStorage": np.dtype(np.float16),
    "BFloat16Storage": np.dtype(ml_dtypes.bfloat16),
    "LongStorage": np.dtype(np.int64),
    "IntStorage": np.dtype(np.int32),
    "ShortStorage": np.dtype(np.int16),
    "CharStorage": np.dtype(np.int8),
    "ByteStorage": np.dtype(np.uint8),
    "BoolStorage": np.dtype(np.bool_),
}


class _StorageType:
    """Stand-in for a ``torch.*Storage`` class: it only carries the element dtype."""

    def __init__(self, dtype: np.dtype):
        self.dtype = dtype


class _Storage:
    """A flat run of ``numel`` elements; ``root``/``offset`` describe legacy views into a shared storage."""

    def __init__(self, dtype: np.dtype, numel: int, root=None, offset: int = 0):
        self.dtype, self.numel, self.root, self.offset = dtype, numel, root, offset
        self.array = None  # 1-D NumPy array, filled in once the bytes are located

    def flat(self) -> np.ndarray:
        if self.root is not None:
            return self.root.flat()[self.offset : self.offset + self.numel]
        return self.array


class _TensorRef:
    """What ``_rebuild_tensor*`` returns: where the tensor lives; cut out by ``_materialize``."""

    def __init__(self, storage, storage_offset, size, stride):
        self.storage, self.storage_offset = storage, storage_offset
        self.size, self.stride = tuple(size), tuple(stride)


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, *_):
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *_):
    return data


class _StateDictUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals a state_dict needs; everything else is refused."""

    def __init__(self, file, path: Path, load_storage):
        super().__init__(file, encoding="utf-8")
        self.path, self.load_storage = path, load_storage

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch._utils" and name in ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_parameter"):
            return {"_rebuild_tensor": _rebuild_tensor, "_rebuild_tensor_v2": _rebuild_tensor_v2,
                    "_rebuild_parameter": _rebuild_parameter}[name]
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(STORAGE_DTYPES[name])
        raise WeightsError(
            f"{self.path} asks to run {module}.{name}, which a plain state_dict never needs, so nothing was "
            "loaded; only use weights from a source you trust and save them as a plain state_dict."
        )

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and pid and pid[0] in ("storage", b"storage")):
            raise WeightsError(f"{self.path} holds a reference {pid!r:.60} that is not a tensor storage; re-save it "
                               "as a plain state_dict.")
        if not isinstance(pid[1], _StorageType):
            raise WeightsError(f"{self.path} names a storage of unknown type {pid[1]!r:.60}; re-save it with "
                               "float32 tensors.")
        return self.load_storage(pid[1].dtype, *pid[2:])


def _materialize(ref: _TensorRef, key: str, path: Path) -> np.ndarray:
    """Cut one tensor out of its storage, refusing sizes/strides that reach outside it."""
    flat = ref.storage.flat()
    sizes, strides, start = ref.size, ref.stride, ref.storage_offset
    if 0 in sizes:
        return np.empty(sizes, flat.dtype)
    last = start + sum((n - 1) * s for n, s in zip(sizes, strides))
    bad = len(sizes) != len(strides) or start < 0 or min(sizes + strides, default=0) < 0
    if bad or last >= flat.size:
        raise WeightsError(f"{path}: tensor {key!r} (size {sizes}, stride {strides}, offset {start}) reaches outside "
                           f"its storage of {flat.size} elements, so the file is corrupt; download it again.")
    item = flat.dtype.itemsize
    return np.lib.stride_tricks.as_strided(flat[start:], sizes, [s * item for s in strides], writeable=False)


def _as_state_dict(obj, path: Path) -> dict[str, np.ndarray]:
    if not isinstance(obj, dict) or not all(isinstance(v, _TensorRef) for v in obj.values()):
        raise WeightsError(f"{path} holds a {type(obj).__name__}, not a state_dict (a mapping of names to tensors); "
                           "save `model.state_dict()` instead of the whole model or checkpoint.")
    return {str(k): _materialize(v, str(k), path) for k, v in obj.items()}


def _zip_member_offset(file, info: zipfile.ZipInfo) -> int:
    """Byte offset of a stored member's data: after its local header (whose extra field can differ from the
    central directory's, so the header itself is read)."""
    file.seek(info.header_offset)
    header = file.read(30)
    if header[:4] != b"PK\x03\x04":
        raise WeightsError(f"{file.name}: zip member {info.filename} has a broken header; download the file again.")
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    return info.header_offset + 30 + name_len + extra_len


def _read_zip(path: Path) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(path) as zf, open(path, "rb") as raw:
        pickles = [n for n in zf.namelist() if n == "data.pkl" or n.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise WeightsError(f"{path} is a zip file but not one written by torch.save (no single data.pkl); "
                               "check that it is a PyTorch .pth file.")
        prefix = pickles[0][: -len("data.pkl")]
        members = {i.filename: i for i in zf.infolist()}
        byteorder = zf.read(prefix + "byteorder").decode() if prefix + "byteorder" in members else "little"

        def load_storage(dtype, key, location, numel):
            info = members.get(f"{prefix}data/{key}")
            dtype = dtype.newbyteorder("<" if byteorder == "little" else ">")
            if info is None or info.file_size < numel * dtype.itemsize:
                raise WeightsError(f"{path} lacks the bytes of storage {key!r}, so it is truncated or corrupt; "
                                   "download it again.")
            if info.compress_type == zipfile.ZIP_STORED:  # what torch.save writes: map it, do not copy it
                data = np.memmap(path, np.uint8, "r", offset=_zip_member_offset(raw, info), shape=(info.file_size,))
            else:
                data = np.frombuffer(zf.read(info), np.uint8)
            storage = _Storage(dtype, numel)
            storage.array = data[: numel * dtype.itemsize].view(dtype)
            return storage

        with zf.open(pickles[0]) as f:
            obj = _StateDictUnpickler(f, path, load_storage).load()
        return _as_state_dict(obj, path)


def _read_legacy(path: Path) -> dict[str, np.ndarray]:
    storages: dict[str, _Storage] = {}

    def load_storage(dtype, root_key, location, numel, view=None):
        root = storages.setdefault(str(root_key), _Storage(dtype, numel))
        if view is None:
            return root
        view_key, offset, view_numel = view
        return storages.setdefault(str(view_key), _Storage(dtype, view_numel, root=root, offset=offset))

    size = path.stat().st_size
    with open(path, "rb") as f:
        header = _StateDictUnpickler(f, path, load_storage)
        if header.load() != LEGACY_MAGIC or header.load() != LEGACY_PROTOCOL:
            raise WeightsError(f"{path} is neither a zip nor a legacy torch.save file; check that it is a PyTorch "
                               ".pth file.")
        header.load()  # system info: endianness and C type sizes, which every supported writer shares
        obj = _StateDictUnpickler(f, path, load_storage).load()
        keys = _StateDictUnpickler(f, path, load_storage).load()
        for key in keys:
            storage = storages.get(str(key))
            (numel,) = struct.unpack("<q", f.read(8))
            start = f.tell()
            if storage is None or numel != storage.numel or start + numel * storage.dtype.itemsize > size:
                raise WeightsError(f"{path} ends early or lists storage {key!r} inconsistently, so it is corrupt; "
                                   "download it again.")
            storage.array = np.memmap(path, storage.dtype.newbyteorder("<"), "r", offset=start, shape=(numel,))
            f.seek(start + numel * storage.dtype.itemsize)
    if any(s.root is None and s.array is None for s in storages.values()):
        raise WeightsError(f"{path} references storages whose bytes are missing, so it is corrupt; download it again.")
    return _as_state_dict(obj, path)


def read_state_dict(path) -> tuple[dict[str, np.ndarray], str]:
    """Read a ``torch.save``-d state_dict without torch: returns ``({name: array}, "pth-zip" | "pth-legacy")``.

    Arrays keep the file's dtype and PyTorch's layout (conv ``(O, I, kH, kW)``, linear ``(out, in)``) and are
    read-only views of a memory map. Raises ``WeightsError`` (naming the file) for forbidden globals,
    non-state_dict contents, truncated files and out-of-bounds tensors.
    """
    path = Path(path)
    try:
        if zipfile.is_zipfile(path):
            return _read_zip(path), "pth-zip"
        return _read_legacy(path), "pth-legacy"
    except WeightsError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError,
            struct.error, zipfile.BadZipFile, UnicodeDecodeError) as exc:
        raise WeightsError(f"{path} is not a readable PyTorch state_dict ({type(exc).__name__}: {exc}); "
                           "download it again or re-save it with torch.save(model.state_dict(), path).") from None
