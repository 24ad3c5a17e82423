"""The project's one error type: a clear, one-line message for the user."""


class PramlocError(Exception):
    """Raised for bad input or a bad map; the CLI prints ``str(err)`` and exits 2.

    The message names the file and the problem on one line.
    """

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
