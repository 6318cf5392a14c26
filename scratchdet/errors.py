"""The exceptions scratchdet raises for bad input.

Every error a user can cause (a missing file, a malformed field, an argument out of range) is a
subclass of `ScratchdetError` whose message names the file, field or argument and what was expected.
The command line prints that message and exits with status 2, without a traceback.
"""


class ScratchdetError(Exception):
    """Base class of every error caused by bad input to scratchdet."""


class InvalidArgumentError(ScratchdetError, ValueError):
    """An argument has the wrong shape, dtype or value."""


class DataFormatError(ScratchdetError, ValueError):
    """A file (JSON, XML, image, weights) is missing fields, malformed or inconsistent."""


class FileMissingError(ScratchdetError, FileNotFoundError):
    """A file that was asked for does not exist."""


class BackendUnavailableError(ScratchdetError, RuntimeError):
    """A backend (CUDA) was asked for where it is not available."""


class TrainingDivergedError(ScratchdetError, FloatingPointError):
    """Training produced a non-finite loss."""
