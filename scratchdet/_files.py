"""Writing files atomically: write to a temporary file beside the target, then rename.

A reader never sees a half-written output, and an error part-way leaves the old file (or nothing).
"""

import contextlib
import os
import tempfile

from scratchdet.errors import FileMissingError


def _default_mode():
    """The permission bits a plain `open(path, "w")` would give: 0o666 less the umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def require_file(path, expected):
    """Return `path` as a str if it names an existing regular file, else raise FileMissingError.

    `expected` says what the file should be, for the message: ``"a JSON file"`` gives
    ``"gt: is a directory, expected a JSON file"`` or ``"gt: no such file"``.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise FileMissingError(f"{path}: is a directory, expected {expected}")
    if not os.path.isfile(path):
        raise FileMissingError(f"{path}: no such file")
    return path


@contextlib.contextmanager
def atomic_write(path, mode="w", **open_kwargs):
    """Open a temporary file next to `path` for writing; on success rename it onto `path`.

    Usage: ``with atomic_write("out.json") as f: json.dump(obj, f)``. On an exception the
    temporary file is removed and `path` is left untouched.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _default_mode())  # mkstemp makes files private (0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path next to `path` for a library that writes by name (savefig, savez).

    The temporary name keeps `path`'s extension so that format detection still works.
    On success it is renamed onto `path`; on an exception it is removed.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    base, ext = os.path.splitext(os.path.basename(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + base + ".", suffix=".tmp" + ext)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, _default_mode())  # mkstemp makes files private (0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise
