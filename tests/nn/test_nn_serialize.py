"""nn.save / nn.load: .npz with JSON metadata, no pickle, atomic, clear errors on damaged files."""

import json
import os

import numpy as np
import pytest

from scratchdet import nn
from scratchdet.errors import DataFormatError, FileMissingError, InvalidArgumentError


def small_net():
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, rng=0), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Dropout(0.5, rng=1), nn.Linear(4 * 2 * 2, 3, rng=2, init="xavier"),
    )


def test_save_load_round_trip_rebuilds_architecture_and_weights(tmp_path, rng):
    net = small_net()
    path = tmp_path / "model.npz"
    nn.save(path, net, classes=["cat", "dog", "bird"], extra={"epochs": 3})
    loaded, meta = nn.load(path, with_metadata=True)
    assert meta["classes"] == ["cat", "dog", "bird"] and meta["extra"] == {"epochs": 3} and meta["format_version"] == 1
    assert [type(layer).__name__ for layer in loaded] == ["Conv2d", "ReLU", "MaxPool2d", "Flatten", "Dropout", "Linear"]
    x = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    np.testing.assert_array_equal(loaded.eval().forward(x), net.eval().forward(x))
    assert not [f for f in os.listdir(tmp_path) if f != "model.npz"], "no temporary file is left behind"


def test_saved_file_holds_no_pickled_object(tmp_path):
    path = tmp_path / "model.npz"
    nn.save(path, small_net())
    with np.load(path, allow_pickle=False) as data:
        assert all(data[key].dtype != object for key in data.files)
        meta = json.loads(str(data["metadata"]))
    assert meta["architecture"]["type"] == "Sequential"


def test_load_missing_file(tmp_path):
    with pytest.raises(FileMissingError, match="not found"):
        nn.load(tmp_path / "nothing.npz")


def test_load_truncated_file(tmp_path):
    path = tmp_path / "model.npz"
    nn.save(path, small_net())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataFormatError, match="truncated or corrupt"):
        nn.load(path)


def _rewrite(path, change):
    with np.load(path, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    change(arrays)
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def _set_metadata(arrays, **fields):
    metadata = json.loads(str(arrays["metadata"]))
    metadata.update(fields)
    arrays["metadata"] = np.array(json.dumps(metadata))


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda a: a.pop("param/5.bias"), r"missing \['param/5.bias'\]"),
        (lambda a: a.update({"param/9.weight": np.zeros(2)}), r"unexpected \['param/9.weight'\]"),
        (lambda a: a.update({"param/0.weight": np.zeros((4, 3, 5, 5), np.float32)}), r"param/0.weight has shape \(4, 3, 5, 5\)"),
        (lambda a: a.pop("metadata"), "no 'metadata' entry"),
        (lambda a: a.update({"metadata": np.array("{not json")}), "not valid JSON"),
        (lambda a: _set_metadata(a, dtype="int32"), "dtype 'int32'"),
        (lambda a: _set_metadata(a, dtype="bogus"), "dtype 'bogus'"),
    ],
    ids=["missing-key", "extra-key", "wrong-shape", "no-metadata", "bad-json", "integer-dtype", "unknown-dtype"],
)
def test_load_rejects_inconsistent_files(tmp_path, change, match):
    path = tmp_path / "model.npz"
    nn.save(path, small_net())
    _rewrite(path, change)
    with pytest.raises(DataFormatError, match=match):
        nn.load(path)


@pytest.mark.parametrize("kind", ["npy", "pickle", "text"])
def test_load_of_a_file_that_is_not_a_zip_archive_is_a_data_format_error(tmp_path, kind):
    # np.load alone returns a .npy file's array (then the archive code crashed with a TypeError) and,
    # for a pickle, suggests loading it with allow_pickle
    path = tmp_path / "model.npz"
    if kind == "npy":
        with open(path, "wb") as f:
            np.save(f, np.zeros(3, np.float32))
    elif kind == "pickle":
        path.write_bytes(b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00K\x01.")
    else:
        path.write_text("weights")
    with pytest.raises(DataFormatError, match="not a zip archive") as error:
        nn.load(path)
    assert "allow_pickle" not in str(error.value)


@pytest.mark.parametrize(
    "architecture, match",
    [({"type": "Nope"}, "unknown layer"), ({"type": "Linear", "in_features": 0, "out_features": 2, "init": "he"}, "in_features")],
    ids=["unknown-type", "rejected-size"],
)
def test_load_names_the_file_of_an_architecture_no_layer_accepts(tmp_path, architecture, match):
    path = tmp_path / "model.npz"
    nn.save(path, small_net())
    _rewrite(path, lambda a: _set_metadata(a, architecture=architecture))
    with pytest.raises(DataFormatError, match=match) as error:
        nn.load(path)
    assert str(error.value).startswith(str(path))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_load_rejects_parameters_that_are_not_finite(tmp_path, bad):
    path = tmp_path / "model.npz"
    nn.save(path, small_net())
    _rewrite(path, lambda a: a["param/5.bias"].__setitem__(1, bad))
    with pytest.raises(DataFormatError, match=r"param/5.bias holds values that are not finite"):
        nn.load(path)


def test_load_directory_is_a_data_format_error(tmp_path):
    (tmp_path / "model.npz").mkdir()
    with pytest.raises(DataFormatError, match="is a directory"):
        nn.load(tmp_path / "model.npz")


def test_save_onto_a_directory_is_an_invalid_argument(tmp_path):
    (tmp_path / "model.npz").mkdir()
    with pytest.raises(InvalidArgumentError, match="is a directory"):
        nn.save(tmp_path / "model.npz", small_net())
    with pytest.raises(InvalidArgumentError, match="is a directory"):
        nn.save(str(tmp_path / "new") + os.sep, small_net())
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"]


def test_failed_save_leaves_existing_file_untouched(tmp_path):
    path = tmp_path / "model.npz"
    nn.save(path, small_net())
    before = path.read_bytes()
    with pytest.raises(Exception, match="JSON"):
        nn.save(path, small_net(), extra={"not json": object()})
    assert path.read_bytes() == before


def test_float64_model_round_trips_as_float64(tmp_path):
    net = nn.Sequential(nn.Conv2d(2, 3, 3, rng=0, dtype=np.float64), nn.Flatten(), nn.Linear(3, 2, rng=1, dtype=np.float64))
    path = tmp_path / "model.npz"
    nn.save(path, net)
    loaded, meta = nn.load(path, with_metadata=True)
    assert meta["dtype"] == "float64"
    for (name, layer, key), (_, original, _) in zip(loaded.named_parameters(), net.named_parameters()):
        assert layer.params[key].dtype == np.float64, name
        np.testing.assert_array_equal(layer.params[key], original.params[key])


def test_a_model_of_mixed_dtypes_is_refused_not_saved_as_one(tmp_path):
    # the file stores one dtype: float64 parameters would come back float32
    net = nn.Sequential(nn.Linear(3, 2, rng=0, dtype=np.float64), nn.Linear(2, 2, rng=1))
    with pytest.raises(InvalidArgumentError, match="mix dtypes"):
        nn.save(tmp_path / "model.npz", net)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_a_model_with_non_finite_parameters_is_refused_not_saved(tmp_path, value):
    # `load` would reject the file as damaged: the model is what is wrong, and nothing is written
    net = small_net()
    net.layers[-1].params["bias"][1] = value
    with pytest.raises(InvalidArgumentError, match=r"5.bias holds values that are not finite .* diverged"):
        nn.save(tmp_path / "model.npz", net)
    assert not list(tmp_path.iterdir())


def test_load_rejects_integer_parameter_arrays(tmp_path):
    path = tmp_path / "model.npz"
    nn.save(path, small_net())
    _rewrite(path, lambda a: a.update({"param/5.bias": np.zeros(3, np.int64)}))
    with pytest.raises(DataFormatError, match=r"param/5.bias has dtype int64, expected float"):
        nn.load(path)


def test_classes_are_saved_as_strings(tmp_path):
    path = tmp_path / "model.npz"
    nn.save(path, small_net(), classes=(1, np.int64(2), "bird"))
    assert nn.read_metadata(path)["classes"] == ["1", "2", "bird"]
