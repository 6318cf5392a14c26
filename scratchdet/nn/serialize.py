"""Saving and loading models: `.npz` files with a JSON metadata entry, never pickle.

The file holds one array per parameter ("param/0.weight", ...) and "metadata", a JSON string with the
architecture (so `load` rebuilds the `Sequential` without pickle), the class names and the format
version. It is written atomically (temporary file, then rename) and read with `allow_pickle=False`;
a truncated file, missing or extra arrays, or wrong shapes raise `DataFormatError` naming the problem.
"""

import json
import os
import zipfile

import numpy as np

from scratchdet import __version__
from scratchdet._files import atomic_path
from scratchdet.backend import to_host
from scratchdet.errors import DataFormatError, FileMissingError, InvalidArgumentError
from scratchdet.nn.layers import Layer, build_layer, layer_spec

FORMAT = "scratchdet-weights"
FORMAT_VERSION = 1
METADATA_KEY = "metadata"
PARAM_PREFIX = "param/"


def save(path, model, *, classes=None, extra=None):
    """Write `model`'s architecture and parameters to `path` (.npz), atomically.

    Args:
        path: destination file (".npz" is the convention).
        model: a `Layer` (usually a `Sequential`); its parameters are copied to the host.
        classes: optional list of class names, stored in the metadata.
        extra: optional JSON-ready dict stored under metadata["extra"] (e.g. training settings).
    """
    if not isinstance(model, Layer):
        raise InvalidArgumentError(f"model must be a scratchdet.nn Layer, got {type(model).__name__}")
    if os.path.isdir(os.fspath(path)) or not os.path.basename(os.fspath(path)):  # "models/" too
        raise InvalidArgumentError(f"{os.fspath(path)}: is a directory, expected a .npz file name")
    params = {PARAM_PREFIX + name: to_host(layer.params[key]) for name, layer, key in model.named_parameters()}
    for key, value in params.items():  # `load` could not rebuild it: refuse here, before anything is written
        if not np.all(np.isfinite(value)):
            raise InvalidArgumentError(
                f"{key[len(PARAM_PREFIX):]} holds values that are not finite (NaN or infinity); the model has diverged"
            )
    dtypes = {str(a.dtype) for a in params.values()}
    if len(dtypes) > 1:  # one dtype is stored, and `load` builds every layer in it
        raise InvalidArgumentError(f"the model's parameters mix dtypes {sorted(dtypes)}; save a model of one dtype")
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "scratchdet_version": __version__,
        "architecture": layer_spec(model),
        "dtype": dtypes.pop() if dtypes else "float32",
        "classes": None if classes is None else [str(c) for c in classes],
        "extra": extra,
    }
    try:
        text = json.dumps(metadata)
    except TypeError as error:
        raise InvalidArgumentError(f"classes and extra must be JSON-serialisable: {error}") from error
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **{METADATA_KEY: np.array(text)}, **params)


def read_metadata(path):
    """The metadata dict of a weights file (architecture, classes, versions) without building the model."""
    return _read(path)[0]


def load(path, *, with_metadata=False):
    """Rebuild the model saved by `save`.

    Returns:
        the model (in training mode, on the CPU), or (model, metadata) if `with_metadata`.

    Raises:
        FileMissingError: no file at `path`.
        DataFormatError: a directory, not a scratchdet weights file (a .npy array or a pickle included),
            truncated, with an architecture no layer accepts, a dtype other than float32 / float64, or
            missing / extra / misshapen / non-finite parameter arrays.
    """
    metadata, arrays = _read(path)
    dtype = metadata.get("dtype", "float32")
    if dtype not in ("float32", "float64"):
        raise DataFormatError(f"{path}: metadata dtype {dtype!r}, expected 'float32' or 'float64'")
    try:
        model = build_layer(metadata["architecture"], dtype=np.dtype(dtype))
    except (DataFormatError, InvalidArgumentError) as error:  # an architecture no layer accepts: the file is at fault
        raise DataFormatError(f"{path}: metadata architecture: {error}") from error
    expected = {PARAM_PREFIX + name: (layer, key) for name, layer, key in model.named_parameters()}
    missing = sorted(set(expected) - set(arrays))
    extra = sorted(set(arrays) - set(expected))
    if missing or extra:
        raise DataFormatError(f"{path}: parameters do not match the architecture: missing {missing}, unexpected {extra}")
    for name, (layer, key) in expected.items():
        value = arrays[name]
        if value.shape != layer.params[key].shape:
            raise DataFormatError(f"{path}: {name} has shape {value.shape}, the architecture needs {layer.params[key].shape}")
        if value.dtype.kind != "f":
            raise DataFormatError(f"{path}: {name} has dtype {value.dtype}, expected float")
        if not np.all(np.isfinite(value)):  # `save` never writes one
            raise DataFormatError(f"{path}: {name} holds values that are not finite (NaN or infinity); the file is damaged")
        layer.params[key] = np.ascontiguousarray(value, dtype=layer.params[key].dtype)
        layer.grads[key] = np.zeros_like(layer.params[key])
    return (model, metadata) if with_metadata else model


def _read(path):
    """(metadata dict, {name: array}) of a weights file, every array read now (so truncation shows)."""
    metadata, arrays = read_archive(path, "weights file", FORMAT, FORMAT_VERSION)
    if "architecture" not in metadata:
        raise DataFormatError(f"{os.fspath(path)}: metadata has no architecture; not a {FORMAT} file")
    return metadata, arrays


def read_archive(path, what, format_name, format_version):
    """(metadata dict, {name: array}) of a scratchdet .npz file (weights or a training checkpoint):
    every array read now, so a truncated file shows here, with `allow_pickle=False`; the JSON
    "metadata" entry must name `format_name` and `format_version`. `what` names the file in errors
    ("weights file", "checkpoint")."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise DataFormatError(f"{path}: is a directory, expected a .npz {what}")
    if not os.path.isfile(path):
        raise FileMissingError(f"{what} not found: {path}")
    # a .npz is a zip archive; np.load would take anything else for a .npy array (and then return an
    # array, not the archive's entries) or a pickle (and suggest loading it unsafely)
    if not zipfile.is_zipfile(path):
        raise DataFormatError(f"{path}: not a readable .npz {what} (truncated or corrupt?): not a zip archive")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as error:
        raise DataFormatError(f"{path}: not a readable .npz {what} (truncated or corrupt?): {error}") from error
    if METADATA_KEY not in arrays:
        raise DataFormatError(f"{path}: no {METADATA_KEY!r} entry; not a scratchdet {what}")
    try:
        metadata = json.loads(str(arrays.pop(METADATA_KEY)))
    except json.JSONDecodeError as error:
        raise DataFormatError(f"{path}: metadata is not valid JSON: {error}") from error
    if not isinstance(metadata, dict) or metadata.get("format") != format_name:
        raise DataFormatError(f"{path}: metadata does not describe a {format_name} file")
    if metadata.get("format_version") != format_version:
        raise DataFormatError(f"{path}: format version {metadata.get('format_version')!r}, this scratchdet reads {format_version}")
    return metadata, arrays
