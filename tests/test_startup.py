"""Start-up and process set-up: the abstract VGG19 build, the allocator settings, the compile cache, the compile clock."""

import subprocess
import sys
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxmri.models import VGG19Classifier
from jaxmri.models.params import build_except, param_name
from jaxmri.training.compile_clock import compile_seconds, epoch_time_note

TINY = partial(VGG19Classifier, 2, widths=(4, 8, 8, 16, 16), hidden=32)


def _rngs():
    key = jax.random.key(7)
    return nnx.Rngs(params=key, dropout=jax.random.fold_in(key, 1))


def _values(model):
    """Every Variable of ``model`` as NumPy (PRNG keys as their raw bits), by dotted path."""
    def raw(value):
        if jnp.issubdtype(value.dtype, jax.dtypes.prng_key):
            value = jax.random.key_data(value)
        return np.asarray(value)
    return {param_name(path): raw(var.get_value()) for path, var in nnx.to_flat_state(nnx.state(model))}


def test_build_except_equals_the_eager_constructor_bit_for_bit():
    eager_rngs, built_rngs = _rngs(), _rngs()
    eager, built = TINY(rngs=eager_rngs), build_except(TINY, built_rngs)
    a, b = _values(eager), _values(built)
    assert a.keys() == b.keys()
    assert all(np.array_equal(a[k], b[k]) for k in a), [k for k in a if not np.array_equal(a[k], b[k])]
    # The caller's streams advanced exactly as in the eager build (the training run keeps using them).
    assert int(eager_rngs.params.count[...]) == int(built_rngs.params.count[...]) > 0
    x = np.random.default_rng(0).random((2, 32, 32, 3), np.float32)
    eager.train(), built.train()  # dropout draws from the copied streams
    np.testing.assert_array_equal(np.asarray(eager(x)), np.asarray(built(x)))


def test_build_except_leaves_the_skipped_params_abstract():
    model = build_except(TINY, _rngs(), skip={"fc1.kernel", "convs.0.kernel"})
    assert isinstance(model.fc1.kernel.get_value(), jax.ShapeDtypeStruct)
    assert model.fc1.kernel.shape == (16 * 7 * 7, 32)
    assert isinstance(model.convs[0].kernel.get_value(), jax.ShapeDtypeStruct)
    assert isinstance(model.head.kernel.get_value(), jax.Array)  # what no file fills is real


def test_compile_clock_counts_compiles_and_not_cached_calls():
    start = compile_seconds()
    f = jax.jit(lambda x: jnp.sin(x) * 3 + 1)
    x = jnp.ones(17)
    f(x).block_until_ready()
    compiled = compile_seconds()
    assert compiled > start
    f(x).block_until_ready()
    assert compile_seconds() == compiled
    assert epoch_time_note({"seconds": 12.34, "compile_seconds": 4.06}) == "12.3s, 4.1s of it compiling"
    assert epoch_time_note({"seconds": 2.0, "compile_seconds": 0.0}) == "2.0s"


@pytest.mark.parametrize("env, expected", [({}, "mallopt(M_ARENA_MAX=1"), ({"JAXMRI_MALLOC": "default"}, "glibc defaults")])
def test_entry_points_tune_malloc_unless_asked_not_to(env, expected, monkeypatch):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code = "from jaxmri.allocator import tune_malloc; print(tune_malloc())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    if sys.platform.startswith("linux") and "not glibc" not in out:
        assert out.startswith(expected)


# A subprocess that sets the process up as the commands do, compiles one function and reports the
# persistent cache's hits. JAX caches only programs that took MIN_COMPILE_SECONDS to compile; this one
# is tiny, so the threshold is lowered to 0 after ``own_process`` (the wiring is what is tested here).
CACHE_PROBE = """
import jax, jax.numpy as jnp
from jaxmri.process import own_process
print(own_process()["compile_cache"])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
hits = []
jax.monitoring.register_event_listener(lambda name, **_: hits.append(name) if name.endswith("/cache_hits") else None)
print(float(jax.jit(lambda x: jnp.tanh(x @ x.T).sum())(jnp.arange(64.0).reshape(8, 8) / 64)), len(hits))
"""


def _probe(env_updates: dict, monkeypatch) -> tuple[str, str, str]:
    """(what ``enable_compile_cache`` said, the function's value, how many cache hits)."""
    for name, value in env_updates.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    done = subprocess.run([sys.executable, "-c", CACHE_PROBE], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    where, result = done.stdout.strip().splitlines()
    return (where, *result.split())


def test_the_commands_keep_compiled_programs_in_the_cache_folder(tmp_path, monkeypatch):
    cache = tmp_path / "xla"
    where, value, hits = _probe({"JAXMRI_COMPILE_CACHE": str(cache)}, monkeypatch)
    assert where == str(cache) and hits == "0" and any(cache.iterdir())
    where, again, hits = _probe({"JAXMRI_COMPILE_CACHE": str(cache)}, monkeypatch)
    assert again == value and int(hits) >= 1  # the second process loaded the executable


def test_the_compile_cache_defaults_to_xdg_and_can_be_switched_off(tmp_path, monkeypatch):
    monkeypatch.delenv("JAXMRI_COMPILE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert _probe({}, monkeypatch)[0] == str(tmp_path / "jaxmri" / "xla")
    off = tmp_path / "off"
    monkeypatch.setenv("XDG_CACHE_HOME", str(off))
    assert _probe({"JAXMRI_COMPILE_CACHE": "off"}, monkeypatch)[0] == "off (JAXMRI_COMPILE_CACHE=off)"
    assert not off.exists()


def test_an_unusable_cache_folder_leaves_the_cache_off_and_the_command_running(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    where, value, hits = _probe({"JAXMRI_COMPILE_CACHE": str(blocker / "xla")}, monkeypatch)
    assert where.startswith(f"off ({blocker / 'xla'}") and float(value) > 0 and hits == "0"
