"""Benchmark: a batched randomised-MAP ensemble against a Python loop over single members.

Both sides train the same members with the same optimiser and the same jitted step; the batched
side runs all members in one vmapped scan (sharded over devices when there are several), the
baseline runs one jitted scan per member in a Python loop.

Usage: python benchmarks/bench_ensemble.py [--members 64] [--steps 2000] [--width 512] [--points 256]
"""

import argparse
import os
import platform
import time

import jax
import jax.numpy as jnp
import optax

from brgnnft.inference import randomised_map_loss
from brgnnft.models import MLP


def build_training(model, x, y, noise, prior_variance, optimizer, num_steps):
    def train_member(anchor, targets):
        def step(carry, _):
            params, state = carry
            grads = jax.grad(randomised_map_loss, argnums=1)(model, params, anchor, x, targets, noise, prior_variance)
            updates, state = optimizer.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), None

        return jax.lax.scan(step, (anchor, optimizer.init(anchor)), length=num_steps)[0][0]

    return train_member


def timed(function, *args):
    start = time.perf_counter()
    result = jax.block_until_ready(function(*args))
    return time.perf_counter() - start, result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=64)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--points", type=int, default=256)
    args = parser.parse_args()

    noise = 0.1
    model = MLP(hidden=(args.width, args.width), activation="relu", noise=noise)
    key_x, key_anchor, key_noise = jax.random.split(jax.random.key(0), 3)
    x = jax.random.uniform(key_x, (args.points, 1), minval=-2, maxval=2)
    y = jnp.sin(2 * x[:, 0])
    prior_variance = model.prior_variance(1)
    optimizer = optax.adam(optax.cosine_decay_schedule(1e-3, args.steps, alpha=1e-3))
    anchors = model.sample_params(key_anchor, 1, args.members)
    targets = y + noise * jax.random.normal(key_noise, (args.members, args.points))
    train_member = build_training(model, x, y, noise, prior_variance, optimizer, args.steps)

    batched = jax.jit(jax.vmap(train_member))
    compile_batched, _ = timed(batched, anchors, targets)
    batched_time, batched_params = timed(batched, anchors, targets)

    single = jax.jit(train_member)
    first = {name: value[0] for name, value in anchors.items()}
    compile_single, _ = timed(single, first, targets[0])
    start = time.perf_counter()
    for member in range(args.members):
        member_anchor = {name: value[member] for name, value in anchors.items()}
        jax.block_until_ready(single(member_anchor, targets[member]))
    loop_time = time.perf_counter() - start

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"devices: {jax.devices()}")
    print(f"1-{args.width}-{args.width}-1 ReLU MLP, {args.members} members, {args.steps} Adam steps, "
          f"{args.points} points, dtype {x.dtype}")
    print(f"{'route':<22}{'first call (s)':>16}{'run (s)':>12}")
    print(f"{'batched (vmap)':<22}{compile_batched:>16.2f}{batched_time:>12.2f}")
    print(f"{'loop over members':<22}{compile_single:>16.2f}{loop_time:>12.2f}")
    print(f"speed-up: {loop_time / batched_time:.2f}x")


if __name__ == "__main__":
    main()
