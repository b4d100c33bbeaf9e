"""XLA's persistent compilation cache for the ``python -m jaxmri...`` commands.

Every command compiles the same programs again: each model's initializers (one per parameter
shape, when built eagerly), the train and eval steps. A persistent cache keeps the compiled
executables on disk, keyed by JAX on the program, its compiler options, the backend and the
jax/jaxlib versions, so a second command with the same shapes loads them instead of compiling.
The results are the same executables, bit for bit. Measured on 2 cores (``benchmarks/README.md``):
building a width-8 U-Net and its first train step took 13.8 s + 3.2 s in a fresh process and
0.6 s + 0.8 s with the cache filled.

Where: ``$JAXMRI_COMPILE_CACHE`` if set, else ``$XDG_CACHE_HOME/jaxmri/xla`` (``~/.cache/jaxmri/xla``).
``JAXMRI_COMPILE_CACHE=off`` keeps nothing on disk. A cache directory already given to JAX
(``JAX_COMPILATION_CACHE_DIR``) is left as it is. Deleting the folder at any time is safe.

Process-wide, like ``jaxmri.allocator``: only the entry points call ``enable_compile_cache`` (through
``jaxmri.process.own_process``); importing the library changes nothing.
"""

import os
from pathlib import Path

import jax

ENV = "JAXMRI_COMPILE_CACHE"
# Cache every program that took this long to compile: the per-shape initializers of an eager model
# build take 0.3-1 s each on 2 cores, below JAX's own default threshold of 1 s.
MIN_COMPILE_SECONDS = 0.1


def default_dir() -> Path:
    """``$XDG_CACHE_HOME/jaxmri/xla``, or ``~/.cache/jaxmri/xla``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "jaxmri" / "xla"


def enable_compile_cache() -> str:
    """Point JAX's persistent compilation cache at our folder (see the module doc); returns what was done.

    Call it before anything compiles. A folder that cannot be created or written leaves the cache
    off; a command never fails because of its cache.
    """
    setting = os.environ.get(ENV, "").strip()
    if setting.lower() == "off":
        return f"off ({ENV}=off)"
    if jax.config.jax_compilation_cache_dir:
        return f"{jax.config.jax_compilation_cache_dir} (JAX's own setting)"
    path = Path(setting).expanduser() if setting else default_dir()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        return f"off ({path}: {error.strerror or error})"
    if not os.access(path, os.W_OK | os.X_OK):
        return f"off ({path} is not writable)"
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    return str(path)
