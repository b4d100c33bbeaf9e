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
    env = {**os.environ, "XLA_FLAGS": (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"),
           "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(phantom_dir), str(tmp_path)], capture_output=True,
                          text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.split("REPORT ", 1)[1])
    assert "data parallel over 2 devices" in done.stdout
    for task in ("classify", "segment"):
        assert report[task]["allclose"], report


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
