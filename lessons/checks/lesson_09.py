"""Checkers for lesson 9 (scaling out): compile counts, rows per device, and 1 vs N devices.

Exercises 2 and 3 need several devices: set ``XLA_FLAGS=--xla_force_host_platform_device_count=4``
before JAX is imported (the lesson's first cell shows how).
"""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from checks import expect, ok
from checks.lesson_10 import flat_arrays

# Exercise 1: the calls, in order, of a fresh ``f = jax.jit(f, static_argnames="power")`` with
# ``def f(x, power=2): return jnp.sum(x ** power)``; the third field explains the answer (shown when wrong).
QUIZ = [
    ("f(jnp.ones(3))", lambda: ((jnp.ones(3),), {}), "the first call always traces"),
    ("f(jnp.zeros(3))", lambda: ((jnp.zeros(3),), {}), "other values, same shape and dtype: cached"),
    ("f(jnp.ones(5))", lambda: ((jnp.ones(5),), {}), "a new shape"),
    ("f(jnp.ones(3, jnp.int32))", lambda: ((jnp.ones(3, jnp.int32),), {}), "a new dtype"),
    ("f(np.ones(3))", lambda: ((np.ones(3),), {}),
     "NumPy float64 becomes float32 (JAX's default without jax_enable_x64): float32[3] again, cached"),
    ("f(2.0)", lambda: ((2.0,), {}), "a Python float is a weak-typed float32 scalar: a new shape ()"),
    ("f(7.0)", lambda: ((7.0,), {}), "another Python float: the same weak float32[] signature, cached"),
    ("f(jnp.ones(3), power=3)", lambda: ((jnp.ones(3),), {"power": 3}), "a new static value"),
    ("f(jnp.zeros(3), power=3)", lambda: ((jnp.zeros(3),), {"power": 3}), "same static value and shape: cached"),
    ("f(jnp.ones(3), power=2)", lambda: ((jnp.ones(3),), {"power": 2}),
     "the default, but passed by keyword: static keyword arguments given in the call are part of the cache key, "
     "so this is not the signature of call 1"),
]


def quiz_compiles() -> list[bool]:
    """Run ``QUIZ`` on a fresh jitted function; True for each call that traced (and so compiled)."""
    traces = []

    @partial(jax.jit, static_argnames="power")
    def f(x, power=2):
        traces.append(1)  # Python side effect: runs only while tracing
        return jnp.sum(x ** power)

    compiled = []
    for _, make_args, _ in QUIZ:
        args, kwargs = make_args()
        before = len(traces)
        jax.block_until_ready(f(*args, **kwargs))
        compiled.append(len(traces) > before)
    return compiled


def check_compile_count(answer) -> None:
    """Exercise 1: ``answer`` is a list of True/False (one per ``QUIZ`` call: does it compile?) or the total."""
    truth = quiz_compiles()
    if isinstance(answer, (int, np.integer)) and not isinstance(answer, bool):
        expect(int(answer) == sum(truth), 1, f"you counted {int(answer)} compilations; it is not that. Answer "
               "call by call (a list of True/False) to see which call you got wrong.")
        ok(1, f"{sum(truth)} of {len(QUIZ)} calls compile")
        return
    answer = [bool(a) for a in answer]
    expect(len(answer) == len(QUIZ), 1, f"give one True/False per call: {len(QUIZ)} calls, you gave {len(answer)}")
    for number, ((call, _, why), said, real) in enumerate(zip(QUIZ, answer, truth), start=1):
        expect(said == real, 1, f"call {number}, {call}: you said it {'compiles' if said else 'is cached'}; it "
               f"{'compiles' if real else 'does not compile'} ({why})")
    ok(1, f"all {len(QUIZ)} calls right: {sum(truth)} compile")


def check_rows_per_device(answer: dict, *, devices: int, batch: int) -> None:
    """Exercise 2: ``answer`` = ``{device id: (start, stop)}``, the rows of a ``batch``-row batch that
    ``shard_batch`` puts on each device of ``batch_mesh(devices)``."""
    from jaxmri.training.parallel import batch_mesh, check_batch_size, shard_batch

    expect(len(jax.devices()) >= devices, 2, f"only {len(jax.devices())} device(s) visible: set XLA_FLAGS="
           "--xla_force_host_platform_device_count=4 before importing jax (the lesson's first cell)")
    mesh = batch_mesh(devices)
    check_batch_size(mesh, batch)
    rows = np.arange(batch)
    if mesh is None:
        truth = {jax.devices()[0].id: (0, batch)}
    else:
        sharded = shard_batch(mesh, {"row": rows}, rows, np.ones(batch, np.float32))["row"]
        truth = {shard.device.id: (shard.index[0].start or 0, shard.index[0].stop or batch)
                 for shard in sharded.addressable_shards}

    def as_pair(value):
        if isinstance(value, (slice, range)):
            return int(value.start or 0), int(value.stop)
        start, stop = value
        return int(start), int(stop)

    given = {int(device): as_pair(value) for device, value in dict(answer).items()}
    expect(sorted(given) == sorted(truth), 2, f"the mesh uses devices {sorted(truth)}; you named {sorted(given)}")
    for device in sorted(truth):
        expect(given[device] == truth[device], 2, f"device {device}: you said rows {given[device][0]}:"
               f"{given[device][1]}; it holds other rows (each device takes one contiguous block, in device order)")
    ok(2, f"{batch} rows over {devices} devices, {batch // devices} each: {truth}")


def check_parallel_match(params_one, params_many, *, devices: int) -> None:
    """Exercise 3: parameters after the same epoch on 1 device and on ``devices`` devices (nnx.State or
    a model) agree to float tolerance, and the second set really lives on ``devices`` devices."""
    expect(devices > 1, 3, "compare 1 device with several (devices=2 or more)")
    one, many = flat_arrays(params_one, keep_devices=True), flat_arrays(params_many, keep_devices=True)
    expect(sorted(one) == sorted(many) and one, 3, "the two parameter trees hold different arrays: pass "
           "nnx.state(model, nnx.Param) of two models of the same architecture")
    placed = {len(value.sharding.device_set) for value in many.values() if isinstance(value, jax.Array)}
    expect(placed == {devices}, 3, f"the second model's parameters live on {sorted(placed)} device(s), not "
           f"{devices}: train it with one_epoch({devices}) (data_parallel replicates it onto the mesh)")
    singles = {len(value.sharding.device_set) for value in one.values() if isinstance(value, jax.Array)}
    expect(singles == {1}, 3, f"the first model should live on one device; its parameters are on {sorted(singles)}")
    worst, same = 0.0, 0
    for name in one:
        a, b = np.asarray(one[name]), np.asarray(many[name])
        expect(a.shape == b.shape, 3, f"{name}: shapes {a.shape} and {b.shape}")
        expect(np.allclose(a, b, rtol=1e-3, atol=1e-4), 3, f"{name} differs by {np.max(np.abs(a - b)):.2e}: more "
               "than reordered sums explain; were both trained from the same seed, keys and epoch?")
        worst, same = max(worst, float(np.max(np.abs(a - b)))), same + int(np.array_equal(a, b))
    ok(3, f"{len(one)} arrays agree, largest difference {worst:.2e}; {same} of them bit-identical")
