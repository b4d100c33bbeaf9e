"""The errors a user can cause, all under one root: ``JaxmriError``.

Every command (``python -m jaxmri.train``, ``python -m jaxmri.weights``, ...) catches ``JaxmriError``
alone, prints ``error: <message>`` and exits with the error's ``exit_status`` (2: the input or the
flags must change). ``str(err)`` is the whole message: one line per problem, each naming the file,
entry or flag and saying what to do. Anything else that escapes is a bug in jaxmri and keeps its
traceback.

The subclasses say which stage found the problem, so library callers can catch one stage:

===============  ==============================================================
``DataError``      the data folder: missing, no class folders, unreadable images
``BadImageError``  one image file (``path`` and ``reason`` attributes)
``MaskError``      a mask source: COCO / Labelbox JSON, PNG mask folder
``RunDirError``    a run directory: used, foreign, or not written by jaxmri
``WeightsError``   a weights file: missing, unsafe, corrupt or the wrong shape
===============  ==============================================================
"""

from pathlib import Path


class JaxmriError(Exception):
    """Root of every user-facing error; ``exit_status`` is what a command exits with."""

    exit_status = 2


class DataError(JaxmriError):
    """A problem with the data folder; ``str(err)`` is the complete message, one line per problem."""


class BadImageError(JaxmriError, ValueError):
    """A file that cannot be used as an image; ``str(err)`` is one line: ``"<path>: <reason>"``."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class MaskError(JaxmriError, ValueError):
    """A mask source that cannot be used; ``str(err)`` is one line naming file, entry and fix."""


class RunDirError(JaxmriError):
    """A run directory cannot be used; the message says what to do."""


class WeightsError(JaxmriError):
    """A weights file is missing, unsafe, corrupt or does not fit VGG19.

    ``str(error)`` is one sentence that names the file and says what to do next.
    """
