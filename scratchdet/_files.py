"""Writing files atomically: write to a temporary file beside the target, then rename.

A reader never sees a half-written output, and an error part-way leaves the old file (or nothing).
"""

import contextlib
import errno
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


def _temporary_beside(path, suffix):
    """``(fd, name)`` of a new private file in `path`'s directory (made if missing), named after `path`."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, exist_ok=True)
    except (FileExistsError, NotADirectoryError):  # a file stands where a directory on the way should be
        raise NotADirectoryError(errno.ENOTDIR, "a file on its way is not a directory", path) from None
    base = os.path.basename(path)
    try:
        return tempfile.mkstemp(dir=directory, prefix="." + base + ".", suffix=suffix)
    except OSError as error:  # it names the temporary file, which the caller never saw
        raise OSError(error.errno, error.strerror, path) from error


@contextlib.contextmanager
def _naming(path, tmp=None):
    """Re-raise an OSError about the temporary file `tmp` (or about no file) as one about `path`: the
    user gave `path` and never saw the temporary name."""
    try:
        yield
    except OSError as error:
        if error.filename in (None, tmp) and error.errno is not None:
            raise OSError(error.errno, error.strerror, path) from error
        raise


@contextlib.contextmanager
def atomic_write(path, mode="w", **open_kwargs):
    """Open a temporary file next to `path` for writing; on success rename it onto `path`.

    Usage: ``with atomic_write("out.json") as f: json.dump(obj, f)``. On an exception the
    temporary file is removed and `path` is left untouched. Missing directories on the way to `path`
    are made. An OSError of the writing names `path` (not the temporary file).
    """
    path = os.fspath(path)
    with _naming(path):
        fd, tmp = _temporary_beside(path, ".tmp")
    try:
        with _naming(path, tmp):
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


def staged_path(path):
    """A new, empty, private temporary file next to `path` (missing directories made), named after it
    with its extension (so that a library's format detection by name still works): write it, then
    `publish` it onto `path`, or remove it. An OSError of the making names `path`."""
    path = os.fspath(path)
    with _naming(path):
        fd, tmp = _temporary_beside(path, ".tmp" + os.path.splitext(path)[1])
    os.close(fd)
    return tmp


def publish(tmp, path):
    """Rename the written temporary file `tmp` (`staged_path`) onto `path`, with a new file's usual
    permissions (mkstemp makes files private, 0o600). An OSError names `path`."""
    with _naming(path, tmp):
        os.chmod(tmp, _default_mode())
        os.replace(tmp, path)


@contextlib.contextmanager
def writing(path, tmp):
    """Re-raise an OSError about the temporary file `tmp` (or about no file) raised inside as one about
    `path`, the name the user gave."""
    with _naming(path, tmp):
        yield


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path next to `path` for a library that writes by name (savefig, savez).

    The temporary name keeps `path`'s extension so that format detection still works.
    On success it is renamed onto `path`; on an exception it is removed. Missing directories on the
    way to `path` are made; an OSError about the temporary file names `path`.
    """
    path = os.fspath(path)
    tmp = staged_path(path)
    try:
        with _naming(path, tmp):
            yield tmp
        publish(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise
