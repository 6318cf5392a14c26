"""Build the stand-in CUDA driver (`fake_cuda.c`) and run programs against it: the host side of the
CUDA backend, measured and tested on a machine without a GPU.

Numba's CUDA simulator runs kernels in Python, so it cannot say what a launch or an allocation costs
the host on a real GPU, and it bypasses the code that marshals kernel arguments. Against this stand-in
``libcuda.so.1`` Numba takes its real path (cuda-bindings, cuda.core, NVVM compiling the kernels to
PTX) while every driver call returns at once and no kernel runs: what is left is the host's work.

    python benchmarks/fake_cuda/build.py python benchmarks/gpu_profile.py

runs a command with the stand-in driver first on the library path (and a throw-away Numba cache, so
that nothing compiled against it is cached for a real GPU). Needs a C compiler (``cc``, or ``CC``) and
cuda-bindings, whose driver entry points are read from its own binaries to write the stubs.
"""

import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "fake_cuda.c"
BUILD = HERE.parents[1] / "build" / "fake_cuda"


def driver_entry_points():
    """Names of the CUDA driver functions the installed cuda-bindings may look up (from its binaries)."""
    names = set()
    for module in ("cuda.bindings.cydriver", "cuda.bindings._internal.driver"):
        spec = importlib.util.find_spec(module)
        if spec is None or spec.origin is None:
            continue
        names.update(name.decode() for name in re.findall(rb"(?<![A-Za-z0-9_])(cu[A-Z][A-Za-z0-9_]+)\x00", Path(spec.origin).read_bytes()))
    if not names:
        raise RuntimeError("cuda-bindings is not installed: no driver entry points to stub")
    return sorted(names - {"cuGetProcAddress", "cuGetProcAddress_v2"})


def stubs_source(implemented, names):
    """C source: a stub for each name not `implemented`, a table of all, and cuGetProcAddress."""
    lines = ["#include <string.h>", "typedef int CUresult;", "void fc_trace(const char *);"]
    lines += [f"CUresult {name}();" for name in sorted(implemented)]
    lines += [f'CUresult {name}(void) {{ fc_trace("{name} (stub)"); return 0; }}' for name in names if name not in implemented]
    lines.append("static const struct { const char *name; void *fn; } table[] = {")
    lines += [f'  {{"{name}", (void *){name}}},' for name in sorted(set(names) | implemented)]
    lines += ["  {0, 0}};", r"""
static void *find(const char *symbol) {
  for (int i = 0; table[i].name; i++) if (!strcmp(table[i].name, symbol)) return table[i].fn;
  return 0;
}
/* how cuda-bindings finds every other entry point: 500 is CUDA_ERROR_NOT_FOUND */
CUresult cuGetProcAddress_v2(const char *symbol, void **pfn, int version, unsigned long long flags, int *status) {
  *pfn = find(symbol);
  if (status) *status = *pfn ? 0 : 1;
  return *pfn ? 0 : 500;
}
CUresult cuGetProcAddress(const char *symbol, void **pfn, int version, unsigned long long flags) {
  return cuGetProcAddress_v2(symbol, pfn, version, flags, 0);
}"""]
    return "\n".join(lines) + "\n"


def build(directory=BUILD):
    """Compile ``libcuda.so.1`` into `directory` (reused while the source and bindings are unchanged);
    returns the directory. Raises RuntimeError without a C compiler or cuda-bindings."""
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise RuntimeError("no C compiler (cc or gcc) to build the stand-in CUDA driver")
    source = SOURCE.read_text()
    implemented = set(re.findall(r"^CUresult (cu\w+)\(", source, re.M))
    stubs = stubs_source(implemented, driver_entry_points())
    digest = hashlib.sha256((source + stubs).encode()).hexdigest()[:16]
    directory = Path(directory)
    library = directory / "libcuda.so.1"
    stamp = directory / "source.sha256"
    if library.exists() and stamp.exists() and stamp.read_text() == digest:
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        stubs_file = Path(scratch) / "stubs.c"
        stubs_file.write_text(stubs)
        built = Path(scratch) / "libcuda.so.1"
        subprocess.run([compiler, "-O2", "-shared", "-fPIC", "-w", "-o", str(built), str(SOURCE), str(stubs_file)],
                       check=True, capture_output=True, text=True)
        shutil.move(str(built), library)  # whole or not at all
    stamp.write_text(digest)
    return directory


def environment(directory, cache_dir):
    """The environment for a process that should load the stand-in driver from `directory`, with
    Numba's cache in `cache_dir` and its simulator off."""
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(directory), env.get("LD_LIBRARY_PATH")]))
    env["NUMBA_CACHE_DIR"] = str(cache_dir)
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    return env


def main(argv):
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    directory = build()
    with tempfile.TemporaryDirectory() as cache_dir:
        return subprocess.run(argv, env=environment(directory, cache_dir)).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
