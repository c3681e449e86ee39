"""Benchmark: the four-point correlator of an ensemble against the equivalent float64 matrix product.

Estimating G^(4) on M points from S members is, at its core, the product P^T P of the (S, M^2)
matrix of pair products f_i f_j. The benchmark times that product on this machine (building P
is not timed) next to ``correlator`` and ``connected_correlator`` (order 4, block-jackknife
standard errors included), and records the peak memory that each correlator call allocates
(NumPy allocations, traced with tracemalloc).

Usage: python benchmarks/bench_correlators.py [--samples 100000] [--points 32] [--repeats 3]
"""

import argparse
import os
import platform
import time
import tracemalloc

import numpy as np

from brgnnft.models import connected_correlator, correlator


def best_times(functions: dict, repeats: int) -> dict:
    """Return the fastest wall-clock time of each function, in seconds.

    The functions run interleaved, one round at a time, so that load from other processes
    affects all of them alike.
    """
    best = {name: float("inf") for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def peak_memory(function):
    """Return the peak traced allocation during ``function()``, in bytes."""
    tracemalloc.start()
    function()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--points", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    samples = np.random.default_rng(0).normal(size=(args.samples, args.points))

    def raw():
        return correlator(samples, order=4, progress=False)

    def connected():
        return connected_correlator(samples, order=4, progress=False)

    raw_memory = peak_memory(raw)
    connected_memory = peak_memory(connected)

    load_before = os.getloadavg()[0]
    pairs = (samples[:, :, None] * samples[:, None, :]).reshape(args.samples, -1)
    times = best_times({"matmul": lambda: pairs.T @ pairs, "raw": raw, "connected": connected}, args.repeats)
    matmul_time, raw_time, connected_time = times["matmul"], times["raw"], times["connected"]
    pairs_bytes = pairs.nbytes
    load_after = os.getloadavg()[0]

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"1-minute load average {load_before:.1f} before and {load_after:.1f} after timing")
    print(f"S = {args.samples} members, M = {args.points} points, float64, best of {args.repeats} interleaved rounds")
    print(f"{'computation':<44}{'time (s)':>10}{'/ matmul':>10}{'peak MB':>10}")
    print(f"{'P^T P, P = (S, M^2) pair products (baseline)':<44}{matmul_time:>10.2f}{1.0:>10.2f}{pairs_bytes / 2**20:>10.0f}")
    print(f"{'correlator(order=4) + SE':<44}{raw_time:>10.2f}{raw_time / matmul_time:>10.2f}{raw_memory / 2**20:>10.0f}")
    print(f"{'connected_correlator(order=4) + SE':<44}{connected_time:>10.2f}{connected_time / matmul_time:>10.2f}{connected_memory / 2**20:>10.0f}")
    print("baseline peak MB is the size of P alone, which the baseline must hold")


if __name__ == "__main__":
    main()
