"""The exceptions coca raises; each is also the built-in exception Python code already catches."""


class CocaError(Exception):
    """Base of every error coca raises (the message is the one the ``coca`` command prints)."""


class CocaFileNotFoundError(CocaError, FileNotFoundError):
    """A named file (image, checkpoint, config, class list) does not exist."""


class CocaValueError(CocaError, ValueError):
    """A bad argument or input: unknown model or tag, unreadable image, empty text, wrong array shape, ..."""
