"""Run directories, JSON results and orbax checkpoints: the plain-Python side of training.

A run directory holds everything needed to read or repeat a run: ``config.json``, ``split.json``,
``metrics.json``, figures, and ``checkpoint/`` (the best-validation model state).
"""

import json
import time
from pathlib import Path

import numpy as np
import orbax.checkpoint as ocp
from flax import nnx


class RunDirError(Exception):
    """A run directory cannot be used; the message says what to do."""


def make_run_dir(out: str | None, kind: str, *, overwrite: bool) -> Path:
    """Create the run directory (default ``runs/<YYYYmmdd-HHMMSS>-<kind>``).

    An existing non-empty directory is refused unless ``overwrite``, so a run never mixes its files with
    an earlier one's by accident.
    """
    path = Path(out) if out else Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{kind}"
    if path.exists() and not path.is_dir():
        raise RunDirError(f"--out {path} is a file, not a directory; choose another --out.")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise RunDirError(f"--out {path} already exists and is not empty; choose another --out or pass --overwrite.")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.ndarray, np.generic)) or hasattr(obj, "__array__"):
        return _jsonable(np.asarray(obj).tolist())
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(path: Path, payload) -> None:
    """Write ``payload`` (dicts, lists, numpy or jax arrays) as indented JSON."""
    Path(path).write_text(json.dumps(_jsonable(payload), indent=2) + "\n")


def save_split(path: Path, paths: tuple[str, ...], labels: np.ndarray, groups: np.ndarray, split: dict) -> None:
    """``split.json``: the file list of every part with label and duplicate group, so a split can be audited."""
    payload = {
        part: [{"path": paths[i], "label": int(labels[i]), "group": int(groups[i])} for i in idx]
        for part, idx in split.items()
    }
    write_json(path, payload)


def save_checkpoint(directory: Path, model: nnx.Module) -> None:
    """Save the model's whole state (parameters and RNG counters) with orbax, replacing an older copy."""
    directory = Path(directory).absolute()
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(directory, nnx.state(model), force=True)


def restore_checkpoint(directory: Path, model: nnx.Module) -> nnx.Module:
    """Load a checkpoint written by ``save_checkpoint`` into ``model`` (same architecture) in place."""
    directory = Path(directory).absolute()
    with ocp.StandardCheckpointer() as ckptr:
        state = ckptr.restore(directory, nnx.state(model))
    nnx.update(model, state)
    return model
