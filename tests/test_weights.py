"""jaxmri.weights: a .pth reader that runs no code, explicit name maps, and logits equal to the originals'.

The fixtures were written once by tests/fixtures/make_vgg_fixtures.py (with torch and h5py): a
channel-reduced VGG19 (widths 4-16, hidden 8, 1000 classes) in torchvision's key layout, saved in the
zip and the legacy torch.save formats, another one in the layout of Keras' release files, and reference
logits from torch (float64) and from an independent NumPy implementation of Keras' VGG19. These tests
need neither torch nor Keras; the Keras ones skip without h5py. Errors are relative to the largest
reference logit: max |ours - reference| / max |reference|.
"""

import os
import pickle
import shutil
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import save_file

import jaxmri.models.vgg19
from jaxmri.models.vgg19 import VGG19Classifier
from jaxmri.weights import WeightsError, convert, load_vgg19, read_weights
from jaxmri.weights import download as download_module
from jaxmri.weights.__main__ import main
from jaxmri.weights.name_map import KERAS_BGR_MEAN, torch_flatten_to_nhwc, torchvision_to_flax
from jaxmri.weights.pth_reader import LEGACY_MAGIC, LEGACY_PROTOCOL, read_state_dict

FIXTURES = Path(__file__).parent / "fixtures"
TORCH_ZIP = FIXTURES / "vgg19_tiny_torchvision.pth"
TORCH_LEGACY = FIXTURES / "vgg19_tiny_torchvision_legacy.pth"
KERAS_TOP = FIXTURES / "vgg19_tiny_keras.h5"
KERAS_NOTOP = FIXTURES / "vgg19_tiny_keras_notop.h5"
MAX_RELATIVE_ERROR = 1e-4  # the acceptance bound


def relative_error(ours, reference) -> float:
    return float(np.abs(np.asarray(ours, np.float64) - reference).max() / np.abs(reference).max())


@pytest.fixture(scope="module")
def reference():
    return dict(np.load(FIXTURES / "vgg19_tiny_reference.npz"))


@pytest.fixture(scope="module")
def images(reference):
    return reference["images"].astype(np.float32) / 255.0


@nnx.jit
def forward(model, images):
    """One compiled forward pass: much faster on CPU than running the layers op by op."""
    return model(images)


def converted(src: Path, tmp_path: Path) -> Path:
    out = tmp_path / (src.stem + ".safetensors")
    convert(src, out)
    return out


def test_fixtures_stay_small():
    total = sum(p.stat().st_size for p in FIXTURES.glob("vgg19_tiny_*"))
    assert 0 < total < 1_000_000


def test_import_pulls_in_neither_torch_nor_h5py():
    code = "import sys, jaxmri.weights; print(sorted({'torch', 'h5py'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


# --- torchvision layout -------------------------------------------------------------------------------


@pytest.mark.parametrize("src, fmt", [(TORCH_ZIP, "pth-zip"), (TORCH_LEGACY, "pth-legacy")])
def test_torchvision_fixture_gives_torch_logits(src, fmt, reference, images, tmp_path):
    out = tmp_path / "vgg19.safetensors"
    report = convert(src, out)
    assert report["format"] == fmt and report["source_keys"] == report["keys"] == 38
    assert report["widths"] == (4, 8, 8, 16, 16) and report["hidden"] == 8 and report["num_classes"] == 1000
    model = load_vgg19(out, num_classes=1000)
    error_224 = relative_error(forward(model, images), reference["torch_logits_224"])
    error_crop = relative_error(forward(model, images[:, :64, :96]), reference["torch_logits_64x96"])
    print(f"{fmt}: max relative error {error_224:.2e} (224x224), {error_crop:.2e} (64x96)")
    assert error_224 < MAX_RELATIVE_ERROR and error_crop < MAX_RELATIVE_ERROR


def test_zip_and_legacy_files_convert_to_identical_arrays(tmp_path):
    zip_arrays, zip_meta = read_weights(converted(TORCH_ZIP, tmp_path))
    legacy_arrays, legacy_meta = read_weights(converted(TORCH_LEGACY, tmp_path))
    assert zip_arrays.keys() == legacy_arrays.keys()
    assert all(np.array_equal(zip_arrays[k], legacy_arrays[k]) for k in zip_arrays)
    assert (zip_meta["source_format"], legacy_meta["source_format"]) == ("pth-zip", "pth-legacy")
    assert zip_meta["source_file"] == TORCH_ZIP.name and len(zip_meta["source_sha256"]) == 64


def test_without_the_flatten_fix_the_logits_are_wrong(reference, images, tmp_path):
    """Negative control: the equivalence test above does detect a missing NCHW -> NHWC row permutation."""
    model = load_vgg19(converted(TORCH_ZIP, tmp_path), num_classes=1000)
    state_dict, _ = read_state_dict(TORCH_ZIP)
    model.fc1.kernel.set_value(jnp.asarray(np.ascontiguousarray(state_dict["classifier.0.weight"].T)))
    assert relative_error(forward(model, images), reference["torch_logits_224"]) > 1e-2


def test_flatten_fix_maps_each_nchw_row_to_its_nhwc_row():
    channels, out = 3, 2
    kernel = np.arange(channels * 49 * out).reshape(channels * 49, out)  # rows in torch's (c, h, w) order
    fixed = torch_flatten_to_nhwc(kernel, channels)
    for h, w, c in [(0, 0, 0), (0, 1, 2), (6, 5, 1), (3, 6, 0)]:
        np.testing.assert_array_equal(fixed[(h * 7 + w) * channels + c], kernel[c * 49 + h * 7 + w])


def test_unused_missing_and_misshaped_keys_are_named():
    state_dict, _ = read_state_dict(TORCH_ZIP)
    extra = dict(state_dict, **{"features.1.running_mean": np.zeros(4, np.float32)})  # e.g. a vgg19_bn file
    with pytest.raises(WeightsError, match=r"features\.1\.running_mean"):
        torchvision_to_flax(extra, "extra.pth")
    missing = {k: v for k, v in state_dict.items() if k != "classifier.6.bias"}
    with pytest.raises(WeightsError, match=r"missing\.pth has no 'classifier\.6\.bias'"):
        torchvision_to_flax(missing, "missing.pth")
    wrong = dict(state_dict, **{"features.2.weight": np.zeros((4, 5, 3, 3), np.float32)})
    with pytest.raises(WeightsError, match=r"convs\.1\.kernel.*\(3, 3, 5, 4\).*\(3, 3, 4, 4\)"):
        torchvision_to_flax(wrong, "wrong.pth")


# --- the .pth reader: old tensor format, bounds, and code execution -------------------------------------


class _StorageTypeStandIn:
    """Pickled by reference and renamed to ``torch.FloatStorage`` in the bytes (see ``_legacy_file``)."""


def _rebuild_tensor_standin(*args):
    """Renamed to ``torch._utils._rebuild_tensor``, the 4-argument form of torch < 0.4 files (torchvision 2017)."""


class _StorageView:
    def __init__(self, root_key, root_numel, view=None):
        self.root_key, self.root_numel, self.view = root_key, root_numel, view


class _OldTensor:
    def __init__(self, storage, offset, size, stride):
        self.args = (storage, offset, size, stride)

    def __reduce__(self):
        return _rebuild_tensor_standin, self.args


class _LegacyPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, _StorageView):  # torch < 1.6: (typename, type, root key, location, numel, view)
            return ("storage", _StorageTypeStandIn, obj.root_key, "cpu", obj.root_numel, obj.view)
        return None


def _legacy_file(path: Path, payload: bytes, storages: dict[str, np.ndarray]) -> Path:
    """A torch < 1.6 container: magic, protocol, system info, object, storage keys, then each storage's bytes."""
    with open(path, "wb") as f:
        f.write(pickle.dumps(LEGACY_MAGIC, protocol=2) + pickle.dumps(LEGACY_PROTOCOL, protocol=2))
        f.write(pickle.dumps({"protocol_version": 1001, "little_endian": True, "type_sizes": {"int": 4}}, protocol=2))
        f.write(payload + pickle.dumps(list(storages), protocol=2))
        for array in storages.values():
            f.write(struct.pack("<q", array.size) + array.astype("<f4").tobytes())
    return path


def _old_format_pickle(tensors: dict) -> bytes:
    buffer = __import__("io").BytesIO()
    _LegacyPickler(buffer, protocol=2).dump(tensors)
    module = _rebuild_tensor_standin.__module__.encode()
    return (buffer.getvalue()
            .replace(b"c" + module + b"\n_rebuild_tensor_standin\n", b"ctorch._utils\n_rebuild_tensor\n")
            .replace(b"c" + module + b"\n_StorageTypeStandIn\n", b"ctorch\nFloatStorage\n"))


def test_old_rebuild_tensor_format_with_shared_storage_views_and_strides(tmp_path):
    root = np.arange(20, dtype=np.float32)
    view = _StorageView("r", 20, view=("v", 2, 12))  # a view of root[2:14], as torch < 1.6 stored slices
    payload = _old_format_pickle({
        "a": _OldTensor(view, 0, (3, 4), (4, 1)),
        "b": _OldTensor(_StorageView("r", 20), 1, (4, 3), (1, 4)),  # a transposed (non-contiguous) tensor
        "c": _OldTensor(_StorageView("r", 20), 5, (5,), (3,)),
    })
    assert b"torch._utils\n_rebuild_tensor\n" in payload and b"torch\nFloatStorage\n" in payload
    state_dict, fmt = read_state_dict(_legacy_file(tmp_path / "old.pth", payload, {"r": root}))
    assert fmt == "pth-legacy"
    np.testing.assert_array_equal(state_dict["a"], root[2:14].reshape(3, 4))
    expected_b = np.array([[root[1 + i + 4 * j] for j in range(3)] for i in range(4)])
    np.testing.assert_array_equal(state_dict["b"], expected_b)
    np.testing.assert_array_equal(state_dict["c"], root[5:18:3])


def test_tensor_reaching_outside_its_storage_is_refused(tmp_path):
    payload = _old_format_pickle({"x": _OldTensor(_StorageView("r", 20), 5, (5,), (4,))})  # last index 21 >= 20
    path = _legacy_file(tmp_path / "bad.pth", payload, {"r": np.zeros(20, np.float32)})
    with pytest.raises(WeightsError, match=r"bad\.pth: tensor 'x'.*outside its storage"):
        read_state_dict(path)


class _Exploit:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


@pytest.mark.parametrize("container", ["zip", "legacy"])
def test_pickle_that_would_run_a_shell_command_is_refused(container, tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"features.0.weight": _Exploit(f"touch {marker}")}, protocol=2)
    pickle.loads(payload)  # the payload is live: plain unpickling runs the command
    assert marker.exists()
    marker.unlink()
    path = tmp_path / f"evil_{container}.pth"
    if container == "zip":
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("archive/data.pkl", payload)
            zf.writestr("archive/version", "3\n")
    else:
        _legacy_file(path, payload, {})
    with pytest.raises(WeightsError) as error:
        convert(path, tmp_path / "out.safetensors")
    assert not marker.exists()
    assert str(path) in str(error.value) and "system" in str(error.value)
    assert not (tmp_path / "out.safetensors").exists()


# --- load_vgg19 ------------------------------------------------------------------------------------------


def test_two_class_model_keeps_the_backbone_and_gets_a_fresh_trainable_head(tmp_path):
    path = converted(TORCH_ZIP, tmp_path)
    arrays, _ = read_weights(path)
    model = load_vgg19(path, num_classes=2, seed=0)
    for key in ("convs.0.kernel", "convs.15.bias", "fc1.kernel", "fc2.bias"):
        layer, *index, name = key.split(".")
        module = getattr(model, layer)[int(index[0])] if index else getattr(model, layer)
        np.testing.assert_array_equal(getattr(module, name)[...], arrays[key])
    assert model.head.kernel.shape == (8, 2)
    fresh = VGG19Classifier(2, widths=(4, 8, 8, 16, 16), hidden=8, rngs=nnx.Rngs(0))
    np.testing.assert_array_equal(model.head.kernel[...], fresh.head.kernel[...])  # head initialised from Rngs(seed)
    other = load_vgg19(path, num_classes=2, rngs=nnx.Rngs(1))
    assert not np.array_equal(other.head.kernel[...], model.head.kernel[...])
    trainable = nnx.state(model, model.trainable_filter())
    assert {p[0] for p, _ in nnx.to_flat_state(trainable)} == {"head"}
    assert load_vgg19(path, num_classes=2, freeze_backbone=False).trainable_filter() is nnx.Param


def test_load_errors_name_the_file_and_the_fix(tmp_path):
    missing = tmp_path / "weights" / "vgg19_imagenet.safetensors"
    with pytest.raises(WeightsError) as error:
        load_vgg19(missing)
    message = str(error.value)
    assert str(missing) in message and "python -m jaxmri.weights download vgg19" in message and "convert" in message
    with pytest.raises(WeightsError, match=r"vgg19_tiny_torchvision\.pth is not a converted weights file.*convert"):
        load_vgg19(TORCH_ZIP)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"features.0.weight": np.zeros((4, 3, 3, 3), np.float32)}, foreign)
    with pytest.raises(WeightsError, match=r"foreign\.safetensors was not written by"):
        load_vgg19(foreign)


# --- Keras layout (needs h5py) ---------------------------------------------------------------------------


@pytest.fixture
def h5py():
    return pytest.importorskip("h5py", reason="h5py is needed for Keras .h5 files: pip install 'jaxmri[keras]'")


def test_keras_fixture_gives_keras_logits(h5py, reference, images, tmp_path):
    """The public path: Keras' BGR 0-255 preprocessing is folded into convs.0; input is RGB in [0, 1]."""
    path = tmp_path / "keras.safetensors"
    assert convert(KERAS_TOP, path)["format"] == "keras-h5"
    error = relative_error(forward(load_vgg19(path, num_classes=1000), images), reference["keras_logits"])
    print(f"keras-h5 (preprocessing folded): max relative error {error:.2e}")
    assert error < MAX_RELATIVE_ERROR


def test_keras_name_map_is_exact_with_keras_preprocessing(h5py, reference, images, monkeypatch, tmp_path):
    """Without the fold (and so without its border effect) the mapped weights reproduce Keras exactly."""
    from jaxmri.weights.keras_h5 import read_keras_h5
    from jaxmri.weights.name_map import keras_to_flax

    arrays = keras_to_flax(read_keras_h5(KERAS_TOP), KERAS_TOP, fold_preprocessing=False)
    model = VGG19Classifier(1000, widths=(4, 8, 8, 16, 16), hidden=8, rngs=nnx.Rngs(0))
    for key, array in arrays.items():
        layer, *index, name = key.split(".")
        module = getattr(model, layer)[int(index[0])] if index else getattr(model, layer)
        getattr(module, name).set_value(jnp.asarray(array))
    model.eval()
    keras_preprocess = lambda x: x[..., ::-1] * 255.0 - jnp.asarray(KERAS_BGR_MEAN, x.dtype)  # noqa: E731
    monkeypatch.setattr(jaxmri.models.vgg19, "normalize", keras_preprocess)
    error = relative_error(model(jnp.asarray(images)), reference["keras_logits"])  # eager: jit would cache the patch
    print(f"keras-h5 (Keras preprocessing, no fold): max relative error {error:.2e}")
    assert error < 1e-5


def test_keras_notop_has_convs_only(h5py, tmp_path):
    top, notop = tmp_path / "top.safetensors", tmp_path / "notop.safetensors"
    convert(KERAS_TOP, top)
    assert convert(KERAS_NOTOP, notop)["format"] == "keras-h5-notop"
    with pytest.raises(WeightsError, match=r"notop\.safetensors .*_notop file.*num_classes=2"):
        load_vgg19(notop, num_classes=1000)
    with pytest.warns(UserWarning, match="fc1, fc2 and head are randomly initialised"):
        model = load_vgg19(notop, num_classes=2)
    top_arrays, _ = read_weights(top)
    np.testing.assert_array_equal(model.convs[0].kernel[...], top_arrays["convs.0.kernel"])
    np.testing.assert_array_equal(model.convs[15].bias[...], top_arrays["convs.15.bias"])
    assert model.fc1.kernel.shape == (16 * 49, 4096)  # a notop file does not fix hidden: VGG19's 4096


def test_keras2_weight_names_convert_identically(h5py, tmp_path):
    """Later Keras 2 files name weights "block1_conv1/kernel:0" (a nested dataset), not "block1_conv1_W_1:0"."""
    renamed = tmp_path / "keras2.h5"
    shutil.copy(KERAS_TOP, renamed)
    with h5py.File(renamed, "r+") as f:
        for layer in f.attrs["layer_names"]:
            group = f[layer]
            names = [n.decode() for n in group.attrs["weight_names"]]
            new_names = [f"{layer.decode()}/{'kernel' if '_W_' in n else 'bias'}:0" for n in names]
            for old, new in zip(names, new_names):
                group[new] = group[old][...]
                del group[old]
            group.attrs["weight_names"] = np.array([n.encode() for n in new_names] or [], dtype="S")
    a, _ = read_weights(converted(KERAS_TOP, tmp_path))
    b, _ = read_weights(converted(renamed, tmp_path))
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


# --- command line ----------------------------------------------------------------------------------------


def test_cli_convert_writes_the_file(tmp_path, capsys):
    out = tmp_path / "w" / "vgg19_imagenet.safetensors"
    assert main(["convert", str(TORCH_LEGACY), "--out", str(out)]) == 0
    assert out.is_file() and "pth-legacy" in capsys.readouterr().out
    assert main(["convert", str(tmp_path / "nope.pth"), "--out", str(out)]) == 2


def test_cli_help_explains_both_commands(capsys):
    for command in ("download", "convert"):
        with pytest.raises(SystemExit) as exit_:
            main([command, "--help"])
        assert exit_.value.code == 0
    assert "sha-256" in capsys.readouterr().out.lower()


def test_download_offline_prints_one_sentence_and_exits_2(tmp_path):
    """A real network failure (nothing listens on port 9), in a subprocess, as a user would see it."""
    command = [sys.executable, "-m", "jaxmri.weights", "download", "vgg19",
               "--url", "http://127.0.0.1:9/vgg19-dcbb9e9d.pth",
               "--cache-dir", str(tmp_path), "--out", str(tmp_path / "w.safetensors")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "download that file by hand" in result.stderr and "python -m jaxmri.weights convert" in result.stderr
    assert not list(tmp_path.iterdir())


def test_download_checks_the_hash_then_converts(tmp_path, monkeypatch, capsys):
    url = TORCH_ZIP.resolve().as_uri()  # file:// stands in for download.pytorch.org
    out = tmp_path / "w.safetensors"
    monkeypatch.setattr(download_module, "VGG19_SHA256_PREFIX", "00000000")
    assert main(["download", "vgg19", "--url", url, "--cache-dir", str(tmp_path), "--out", str(out)]) == 2
    assert "does not start with 00000000" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob("vgg19-dcbb9e9d.pth*"))
    fixture_sha256 = convert(TORCH_ZIP, tmp_path / "x.safetensors")["sha256"]
    monkeypatch.setattr(download_module, "VGG19_SHA256_PREFIX", fixture_sha256[:8])
    assert main(["download", "vgg19", "--url", url, "--cache-dir", str(tmp_path), "--out", str(out)]) == 0
    assert (tmp_path / "vgg19-dcbb9e9d.pth").read_bytes() == TORCH_ZIP.read_bytes()
    assert read_weights(out)[1]["source_file"] == "vgg19-dcbb9e9d.pth"


# --- full-size check, on files from `make_vgg_fixtures.py --full-size DIR` ---------------------------------


@pytest.mark.skipif(not os.environ.get("JAXMRI_VGG19_FULL"), reason="set JAXMRI_VGG19_FULL to a folder written by "
                    "`python tests/fixtures/make_vgg_fixtures.py --full-size DIR` (548 MB files) to run it")
@pytest.mark.parametrize("name, logits", [("vgg19_random_torchvision.pth", "torch_logits_224"),
                                          ("vgg19_random_torchvision_legacy.pth", "torch_logits_224"),
                                          ("vgg19_random_keras.h5", "keras_logits")])
def test_full_size_random_vgg19(name, logits, tmp_path):
    folder = Path(os.environ["JAXMRI_VGG19_FULL"])
    if name.endswith(".h5"):
        pytest.importorskip("h5py")
    full_reference = np.load(folder / "vgg19_random_reference.npz")
    out = tmp_path / "full.safetensors"
    report = convert(folder / name, out)
    assert report["parameters"] == 143_667_240
    model = load_vgg19(out, num_classes=1000)
    error = relative_error(forward(model, full_reference["images"].astype(np.float32) / 255.0), full_reference[logits])
    print(f"full-size {name}: converted in {report['seconds']:.1f} s, max relative error {error:.2e}")
    assert error < MAX_RELATIVE_ERROR
