"""Data-parallel training over several devices (``jaxmri.training.parallel``) on forced CPU devices."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from jaxmri.train import main as train
from jaxmri.training.parallel import batch_mesh, check_batch_size

# Run in a fresh process: the device count is fixed when JAX starts.
SCRIPT = textwrap.dedent("""
    import json, sys
    import jax, numpy as np, orbax.checkpoint as ocp
    from jaxmri.train import main as train

    assert len(jax.devices()) == 2, jax.devices()
    data, out = sys.argv[1], sys.argv[2]
    tasks = {
        "classify": ["classify", "--arch", "cnn", "--image-size", "32", "--batch-size", "8"],
        "segment": ["segment", "--masks", data + "/masks", "--width", "4", "--image-size", "32", "--batch-size", "4"],
    }

    def arrays(path):
        with ocp.StandardCheckpointer() as ckptr:
            tree = ckptr.restore(path)
        return {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_leaves_with_path(tree)
                if not jax.dtypes.issubdtype(v.dtype, jax.dtypes.prng_key)}  # RNG counters' keys are not trained

    report = {}
    for task, args in tasks.items():
        runs = {}
        for devices in (1, 2):
            run = f"{out}/{task}-{devices}"
            assert train(args + ["--data", data, "--epochs", "2", "--devices", str(devices), "--out", run]) == 0
            runs[devices] = arrays(run + "/state/arrays")
        keys = sorted(runs[1])
        assert keys == sorted(runs[2]) and keys
        report[task] = {
            "params": len(keys),
            "max_abs_diff": max(float(np.max(np.abs(runs[1][k] - runs[2][k]))) for k in keys),
            "max_abs": max(float(np.max(np.abs(runs[1][k]))) for k in keys),
            "allclose": all(np.allclose(runs[1][k], runs[2][k], rtol=1e-4, atol=1e-5) for k in keys),
        }
    print("REPORT " + json.dumps(report))
""")


def test_two_devices_train_the_same_parameters_as_one(phantom_dir, tmp_path):
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(phantom_dir), str(tmp_path)], capture_output=True,
                          text=True, env=_two_cpu_devices(), timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.split("REPORT ", 1)[1])
    assert "data parallel over 2 devices" in done.stdout
    for task in ("classify", "segment"):
        assert report[task]["allclose"], report


# A VGG19 (dropout's PRNG keys among its Variables; Winograd layers at 128 channels, their kernels transformed
# once per epoch) trained one epoch on one device and on two.
VGG19_SCRIPT = textwrap.dedent("""
    import json
    import jax, numpy as np
    from flax import nnx
    from jaxmri.models import VGG19Classifier
    from jaxmri.training import classify
    from jaxmri.training.optim import make_optimizer
    from jaxmri.training.parallel import data_parallel

    rng = np.random.default_rng(0)
    arrays = {"image": rng.integers(0, 256, (8, 64, 64, 3)).astype(np.uint8), "label": np.array([0, 1] * 4, np.int32)}
    out = {}
    for devices in (1, 2):
        model = VGG19Classifier(2, widths=(8, 16, 128, 128, 128), hidden=16, rngs=nnx.Rngs(0))
        optimizer = make_optimizer(model, lr=1e-3, weight_decay=0.0)
        mesh = data_parallel(devices, 4, model, optimizer)
        metrics = classify.train_epoch(model, optimizer, arrays, np.arange(8), jax.random.key(0), batch_size=4,
                                       max_angle=10.0, mesh=mesh)
        out[devices] = [metrics["train_loss"], np.asarray(model.head.kernel[...]).tolist()]
    print("REPORT " + json.dumps(out))
""")


def _two_cpu_devices() -> dict:
    return {**os.environ, "JAX_PLATFORMS": "cpu",
            "XLA_FLAGS": (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2")}


def test_a_vgg19_with_dropout_keys_trains_the_same_on_two_devices():
    done = subprocess.run([sys.executable, "-c", VGG19_SCRIPT], capture_output=True, text=True,
                          env=_two_cpu_devices(), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.split("REPORT ", 1)[1])
    assert "data parallel over 2 devices" in done.stdout
    (loss_1, head_1), (loss_2, head_2) = report["1"], report["2"]
    assert abs(loss_1 - loss_2) < 1e-5
    assert max(abs(a - b) for row_1, row_2 in zip(head_1, head_2) for a, b in zip(row_1, row_2)) < 1e-5


KEY_SCRIPT = textwrap.dedent("""
    import jax, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec
    from jaxmri.training.hosts import replicated

    key = jax.random.key(7)
    for devices in (jax.devices(), jax.devices()[::-1]):
        placed = replicated(key, NamedSharding(Mesh(np.array(devices), ("batch",)), PartitionSpec()))
        assert len(placed.sharding.device_set) == 2
        assert (jax.random.key_data(placed) == jax.random.key_data(key)).all()
""")


def test_prng_keys_are_replicated_onto_both_devices():
    """A sharding's devices come as a set, in an order fixed per process; placing a typed PRNG key (dropout's,
    an RNG stream's) piece by piece failed in about half the processes. Three processes, both mesh orders."""
    for _ in range(3):
        done = subprocess.run([sys.executable, "-c", KEY_SCRIPT], capture_output=True, text=True,
                              env=_two_cpu_devices(), timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]


def test_device_flags_on_a_one_device_machine(phantom_dir, tmp_path, capsys):
    assert batch_mesh(0) is None and batch_mesh(1) is None  # one CPU device: nothing is placed
    check_batch_size(None, 7)
    with pytest.raises(ValueError, match="--devices 3"):
        batch_mesh(3)
    with pytest.raises(SystemExit) as exit_info:
        train(["classify", "--data", str(phantom_dir), "--devices", "2", "--out", str(tmp_path / "r")])
    assert exit_info.value.code == 2 and "--devices 2" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
    with pytest.raises(SystemExit):
        train(["segment", "--devices", "-1"])
