"""glibc's allocator, set up for XLA's CPU steps before JAX starts its threads.

With glibc's default settings every allocation above 32 MiB, and every allocation made on a worker
thread's arena (XLA computes on worker threads), gets fresh pages from the kernel, which faults them in
and zeroes them again on every step: 35-40% of a train step's CPU time on a 2-core machine
(``benchmarks/README.md``). One arena and high mmap / trim thresholds let freed buffers be reused.

This is process-wide, so only the ``python -m jaxmri...`` entry points call ``tune_malloc`` (first thing
in ``main``, before any array exists); importing the library changes nothing. ``JAXMRI_MALLOC=default``
in the environment keeps glibc's own settings. A no-op off glibc (macOS, musl, Windows).
"""

import ctypes
import ctypes.util
import os

# <malloc.h> parameter numbers.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8
SETTINGS = ((M_ARENA_MAX, 1), (M_MMAP_THRESHOLD, 1 << 30), (M_TRIM_THRESHOLD, (1 << 31) - 1))
DESCRIPTION = "mallopt(M_ARENA_MAX=1, M_MMAP_THRESHOLD=1 GiB, M_TRIM_THRESHOLD=2 GiB)"


def tune_malloc() -> str:
    """Apply ``SETTINGS`` with ``mallopt`` unless ``JAXMRI_MALLOC=default``; returns what was done, in words."""
    if os.environ.get("JAXMRI_MALLOC", "").lower() == "default":
        return "glibc defaults (JAXMRI_MALLOC=default)"
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return "not glibc: allocator unchanged"
    ok = all(mallopt(param, value) == 1 for param, value in SETTINGS)
    return DESCRIPTION if ok else "glibc refused mallopt: allocator unchanged"
