"""The training loop: it trains, resumes from a checkpoint bit for bit, stops cleanly on a non-finite
loss, and checks its arguments and its checkpoint files."""

import json
import math
import os

import numpy as np
import pytest

from scratchdet import backend, nn
from scratchdet.errors import DataFormatError, InvalidArgumentError, TrainingDivergedError
from scratchdet.train.loop import History, fit, load_checkpoint, model_generators, save_checkpoint

NUM_CLASSES = 4
IMAGE_SIZE = 8


class TinyClassifier:
    """conv - relu - flatten - dropout - linear over 1 x 8 x 8 images: the smallest model with every
    kind of state a checkpoint must hold (parameters, and a Dropout generator)."""

    def __init__(self, seed, channels=4, dropout=0.5):
        side = IMAGE_SIZE - 2  # a 3 x 3 convolution without padding
        self.net = nn.Sequential(
            nn.Conv2d(1, channels, 3, rng=seed), nn.ReLU(), nn.Flatten(),
            nn.Dropout(dropout, rng=seed + 1), nn.Linear(channels * side * side, NUM_CLASSES, rng=seed + 2),
        )

    def named_parameters(self):
        return self.net.named_parameters()

    def train(self):
        self.net.train()
        return self

    def children(self):
        return [self.net]

    def training_step(self, batch):
        images, labels = batch
        loss, dlogits = nn.softmax_cross_entropy(self.net.forward(images), labels)
        self.net.backward(dlogits, input_grad=False)
        weight = backend.to_host(self.net[4].params["weight"])
        return {"total": loss, "cls": loss, "weight_norm": float(np.sqrt((weight**2).sum()))}


class DivergingClassifier(TinyClassifier):
    """Trains normally, except that the loss of its `nan_at`-th call (0-based) is not finite."""

    def __init__(self, seed, nan_at, bad_value=math.nan):
        super().__init__(seed)
        self.nan_at, self.bad_value, self.calls = nan_at, bad_value, 0

    def training_step(self, batch):
        components = super().training_step(batch)  # forward and backward really run (and draw dropout masks)
        self.calls += 1
        if self.calls - 1 == self.nan_at:
            components["total"] = components["cls"] = self.bad_value
        return components


def batches(step, seed=0, size=8):
    """Batch `step`: images with a bright 3 x 3 square in the quadrant given by the label, plus noise.

    A function of the step alone, so an interrupted run gets the same batches when it resumes."""
    rng = np.random.default_rng([seed, step])
    labels = rng.integers(0, NUM_CLASSES, size)
    images = rng.normal(0, 0.1, (size, 1, IMAGE_SIZE, IMAGE_SIZE)).astype(np.float32)
    for i, label in enumerate(labels):
        y, x = divmod(int(label), 2)
        images[i, 0, 4 * y : 4 * y + 3, 4 * x : 4 * x + 3] += 1.0
    return images, labels


def make_run(seed=0, optimizer="adam", model=None):
    """(model, optimizer, schedule): Adam at lr 0.01 halved every 3 steps."""
    model = TinyClassifier(seed) if model is None else model
    opt = nn.Adam(model, lr=0.01) if optimizer == "adam" else nn.SGD(model, lr=0.01, momentum=0.9)
    return model, opt, nn.StepLR(opt, step_size=3, gamma=0.5)


def parameters(model):
    return {name: layer.params[key].copy() for name, layer, key in model.named_parameters()}


def dropout_state(model):
    return model.net[3]._rng.bit_generator.state


def checkpoint_arrays(path):
    with np.load(path, allow_pickle=False) as data:
        return {name: data[name] for name in data.files}


def assert_same_arrays(ours, theirs):
    assert sorted(ours) == sorted(theirs)
    for name in ours:
        np.testing.assert_array_equal(ours[name], theirs[name], err_msg=name)


def test_loss_goes_down_on_a_learnable_problem():
    model, opt, _ = make_run()
    history = fit(model, batches, opt, steps=30, progress=False)
    total = history.losses["total"]
    assert history.steps == list(range(30))
    assert set(history.losses) == {"total", "cls", "weight_norm"}
    assert all(len(values) == 30 for values in history.losses.values())
    first, last = np.mean(total[:5]), np.mean(total[-5:])
    assert last < 0.5 * first, f"mean loss of the first 5 steps {first:.3f}, of the last 5 {last:.3f}"
    assert history.last() == total[-1] and history.last("cls") == history.losses["cls"][-1]


def test_history_as_dict_is_json_ready():
    model, opt, _ = make_run()
    history = fit(model, batches, opt, steps=3, progress=False)
    assert json.loads(json.dumps(history.as_dict())) == {"steps": [0, 1, 2], "losses": history.losses}
    with pytest.raises(InvalidArgumentError, match="'loc'"):
        history.last("loc")
    with pytest.raises(InvalidArgumentError, match="empty"):
        History().last()


def test_resume_from_a_checkpoint_is_exact_bit_for_bit(tmp_path):
    # 1. an uninterrupted run of 8 steps
    model_a, opt_a, schedule_a = make_run(seed=0)
    history_a = fit(model_a, batches, opt_a, steps=8, schedule=schedule_a, checkpoint=tmp_path / "a.npz",
                    checkpoint_every=4, progress=False)

    # 2. the same run, killed during step 6: its last checkpoint is the one after step 4
    class Interrupted(Exception):
        pass

    def batches_until_6(step):
        if step == 6:
            raise Interrupted
        return batches(step)

    model_b, opt_b, schedule_b = make_run(seed=0)
    with pytest.raises(Interrupted):
        fit(model_b, batches_until_6, opt_b, steps=8, schedule=schedule_b, checkpoint=tmp_path / "b.npz",
            checkpoint_every=4, progress=False)

    # 3. a new process: a fresh model (other weights, another dropout seed), optimiser and schedule
    model_c, opt_c, schedule_c = make_run(seed=7)
    assert dropout_state(model_c) != dropout_state(model_a)
    history_c = fit(model_c, batches, opt_c, steps=8, schedule=schedule_c, checkpoint=tmp_path / "b.npz",
                    checkpoint_every=4, resume=True, progress=False)

    assert history_c.as_dict() == history_a.as_dict()
    assert_same_arrays(parameters(model_c), parameters(model_a))
    assert_same_arrays(opt_c.state_dict(), opt_a.state_dict())
    assert opt_c.lr == opt_a.lr == 0.01 * 0.5**2
    assert (schedule_c.epoch, schedule_c.base_lr) == (schedule_a.epoch, schedule_a.base_lr) == (8, 0.01)
    assert dropout_state(model_c) == dropout_state(model_a)  # the dropout masks of steps 4 to 7 were the same
    # and the two final checkpoints are the same, entry for entry
    assert_same_arrays(checkpoint_arrays(tmp_path / "b.npz"), checkpoint_arrays(tmp_path / "a.npz"))


def test_checkpoint_holds_the_dropout_generator_and_load_restores_it(tmp_path):
    model, opt, schedule = make_run(seed=0)
    fit(model, batches, opt, steps=2, schedule=schedule, checkpoint=tmp_path / "c.npz", progress=False)
    paths = [path for path, _ in model_generators(model)]
    assert paths == ["net.layers.3._rng"]
    other, other_opt, other_schedule = make_run(seed=5)
    step, history = load_checkpoint(tmp_path / "c.npz", other, other_opt, other_schedule)
    assert step == 2 and history.steps == [0, 1]
    assert dropout_state(other) == dropout_state(model)
    assert other.net[3]._rng.random() == model.net[3]._rng.random()


def test_model_generators_follows_children_and_lists_a_shared_generator_once():
    shared = np.random.default_rng(1)

    class Composite:
        def __init__(self):
            self.rng = np.random.default_rng(2)  # e.g. a sampler of foreground / background RoIs
            self.heads = {"cls": nn.Dropout(0.5, rng=shared), "loc": nn.Dropout(0.5, rng=shared)}

        def children(self):
            return self.heads

    found = model_generators(Composite())
    assert [path for path, _ in found] == ["rng", "children.cls._rng"]
    assert found[1][1] is shared


@pytest.mark.parametrize("bad_value", [math.nan, math.inf])
def test_non_finite_loss_stops_before_the_update_and_checkpoints_the_last_good_state(tmp_path, bad_value):
    # reference: 3 good steps (0, 1, 2)
    model_ref, opt_ref, schedule_ref = make_run(seed=0)
    history_ref = fit(model_ref, batches, opt_ref, steps=3, schedule=schedule_ref, progress=False)

    model, opt, schedule = make_run(model=DivergingClassifier(seed=0, nan_at=3, bad_value=bad_value))
    path = tmp_path / "run.npz"
    with pytest.raises(TrainingDivergedError, match=r"not finite at step 3: total=(nan|inf) cls=(nan|inf) weight_norm="):
        fit(model, batches, opt, steps=10, schedule=schedule, checkpoint=path, checkpoint_every=100, progress=False)

    # the model, optimiser and schedule are as after step 2; step 3's dropout draws are undone
    assert_same_arrays(parameters(model), parameters(model_ref))
    assert_same_arrays(opt.state_dict(), opt_ref.state_dict())
    assert schedule.epoch == 3
    assert dropout_state(model) == dropout_state(model_ref)
    # the checkpoint holds those 3 steps, and resuming from it would redo step 3 with the same batch and masks
    fresh, fresh_opt, fresh_schedule = make_run(model=DivergingClassifier(seed=9, nan_at=None))
    step, history = load_checkpoint(path, fresh, fresh_opt, fresh_schedule)
    assert step == 3
    assert history.as_dict() == history_ref.as_dict()
    assert_same_arrays(parameters(fresh), parameters(model_ref))
    assert dropout_state(fresh) == dropout_state(model_ref)


def test_non_finite_loss_at_the_first_step_leaves_the_initial_parameters():
    model, opt, _ = make_run(model=DivergingClassifier(seed=0, nan_at=0))
    before = parameters(model)
    with pytest.raises(TrainingDivergedError, match="step 0.*at the start"):
        fit(model, batches, opt, steps=5, progress=False)
    assert_same_arrays(parameters(model), before)
    assert opt.step_count == 0


def test_loss_components_must_keep_their_names_and_include_total():
    class Changing(TinyClassifier):
        calls = 0

        def training_step(self, batch):
            components = super().training_step(batch)
            self.calls += 1
            if self.calls == 3:
                components["extra"] = 0.0
            return components

    model, opt, _ = make_run(model=Changing(seed=0))
    with pytest.raises(InvalidArgumentError, match="same components every step"):
        fit(model, batches, opt, steps=5, progress=False)
    assert opt.step_count == 2  # stopped before the update of step 2

    class NoTotal(TinyClassifier):
        def training_step(self, batch):
            return {"cls": super().training_step(batch)["cls"]}

    model, opt, _ = make_run(model=NoTotal(seed=0))
    with pytest.raises(InvalidArgumentError, match="'total'"):
        fit(model, batches, opt, steps=1, progress=False)


def test_resume_with_a_checkpoint_of_another_architecture_raises(tmp_path):
    path = tmp_path / "run.npz"
    model, opt, _ = make_run(seed=0)
    fit(model, batches, opt, steps=1, checkpoint=path, progress=False)

    wider = TinyClassifier(seed=0, channels=8)
    with pytest.raises(DataFormatError, match=r"parameter 0\.weight is \(4, 1, 3, 3\) float32 there, \(8, 1, 3, 3\)"):
        fit(wider, batches, nn.Adam(wider, lr=0.01), steps=2, checkpoint=path, resume=True, progress=False)

    other, sgd, _ = make_run(seed=0, optimizer="sgd")
    before = parameters(other)
    with pytest.raises(DataFormatError, match="optimiser Adam, this run has SGD"):
        fit(other, batches, sgd, steps=2, checkpoint=path, resume=True, progress=False)
    assert_same_arrays(parameters(other), before)  # nothing was restored

    same, adam, schedule = make_run(seed=0)
    with pytest.raises(DataFormatError, match="schedule None, this run has StepLR"):
        fit(same, batches, adam, steps=2, schedule=schedule, checkpoint=path, resume=True, progress=False)


@pytest.mark.parametrize("keep", [0.5, 0.1])
def test_truncated_checkpoint_raises_data_format_error(tmp_path, keep):
    path = tmp_path / "run.npz"
    model, opt, _ = make_run()
    fit(model, batches, opt, steps=1, checkpoint=path, progress=False)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(DataFormatError, match="truncated or corrupt"):
        fit(model, batches, opt, steps=2, checkpoint=path, resume=True, progress=False)


def test_a_file_that_is_not_a_checkpoint_raises_data_format_error(tmp_path):
    path = tmp_path / "weights.npz"
    model, opt, _ = make_run()
    nn.save(path, model.net)  # a weights file, not a checkpoint
    with pytest.raises(DataFormatError, match="scratchdet-checkpoint"):
        load_checkpoint(path, model, opt)


def test_checkpoint_is_read_without_pickle_and_holds_every_piece(tmp_path):
    path = tmp_path / "run.npz"
    model, opt, schedule = make_run()
    fit(model, batches, opt, steps=2, schedule=schedule, checkpoint=path, progress=False)
    arrays = checkpoint_arrays(path)  # allow_pickle=False
    assert all(a.dtype != object for a in arrays.values())
    metadata = json.loads(str(arrays["metadata"]))
    assert metadata["step"] == 2 and metadata["optimizer"] == "Adam" and metadata["schedule"] == "StepLR"
    assert metadata["parameters"]["0.weight"] == {"shape": [4, 1, 3, 3], "dtype": "float32"}
    assert {"param/0.weight", "param/4.bias", "optim/step", "optim/lr", "optim/0.weight/m", "schedule/epoch",
            "history/step", "history/loss/total", "rng/net.layers.3._rng"} <= set(arrays)
    assert json.loads(str(arrays["rng/net.layers.3._rng"]))["bit_generator"] == "PCG64"


def test_checkpoint_is_written_atomically_and_replaces_an_old_one(tmp_path):
    path = tmp_path / "run.npz"
    path.write_bytes(b"an old checkpoint")
    model, opt, _ = make_run()
    fit(model, batches, opt, steps=3, checkpoint=path, checkpoint_every=1, progress=False)  # resume=False
    assert os.listdir(tmp_path) == ["run.npz"]  # no temporary file left beside it
    step, _ = load_checkpoint(path, *make_run(seed=1)[:2])
    assert step == 3


def test_resume_when_already_complete_trains_nothing(tmp_path):
    path = tmp_path / "run.npz"
    model, opt, _ = make_run()
    history = fit(model, batches, opt, steps=4, checkpoint=path, progress=False)
    saved = path.read_bytes()

    def no_batches(step):
        raise AssertionError(f"asked for batch {step}")

    for steps in (4, 2):
        fresh, fresh_opt, _ = make_run(seed=3)
        resumed = fit(fresh, no_batches, fresh_opt, steps=steps, checkpoint=path, resume=True, progress=False)
        assert resumed.as_dict() == history.as_dict()
        assert_same_arrays(parameters(fresh), parameters(model))
        assert fresh_opt.step_count == 4
    assert path.read_bytes() == saved


def test_resume_without_a_checkpoint_file_starts_from_scratch(tmp_path):
    path = tmp_path / "sub" / "run.npz"
    model, opt, _ = make_run()
    history = fit(model, batches, opt, steps=2, checkpoint=path, resume=True, progress=False)
    assert history.steps == [0, 1]
    assert load_checkpoint(path, *make_run()[:2])[0] == 2


def test_zero_steps_trains_nothing_and_still_checkpoints(tmp_path):
    model, opt, _ = make_run()
    before = parameters(model)
    history = fit(model, batches, opt, steps=0, checkpoint=tmp_path / "run.npz", progress=False)
    assert len(history) == 0
    assert_same_arrays(parameters(model), before)
    assert load_checkpoint(tmp_path / "run.npz", model, opt)[0] == 0


class NoTrainingStep:
    def named_parameters(self):
        return iter(())

    def train(self):
        return self


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"steps": -1}, "steps must be an int >= 0"),
        ({"steps": 2.5}, "steps must be an int >= 0"),
        ({"steps": True}, "steps must be an int >= 0"),
        ({"checkpoint_every": 0}, "checkpoint_every must be an int >= 1"),
        ({"checkpoint_every": 1.0}, "checkpoint_every must be an int >= 1"),
        ({"batches": [1, 2, 3]}, "batches must be a callable"),
        ({"model": NoTrainingStep()}, "training_step"),
        ({"optimizer": object()}, "optimizer must have a step"),
        ({"schedule": object()}, "schedule must be None or have a step"),
        ({"resume": True}, "resume=True needs a checkpoint"),
        ({"resume": "yes", "checkpoint": "run.npz"}, "resume must be True or False"),
        ({"checkpoint": 3}, "checkpoint must be a path"),
    ],
)
def test_bad_arguments_raise_invalid_argument_error(changes, message):
    model, opt, _ = make_run()
    arguments = {"model": model, "batches": batches, "optimizer": opt, "steps": 2, "progress": False, **changes}
    with pytest.raises(InvalidArgumentError, match=message):
        fit(arguments.pop("model"), arguments.pop("batches"), arguments.pop("optimizer"), **arguments)
    assert opt.step_count == 0


def test_checkpoint_that_is_a_directory_raises(tmp_path):
    model, opt, _ = make_run()
    with pytest.raises(InvalidArgumentError, match="is a directory"):
        fit(model, batches, opt, steps=1, checkpoint=tmp_path, progress=False)
    with pytest.raises(InvalidArgumentError, match="history must be a History"):
        save_checkpoint(tmp_path / "run.npz", model, opt, None, 0, {"steps": []})


def test_progress_false_prints_nothing(capsys):
    model, opt, _ = make_run()
    fit(model, batches, opt, steps=2, progress=False)
    assert capsys.readouterr() == ("", "")


def test_progress_bar_shows_the_steps_and_losses(capsys):
    model, opt, _ = make_run()
    fit(model, batches, opt, steps=2, desc="tiny", progress=True)
    err = capsys.readouterr().err
    assert "tiny" in err and "2/2" in err and "total=" in err


@pytest.mark.skipif("cuda" not in backend.available(), reason="no GPU, and the CUDA simulator is off")
def test_checkpoint_of_a_model_on_the_gpu_restores_onto_the_gpu(tmp_path):
    def gpu_batches(step):
        images, labels = batches(step)
        return backend.to_device(images, "cuda"), backend.to_device(labels, "cuda")

    model = TinyClassifier(seed=0)
    model.net.to("cuda")
    opt = nn.SGD(model, lr=0.01, momentum=0.9)
    fit(model, gpu_batches, opt, steps=2, checkpoint=tmp_path / "run.npz", progress=False)
    fresh = TinyClassifier(seed=4)
    fresh.net.to("cuda")
    fresh_opt = nn.SGD(fresh, lr=0.01, momentum=0.9)
    assert load_checkpoint(tmp_path / "run.npz", fresh, fresh_opt)[0] == 2
    for (name, layer, key), (_, fresh_layer, _) in zip(model.named_parameters(), fresh.named_parameters()):
        assert backend.device_of(fresh_layer.params[key]) == "cuda", name
        np.testing.assert_array_equal(backend.to_host(fresh_layer.params[key]), backend.to_host(layer.params[key]))
    history = fit(fresh, gpu_batches, fresh_opt, steps=3, checkpoint=tmp_path / "run.npz", resume=True, progress=False)
    assert history.steps == [0, 1, 2]


def test_resume_refuses_a_checkpoint_of_another_model_class_with_the_same_parameters(tmp_path):
    """R-CNN and Fast R-CNN can share every parameter name and shape: the class decides."""
    from scratchdet.models import RCNN, FastRCNN

    path = tmp_path / "ckpt.npz"
    fast, slow = FastRCNN(("a",), hidden=4), RCNN(("a",), hidden=4)
    assert [(n, layer.params[k].shape) for n, layer, k in fast.named_parameters()] == [
        (n, layer.params[k].shape) for n, layer, k in slow.named_parameters()
    ]
    save_checkpoint(path, fast, nn.SGD(fast, lr=0.1), None, 0, History())
    with pytest.raises(DataFormatError, match="FastRCNN.*RCNN"):
        load_checkpoint(path, slow, nn.SGD(slow, lr=0.1))


class InterruptedClassifier(TinyClassifier):
    """Trains normally, except that its `stop_at`-th call (0-based) draws its dropout masks and is then
    interrupted (Ctrl-C) before returning."""

    def __init__(self, seed, stop_at):
        super().__init__(seed)
        self.stop_at, self.calls = stop_at, 0

    def training_step(self, batch):
        components = super().training_step(batch)
        self.calls += 1
        if self.calls - 1 == self.stop_at:
            raise KeyboardInterrupt
        return components


def test_ctrl_c_before_an_update_checkpoints_the_last_step_and_resumes_exactly(tmp_path):
    path = tmp_path / "run.npz"
    model, opt, schedule = make_run(model=InterruptedClassifier(seed=0, stop_at=5))
    with pytest.raises(KeyboardInterrupt):
        fit(model, batches, opt, steps=8, schedule=schedule, checkpoint=path, checkpoint_every=100, progress=False)
    # the checkpoint holds the 5 steps done, although the next periodic one was 95 steps away
    fresh, fresh_opt, fresh_schedule = make_run(model=InterruptedClassifier(seed=9, stop_at=None))
    history = fit(fresh, batches, fresh_opt, steps=8, schedule=fresh_schedule, checkpoint=path, resume=True, progress=False)
    reference, ref_opt, ref_schedule = make_run()
    ref_history = fit(reference, batches, ref_opt, steps=8, schedule=ref_schedule, progress=False)
    assert history.as_dict() == ref_history.as_dict()
    assert_same_arrays(parameters(fresh), parameters(reference))
    assert dropout_state(fresh) == dropout_state(reference)


def test_ctrl_c_says_where_the_run_can_resume_from(tmp_path, capsys):
    path = tmp_path / "run.npz"
    model, opt, schedule = make_run(model=InterruptedClassifier(seed=0, stop_at=3))
    with pytest.raises(KeyboardInterrupt):
        fit(model, batches, opt, steps=8, schedule=schedule, checkpoint=path, progress=True)
    assert f"interrupted: {path} holds the 3 steps done; resume from it to go on" in capsys.readouterr().err


def test_resume_without_settings_keeps_the_checkpoints(tmp_path):
    """None checks nothing; the checkpoints it writes still hold the run's settings (they were once
    rewritten without them, so that a later resume with the right settings was refused)."""
    path = tmp_path / "run.npz"
    model, opt, schedule = make_run()
    fit(model, batches, opt, steps=2, schedule=schedule, checkpoint=path, settings={"seed": 3}, progress=False)
    model, opt, schedule = make_run()
    fit(model, batches, opt, steps=4, schedule=schedule, checkpoint=path, resume=True, progress=False)
    model, opt, schedule = make_run()
    history = fit(model, batches, opt, steps=6, schedule=schedule, checkpoint=path, resume=True, settings={"seed": 3}, progress=False)
    assert history.steps == list(range(6))
    model, opt, schedule = make_run()
    with pytest.raises(DataFormatError, match="seed=3"):
        fit(model, batches, opt, steps=8, schedule=schedule, checkpoint=path, resume=True, settings={"seed": 4}, progress=False)


def test_resume_refuses_a_checkpoint_of_other_settings_and_accepts_the_same(tmp_path):
    """The batches' seed (or the data) is not in the model: `settings` keeps it, and a resumed run
    with another would silently no longer be the run it continues."""
    path = tmp_path / "run.npz"
    model, opt, schedule = make_run()
    fit(model, batches, opt, steps=2, schedule=schedule, checkpoint=path, settings={"seed": 3, "sizes": (8, 8)}, progress=False)
    model, opt, schedule = make_run()
    with pytest.raises(DataFormatError, match="seed=3"):
        fit(model, batches, opt, steps=4, schedule=schedule, checkpoint=path, resume=True, settings={"seed": 4, "sizes": (8, 8)},
            progress=False)
    history = fit(model, batches, opt, steps=4, schedule=schedule, checkpoint=path, resume=True,
                  settings={"seed": 3, "sizes": (8, 8)}, progress=False)  # tuples read back as lists: still the same
    assert history.steps == [0, 1, 2, 3]
    with pytest.raises(InvalidArgumentError, match="settings"):
        fit(model, batches, opt, steps=4, settings={"seed": object()}, progress=False)
