"""A command's outputs: their paths checked before any work (a bad one stops the run with nothing
written), write errors reported as one line, and the files of one run written together."""

import contextlib
import os
import tempfile

from scratchdet.errors import InvalidArgumentError


def check_output_file(option, path):
    """Fail unless `path` (the value of `option`, or None) can be written as a file.

    It must name a file, not a directory ("out/" names one too), and the nearest directory on its
    way that exists must take a new file: a nameless temporary file is made there and dropped at once
    (missing directories below it are made when the output is written).
    """
    check_output_files(option, [path])


def check_output_files(option, paths):
    """`check_output_file` for each of `paths` (None skipped), each directory probed once: the
    pictures of a `proposals` run over thousands of images all go to one directory."""
    probed = set()
    for path in paths:
        if path is None:
            continue
        path = os.fspath(path)
        if os.path.isdir(path) or not os.path.basename(path):
            raise InvalidArgumentError(f"{option} {path!r} is a directory, expected a file name")
        existing = os.path.dirname(os.path.abspath(path))
        while not os.path.lexists(existing):
            existing = os.path.dirname(existing)
        if existing in probed:
            continue
        if not os.path.isdir(existing):
            raise InvalidArgumentError(f"{option} {path!r}: {existing} is not a directory")
        try:
            with tempfile.TemporaryFile(dir=existing):
                pass
        except OSError as error:
            raise InvalidArgumentError(f"{option} {path!r}: cannot write in {existing} ({error.strerror or error})") from None
        probed.add(existing)


def check_distinct(outputs, inputs):
    """Fail when two outputs are one file, or an output would overwrite an input.

    Args:
        outputs: (option, path) pairs, e.g. ``[("--out", "boxes.json"), ("--plot", "top.png")]``; a
            None path is skipped.
        inputs: the paths of the input files.

    Each path is resolved once (`realpath`, and the file's device and inode where it exists, which
    also catches a hard link): one `proposals` run may name thousands of images and their pictures.
    """
    input_of = {}  # realpath or (device, inode) -> the input path
    for source in inputs:
        for key in _identities(source):
            input_of.setdefault(key, source)
    seen = {}
    for option, path in outputs:
        if path is None:
            continue
        keys = _identities(path)
        for key in keys:
            if key in input_of:
                raise InvalidArgumentError(f"{option} {path!r} would overwrite the input {input_of[key]!r}")
            if key in seen:
                raise InvalidArgumentError(f"{option} {path!r} is the file {seen[key]} already writes")
        for key in keys:
            seen[key] = option


def _identities(path):
    """How a path is recognised: its realpath, and (device, inode) when the file exists."""
    keys = [os.path.realpath(path)]
    try:
        status = os.stat(path)
    except OSError:
        return keys
    return keys + [(status.st_dev, status.st_ino)]


def check_output_directory(option, path):
    """Fail unless `path` (the value of `option`) is a directory or nothing yet (made when written)."""
    if os.path.lexists(path) and not os.path.isdir(path):
        raise InvalidArgumentError(f"{option} {path!r} exists and is not a directory")


@contextlib.contextmanager
def reporting_write_errors(path):
    """Turn an OSError of the writing inside into an InvalidArgumentError "cannot write FILE: why", FILE
    being the file the error names, else `path` (what the command was writing)."""
    try:
        yield
    except OSError as error:
        raise InvalidArgumentError(f"cannot write {error.filename or path}: {error.strerror or error}") from error


@contextlib.contextmanager
def written_together(paths):
    """Temporary paths for the files `paths` ({key: path}, None paths skipped) to write, one
    each, renamed onto them together when the block ends; on an error or Ctrl-C every temporary file
    is removed instead: the files of one run are never mixed with those an earlier run left."""
    from scratchdet._files import atomic_path

    paths = {key: path for key, path in paths.items() if path is not None}
    with contextlib.ExitStack() as stack:
        temporary = {key: stack.enter_context(atomic_path(path)) for key, path in paths.items()}
        try:
            yield temporary
        except OSError as error:
            if error.filename is None and error.errno is not None:  # e.g. a full disk: about every file
                raise OSError(error.errno, error.strerror, ", ".join(paths.values())) from error
            raise
