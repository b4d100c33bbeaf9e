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

from jaxmri.data.dataset import ImageSet
from jaxmri.errors import RunDirError


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


def open_resumable(out: Path, settings: dict, *, record: str, kind: str, overwrite: bool) -> tuple[Path, bool]:
    """A directory for a long, resumable job (``evaluate``, ``reproduce``): ``(path, resuming)``.

    A new directory is made as ``make_run_dir`` does and ``settings`` written to ``out / record``. If
    that file is there already with the same settings, the job resumes into it; with other settings it
    is refused with the names of the settings that differ (``overwrite`` starts again instead).
    """
    out = Path(out)
    path = out / record
    if path.is_file() and not overwrite:
        try:
            before = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise RunDirError(f"{path}: cannot be read ({err}); pass --overwrite to start again.") from None
        differ = sorted(k for k in set(before) | set(settings) if before.get(k) != _jsonable(settings).get(k))
        if differ:
            raise RunDirError(f"--out {out} holds a {kind} with other settings ({', '.join(differ)}); use another "
                              "--out, the same flags to resume, or --overwrite.")
        return out, True
    out = make_run_dir(str(out), kind, overwrite=overwrite)
    write_json(path, settings)
    return out, False


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


def save_split(path: Path, data: ImageSet, split: dict[str, np.ndarray], *, index: np.ndarray | None = None,
               labels: np.ndarray | None = None, class_names: tuple[str, ...] | None = None) -> None:
    """``split.json``, one schema for both tasks, so a split can be audited and its images found again::

        {"class_names": ["no", "yes"],
         "parts": {"train": [{"path": "yes/Y1.jpg", "label": 1, "group": 17,
                              "box": [x0, y0, x1, y1], "size": [height, width]}, ...],
                   "val": [...], "test": [...]}}

    ``split`` holds row numbers into ``index`` (default: every image of ``data``, in order); ``label`` is
    the label the split was stratified on (default ``data.labels``, named by ``class_names``); ``box``
    is the brain crop in the original image of ``size``, with exclusive ends.
    """
    index = np.arange(len(data)) if index is None else np.asarray(index)
    labels = data.labels[index] if labels is None else np.asarray(labels)
    rows = {part: [{"path": data.paths[index[i]], "label": int(labels[i]), "group": int(data.groups[index[i]]),
                    "box": data.boxes[index[i]], "size": data.sizes[index[i]]} for i in idx]
            for part, idx in split.items()}
    write_json(path, {"class_names": list(data.class_names if class_names is None else class_names), "parts": rows})


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
