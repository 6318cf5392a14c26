"""Kernel launches that cost the host less: Numba's launch, without its per-call generality.

On a GPU the small layers are bound by the host (benchmarks/GPU_RESULTS.md, run 3 on an H200: a
launch of an empty kernel with 7 arrays and 14 integers took 68 us of host time, the GPU work of a
whole 256x3x32x32 -> 16 convolution forward and backward 203 us). Most of a launch is Numba's Python:
a new launch-configuration object per call (with its low-occupancy warning), the type dispatch, and
the marshalling of every argument through a generic path (`_Kernel._prepare_args`: an argument-hint
wrapper, a strided-memory-view shim and a ctypes value per scalar).

`jit` wraps `numba.cuda.jit`: the kernel is compiled, typed and first launched by Numba as usual, and
each later launch with arguments of the same types goes straight to the same compiled function,
through the same call (`cuda.core.launch` on the default stream) with the same parameters: an array
as Numba's data model lays it out (meminfo, parent, size, itemsize, data pointer, shape, strides in
bytes), a scalar as the ctypes value of its Numba type. Before a kernel's argument types take this
path, the parameters are checked once against the ones Numba's own marshalling builds for the same
call; a difference, or anything the short path does not handle (host arrays, which Numba copies;
arrays that are not Numba's `DeviceNDArray`; debug, cooperative or launch-configuration-sensitive
kernels; streams or dynamic shared memory in the launch configuration; kernels compiled for explicit
signatures that convert their arguments), leaves those launches to Numba.

Measured without a GPU (`benchmarks/host_time.py`: the real Numba path against a stand-in CUDA
driver whose calls cost nothing, on a 2-core AMD EPYC VM): such a launch of 7 arrays and 14 integers
takes 8 us against Numba's 48; with the pool of `memory.py`, a layer's forward and backward takes
less than half the host time it took.

In Numba's CUDA simulator (`NUMBA_ENABLE_CUDASIM=1`) `jit` is `numba.cuda.jit` itself: the simulator
runs kernels in Python and has no parameters to marshal.
"""

import ctypes
import os
import weakref

import numpy as np
from numba import cuda, types
from numba.cuda.core import config as cuda_config

SIMULATOR = bool(cuda_config.ENABLE_CUDASIM)
# SCRATCHDET_CUDA_FAST_LAUNCH=0 leaves every launch to Numba (to compare the two on a GPU)
FAST = os.environ.get("SCRATCHDET_CUDA_FAST_LAUNCH", "1") != "0"
if not SIMULATOR:
    from cuda.bindings import driver as binding
    from cuda.core import LaunchConfig
    from cuda.core import launch as core_launch
    from numba.cuda.cudadrv import driver
    from numba.cuda.cudadrv.devicearray import DeviceNDArray
    from numba.cuda.errors import normalize_kernel_dimensions
    from numba.np import numpy_support

# (grid, block) as a launch site writes it -> cuda.core LaunchConfig; bounded, as shapes vary
_CONFIGS = {}
MAX_CONFIGS = 4096

_KERNELS = weakref.WeakSet()  # every Kernel made, for `kernels`

_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
_SCALARS = {  # what Numba's _prepare_args passes for a scalar of each type
    types.float64: ctypes.c_double,
    types.float32: ctypes.c_float,
    types.boolean: None,  # the value itself
}


def jit(*args, **options):
    """`numba.cuda.jit` for kernels, with the short launch path (`Kernel`) outside the simulator.

    Used as `numba.cuda.jit` is: ``@jit``, ``@jit(cache=True)``. Device functions
    (``device=True``), the simulator and ``SCRATCHDET_CUDA_FAST_LAUNCH=0`` get Numba's dispatcher
    unchanged."""
    if args and callable(args[0]) and not options:
        return jit()(args[0])

    def wrap(fn):
        dispatcher = cuda.jit(*args, **options)(fn)
        if SIMULATOR or not FAST or options.get("device"):
            return dispatcher
        return Kernel(dispatcher)

    return wrap


def kernels():
    """Every `Kernel` made so far (module-level ones, and those the GEMM factories built)."""
    return list(_KERNELS)


class Kernel:
    """A Numba CUDA kernel (`dispatcher`) launched as ``kernel[grid, block](*args)``, as Numba's are.

    Every other attribute is the dispatcher's (``py_func``, ``overloads``, ``specialize`` ...)."""

    def __init__(self, dispatcher):
        self.dispatcher = dispatcher
        # argument key (`_flatten`) -> _Plan, or None where Numba launches
        self._plans = {}
        _KERNELS.add(self)

    def __getattr__(self, name):
        return getattr(self.dispatcher, name)

    def __getitem__(self, config):
        return _Launch(self, config)

    def __call__(self, *args, **kwargs):
        return self.dispatcher(*args, **kwargs)  # Numba's error: a kernel needs a launch configuration

    def __repr__(self):
        return f"Kernel({self.dispatcher!r})"

    def launch(self, config, args):
        """Launch with `config` (``(grid, block)``) on the default stream; what ``self[config](*args)`` does."""
        key, params = [], []
        if type(config) is tuple and len(config) == 2 and _flatten(args, key, params):
            key = tuple(key)
            plan = self._plans.get(key, False)
            if plan:
                plan.launch(_launch_config(config), params)
                return
        else:
            key = plan = None
        self.dispatcher[config](*args)  # compiles on first use of these types
        if plan is False:  # first launch with these argument types: see if later ones can skip Numba
            try:
                self._plans[key] = _Plan.build(self.dispatcher, args)
            except Exception:  # the short path is an optimisation: where it cannot be set up, Numba launches
                self._plans[key] = None


class _Launch:
    """``kernel[config]``: call it with the kernel's arguments."""

    __slots__ = ("kernel", "config")

    def __init__(self, kernel, config):
        self.kernel = kernel
        self.config = config

    def __call__(self, *args):
        self.kernel.launch(self.config, args)


def _launch_config(config):
    launch_config = _CONFIGS.get(config)
    if launch_config is None:
        grid, block = normalize_kernel_dimensions(*config)
        if len(_CONFIGS) >= MAX_CONFIGS:
            _CONFIGS.clear()
        launch_config = _CONFIGS[config] = LaunchConfig(grid=grid, block=block, shmem_size=0)
    return launch_config


def _flatten(args, key, params):
    """One pass over `args`: append to `key` what decides each argument's Numba type (a tuple's own
    key nested) and to `params` its kernel parameters, scalars still as the Python values (`_Plan`
    converts them to their Numba types' ctypes); False where the short path does not apply."""
    for value in args:
        kind = type(value)
        if kind is DeviceNDArray:
            kind, array_params = _array_info(value)
            params += array_params
        elif kind is int:
            if not _INT64_MIN <= value <= _INT64_MAX:  # Numba types it uint64
                return False
            params.append(value)
        elif kind is tuple:
            inner = []
            if not _flatten(value, inner, params):
                return False
            kind = tuple(inner)
        elif kind is float or kind is bool or isinstance(value, np.generic):
            params.append(value)
        else:
            return False
        key.append(kind)
    return True


def _array_info(a):
    """``(key, params)`` of a device array, worked out once per array object and kept on it (its
    memory, shape and strides never change):

    - key: ``(DeviceNDArray, dtype, ndim, layout)``, what its Numba type depends on, without building
      the type (Numba's `DeviceNDArray._numba_type_` does, at some microseconds for each new array);
    - params: its kernel parameters in Numba's data model: meminfo and parent (null on the device),
      size, itemsize, data pointer, shape, strides in bytes.
    """
    info = getattr(a, "_scratchdet_launch", None)
    if info is None:
        key = (DeviceNDArray, a.dtype, a.ndim, _layout(a))
        params = (0, 0, a.size, a.dtype.itemsize, a.device_ctypes_pointer.value, *a.shape, *a.strides)
        info = (key, params)
        try:
            a._scratchdet_launch = info
        except AttributeError:  # an array type that takes no attributes
            pass
    return info


def _layout(a):
    """The layout letter Numba types a device array with (`DeviceNDArray._numba_type_`'s rule): "C"
    or "F" when contiguous that way and not broadcast (a zero stride), "A" otherwise."""
    flags = a._dummy.flags
    broadcast = 0 in a.strides and a.size != 0
    if flags["C_CONTIGUOUS"] and not broadcast:
        return "C"
    if flags["F_CONTIGUOUS"] and not broadcast:
        return "F"
    return "A"


class _Plan:
    """How to launch one compiled overload: its cuda.core kernel, and which of the flattened
    parameters (`_flatten`) become which ctypes value."""

    def __init__(self, overload, conversions):
        self.overload = overload
        self.conversions = conversions  # [(index in the parameters, ctypes class)]
        self._kernels = {}  # CUDA context handle -> the overload's cuda.core Kernel in it

    @classmethod
    def build(cls, dispatcher, args):
        """The plan for launching `dispatcher` with arguments typed as `args`, or None (Numba launches)."""
        argtypes = tuple(dispatcher.typeof_pyval(value) for value in args)
        overload = dispatcher.overloads.get(argtypes)
        if (
            overload is None  # compiled for other (explicit) types, which Numba converts to
            or overload.debug
            or overload.cooperative
            or overload.extensions
            or getattr(overload, "launch_config_sensitive", False)
            or getattr(dispatcher, "_launch_config_sensitive", False)
        ):
            return None
        conversions = []
        if not _conversions(overload.argument_types, args, conversions, [0]):
            return None
        plan = cls(overload, conversions)
        # the parameters must be the ones Numba's own marshalling builds for this call
        ours, theirs = [], []
        _flatten(args, [], ours)
        plan.convert(ours)
        for argtype, value in zip(overload.argument_types, args):
            overload._prepare_args(argtype, value, 0, [], theirs)
        if _comparable(ours) != _comparable(theirs):
            return None
        return plan

    def convert(self, params):
        """Scalars among `_flatten`'s parameters to the ctypes values of their Numba types, in place."""
        for index, ctype in self.conversions:
            params[index] = ctype(params[index])

    def launch(self, launch_config, params):
        self.convert(params)
        context = int(binding.cuCtxGetCurrent()[1])
        kernel = self._kernels.get(context)
        if kernel is None:  # Numba loads the code once per device; it finds it as a launch would
            kernel = self._kernels[context] = self.overload._codelibrary.get_cufunc().kernel
        core_launch(_default_stream(), launch_config, kernel, *params)


def _conversions(argtypes, args, conversions, position):
    """Append ``(index, ctypes class)`` for each scalar among `args` (typed `argtypes`) to `conversions`,
    `position[0]` walking the flattened parameters; False for a type the short path leaves to Numba,
    or an array whose `_array_info` key disagrees with its Numba type."""
    for argtype, value in zip(argtypes, args):
        if isinstance(argtype, types.Array):
            if type(value) is not DeviceNDArray:
                return False
            (_, dtype, ndim, layout), array_params = _array_info(value)
            if (argtype.dtype, argtype.ndim, argtype.layout) != (numpy_support.from_dtype(dtype), ndim, layout):
                return False
            position[0] += len(array_params)
        elif isinstance(argtype, types.BaseTuple):
            if type(value) is not tuple or not _conversions(argtype.types, value, conversions, position):
                return False
        elif isinstance(argtype, types.Integer) or argtype in _SCALARS:
            ctype = getattr(ctypes, f"c_{argtype}") if isinstance(argtype, types.Integer) else _SCALARS[argtype]
            if ctype is not None:
                conversions.append((position[0], ctype))
            position[0] += 1
        else:
            return False
    return True


def _comparable(params):
    return [(type(p).__name__, p.value) if isinstance(p, ctypes._SimpleCData) else (type(p).__name__, p)
            for p in params]


_STREAM = []


def _default_stream():
    if not _STREAM:
        _STREAM.append(driver._to_core_stream(0))
    return _STREAM[0]
