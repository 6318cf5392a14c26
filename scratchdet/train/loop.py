"""The training loop every model trains with: a progress bar, the loss logged per component, checkpoints
that resume a run exactly, and a clear stop on a non-finite loss.

Read `fit` first; `History` is what it returns, and `save_checkpoint` / `load_checkpoint` are the two
halves of resuming. A run is exactly resumable because everything a step depends on is either in the
checkpoint (parameters, optimiser and schedule state, the model's random generators) or a function of
the step index (the batch: `batches(step)`).
"""

import json
import math
import numbers
import os
import sys
from collections.abc import Mapping

import numpy as np
from tqdm import tqdm

from scratchdet import __version__
from scratchdet._files import atomic_path
from scratchdet.backend import device_of, to_device, to_host
from scratchdet.errors import DataFormatError, InvalidArgumentError, TrainingDivergedError
from scratchdet.nn.layers import Layer
from scratchdet.nn.serialize import METADATA_KEY, read_archive

FORMAT = "scratchdet-checkpoint"
FORMAT_VERSION = 1

# The entries of a checkpoint file (.npz, read with allow_pickle=False):
# METADATA_KEY (from nn.serialize): JSON text of format, version, step, parameter shapes, optimiser and schedule classes
PARAM_PREFIX = "param/"  # "param/<name>": each parameter, a host copy
OPTIM_PREFIX = "optim/"  # "optim/<key>": the optimiser's state_dict()
SCHEDULE_PREFIX = "schedule/"  # "schedule/<key>": the schedule's state_dict(), when there is one
HISTORY_STEPS_KEY = "history/step"  # (n,) int64: the step of each record
HISTORY_LOSS_PREFIX = "history/loss/"  # "history/loss/<name>": (n,) float64, one loss component
RNG_PREFIX = "rng/"  # "rng/<path>": JSON text, the bit-generator state of one of the model's generators


# -- the record of a run ----------------------------------------------------------------------------


class History:
    """The loss components of a run, one record per step.

    `steps` is a list of int (the 0-based step of each record) and `losses` a dict name -> list of
    float, every list as long as `steps`: `losses["cls"][i]` is the classification loss of step
    `steps[i]`. Every step must report the same components.
    """

    def __init__(self):
        self.steps = []
        self.losses = {}

    def __len__(self):
        return len(self.steps)

    def record(self, step, components):
        """Append the components (a dict name -> float) of step `step` (an int)."""
        self.check_names(components, step)
        self.steps.append(int(step))
        for name, value in components.items():
            self.losses.setdefault(name, []).append(float(value))

    def check_names(self, components, step):
        """Raise `InvalidArgumentError` unless `components` has the names the earlier steps had."""
        if self.steps and set(components) != set(self.losses):
            raise InvalidArgumentError(
                f"training_step returned the loss components {sorted(components)} at step {step}, but "
                f"{sorted(self.losses)} before; a model must return the same components every step"
            )

    def last(self, name="total"):
        """The latest value (a float) of loss component `name`."""
        if not self.steps:
            raise InvalidArgumentError("the history is empty: no step has been recorded")
        if name not in self.losses:
            raise InvalidArgumentError(f"no loss component {name!r} in the history; it has {sorted(self.losses)}")
        return self.losses[name][-1]

    def as_dict(self):
        """{"steps": [int], "losses": {name: [float]}}, ready for `json.dump`."""
        return {"steps": list(self.steps), "losses": {name: list(values) for name, values in self.losses.items()}}

    def __repr__(self):
        return f"History({len(self)} steps, losses {list(self.losses)})"


# -- the loop ---------------------------------------------------------------------------------------


def fit(model, batches, optimizer, *, steps, schedule=None, checkpoint=None, checkpoint_every=100,
        resume=False, settings=None, progress=True, desc="train"):
    """Train `model` for steps 0, 1, ..., steps - 1 (or from a checkpoint's step on) and return its `History`.

    Each step:

        1. batch = batches(step)
        2. components = model.training_step(batch)   # forward, loss, backward: fills the layers' grads
        3. if a component is not finite: stop with TrainingDivergedError, before the update
        4. optimizer.step(), then schedule.step() when there is a schedule
        5. record the components in the history (and on the progress bar)

    Args:
        model: an object with `named_parameters()` (yielding (name, layer, key), as `nn.Layer` does),
            `train()`, and `training_step(batch) -> Mapping[str, float]`, which runs forward, the loss
            and backward and returns the loss components, "total" among them (e.g.
            {"total": 1.3, "cls": 1.1, "loc": 0.2}); the same names every step. `model.train()` is
            called once, before the first step.
        batches: a callable, batches(step) -> batch, of the 0-based step index. The batch is a function
            of the step, not the next item of a stream, so that a resumed run gives step 57 the same
            batch as an uninterrupted one: draw its randomness from e.g.
            `np.random.default_rng([seed, step])`.
        optimizer: e.g. `nn.SGD` or `nn.Adam` over the model's parameters (`step`, `state_dict`,
            `load_state_dict`).
        steps: the total number of steps of the run, an int >= 0 (a resumed run trains up to it).
        schedule: None or a learning-rate schedule such as `nn.StepLR`, stepped once per step, i.e.
            per iteration: StepLR's `step_size` counts iterations here, not epochs.
        checkpoint: None or a path (.npz). The checkpoint is written atomically every
            `checkpoint_every` steps, at the end, before raising TrainingDivergedError (then it
            holds the last finite state), and on a KeyboardInterrupt (Ctrl-C) that comes before a
            step's update (the common case: the update is a small part of a step); one during the
            update leaves the last checkpoint as it was. See `save_checkpoint` for what it holds.
        checkpoint_every: an int >= 1, in steps.
        resume: with an existing `checkpoint` file, restore the run from it (parameters, optimiser and
            schedule state, the model's random generators, the history) and go on from its step up to
            `steps`; if it already reached (or passed) `steps`, return its history without training
            and without writing the file. Without the
            file, start from scratch. With resume=False an existing file is overwritten as training goes.
            Resuming is exact when the optimiser and schedule are built with the same settings as
            before (their state and the learning rate are in the checkpoint, settings such as momentum
            are not): the run's numbers are then the same, bit for bit, as an uninterrupted run's.
        settings: None or a JSON-ready dict of what else makes the run what it is (e.g. the batches'
            seed, the data), kept in the checkpoint; resuming with different settings is refused (a
            DataFormatError naming them), since the run would no longer be the one it continues.
            Resuming with None checks nothing and keeps the checkpoint's settings in the checkpoints
            it writes.
        progress: show a tqdm progress bar (on stderr) with the current losses; False prints nothing.
        desc: the progress bar's label.

    Returns:
        the `History` of the whole run (a resumed run's includes the steps before the checkpoint).

    Raises:
        TrainingDivergedError: a loss component is not finite (nan or inf). The parameters, the
            optimiser, the schedule and the model's generators are left as they were after the last
            good step (the failed step's dropout draws are undone), and the checkpoint (if any) holds
            that state with that step as the next one: resuming from it with the same settings
            repeats the failure exactly, which is how to debug it.
        InvalidArgumentError: a bad argument, or a training_step that does not return a mapping of
            numbers with "total" among them, under the same names every step.
        DataFormatError: resume=True with a checkpoint that is corrupt or from another model or optimiser.
    """
    _check_model(model)
    if not callable(batches):
        raise InvalidArgumentError(f"batches must be a callable batches(step) -> batch, got {type(batches).__name__}")
    _check_optimizer(optimizer)
    _check_schedule(schedule)
    steps = _check_int("steps", steps, 0)
    checkpoint_every = _check_int("checkpoint_every", checkpoint_every, 1)
    if checkpoint is not None:
        checkpoint = _check_checkpoint_path(checkpoint)
    if not isinstance(resume, bool):
        raise InvalidArgumentError(f"resume must be True or False, got {resume!r}")
    if resume and checkpoint is None:
        raise InvalidArgumentError("resume=True needs a checkpoint path to resume from")
    settings = _check_settings(settings)

    # 1. start from scratch, or from where the checkpoint left off
    history, start, saved_step = History(), 0, None
    if resume and os.path.isfile(checkpoint):
        start, history, saved_settings = _restore(checkpoint, model, optimizer, schedule, settings)
        settings = saved_settings if settings is None else settings  # unchecked, and kept as it was
        saved_step = start
        if start >= steps:
            return history

    generators = [generator for _, generator in model_generators(model)]
    model.train()
    with tqdm(total=steps, initial=start, desc=desc, disable=not progress) as bar:
        for step in range(start, steps):
            # 2. forward, loss and backward; the generators' states are kept so that a diverged step
            # can be undone completely (the dropout masks it drew included)
            rng_states = [generator.bit_generator.state for generator in generators]
            try:
                components = _loss_components(model.training_step(batches(step)), step)
            except KeyboardInterrupt:
                # interrupted before the update (Ctrl-C): the state is still the end of the last step,
                # so keep it (with this step's dropout draws undone); the run resumes from it exactly
                _rewind(generators, rng_states)
                if checkpoint is not None:
                    if saved_step != step:
                        save_checkpoint(checkpoint, model, optimizer, schedule, step, history, settings=settings)
                    if progress:
                        steps_done = f"{step} step{'' if step == 1 else 's'}"
                        bar.write(f"interrupted: {checkpoint} holds the {steps_done} done; resume from it to go on", file=sys.stderr)
                raise
            history.check_names(components, step)

            # 3. stop before a non-finite loss reaches the parameters
            if not all(math.isfinite(value) for value in components.values()):
                _rewind(generators, rng_states)
                where = ""
                if checkpoint is not None:
                    save_checkpoint(checkpoint, model, optimizer, schedule, step, history, settings=settings)
                    where = f"; {checkpoint} holds the state before step {step}"
                left = f"as after step {step - 1}" if step > 0 else "as they were at the start"
                raise TrainingDivergedError(
                    f"loss is not finite at step {step}: {_format_components(components)}; lower the learning "
                    f"rate or check the data and the loss, and train again (the parameters are left {left}{where})"
                )

            # 4. update the parameters, then the learning rate (once per iteration)
            optimizer.step()
            if schedule is not None:
                schedule.step()

            # 5. log
            history.record(step, components)
            bar.set_postfix({name: f"{value:.4g}" for name, value in components.items()}, refresh=False)
            bar.update(1)
            done = step + 1
            if checkpoint is not None and (done % checkpoint_every == 0 or done == steps):
                save_checkpoint(checkpoint, model, optimizer, schedule, done, history, settings=settings)
                saved_step = done

    if checkpoint is not None and saved_step != steps:  # a run of 0 steps still leaves its checkpoint
        save_checkpoint(checkpoint, model, optimizer, schedule, steps, history, settings=settings)
    return history


def _check_settings(settings):
    """`settings` as it reads back from JSON (tuples become lists), or an InvalidArgumentError."""
    if settings is None:
        return None
    if not isinstance(settings, Mapping):
        raise InvalidArgumentError(f"settings must be a dict, got {type(settings).__name__}")
    try:
        return json.loads(json.dumps(dict(settings), allow_nan=False))
    except (TypeError, ValueError) as error:
        raise InvalidArgumentError(f"settings must be JSON-ready (str keys, numbers, text, lists): {error}") from None


def _rewind(generators, states):
    """Put each random generator back to the state it had (undoing a step's dropout draws)."""
    for generator, state in zip(generators, states):
        generator.bit_generator.state = state


def _loss_components(components, step):
    """training_step's result as a dict name -> float, or an InvalidArgumentError saying what is wrong."""
    if not isinstance(components, Mapping):
        raise InvalidArgumentError(
            "training_step must return a mapping of loss components such as {'total': 1.3, 'cls': 1.1}, "
            f"got {type(components).__name__} at step {step}"
        )
    if "total" not in components:
        raise InvalidArgumentError(
            f"training_step returned the loss components {sorted(map(str, components))} at step {step}; "
            "they must include 'total'"
        )
    values = {}
    for name, value in components.items():
        if not isinstance(name, str):
            raise InvalidArgumentError(f"loss component names must be strings, got {name!r} at step {step}")
        if isinstance(value, np.ndarray) and value.ndim == 0:  # a 0-d array, e.g. from a reduction
            value = value[()]
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
            raise InvalidArgumentError(f"loss component {name!r} at step {step} must be a number, got {value!r}")
        values[name] = float(value)
    return values


def _format_components(components):
    """'total=nan cls=nan loc=0.3100': each component with 4 significant digits."""
    return " ".join(f"{name}={value:.4g}" for name, value in components.items())


# -- checkpoints ------------------------------------------------------------------------------------


def save_checkpoint(path, model, optimizer, schedule, step, history, *, settings=None):
    """Write the state of a run after `step` steps to `path` (.npz), atomically, without pickle.

    The file holds "metadata" (JSON text: format and version, `step`, each parameter's shape and dtype,
    the optimiser's and schedule's class names, the generators' paths), "param/<name>" (each parameter,
    copied to the host), "optim/<key>" (`optimizer.state_dict()`), "schedule/<key>"
    (`schedule.state_dict()`, when `schedule` is not None), "history/step" and "history/loss/<name>"
    (the history as int64 / float64 arrays), and "rng/<path>" (the state of each numpy Generator the
    model draws from, found by `model_generators`, as JSON text: it holds integers too big for an array).

    Args:
        path: the file to write (".npz"); missing directories are made.
        model, optimizer, schedule: as given to `fit` (schedule may be None).
        step: the number of steps done, i.e. the step a resumed run starts from (an int >= 0).
        history: the `History` of those steps.
        settings: None or a JSON-ready dict kept in the metadata (see `fit`).
    """
    path = _check_checkpoint_path(path)
    step = _check_int("step", step, 0)
    settings = _check_settings(settings)
    if not isinstance(history, History):
        raise InvalidArgumentError(f"history must be a History, got {type(history).__name__}")
    arrays = {}
    parameters = {}
    for name, layer, key in model.named_parameters():
        value = to_host(layer.params[key])
        arrays[PARAM_PREFIX + name] = value
        parameters[name] = {"shape": list(value.shape), "dtype": str(value.dtype)}
    for key, value in optimizer.state_dict().items():
        arrays[OPTIM_PREFIX + key] = np.asarray(value)
    if schedule is not None:
        for key, value in schedule.state_dict().items():
            arrays[SCHEDULE_PREFIX + key] = np.asarray(value)
    arrays[HISTORY_STEPS_KEY] = np.array(history.steps, dtype=np.int64)
    for name, values in history.losses.items():
        arrays[HISTORY_LOSS_PREFIX + name] = np.array(values, dtype=np.float64)
    generators = model_generators(model)
    for generator_path, generator in generators:
        arrays[RNG_PREFIX + generator_path] = np.array(json.dumps(_jsonable(generator.bit_generator.state)))
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "scratchdet_version": __version__,
        "step": step,
        "model": type(model).__name__,
        "parameters": parameters,
        "optimizer": type(optimizer).__name__,
        "schedule": None if schedule is None else type(schedule).__name__,
        "generators": [generator_path for generator_path, _ in generators],
        "settings": settings,
    }
    arrays[METADATA_KEY] = np.array(json.dumps(metadata))
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


def load_checkpoint(path, model, optimizer, schedule=None, *, settings=None):
    """Restore a run saved by `save_checkpoint` into `model`, `optimizer` and `schedule`; return (step, history).

    The file is checked first, and nothing is changed unless it fits: the same parameter names, shapes
    and dtypes, the same model and optimiser classes, a schedule of the same class when it was saved with one (and
    none when it was not), the same random generators in the model, and the same `settings` (when
    given; see `fit`). Then the optimiser and schedule
    states are loaded, the generators' states set, and every parameter overwritten in place (a parameter
    on the GPU gets the saved values copied to the GPU).

    Returns:
        (step, history): the step to resume from (an int, the number of steps done) and the `History`.

    Raises:
        FileMissingError: no file at `path`.
        DataFormatError: a directory, a truncated or corrupt file, not a scratchdet checkpoint, or a
            checkpoint of another model, optimiser or schedule (the message names what differs).
    """
    return _restore(path, model, optimizer, schedule, _check_settings(settings))[:2]


def _restore(path, model, optimizer, schedule, settings):
    """`load_checkpoint`'s work, with `settings` checked; returns (step, history, the checkpoint's settings)."""
    path = os.fspath(path)
    metadata, arrays = _read_checkpoint(path)
    try:
        step = metadata["step"]
        saved_parameters = {name: (tuple(entry["shape"]), entry["dtype"]) for name, entry in metadata["parameters"].items()}
        saved_model, saved_optimizer, saved_schedule = metadata["model"], metadata["optimizer"], metadata["schedule"]
        saved_generators = list(metadata["generators"])
        saved_settings = metadata.get("settings")
    except (KeyError, TypeError, AttributeError) as error:
        raise DataFormatError(f"{path}: checkpoint metadata is malformed ({type(error).__name__}: {error})") from error
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise DataFormatError(f"{path}: checkpoint step must be an int >= 0, got {step!r}")

    # 1. the checkpoint must belong to this model, optimiser, schedule and settings
    if settings is not None and saved_settings != settings:
        differ = sorted(k for k in set(settings) | set(saved_settings or {}) if (saved_settings or {}).get(k) != settings.get(k))
        were = ", ".join(f"{k}={(saved_settings or {}).get(k)!r}" for k in differ)
        raise DataFormatError(f"{path}: the checkpoint's run had {were}; resume it with the same settings")
    if saved_model != type(model).__name__:  # (R-CNN and Fast R-CNN can have the same parameters)
        raise DataFormatError(f"{path}: the checkpoint is of a {saved_model}, this run trains a {type(model).__name__}")
    parameters = {name: (layer, key) for name, layer, key in model.named_parameters()}
    missing, unexpected = sorted(set(parameters) - set(saved_parameters)), sorted(set(saved_parameters) - set(parameters))
    if missing or unexpected:
        raise DataFormatError(
            f"{path}: the checkpoint is of another model: parameters missing from it {missing}, "
            f"parameters the model does not have {unexpected}"
        )
    for name, (layer, key) in parameters.items():
        param = layer.params[key]
        shape, dtype = saved_parameters[name]
        if shape != tuple(param.shape) or dtype != str(param.dtype):
            raise DataFormatError(
                f"{path}: the checkpoint is of another model: parameter {name} is {shape} {dtype} there, "
                f"{tuple(param.shape)} {param.dtype} in the model"
            )
        value = arrays.get(PARAM_PREFIX + name)
        if value is None or value.shape != shape or str(value.dtype) != dtype:
            raise DataFormatError(f"{path}: array {PARAM_PREFIX + name} is missing or does not match the metadata")
    if saved_optimizer != type(optimizer).__name__:
        raise DataFormatError(
            f"{path}: the checkpoint was written with the optimiser {saved_optimizer}, this run has {type(optimizer).__name__}"
        )
    this_schedule = None if schedule is None else type(schedule).__name__
    if saved_schedule != this_schedule:
        raise DataFormatError(
            f"{path}: the checkpoint was written with schedule {saved_schedule}, this run has {this_schedule}; "
            "resume with the schedule the run was started with"
        )
    history = _history_from_arrays(path, arrays)
    generators = dict(model_generators(model))
    if sorted(saved_generators) != sorted(generators):
        raise DataFormatError(
            f"{path}: the checkpoint holds the random generators {sorted(saved_generators)}, "
            f"the model has {sorted(generators)}"
        )
    rng_states = {name: _generator_state(path, arrays, name, generators[name]) for name in generators}

    # 2. restore: the optimiser and schedule (undone if their own checks refuse the state), the
    # generators, then the parameters
    backup = optimizer.state_dict()
    try:
        optimizer.load_state_dict(_entries(arrays, OPTIM_PREFIX))
        if schedule is not None:
            schedule.load_state_dict(_entries(arrays, SCHEDULE_PREFIX))
    except DataFormatError as error:
        optimizer.load_state_dict(backup)
        raise DataFormatError(f"{path}: {error}") from error
    for name, generator in generators.items():
        generator.bit_generator.state = rng_states[name]
    for name, (layer, key) in parameters.items():
        param, value = layer.params[key], arrays[PARAM_PREFIX + name]
        if isinstance(param, np.ndarray):
            np.copyto(param, value)  # in place: anything holding the array sees the restored values
        else:
            layer.params[key] = to_device(np.ascontiguousarray(value), device_of(param))
    return step, history, saved_settings


def _read_checkpoint(path):
    """(metadata dict, {name: array}) of a checkpoint file, every array read now (so truncation shows)."""
    return read_archive(path, "checkpoint", FORMAT, FORMAT_VERSION)


def _entries(arrays, prefix):
    """{key: array} of the entries named "<prefix><key>"."""
    return {name[len(prefix):]: value for name, value in arrays.items() if name.startswith(prefix)}


def _history_from_arrays(path, arrays):
    """The `History` stored as "history/step" and "history/loss/<name>" arrays, checked."""
    steps = arrays.get(HISTORY_STEPS_KEY)
    if steps is None or steps.ndim != 1 or steps.dtype.kind not in "iu":
        raise DataFormatError(f"{path}: {HISTORY_STEPS_KEY!r} must be a 1-D integer array")
    history = History()
    history.steps = [int(s) for s in steps]
    for name, values in _entries(arrays, HISTORY_LOSS_PREFIX).items():
        if values.shape != steps.shape or values.dtype.kind != "f":
            raise DataFormatError(
                f"{path}: history of loss {name!r} must be {steps.shape[0]} floats, got {values.shape} {values.dtype}"
            )
        history.losses[name] = [float(v) for v in values]
    if history.steps and "total" not in history.losses:
        raise DataFormatError(f"{path}: the history has no 'total' loss")
    return history


def _generator_state(path, arrays, name, generator):
    """The saved state of the model's generator `name`, tried on a scratch bit generator of its kind."""
    text = arrays.get(RNG_PREFIX + name)
    try:
        state = _from_jsonable(json.loads(str(text)))
        type(generator.bit_generator)().state = state  # a check that changes nothing of the model
    except (TypeError, ValueError, KeyError) as error:  # JSONDecodeError is a ValueError
        raise DataFormatError(f"{path}: the state of random generator {name} is missing or malformed: {error}") from error
    return state


def _jsonable(state):
    """A bit generator's state with its NumPy arrays (MT19937's key, Philox's counter) as tagged lists."""
    if isinstance(state, dict):
        return {key: _jsonable(value) for key, value in state.items()}
    if isinstance(state, np.ndarray):
        return {"ndarray": state.tolist(), "dtype": str(state.dtype)}
    if isinstance(state, np.integer):
        return int(state)
    return state


def _from_jsonable(state):
    """The inverse of `_jsonable`."""
    if isinstance(state, dict):
        if set(state) == {"ndarray", "dtype"}:
            return np.array(state["ndarray"], dtype=state["dtype"])
        return {key: _from_jsonable(value) for key, value in state.items()}
    return state


# -- the model's random generators ------------------------------------------------------------------


def model_generators(model):
    """[(path, generator)]: every `numpy.random.Generator` the model's layers draw from (e.g. Dropout's).

    The walk looks at the attributes of `model` and of every layer it reaches: a Generator attribute
    is collected (path e.g. "net.layers.3._rng"), a `Layer` attribute or a list / tuple of them (as
    `Sequential.layers`) is walked into, and so is everything `children()` returns when the object has
    that method (a list, or a dict name -> part; for composite models whose parts are not plain
    attributes). A generator shared by several layers is listed once. A generator kept anywhere else
    (a closure, a global) is not found, so a resumed run would not be exact: keep generators on the
    model or its layers.
    """
    found, seen = [], set()

    def visit(obj, prefix):
        if id(obj) in seen:
            return
        seen.add(id(obj))
        attributes = sorted(vars(obj).items()) if hasattr(obj, "__dict__") else []
        for attr, value in attributes:
            if isinstance(value, np.random.Generator):
                if id(value) not in seen:
                    seen.add(id(value))
                    found.append((prefix + attr, value))
            elif isinstance(value, Layer):
                visit(value, f"{prefix}{attr}.")
            elif isinstance(value, (list, tuple)):
                for i, item in enumerate(value):
                    if isinstance(item, Layer):
                        visit(item, f"{prefix}{attr}.{i}.")
        children = getattr(obj, "children", None)
        if callable(children):
            children = children()
            named = children.items() if isinstance(children, Mapping) else enumerate(children)
            for name, child in named:
                visit(child, f"{prefix}children.{name}.")

    visit(model, "")
    return found


# -- argument checks --------------------------------------------------------------------------------


def _check_int(name, value, minimum):
    """`value` as an int >= `minimum`, or an InvalidArgumentError naming `name` (bools and floats refused)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value < minimum:
        raise InvalidArgumentError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _check_model(model):
    for method in ("training_step", "named_parameters", "train"):
        if not callable(getattr(model, method, None)):
            raise InvalidArgumentError(
                f"model must have a {method}() method (training_step(batch) runs forward, the loss and "
                f"backward and returns the loss components), got {type(model).__name__}"
            )


def _check_optimizer(optimizer):
    for method in ("step", "state_dict", "load_state_dict"):
        if not callable(getattr(optimizer, method, None)):
            raise InvalidArgumentError(f"optimizer must have a {method}() method (e.g. nn.SGD, nn.Adam), got {type(optimizer).__name__}")


def _check_schedule(schedule):
    if schedule is None:
        return
    for method in ("step", "state_dict", "load_state_dict"):
        if not callable(getattr(schedule, method, None)):
            raise InvalidArgumentError(f"schedule must be None or have a {method}() method (e.g. nn.StepLR), got {type(schedule).__name__}")


def _check_checkpoint_path(path):
    """`path` as a str naming a file (not a directory), or an InvalidArgumentError."""
    try:
        path = os.fspath(path)
    except TypeError:
        raise InvalidArgumentError(f"checkpoint must be a path to a .npz file, got {type(path).__name__}") from None
    if os.path.isdir(path) or not os.path.basename(path):
        raise InvalidArgumentError(f"checkpoint {path!r} is a directory, expected a .npz file name")
    return path
