"""`scratchdet._files`: atomic writes, and errors that name the path the caller gave."""

import errno
import os
import tempfile

import pytest

from scratchdet._files import atomic_path, atomic_write
from scratchdet.commands.outputs import check_distinct
from scratchdet.errors import InvalidArgumentError


@pytest.mark.parametrize("opener", [lambda p: atomic_write(p), lambda p: atomic_path(p)], ids=["atomic_write", "atomic_path"])
def test_writing_onto_a_directory_fails_naming_it_and_leaves_no_temporary_file(tmp_path, opener):
    target = tmp_path / "out.json"
    (target / "inside").mkdir(parents=True)  # a directory that is not empty: no rename replaces it
    with pytest.raises(OSError) as raised:
        with opener(target) as f:
            if isinstance(f, str):
                open(f, "w").close()
            else:
                f.write("{}")
    assert raised.value.filename == str(target)  # not the hidden temporary file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


@pytest.mark.parametrize("opener", [atomic_write, atomic_path], ids=["atomic_write", "atomic_path"])
def test_a_file_on_the_way_is_not_a_directory(tmp_path, opener):
    (tmp_path / "a_file").write_text("kept")
    target = tmp_path / "a_file" / "new" / "out.json"
    with pytest.raises(NotADirectoryError) as raised:
        with opener(target):
            pass
    assert raised.value.filename == str(target) and raised.value.errno == errno.ENOTDIR
    assert (tmp_path / "a_file").read_text() == "kept"


def test_an_error_while_writing_keeps_the_old_file(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as f:
            f.write("half")
            raise RuntimeError("stopped half-way")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_missing_directories_are_made(tmp_path):
    with atomic_write(tmp_path / "a" / "b" / "out.txt") as f:
        f.write("x")
    assert (tmp_path / "a" / "b" / "out.txt").read_text() == "x"


@pytest.mark.parametrize("opener", [atomic_write, atomic_path], ids=["atomic_write", "atomic_path"])
def test_a_temporary_file_that_cannot_be_made_is_reported_as_the_target(tmp_path, monkeypatch, opener):
    # EACCES, EROFS, ENOSPC: the commonest write errors come from making the temporary file
    def refuse(dir, prefix, suffix):
        raise PermissionError(errno.EACCES, "Permission denied", os.path.join(dir, prefix + "x" + suffix))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(PermissionError) as raised:
        with opener(tmp_path / "out.json"):
            pass
    assert raised.value.filename == str(tmp_path / "out.json")


def test_outputs_may_not_be_an_input_under_another_name(tmp_path):
    image = tmp_path / "photo.png"
    image.write_bytes(b"x")
    os.link(image, tmp_path / "hard.png")
    os.symlink(image, tmp_path / "soft.png")
    for alias in ("hard.png", "soft.png", "./photo.png"):
        with pytest.raises(InvalidArgumentError, match="would overwrite the input"):
            check_distinct([("--plot", str(tmp_path / alias))], [str(image)])
    with pytest.raises(InvalidArgumentError, match="is the file --out already writes"):
        check_distinct([("--out", str(tmp_path / "a.json")), ("--plot", str(tmp_path / "." / "a.json"))], [str(image)])
    check_distinct([("--out", str(tmp_path / "a.json")), ("--plot", None)], [str(image), str(tmp_path / "missing.png")])
