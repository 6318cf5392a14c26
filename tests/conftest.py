"""Fixtures shared by the whole test suite."""

import numpy as np
import pytest


@pytest.fixture
def rng():
    """A seeded generator: every test that draws random numbers gets the same ones on every run."""
    return np.random.default_rng(0)
