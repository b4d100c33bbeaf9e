"""How every long-running command ends: one line on stderr and an exit status, never a traceback.

``run_command(body, resume)`` runs ``body()`` and maps what can stop it:

=====================  ======  ==================================================================
what                   status  the line
=====================  ======  ==================================================================
``JaxmriError``        2       ``error: <the error's one line>`` (bad input, flags, run directories)
Ctrl-C                 130     ``interrupted: <how to continue>``
a full disk            1       ``error: the disk is full (<file>); <how to continue>``
=====================  ======  ==================================================================

``resume()`` says how to continue (None before anything was written); every command saves its work
so that the line it prints is true (``jaxmri.training.rundir``: each epoch's state is saved atomically).
"""

import errno
import sys
from collections.abc import Callable

from jaxmri.errors import JaxmriError


def run_command(body: Callable[[], object], resume: Callable[[], str | None]) -> int:
    """``body()``'s exit status: 0, or the status of what stopped it (table above)."""
    from jaxmri.training.stop import ctrl_c_at_safe_points

    try:
        with ctrl_c_at_safe_points():
            body()
    except JaxmriError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_status
    except KeyboardInterrupt:
        hint = resume()
        print("interrupted" + (f": {hint}" if hint else "; nothing was written."), file=sys.stderr)
        return 130
    except OSError as err:
        if err.errno != errno.ENOSPC:
            raise
        hint = resume()
        print(f"error: the disk is full ({err.filename or 'writing results'})" + (f"; free some space, then {hint}"
              if hint else "; free some space and run the command again."), file=sys.stderr)
        return 1
    return 0
