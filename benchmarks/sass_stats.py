"""Static counts of the CUDA kernels' sm_90 machine code, for a machine without a GPU.

Each kernel of the CUDA modules' `compile_signatures()` is compiled to PTX by Numba
(`numba.cuda.compile_ptx`, as tests/test_cuda_compile.py does), assembled by ``ptxas -v`` (registers,
spills, shared memory) and disassembled by ``cuobjdump -sass``; the loop holding most of the kernel's
FFMA (fused multiply-add) instructions is found from its backward branches and its instruction mix
printed. That is how the GEMM kernels' "instructions per 128 multiply-adds" in benchmarks/GPU_RESULTS.md
were counted. It says what the GPU has to issue, not how fast it runs: timings need `gpu_run.sh`.

ptxas and cuobjdump come with the CUDA toolkit, or from pip without one:

    pip download --no-deps nvidia-cuda-nvcc nvidia-cuda-cuobjdump -d wheels
    python -m zipfile -e wheels/nvidia_cuda_nvcc-*.whl cuda && python -m zipfile -e wheels/nvidia_cuda_cuobjdump-*.whl cuda
    chmod +x cuda/nvidia/cu13/bin/*
    python benchmarks/sass_stats.py --bin cuda/nvidia/cu13/bin conv_gemm_16x16x4x4 gemm_4x4

Arguments: substrings of the kernel names to report (all kernels without any).
"""

import argparse
import collections
import os
import re
import subprocess
import sys
import tempfile
import types

H100 = (9, 0)
_ADDRESS = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;")
_BRANCH = re.compile(r"\bBRA\b.*?0x([0-9a-f]+)")


def parse_sass(text):
    """[(address, instruction text)] of one kernel's ``cuobjdump -sass`` listing."""
    out = []
    for line in text.splitlines():
        match = _ADDRESS.search(line)
        if match:
            out.append((int(match.group(1), 16), match.group(2)))
    return out


def opcode(instruction):
    """The opcode without predicate and modifiers: ``@!P0 LDG.E.64 R2, ...`` -> ``LDG``."""
    words = instruction.split()
    if words and words[0].startswith("@"):
        words = words[1:]
    return words[0].split(".")[0] if words else ""


def hottest_loop(instructions):
    """The instructions of the loop with the most FFMA: the span from a backward branch's target to the
    branch (the shortest such span among equals), or None when the code has no FFMA loop."""
    best = None
    for address, text in instructions:
        match = _BRANCH.search(text)
        if not match or int(match.group(1), 16) >= address:
            continue
        start = int(match.group(1), 16)
        body = [t for a, t in instructions if start <= a <= address]
        ffma = sum(opcode(t) == "FFMA" for t in body)
        if ffma and (best is None or ffma > best[0] or (ffma == best[0] and len(body) < len(best[1]))):
            best = (ffma, body)
    return None if best is None else best[1]


def mix(body):
    """Counter of opcodes."""
    return collections.Counter(opcode(t) for t in body)


def _kernels():
    import numba.cuda.dispatcher as dispatcher

    # device functions are compiled for "the current GPU"; without one, say it is an H100
    dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=H100)
    from scratchdet.kernels.cuda import boxes, common, conv_gemm, gemm, nn, optim, reduce

    for module in (common, reduce, gemm, conv_gemm, nn, optim, boxes):
        yield from module.compile_signatures()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="substrings of kernel names (default: every kernel)")
    parser.add_argument("--bin", default="", help="folder holding ptxas and cuobjdump (default: PATH)")
    args = parser.parse_args(argv)
    from numba import cuda

    ptxas, cuobjdump = (os.path.join(args.bin, tool) if args.bin else tool for tool in ("ptxas", "cuobjdump"))
    with tempfile.TemporaryDirectory() as folder:
        for name, kernel, signature in _kernels():
            if args.names and not any(n in name for n in args.names):
                continue
            ptx, _ = cuda.compile_ptx(kernel.py_func, signature, cc=H100, launch_bounds=kernel.targetoptions.get("launch_bounds"))
            source, binary = os.path.join(folder, "k.ptx"), os.path.join(folder, "k.cubin")
            with open(source, "w") as f:
                f.write(ptx)
            assembled = subprocess.run([ptxas, "-v", "-arch=sm_90", source, "-o", binary], capture_output=True, text=True)
            if assembled.returncode:
                print(f"{name}: ptxas failed: {assembled.stderr.strip().splitlines()[-1:]}")
                continue
            usage = " ".join(line.split("info    :")[-1].strip() for line in assembled.stderr.splitlines() if "Used" in line)
            sass = subprocess.run([cuobjdump, "-sass", binary], capture_output=True, text=True, check=True).stdout
            body = hottest_loop(parse_sass(sass))
            print(f"{name}: {usage}")
            if body:
                counts = mix(body)
                print(f"    hottest loop: {len(body)} instructions, {counts['FFMA']} FFMA, {counts['LDS']} LDS, "
                      f"{counts['LDG']} LDG; " + " ".join(f"{op}:{c}" for op, c in counts.most_common(12)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
