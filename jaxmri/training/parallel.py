"""Data parallelism over the visible devices with ``jax.sharding``: the same train steps, on a ``Mesh``.

With more than one device (GPUs, TPU cores, or ``XLA_FLAGS=--xla_force_host_platform_device_count=N``
CPU devices), a run puts its model and optimizer state on every device (``replicate``: a
``NamedSharding`` with ``PartitionSpec()``) and splits every batch along a ``"batch"`` mesh axis
(``shard_batch``: ``PartitionSpec("batch")``). The jitted steps are unchanged: ``jit`` compiles the one
single-device program for the mesh (automatic sharding), each device takes its slice of the batch, and
XLA inserts the all-reduce that sums the gradients, so ``--batch-size`` keeps its meaning: the global
batch. Evaluation reads the replicated model with whole batches. With one device nothing is placed and
a run is exactly what it was without this module.

``--devices N`` uses the first N devices (default: all). The batch size must be a multiple of N.

Several hosts (``jaxmri.training.hosts``): the mesh spans every process's devices, and each process
gathers and places only its own devices' rows of each batch (``shard_batch``).
"""

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxmri.data.batching import gather
from jaxmri.training.hosts import replicated

BATCH_AXIS = "batch"


def batch_mesh(devices: int = 0) -> Mesh | None:
    """A 1-D ``Mesh`` named ``"batch"`` over the first ``devices`` devices (0: all); None for one device.

    Raises ``ValueError`` (one line naming ``--devices``) when more devices are asked for than are visible.
    """
    visible = jax.devices()
    count = len(visible) if devices == 0 else devices
    if jax.process_count() > 1 and count != len(visible):
        raise ValueError(f"--devices {devices}: a run over {jax.process_count()} processes uses all "
                         f"{len(visible)} devices; drop --devices.")
    if not 1 <= count <= len(visible):
        raise ValueError(f"--devices {devices}: {len(visible)} {visible[0].platform} device(s) are visible; pass a "
                         f"number from 1 to {len(visible)}, or 0 for all.")
    if count == 1:
        return None
    return jax.make_mesh((count,), (BATCH_AXIS,), (jax.sharding.AxisType.Auto,), devices=visible[:count])


def check_batch_size(mesh: Mesh | None, batch_size: int) -> None:
    """``ValueError`` when ``batch_size`` cannot be split evenly over the mesh's devices."""
    if mesh is not None and batch_size % mesh.size:
        raise ValueError(f"--batch-size {batch_size} cannot be split over {mesh.size} devices; use a multiple of "
                         f"{mesh.size}, or --devices 1.")


def replicate(mesh: Mesh | None, *objects: nnx.Object) -> None:
    """Place every Variable of each NNX object (model, optimizer) on every device of ``mesh``, in place."""
    if mesh is None:
        return
    everywhere = NamedSharding(mesh, PartitionSpec())
    for obj in objects:
        nnx.update(obj, jax.tree.map(lambda x: replicated(x, everywhere), nnx.state(obj)))


def data_parallel(devices: int, batch_size: int, *objects: nnx.Object) -> Mesh | None:
    """What a run does before its first step: the mesh of ``--devices``, the batch-size check, and the
    model and optimizer replicated onto it; returns the mesh (None on one device: nothing is moved)."""
    mesh = batch_mesh(devices)
    check_batch_size(mesh, batch_size)
    replicate(mesh, *objects)
    if mesh is not None:
        print(f"data parallel over {mesh.size} devices ({', '.join(map(str, mesh.devices.flat))}), "
              f"{batch_size // mesh.size} images per device per step")
    return mesh


def own_rows(sharding: NamedSharding, size: int) -> slice:
    """The rows of a batch of ``size`` that live on this process's devices (all of them on one host)."""
    parts = sharding.addressable_devices_indices_map((size,)).values()
    return slice(min(part[0].start or 0 for part in parts), max(part[0].stop or size for part in parts))


def shard_batch(mesh: Mesh | None, arrays: dict[str, np.ndarray], rows: np.ndarray, weight: np.ndarray) -> dict:
    """The batch ``gather(arrays, rows, weight)``, split along its first axis over ``mesh``; NumPy arrays
    without a mesh. This process gathers only its own devices' rows (``own_rows``)."""
    if mesh is None:
        return gather(arrays, rows, weight)
    sharding = NamedSharding(mesh, PartitionSpec(BATCH_AXIS))
    mine = own_rows(sharding, len(rows))
    return {name: jax.make_array_from_process_local_data(sharding, part, (len(rows), *part.shape[1:]))
            for name, part in gather(arrays, rows[mine], weight[mine]).items()}
