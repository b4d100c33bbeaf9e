"""Ctrl-C at safe points: a command asks for it, the epoch loops honour it between steps.

A ``KeyboardInterrupt`` raised at an arbitrary instruction can land inside JAX's own C++ (which turns
it into an unrelated ``ValueError``) or inside orbax's ``asyncio.run`` (which swallows it). So
``jaxmri.cli.run_command`` runs a command inside ``ctrl_c_at_safe_points()``: the first Ctrl-C only
sets a flag, and ``check()`` (called by each ``train_epoch`` after every step)
raises the ``KeyboardInterrupt`` from plain Python. A second Ctrl-C interrupts at once. ``held()``
keeps a Ctrl-C from cutting a save in half, with or without that flag.
"""

import contextlib
import signal
import threading

_requested = threading.Event()


def check() -> None:
    """Raise ``KeyboardInterrupt`` if Ctrl-C was pressed since the last check."""
    if _requested.is_set():
        _requested.clear()
        raise KeyboardInterrupt


@contextlib.contextmanager
def ctrl_c_at_safe_points():
    """Inside the block the first SIGINT sets the flag ``check`` reads (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def request(signum, frame):
        _requested.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C: at once

    previous = signal.signal(signal.SIGINT, request)
    _requested.clear()
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _requested.clear()


@contextlib.contextmanager
def held():
    """Hold Ctrl-C until the block ends, then raise it (``rundir``'s saves: never half-written, and
    orbax's ``asyncio.run``, which would cancel its own task on SIGINT, never sees it)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt
