"""Importing scratchdet before NumPy puts OpenBLAS's idle workers to sleep at once
(`OPENBLAS_THREAD_TIMEOUT=4`, see scratchdet/__init__.py), unless the user chose otherwise."""

import os
import subprocess
import sys

import pytest

SHOW = "import os, sys; {first}; print(os.environ.get('OPENBLAS_THREAD_TIMEOUT'))"


def imported_value(first, value=None):
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    if value is not None:
        env["OPENBLAS_THREAD_TIMEOUT"] = value
    out = subprocess.run([sys.executable, "-c", SHOW.format(first=first)], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip()


@pytest.mark.parametrize(
    ("first", "value", "expected"),
    [
        ("import scratchdet", None, "4"),  # set before NumPy loads OpenBLAS
        ("import scratchdet", "12", "12"),  # the user's own value is kept
        ("import numpy; import scratchdet", None, "None"),  # too late to matter: left alone
    ],
    ids=["scratchdet_first", "user_value_kept", "numpy_first"],
)
def test_openblas_thread_timeout_is_set_only_before_numpy_and_never_over_the_user(first, value, expected):
    assert imported_value(first, value) == expected
