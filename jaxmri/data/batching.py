"""Fixed-size batches from in-memory arrays (host side, outside the jit boundary).

Every batch has exactly ``batch_size`` rows so a jitted step compiles once: the last batch of an epoch
is padded with copies of its first row carrying weight 0, and the steps weight their losses and counts
by ``batch["weight"]``. Shuffling is a pure function of an explicit ``jax.random`` key.
"""

from collections.abc import Iterator

import jax
import numpy as np


def epoch_batches(indices: np.ndarray, batch_size: int, key: jax.Array | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(rows, weight)``: int index arrays and float32 weights, both of length ``batch_size``.

    ``key`` shuffles the order (training); ``None`` keeps it (evaluation).
    """
    indices = np.asarray(indices)
    if key is not None:
        indices = indices[np.asarray(jax.random.permutation(key, len(indices)))]
    for start in range(0, len(indices), batch_size):
        rows = indices[start : start + batch_size]
        weight = np.ones(batch_size, np.float32)
        if len(rows) < batch_size:
            weight[len(rows) :] = 0.0
            rows = np.concatenate([rows, np.full(batch_size - len(rows), rows[0])])
        yield rows, weight


def num_batches(n: int, batch_size: int) -> int:
    return -(-n // batch_size)


def gather(arrays: dict[str, np.ndarray], rows: np.ndarray, weight: np.ndarray) -> dict[str, np.ndarray]:
    """The batch dict ``{name: arrays[name][rows], ..., "weight": weight}``."""
    batch = {name: values[rows] for name, values in arrays.items()}
    batch["weight"] = weight
    return batch


def apply_in_batches(step, model, images: np.ndarray, batch_size: int, **kwargs):
    """``step(model, {"image": batch}, **kwargs)`` over ``images`` in order, padding rows dropped, stacked.

    Used for evaluation and prediction: ``step`` is a jitted function such as
    ``classify_steps.eval_step``; every call sees a full-size batch, so it compiles once. A step that
    returns a tuple of arrays (``models.gradcam.gradcam``) gives a tuple of stacked arrays. Returns an
    empty array for no images.
    """
    out = [jax.tree.map(lambda a: np.asarray(a)[weight > 0], step(model, {"image": images[rows]}, **kwargs))
           for rows, weight in epoch_batches(np.arange(len(images)), batch_size)]
    return jax.tree.map(lambda *parts: np.concatenate(parts), *out) if out else np.zeros((0,), np.float32)
