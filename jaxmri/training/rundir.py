"""Run directories, JSON results and orbax checkpoints: the plain-Python side of training.

A run directory holds everything needed to read or repeat a run: ``config.json``, ``split.json``,
``metrics.json``, figures, and ``checkpoint/`` (the best-validation model state).

Several processes (``jaxmri.training.hosts``): process 0 writes the run directory and its checkpoints;
the others write their other files into a worker copy and read checkpoints from process 0's.
"""

import json
import shutil
import time
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from jaxmri.data.dataset import ImageSet
from jaxmri.errors import RunDirError
from jaxmri.training import hosts, stop


def default_run_dir(kind: str) -> Path:
    """``runs/<YYYYmmdd-HHMMSS>-<kind>``: where a run goes without ``--out``."""
    return Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{kind}"


def make_run_dir(out: str | None, kind: str, *, overwrite: bool) -> Path:
    """Create the run directory (default ``runs/<YYYYmmdd-HHMMSS>-<kind>``).

    An existing non-empty directory is refused unless ``overwrite``, so a run never mixes its files with
    an earlier one's by accident.
    """
    path = Path(out) if out else default_run_dir(kind)
    if path.exists() and not path.is_dir():
        raise RunDirError(f"--out {path} is a file, not a directory; choose another --out.")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise RunDirError(f"--out {path} already exists and is not empty; choose another --out or pass --overwrite.")
    path.mkdir(parents=True, exist_ok=True)
    return path


def start_run(cfg, kind: str, *, resume: bool = False) -> tuple[Path, dict | None]:
    """The run directory of ``cfg`` and, for a finished run being resumed, its ``metrics.json``.

    A new run gets a new directory (``make_run_dir``) with ``config.json``. ``resume``: ``cfg.out`` is an
    existing run (its config already checked against the flags by ``config.resume_config``); when it
    has ``metrics.json`` it is finished, and the caller returns those metrics and changes nothing.
    """
    from jaxmri.config import save_config

    if not hosts.is_primary():  # process 0 checks and creates the run directory; this one keeps a copy
        finished = Path(cfg.out) / "metrics.json"
        return (hosts.worker_copy(Path(cfg.out), resume=resume),
                json.loads(finished.read_text()) if resume and finished.is_file() else None)
    if not resume:
        out = make_run_dir(cfg.out, kind, overwrite=cfg.overwrite)
        save_config(cfg, out / "config.json")
        return out, None
    out = Path(cfg.out)
    if (out / "metrics.json").is_file():
        print(f"{out} is finished ({cfg.epochs}/{cfg.epochs} epochs); nothing to do.")
        return out, json.loads((out / "metrics.json").read_text())
    return out, None


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


def _swap_in(new: Path, path: Path) -> None:
    """Replace directory ``path`` by the complete directory ``new`` so that, whenever the process dies,
    either the old or the new copy is whole on disk (``path`` itself, or ``path.old`` while swapping)."""
    old = path.with_name(path.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if path.exists():
        path.rename(old)
    new.rename(path)
    shutil.rmtree(old, ignore_errors=True)


def _whole(path: Path) -> Path:
    """``path``, or the previous copy a swap left behind when it died between its two renames."""
    old = path.with_name(path.name + ".old")
    return old if not path.exists() and old.exists() else path


def _write_whole(directory: Path, write) -> None:
    """``write(new)`` fills a fresh ``<directory>.new``, which then replaces ``directory`` (``_swap_in``).
    With several processes, all of them wait until it is whole."""
    directory = Path(directory).absolute()
    new = directory.with_name(directory.name + ".new")
    with stop.held():
        if new.exists():
            shutil.rmtree(new)
        write(new)
        _swap_in(new, directory)
    hosts.sync(f"saved {directory.name}")


def _checkpointer() -> ocp.StandardCheckpointer:
    """Orbax, set up so that each process reads and writes as if it were alone (``_orbax_save``)."""
    if jax.process_count() == 1:
        return ocp.StandardCheckpointer()
    me = jax.process_index()
    return ocp.StandardCheckpointer(multiprocessing_options=ocp.options.MultiprocessingOptions(
        primary_host=me, active_processes={me}))


def _orbax_save(path: Path, tree) -> None:
    """``tree`` saved at ``path``; with several processes, process 0 saves its NumPy copy, the others an
    empty folder (they read process 0's)."""
    if jax.process_count() > 1:
        if not hosts.is_primary():
            path.mkdir(parents=True, exist_ok=True)
            return
        tree = hosts.to_host(tree)
    with _checkpointer() as ckptr:
        ckptr.save(path, tree)


def _restore_tree(directory: Path, target):
    """What ``_orbax_save`` wrote at ``directory`` (process 0's copy), shaped and placed like ``target``."""
    directory = _whole(hosts.primary_path(directory))
    with _checkpointer() as ckptr:
        if jax.process_count() == 1:
            return ckptr.restore(directory, target)
        return hosts.from_host(ckptr.restore(directory, hosts.to_host(target)), target)


def save_checkpoint(directory: Path, model: nnx.Module) -> None:
    """Save the model's whole state (parameters, batch statistics and RNG counters) with orbax,
    replacing an older copy atomically (written beside it, then renamed over it)."""
    _write_whole(directory, lambda new: _orbax_save(new, nnx.state(model)))


def restore_checkpoint(directory: Path, model: nnx.Module) -> nnx.Module:
    """Load a checkpoint written by ``save_checkpoint`` into ``model`` (same architecture) in place."""
    nnx.update(model, _restore_tree(directory, nnx.state(model)))
    return model


# What a resumed run needs besides its config: what trains, every non-parameter Variable (batch norm
# statistics, RNG counters), the optimizer; frozen weights are rebuilt from the config like the first time.
def _resumable(model: nnx.Module):
    return nnx.Any(model.trainable_filter(), nnx.Not(nnx.Param))


def save_state(run_dir: Path, model: nnx.Module, optimizer: nnx.Optimizer, progress: dict) -> None:
    """``RUN/state/`` at the end of an epoch, atomically: model and optimizer state (orbax) and
    ``progress`` (``epoch`` finished, ``history``, ``best``, ``seconds``) as ``progress.json`` inside it.

    The PRNG keys need no saving: every epoch's key is ``fold_in(key_data, epoch)`` of the seed's key, and
    the model's own RNG counters (dropout) are Variables saved here.
    """
    def write(new: Path) -> None:
        _orbax_save(new / "arrays", {"model": nnx.state(model, _resumable(model)), "optimizer": nnx.state(optimizer)})
        write_json(new / "progress.json", progress)

    _write_whole(Path(run_dir) / "state", write)


def has_state(run_dir: Path) -> bool:
    """True when ``run_dir`` holds a training state from ``save_state`` (at least one finished epoch)."""
    return (_whole((Path(run_dir) / "state").absolute()) / "progress.json").is_file()


def load_state(run_dir: Path, model: nnx.Module, optimizer: nnx.Optimizer) -> dict | None:
    """Restore what ``save_state`` wrote into ``model`` and ``optimizer`` and return its ``progress``;
    None when the run has no saved state (it stopped before its first epoch ended)."""
    directory = (Path(run_dir) / "state").absolute()
    if _whole(directory) != directory:  # it died between a save's two renames: put the whole copy back
        _whole(directory).rename(directory)
    if not (directory / "progress.json").is_file():
        print(f"{run_dir}: no finished epoch saved; starting from epoch 1")
        return None
    target = {"model": nnx.state(model, _resumable(model)), "optimizer": nnx.state(optimizer)}
    state = _restore_tree(directory / "arrays", target)
    nnx.update(model, state["model"])
    nnx.update(optimizer, state["optimizer"])
    progress = json.loads((directory / "progress.json").read_text())
    print(f"{run_dir}: resuming after epoch {len(progress['history'])}")
    return progress
