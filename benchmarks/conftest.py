"""Helpers shared by the benchmark suites: time scratchdet and its peer library in the same run.

Run a suite with `python -m pytest benchmarks/bench_<area>.py -s` (`-s` shows the printed ratios);
CI does not run benchmarks.
"""

import time

import pytest


def best_time(fn, repeat=5):
    """The fastest of `repeat` calls of `fn()`, in seconds (the minimum is the least noisy estimate)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


@pytest.fixture
def compare_with_peer(benchmark):
    """Time our callable and a peer's, interleaved, record both and the ratio, and print it.

    Usage: `result = compare_with_peer(ours, peer, "OpenCV cv2.dnn.NMSBoxes", repeat=5)`. pytest-benchmark's
    table shows ours; `benchmark.extra_info` holds `ours_s`, `peer_s` and `speedup = peer_s / ours_s`
    (both best of `repeat`, measured alternately so that machine noise hits both alike).
    Returns ours' result (from a warm-up call, which also compiles any Numba kernel).
    """

    def compare(ours, peer, peer_name, repeat=5):
        result = ours()  # warm-up: Numba compilation and caches
        peer()
        ours_s = peer_s = float("inf")
        for _ in range(repeat):
            ours_s = min(ours_s, best_time(ours, 1))
            peer_s = min(peer_s, best_time(peer, 1))
        benchmark.pedantic(ours, rounds=repeat, iterations=1)
        speedup = peer_s / ours_s
        benchmark.extra_info.update(peer=peer_name, ours_s=ours_s, peer_s=peer_s, speedup=speedup)
        print(f"\n{benchmark.name}: scratchdet {ours_s * 1e3:.2f} ms, {peer_name} {peer_s * 1e3:.2f} ms "
              f"-> scratchdet is {speedup:.2f}x {'faster' if speedup >= 1 else 'slower'}")
        return result

    return compare
