"""scratchdet: classic object detection from scratch in NumPy and Numba.

Read the package in the order of the README's tour: boxes, the conv net layers (`scratchdet.nn`),
region proposals (`scratchdet.proposals`), detectors (`scratchdet.models`), evaluation
(`scratchdet.eval`).
"""

import os
import sys

# OpenBLAS (NumPy's BLAS, for the linear layers and the im2col convolutions) keeps its worker threads
# spinning for 2**28 cycles, about 0.1 s, after every product; a Numba kernel started meanwhile
# shares the cores with them and runs at the pace of its slowest thread. On this project's 2-core VM a
# conv2d backward that takes 12 ms alone took 17-19 ms right after a product, and a Fast R-CNN
# training step 16.8 ms on 2 threads against 8 ms on one; with OpenBLAS's workers sleeping after 2**4
# cycles, 11.4 ms and 6.9 ms, the products no slower. OpenBLAS reads the setting when NumPy loads it,
# so it only takes effect when scratchdet is imported before NumPy (the `scratchdet` command always
# is); a value set by the user is kept.
if "numpy" not in sys.modules:
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

from scratchdet.errors import (  # noqa: E402  (after the OpenBLAS setting above)
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
