"""Crash and resume (``--resume``), bit-identical reruns, and the atomic state on disk."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from jaxmri.train import main as train
from jaxmri.training.rundir import has_state

TIMES = ("seconds", "wall_time_s", "compile_seconds")


def without_times(obj):
    """``metrics.json`` less every wall-clock figure (the only things a rerun may change)."""
    if isinstance(obj, dict):
        return {k: without_times(v) for k, v in obj.items() if k not in TIMES}
    if isinstance(obj, list):
        return [without_times(v) for v in obj]
    return obj


def arrays(directory: Path) -> dict[str, np.ndarray]:
    """Every array of an orbax checkpoint, by path."""
    with ocp.StandardCheckpointer() as ckptr:
        tree = ckptr.restore(directory.absolute())
    flat = {}

    def walk(node, prefix):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}/{k}")
        elif jax.dtypes.issubdtype(node.dtype, jax.dtypes.prng_key):  # an RNG counter's key
            flat[prefix] = np.asarray(jax.random.key_data(node))
        else:
            flat[prefix] = np.asarray(node)

    walk(tree, "")
    return flat


def assert_same_run(a: Path, b: Path) -> None:
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (a, b))
    assert without_times(ma) == without_times(mb)
    for sub in ("checkpoint", "state/arrays"):
        xa, xb = arrays(a / sub), arrays(b / sub)
        assert xa.keys() == xb.keys() and xa
        for k in xa:
            assert xa[k].dtype == xb[k].dtype and np.array_equal(xa[k], xb[k]), (sub, k)  # bit-identical


CLASSIFY = ["classify", "--arch", "rescnn", "--epochs", "5", "--image-size", "32", "--batch-size", "4"]
SEGMENT = ["segment", "--epochs", "3", "--width", "4", "--image-size", "32", "--loss", "bce+dice"]


def _args(task_args, phantom_dir):
    extra = ["--masks", str(phantom_dir / "masks")] if task_args[0] == "segment" else []
    return task_args + ["--data", str(phantom_dir)] + extra


def test_sigkill_mid_run_then_resume_equals_an_uninterrupted_run(phantom_dir, tmp_path):
    args = _args(CLASSIFY, phantom_dir) + ["--epochs", "8"]  # room to kill it before it ends
    killed = tmp_path / "killed"
    env = {**os.environ, "JAXMRI_MALLOC": "default"}
    proc = subprocess.Popen([sys.executable, "-m", "jaxmri.train", *args, "--out", str(killed)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 300
    try:  # kill it once two epochs are saved: it is then in its third epoch (or saving it)
        while time.time() < deadline and proc.poll() is None:
            progress = killed / "state" / "progress.json"
            if progress.is_file() and len(json.loads(progress.read_text())["history"]) >= 2:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (killed / "metrics.json").exists() and has_state(killed)
    saved = len(json.loads((killed / "state" / "progress.json").read_text())["history"])
    assert 2 <= saved < 8

    assert train(["classify", "--resume", str(killed)]) == 0
    whole = tmp_path / "whole"
    assert train([*args, "--out", str(whole)]) == 0
    assert_same_run(killed, whole)


def test_resuming_a_finished_run_changes_nothing_and_other_flags_are_refused(phantom_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert train([*_args(SEGMENT, phantom_dir), "--out", str(run)]) == 0
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert train(["segment", "--resume", str(run)]) == 0
    assert "finished" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()} == before

    assert train(["segment", "--resume", str(run), "--epochs", "9", "--lr", "0.01"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "epochs 3 (given 9)" in err[0] and "lr 0.001 (given 0.01)" in err[0]
    assert train(["classify", "--resume", str(run)]) == 2
    assert "SegmentConfig run" in capsys.readouterr().err
    assert train(["segment", "--resume", str(tmp_path / "nope")]) == 2
    assert "no such run directory" in capsys.readouterr().err
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "config.json").write_text('{"hello": 1}')
    assert train(["segment", "--resume", str(tmp_path / "foreign")]) == 2
    assert "not a jaxmri run config" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()} == before


def test_a_run_stopped_between_the_two_renames_of_a_save_resumes_from_the_whole_copy(phantom_dir, tmp_path):
    args = _args(SEGMENT, phantom_dir)
    run = tmp_path / "run"
    assert train([*args, "--out", str(run)]) == 0
    # As if it died saving its last state: the whole copy moved aside to state.old, the new one not yet in.
    (run / "metrics.json").unlink()
    progress = json.loads((run / "state" / "progress.json").read_text())
    (run / "state").rename(run / "state.old")
    assert has_state(run)
    assert train(["segment", "--resume", str(run)]) == 0
    whole = tmp_path / "whole"
    assert train([*args, "--out", str(whole)]) == 0
    assert_same_run(run, whole)
    assert len(progress["history"]) == 3


@pytest.mark.parametrize("task_args", [CLASSIFY, SEGMENT], ids=["classifier", "unet"])
def test_the_same_command_twice_is_bit_identical(task_args, phantom_dir, tmp_path):
    args = _args(task_args, phantom_dir)
    for name in ("a", "b"):
        assert train([*args, "--epochs", "2", "--out", str(tmp_path / name)]) == 0
    assert_same_run(tmp_path / "a", tmp_path / "b")


def test_ctrl_c_ends_with_one_line_and_a_resumable_run(phantom_dir, tmp_path):
    run = tmp_path / "run"
    # 30 epochs: the signal must land before the run ends (a phantom epoch takes a fraction of a second).
    proc = subprocess.Popen([sys.executable, "-m", "jaxmri.train", *_args(CLASSIFY, phantom_dir), "--epochs", "30",
                             "--out", str(run)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "JAXMRI_MALLOC": "default"})
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not has_state(run):
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("interrupted:") and f"--resume {run}" in last and "Traceback" not in err
    assert train(["classify", "--resume", str(run)]) == 0
    assert len(json.loads((run / "metrics.json").read_text())["epochs"]) == 30


def test_a_full_disk_mid_run_ends_with_one_line_and_the_run_resumes(phantom_dir, tmp_path, monkeypatch, capsys):
    import errno

    from jaxmri.training import segment

    real, calls = segment.save_state, []

    def fills_up(run_dir, *a, **k):
        calls.append(run_dir)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(run_dir / "state.new"))
        return real(run_dir, *a, **k)

    monkeypatch.setattr(segment, "save_state", fills_up)
    run = tmp_path / "run"
    assert train([*_args(SEGMENT, phantom_dir), "--out", str(run)]) == 1
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: the disk is full") and f"--resume {run}" in last and "Traceback" not in err
    monkeypatch.setattr(segment, "save_state", real)
    assert train(["segment", "--resume", str(run)]) == 0
    assert "resuming after epoch 1" in capsys.readouterr().out
    whole = tmp_path / "whole"
    assert train([*_args(SEGMENT, phantom_dir), "--out", str(whole)]) == 0
    assert_same_run(run, whole)
