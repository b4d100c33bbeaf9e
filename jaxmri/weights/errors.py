"""The one exception type of ``jaxmri.weights``."""


class WeightsError(Exception):
    """A weights file is missing, unsafe, corrupt or does not fit VGG19.

    ``str(error)`` is one sentence that names the file and says what to do next.
    """
