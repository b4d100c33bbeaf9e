"""Checkers for lesson 10 (reproducibility): key derivation, bit-for-bit comparisons, resume refusals."""

import jax
import numpy as np

from checks import expect, ok


def flat_arrays(tree, *, keep_devices: bool = False) -> dict:
    """``{path: array}`` for every leaf of ``tree`` (an NNX model, an ``nnx.State``, a dict of arrays...).

    RNG keys become their raw ``key_data`` (uint32), so they compare like any array. NumPy copies unless
    ``keep_devices`` (then the ``jax.Array`` itself, with its sharding).
    """
    from flax import nnx

    if isinstance(tree, nnx.Module):
        tree = nnx.state(tree)
    flat = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        name = jax.tree_util.keystr(path).replace(".value", "")
        if hasattr(leaf, "dtype") and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        flat[name] = leaf if keep_devices and isinstance(leaf, jax.Array) else np.asarray(leaf)
    return flat


def first_difference(tree_a, tree_b) -> str | None:
    """None when the two trees hold the same arrays bit for bit, else a sentence naming the first leaf
    (in path order) that differs and how."""
    a, b = flat_arrays(tree_a), flat_arrays(tree_b)
    if sorted(a) != sorted(b):
        only = sorted(set(a) ^ set(b))
        return f"the trees hold different leaves (e.g. {only[0]}): compare the same kind of state"
    for name in sorted(a):
        x, y = a[name], b[name]
        if x.dtype != y.dtype or x.shape != y.shape:
            return f"{name}: {x.dtype}{list(x.shape)} against {y.dtype}{list(y.shape)}"
        if x.tobytes() != y.tobytes():  # bits, so NaN == NaN and -0.0 != 0.0
            bits = [np.ascontiguousarray(v).reshape(-1).view(np.uint8).reshape(v.size, -1) for v in (x, y)]
            differ = int(np.sum(np.any(bits[0] != bits[1], axis=1)))
            gap = (float(np.nanmax(np.abs(x.astype(np.float64) - y.astype(np.float64))))
                   if x.dtype.kind in "fiu" else 0.0)
            note = f"largest by {gap:.2e}" if gap else "equal as numbers: -0.0 against 0.0, or NaNs"
            return f"{name}: {differ} of {x.size} values differ in their bits ({note})"
    return None


def _make_keys(seed):
    from jaxmri.training.classify import make_keys

    return make_keys(seed)


def library_step_key(seed: int, epoch: int, step: int) -> jax.Array:
    """The augmentation key of training step ``step`` (0-based) of epoch ``epoch`` (0-based), the way
    ``jaxmri.training.classify.fit`` and ``train_epoch`` derive it."""
    _, key_data = _make_keys(seed)
    _, key_aug = jax.random.split(jax.random.fold_in(key_data, epoch))
    return jax.random.fold_in(key_aug, step)


def _bits(key) -> np.ndarray:
    key = jax.numpy.asarray(key) if not isinstance(key, jax.Array) else key
    return np.asarray(jax.random.key_data(key) if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) else key)


def check_step_key(step_key) -> None:
    """Exercise 1: ``step_key(seed, epoch, step)`` must return the library's key for that step."""
    cases = [(0, 0, 0), (0, 0, 1), (0, 1, 0), (0, 3, 5), (1, 0, 0), (7, 2, 3), (42, 49, 6), (3, 10, 0)]
    for seed, epoch, step in cases:
        mine, theirs = _bits(step_key(seed, epoch, step)), _bits(library_step_key(seed, epoch, step))
        expect(mine.shape == theirs.shape and np.array_equal(mine, theirs), 1,
               f"step_key({seed}, {epoch}, {step}) is not the library's key. The chain is make_keys(seed) -> "
               "key_data -> fold_in(key_data, epoch) -> split into (key_perm, key_aug) -> fold_in(key_aug, step)")
    ok(1, f"your key derivation equals the library's for {len(cases)} (seed, epoch, step) triples")


def check_bit_identical(tree_a, tree_b, *, history_a=None, history_b=None) -> None:
    """Exercise 2: two states (models, ``nnx.State``, dicts) identical bit for bit; with histories
    (``fit``'s records), equal too apart from wall-clock fields."""
    problem = first_difference(tree_a, tree_b)
    expect(problem is None, 2, f"not bit-identical: first difference at {problem}")
    if history_a is not None or history_b is not None:
        clocks = ("seconds", "compile_seconds", "wall_time_s")

        def timeless(history):
            return [{k: v for k, v in record.items() if k not in clocks} for record in history]

        expect(history_a is not None and history_b is not None, 2, "pass both histories, or neither")
        ta, tb = timeless(history_a), timeless(history_b)
        expect(len(ta) == len(tb), 2, f"the histories have {len(ta)} and {len(tb)} epochs")
        for record_a, record_b in zip(ta, tb):
            expect(record_a == record_b, 2, f"epoch {record_a.get('epoch')}: {record_a} against {record_b}")
    ok(2, f"{len(flat_arrays(tree_a))} arrays bit-identical" + ("" if history_a is None else
                                                                  f", {len(history_a)} epochs' metrics equal"))


def check_resume_refused(status: int, message: str, *, saved_epochs: int, given_epochs: int) -> None:
    """Exercise 3: ``--resume RUN --epochs N`` on a run saved with other epochs ends with status 2 and
    one line naming the setting."""
    lines = [line for line in str(message).strip().splitlines() if line.strip()]
    expect(saved_epochs != given_epochs, 3, "give --epochs a value other than the run's own")
    expect(status == 2, 3, f"exit status {status}; a refused flag is a user error, status 2 (was the run "
           "resumed instead? then the flags agreed with its config)")
    expect(len(lines) == 1, 3, f"expected one line on stderr, got {len(lines)}: {lines[:3]}")
    expect(f"epochs {saved_epochs} (given {given_epochs})" in lines[0], 3,
           f"the line should name `epochs {saved_epochs} (given {given_epochs})`: {lines[0]}")
    ok(3, f"refused with status 2: {lines[0][:90]}...")
