"""Several hosts (processes) training one model: ``jax.distributed``, started from the environment.

A cluster launch starts the same command once per host, with three variables set::

    JAX_COORDINATOR_ADDRESS=host0.example.org:12355   # process 0's host and a free port, the same everywhere
    JAX_NUM_PROCESSES=4                               # how many processes in all
    JAX_PROCESS_ID=0 .. 3                             # this process's number, different for each

``initialize()`` reads them and calls ``jax.distributed.initialize`` before anything else touches JAX;
``jax.devices()`` then lists every host's devices, the batch ``Mesh`` of ``jaxmri.training.parallel``
spans them all, and ``jit`` runs one program over all of them (SPMD: every process runs the same Python,
the same steps in the same order). Without the variables nothing happens: one process, as always.

What each process does differently:

- **data**: every process reads the same image folder and draws the same split and shuffle from the
  seed; of each global batch it gathers only the rows of its own devices (``parallel.shard_batch``,
  ``jax.make_array_from_process_local_data``), so a host never copies another host's images to a device;
- **files**: the run directory must be one path that every host sees (a shared file system, as on any
  cluster). Process 0 writes it, checkpoints included; after each save every process waits at a barrier
  (``sync``), and all of them restore checkpoints from process 0's copy. Every other process writes its
  JSON files and figures (the same ones: the parameters are replicated, so the numbers are the same) into
  a worker directory: ``$JAXMRI_WORKER_DIR/process-<id>/<run name>`` when that is set (kept), else a
  temporary folder removed at exit. With ``--resume``, a worker starts from a copy of the run directory.
- **checks**: at the end of training every process's copy of the parameters is compared, bit for bit
  (``check_replicas_agree``).
"""

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import jax
import numpy as np

from jaxmri.errors import JaxmriError

VARIABLES = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


class LaunchError(JaxmriError):
    """The multi-host environment variables are incomplete or malformed."""


def launch_settings(environ=os.environ) -> tuple[str, int, int] | None:
    """``(coordinator_address, num_processes, process_id)`` from ``environ``; None when none is set.

    Raises ``LaunchError`` naming the variable when only some are set or one is not a valid number.
    """
    given = {name: environ.get(name, "").strip() for name in VARIABLES}
    if not any(given.values()):
        return None
    missing = [name for name, value in given.items() if not value]
    if missing:
        raise LaunchError(f"{', '.join(missing)} not set: a multi-host launch sets all of {', '.join(VARIABLES)} "
                          "(README, 'Several hosts'); unset them all for one process.")
    if ":" not in given["JAX_COORDINATOR_ADDRESS"]:
        raise LaunchError(f"JAX_COORDINATOR_ADDRESS={given['JAX_COORDINATOR_ADDRESS']}: give host:port of process 0, "
                          "e.g. node0:12355.")
    try:
        count, index = int(given["JAX_NUM_PROCESSES"]), int(given["JAX_PROCESS_ID"])
    except ValueError:
        raise LaunchError(f"JAX_NUM_PROCESSES={given['JAX_NUM_PROCESSES']} and JAX_PROCESS_ID={given['JAX_PROCESS_ID']} "
                          "must be whole numbers.") from None
    if count < 1 or not 0 <= index < count:
        raise LaunchError(f"JAX_PROCESS_ID={index} with JAX_NUM_PROCESSES={count}: the id must be 0 to {count - 1}.")
    return given["JAX_COORDINATOR_ADDRESS"], count, index


def initialize(environ=os.environ) -> bool:
    """Join the cluster the environment describes (``launch_settings``); False for a single process.

    Call it first, before any JAX computation or ``jax.devices()``. Every process blocks here until all
    ``JAX_NUM_PROCESSES`` have joined (JAX's timeout: 5 minutes).
    """
    settings = launch_settings(environ)
    if settings is None or settings[1] == 1:
        return False
    address, count, index = settings
    jax.distributed.initialize(coordinator_address=address, num_processes=count, process_id=index)
    print(f"process {jax.process_index()} of {jax.process_count()} (coordinator {address}): "
          f"{jax.local_device_count()} local device(s), {jax.device_count()} in all")
    return True


def one_host_only(command: str) -> None:
    """``LaunchError`` when a command that runs on one host is started as part of a multi-host launch."""
    if launch_settings() is not None:
        raise LaunchError(f"{command} runs on one host (over all its devices); unset {', '.join(VARIABLES)}, or "
                          "train across hosts with `python -m jaxmri.train`.")


def is_primary() -> bool:
    """True in the process that writes the run directory (process 0, or the only process)."""
    return jax.process_index() == 0


def worker_copy(out: Path, *, resume: bool) -> Path:
    """Where a non-primary process writes its copy of run ``out`` (module docstring); with ``resume``,
    filled with a copy of ``out`` first, so the worker resumes from the same state as process 0."""
    root = os.environ.get("JAXMRI_WORKER_DIR")
    if root:
        base = Path(root) / f"process-{jax.process_index()}"
    else:
        base = Path(tempfile.mkdtemp(prefix=f"jaxmri-process-{jax.process_index()}-"))
        atexit.register(shutil.rmtree, base, ignore_errors=True)
    copy = base / Path(out).absolute().name
    if copy.exists():
        shutil.rmtree(copy)
    if resume and Path(out).is_dir():
        shutil.copytree(out, copy)
    copy.mkdir(parents=True, exist_ok=True)
    _PRIMARY[copy.absolute()] = Path(out).absolute()
    return copy


_PRIMARY: dict[Path, Path] = {}  # a worker's copy of a run -> the run directory process 0 writes


def primary_path(path: Path) -> Path:
    """Where process 0 keeps ``path``: the same file when ``path`` is not inside a worker's copy of a run."""
    path = Path(path).absolute()
    for copy, out in _PRIMARY.items():
        if path == copy or copy in path.parents:
            return out / path.relative_to(copy)
    return path


def sync(name: str) -> None:
    """Every process waits here until all have arrived (a no-op for one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def _is_key(x) -> bool:
    return jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def to_host(tree):
    """NumPy copies of a tree of replicated arrays, from this process's own device (RNG keys as their
    raw ``key_data``): what orbax saves from process 0 (it refuses arrays that span processes)."""
    def host(x):
        x = x.addressable_data(0) if isinstance(x, jax.Array) else x
        return np.asarray(jax.random.key_data(x) if _is_key(x) else x)

    return jax.tree.map(host, tree)


def from_host(tree, like):
    """``to_host``'s inverse: each NumPy leaf of ``tree`` as an array replicated like its leaf in ``like``."""
    def back(value, old):
        if _is_key(old):
            value = jax.random.wrap_key_data(value, impl=jax.random.key_impl(old))
        return replicated(value, old.sharding)

    return jax.tree.map(back, tree, like)


def replicated(value, sharding) -> jax.Array:
    """``value`` (an array of this process) placed whole on each of ``sharding``'s devices; unlike
    ``jax.device_put``, this also works when the sharding spans devices of other processes."""
    value = jax.numpy.asarray(value) if not isinstance(value, jax.Array) else value
    # Typed PRNG keys (dropout's): place their raw data, then wrap it again. JAX's typed-key path pairs
    # the per-device pieces with the sharding's device order, while ``addressable_devices`` is a set whose
    # order changes from process to process, so placing a key directly failed in about half of them.
    if _is_key(value):
        return jax.random.wrap_key_data(replicated(jax.random.key_data(value), sharding),
                                        impl=jax.random.key_impl(value))
    return jax.make_array_from_single_device_arrays(
        value.shape, sharding, [jax.device_put(value, device) for device in sharding.addressable_devices])


def check_replicas_agree(tree) -> None:
    """Raise unless every process holds bit-identical copies of ``tree`` (say so when they do)."""
    if jax.process_count() == 1:
        return
    from jax.experimental import multihost_utils

    multihost_utils.assert_equal(to_host(tree), "the processes' copies of the parameters differ")
    print(f"parameters bit-identical on all {jax.process_count()} processes (checked)")
