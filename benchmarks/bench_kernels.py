"""Benchmark: NNGP kernel matrices of deep ReLU networks, closed form against quadrature.

Times the jitted closed-form recursion (arc-cosine kernel per layer) on n points for 2 and 3
hidden ReLU layers. The baseline is the same recursion with ReLU passed as an opaque callable,
which forces two-dimensional Gauss-Hermite quadrature in every layer. It runs on fewer points
because it costs q^2 activation calls per entry.

Usage: python benchmarks/bench_kernels.py [--points 4096] [--quadrature-points 512] [--order 32]
"""

import argparse
import os
import platform
import time

import jax
import jax.numpy as jnp

from brgnnft.models import nngp_kernel

jax.config.update("jax_enable_x64", True)


def timed(function, *args, repeats=5):
    """Return (first call including compilation, best of ``repeats`` later calls), in seconds."""
    start = time.perf_counter()
    jax.block_until_ready(function(*args))
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(function(*args))
        times.append(time.perf_counter() - start)
    return first, min(times)


def opaque_relu(u):
    return jnp.maximum(u, 0.0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=4096)
    parser.add_argument("--quadrature-points", type=int, default=512)
    parser.add_argument("--order", type=int, default=32)
    parser.add_argument("--dim", type=int, default=8)
    args = parser.parse_args()

    x = jax.random.normal(jax.random.key(0), (args.points, args.dim))
    x_small = x[: args.quadrature_points]
    rows = []
    for hidden in (2, 3):
        closed = jax.jit(lambda a, h=hidden: nngp_kernel(a, activations=("relu",) * h))
        rows.append((f"closed form, {hidden} hidden ReLU layers", args.points, *timed(closed, x)))
    for hidden in (2, 3):
        quadrature = jax.jit(
            lambda a, h=hidden: nngp_kernel(a, activations=(opaque_relu,) * h, quadrature_order=args.order)
        )
        rows.append((f"quadrature q={args.order}, {hidden} hidden layers", args.quadrature_points, *timed(quadrature, x_small)))

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, devices: {jax.devices()}, "
          f"1-minute load average {os.getloadavg()[0]:.1f}")
    print(f"inputs of dimension {args.dim}, float64, jitted; best of 5 calls after the first")
    print(f"{'kernel':<40}{'points':>8}{'first call (s)':>16}{'run (s)':>10}{'ns / entry':>12}")
    for name, points, first, run in rows:
        print(f"{name:<40}{points:>8}{first:>16.2f}{run:>10.3f}{1e9 * run / points**2:>12.1f}")


if __name__ == "__main__":
    main()
