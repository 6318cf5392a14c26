"""scratchdet: classic object detection from scratch in NumPy and Numba.

Read the package in the order of the README's tour: boxes, the conv net layers (`scratchdet.nn`),
region proposals (`scratchdet.proposals`), detectors (`scratchdet.models`), evaluation
(`scratchdet.eval`).
"""

from scratchdet.errors import (
    BackendUnavailableError,
    DataFormatError,
    FileMissingError,
    InvalidArgumentError,
    ScratchdetError,
    TrainingDivergedError,
)

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailableError",
    "DataFormatError",
    "FileMissingError",
    "InvalidArgumentError",
    "ScratchdetError",
    "TrainingDivergedError",
    "__version__",
]
