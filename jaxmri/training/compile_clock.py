"""How long XLA spent tracing and compiling, from JAX's own compile events (``jax.monitoring``).

The runs print it after their first epoch, so a user sees how much of that epoch was compilation:

    >>> start = compile_seconds()
    >>> ...                                    # first epoch: every step compiles once
    >>> compile_seconds() - start              # seconds of tracing, lowering and XLA compilation
"""

import threading

import jax

# The three stages of turning a jitted Python function into an executable (jax._src.dispatch).
COMPILE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
)

_lock = threading.Lock()
_total = [0.0]
_registered = [False]


def _listener(event: str, duration: float, **_) -> None:
    if event in COMPILE_EVENTS:
        with _lock:
            _total[0] += duration


def compile_seconds() -> float:
    """Seconds spent compiling in this process since the first call of this function."""
    with _lock:
        if not _registered[0]:
            jax.monitoring.register_event_duration_secs_listener(_listener)
            _registered[0] = True
        return _total[0]


def epoch_time_note(record: dict) -> str:
    """``"12.3s"``, or ``"12.3s, 4.1s of it compiling"`` for an epoch that compiled (the first, usually)."""
    note = f"{record['seconds']:.1f}s"
    if record.get("compile_seconds", 0.0) >= 0.05:
        note += f", {record['compile_seconds']:.1f}s of it compiling"
    return note
