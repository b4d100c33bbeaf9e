"""Training over several processes (``jaxmri.training.hosts``): two local CPU processes and a coordinator
on localhost, launched the way a cluster launches them (``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``,
``JAX_PROCESS_ID``), against one process training alone."""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from jaxmri.errors import JaxmriError
from jaxmri.evaluate import main as evaluate
from jaxmri.train import main as train
from jaxmri.training.hosts import LaunchError, launch_settings

TASKS = {
    "classify": ["classify", "--arch", "cnn", "--image-size", "32", "--batch-size", "8"],
    "segment": ["segment", "--width", "4", "--image-size", "32", "--batch-size", "4"],
}
TIMING = ("seconds", "compile_seconds", "wall_time_s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def launch(args: list[str], workers: int, tmp_path) -> list[subprocess.CompletedProcess]:
    """``python -m jaxmri.train *args`` once per process, all started together, all awaited."""
    port = free_port()
    procs = []
    for index in range(workers):
        env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_COORDINATOR_ADDRESS": f"localhost:{port}",
               "JAX_NUM_PROCESSES": str(workers), "JAX_PROCESS_ID": str(index),
               "JAXMRI_WORKER_DIR": str(tmp_path / "workers")}
        env.pop("XLA_FLAGS", None)  # one CPU device per process
        procs.append(subprocess.Popen([sys.executable, "-m", "jaxmri.train", *args], env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    done = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return done


def arrays(path) -> dict[str, np.ndarray]:
    with ocp.StandardCheckpointer() as ckptr:
        tree = ckptr.restore(path)
    return {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_leaves_with_path(tree)
            if not jax.dtypes.issubdtype(v.dtype, jax.dtypes.prng_key)}


def without_timing(value):
    if isinstance(value, dict):
        return {k: without_timing(v) for k, v in value.items() if k not in TIMING and k != "dataset"}
    if isinstance(value, list):
        return [without_timing(v) for v in value]
    return value


@pytest.mark.parametrize("task", sorted(TASKS))
def test_two_processes_train_what_one_process_trains(task, phantom_dir, tmp_path):
    args = TASKS[task] + ["--data", str(phantom_dir), "--epochs", "2"]
    if task == "segment":
        args += ["--masks", str(phantom_dir / "masks")]
    both = launch(args + ["--out", str(tmp_path / "two")], 2, tmp_path)
    for index, done in enumerate(both):
        assert done.returncode == 0, f"process {index}:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
        assert f"process {index} of 2" in done.stdout
        assert "data parallel over 2 devices" in done.stdout
        assert "parameters bit-identical on all 2 processes (checked)" in done.stdout
    assert train(args + ["--out", str(tmp_path / "one")]) == 0

    # Process 0 wrote the run directory; process 1 its own copy of the same results.
    primary = json.loads((tmp_path / "two" / "metrics.json").read_text())
    worker = json.loads((tmp_path / "workers" / "process-1" / "two" / "metrics.json").read_text())
    assert without_timing(worker) == without_timing(primary)
    assert not (tmp_path / "workers" / "process-0").exists()

    # Two processes (half a batch each, gradients summed across them) against one: float tolerance.
    two, one = arrays(tmp_path / "two" / "state" / "arrays"), arrays(tmp_path / "one" / "state" / "arrays")
    assert sorted(two) == sorted(one) and one
    worst = max(float(np.max(np.abs(two[k] - one[k]))) for k in one)
    print(f"{task}: {len(one)} arrays, max abs difference two processes vs one {worst:.2e}")
    for name in one:
        np.testing.assert_allclose(two[name], one[name], rtol=1e-4, atol=1e-5, err_msg=name)
    single = json.loads((tmp_path / "one" / "metrics.json").read_text())
    losses = [[e["train_loss"] for e in run["epochs"]] for run in (primary, single)]
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-4)


@pytest.mark.parametrize("environ, words", [
    ({"JAX_COORDINATOR_ADDRESS": "node0:1234"}, "JAX_NUM_PROCESSES, JAX_PROCESS_ID not set"),
    ({"JAX_COORDINATOR_ADDRESS": "node0", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "0"}, "give host:port"),
    ({"JAX_COORDINATOR_ADDRESS": "node0:1", "JAX_NUM_PROCESSES": "two", "JAX_PROCESS_ID": "0"}, "whole numbers"),
    ({"JAX_COORDINATOR_ADDRESS": "node0:1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "2"}, "must be 0 to 1"),
])
def test_a_bad_launch_environment_is_one_line_naming_the_variable(environ, words):
    with pytest.raises(LaunchError, match=words) as err:
        launch_settings(environ)
    assert isinstance(err.value, JaxmriError) and "\n" not in str(err.value)


def test_launch_settings_read_the_usual_variables():
    assert launch_settings({}) is None
    assert launch_settings({"JAX_COORDINATOR_ADDRESS": "node0:12355", "JAX_NUM_PROCESSES": "4",
                            "JAX_PROCESS_ID": "3"}) == ("node0:12355", 4, 3)


def test_evaluate_refuses_a_multi_host_launch(monkeypatch, tmp_path, capsys):
    for name, value in {"JAX_COORDINATOR_ADDRESS": "localhost:1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "0"}.items():
        monkeypatch.setenv(name, value)
    assert evaluate(["classify", "--out", str(tmp_path / "cv")]) == 2
    assert "runs on one host" in capsys.readouterr().err
    assert not (tmp_path / "cv").exists()
