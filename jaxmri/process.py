"""What a ``python -m jaxmri...`` command sets up in the process it owns, before JAX starts its threads.

Two process-wide settings the library itself never makes (importing ``jaxmri`` changes nothing):
glibc's allocator (``jaxmri.allocator``, ``JAXMRI_MALLOC=default`` opts out) and XLA's persistent
compilation cache (``jaxmri.compile_cache``, ``JAXMRI_COMPILE_CACHE=off`` opts out).
"""

from jaxmri.allocator import tune_malloc
from jaxmri.compile_cache import enable_compile_cache


def own_process() -> dict[str, str]:
    """Apply both settings; returns what was done for each, in words."""
    return {"malloc": tune_malloc(), "compile_cache": enable_compile_cache()}
