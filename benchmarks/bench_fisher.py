"""Benchmark the Fisher spectrum routes of brgnnft against their baselines, in float64 on the CPU.

Every measurement runs in its own Python process, so that its time and peak memory (the process's
maximum resident set size, Python, JAX and the imports included) are its own. Four benchmarks:

1. 1-128-128-1 ReLU network on 256 points: ``method="gram"`` against the dense eigendecomposition.
2. 1-512-512-1 ReLU network on 1024 points: the whole nonzero spectrum by ``method="gram"``, against
   a naive baseline: the n x P Jacobian from per-example gradients, its Gram J J^T, and eigh.
3. The same network: top-20 eigenvalues and the diagonal, against laplax (if installed).
4. Scaling of the Gram stage in the number of points n and in the width N, with log-log slopes.

Usage::

    python benchmarks/bench_fisher.py                 # all four
    python benchmarks/bench_fisher.py --only 2 4      # a selection
    python benchmarks/bench_fisher.py --skip-dense    # benchmark 1 without the slow dense baseline
    python benchmarks/bench_fisher.py --quick         # small sizes, to check that the script runs
    python benchmarks/bench_fisher.py --openblas-threads 1   # single-threaded LAPACK eigh
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

NOISE = 0.1

#: Environment of the measurement processes; ``--openblas-threads`` sets OPENBLAS_NUM_THREADS in it.
CHILD_ENVIRONMENT = dict(os.environ)


# --------------------------------------------------------------------------------------------
# Child side: one measurement per process.
# --------------------------------------------------------------------------------------------


def _setup(width: int, num_points: int):
    import jax

    jax.config.update("jax_enable_x64", True)
    from brgnnft.models import MLP

    model = MLP(hidden=(width, width), activation="relu", noise=NOISE)
    params = model.sample_params(jax.random.key(0), input_dim=1)
    params = {name: np.asarray(value, dtype=np.float64) for name, value in params.items()}
    x = np.linspace(-2.0, 2.0, num_points)[:, None]
    return model, params, x


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _timed(function, repeats: int):
    """Return (first time, best of the later ``repeats`` times, last result); the first includes JIT compilation."""
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return times[0], min(times[1:]), result


def child_gram(width, num_points, output):
    from brgnnft.brg import fisher_information

    model, params, x = _setup(width, num_points)
    baseline = _rss_mb()
    cold, warm, info = _timed(lambda: fisher_information(model, params, x, method="gram", progress=False), 3)
    np.save(output, info.eigenvalues)
    return {"cold_s": cold, "warm_s": warm, "rank": info.rank, "num_params": info.num_params,
            "rss_after_setup_mb": baseline, "peak_rss_mb": _peak_rss_mb()}


def child_dense(width, num_points, output):
    import scipy.linalg

    from brgnnft.brg.fisher_jacobian import build_jacobian, prepare_problem

    model, params, x = _setup(width, num_points)
    start = time.perf_counter()
    problem = prepare_problem(model, params, x)
    matrix = np.asarray(build_jacobian(problem).dense())
    formed = time.perf_counter() - start
    start = time.perf_counter()
    values = scipy.linalg.eigh(matrix, driver="evd", check_finite=False)[0][::-1]
    solved = time.perf_counter() - start
    np.save(output, values)
    return {"form_s": formed, "eigh_s": solved, "num_params": int(matrix.shape[0]), "peak_rss_mb": _peak_rss_mb()}


def child_naive(width, num_points, output):
    import jax
    import jax.numpy as jnp
    import scipy.linalg
    from jax.flatten_util import ravel_pytree

    model, params, x = _setup(width, num_points)
    flat, unravel = ravel_pytree(params)

    def scaled_output(theta, point):
        return model.apply(unravel(theta), point[None, :])[0] / NOISE

    # Per-example gradients (one row of J each), the standard way to form an n x P Jacobian.
    start = time.perf_counter()
    jacobian = jax.jit(jax.vmap(jax.grad(scaled_output), in_axes=(None, 0)))(flat, jnp.asarray(x))
    gram = np.asarray(jax.jit(lambda matrix: matrix @ matrix.T)(jacobian))
    values = scipy.linalg.eigh(gram, driver="evd", check_finite=False)[0][::-1]
    elapsed = time.perf_counter() - start
    np.save(output, values)
    return {"time_s": elapsed, "peak_rss_mb": _peak_rss_mb()}


def child_ours_top(width, num_points, output, count):
    from brgnnft.brg import fisher_information

    model, params, x = _setup(width, num_points)
    timings = {}
    for label, options in [("top_gram", {"num_eigenvalues": count}),
                           ("top_lanczos", {"num_eigenvalues": count, "method": "lanczos"}),
                           ("diagonal", {"basis": "diagonal"})]:
        cold, warm, info = _timed(lambda: fisher_information(model, params, x, progress=False, **options), 3)
        timings[label + "_cold_s"], timings[label + "_warm_s"] = cold, warm
        np.save(f"{output}.{label}.npy", info.eigenvalues if label != "diagonal" else info.diagonal_vector())
    timings["peak_rss_mb"] = _peak_rss_mb()
    return timings


def _laplax_mv(model, params, x):
    import jax.numpy as jnp
    from laplax.curv.ggn import create_ggn_mv

    def model_fn(input, params):
        return model.apply(params, input[None, :])

    def loss_hessian_mv(jv, pred, target, **kwargs):
        return jv / NOISE**2

    data = {"input": jnp.asarray(x), "target": jnp.zeros((x.shape[0], 1))}
    jax_params = {name: jnp.asarray(value) for name, value in params.items()}
    return create_ggn_mv(model_fn, jax_params, data, loss_hessian_mv=loss_hessian_mv), jax_params


def child_laplax_top(width, num_points, output, count, iterations):
    import jax
    from laplax.curv.lanczos import lanczos_lowrank

    model, params, x = _setup(width, num_points)
    mv, jax_params = _laplax_mv(model, params, x)
    def top():
        terms = lanczos_lowrank(mv, key=jax.random.key(0), layout=jax_params, rank=iterations, tol=1e-12)
        return np.sort(np.asarray(terms.S))[::-1][:count]

    cold, warm, values = _timed(top, 3)
    np.save(output, values)
    return {"cold_s": cold, "warm_s": warm, "peak_rss_mb": _peak_rss_mb()}


def child_laplax_diagonal(width, num_points, output, full):
    import jax
    from laplax.util.mv import diagonal

    model, params, x = _setup(width, num_points)
    mv, jax_params = _laplax_mv(model, params, x)
    compiled = jax.jit(mv)
    jax.block_until_ready(compiled(jax_params))
    start = time.perf_counter()
    for _ in range(5):
        jax.block_until_ready(compiled(jax_params))
    per_product = (time.perf_counter() - start) / 5
    result = {"per_product_s": per_product, "num_params": int(sum(np.size(v) for v in params.values()))}
    if full:
        start = time.perf_counter()
        values = np.asarray(diagonal(mv, layout=jax_params))
        result["diagonal_s"] = time.perf_counter() - start
        np.save(output, values)
    result["peak_rss_mb"] = _peak_rss_mb()
    return result


def child_scaling(width, num_points, output):
    import jax

    from brgnnft.brg import fisher_information
    from brgnnft.brg.fisher_jacobian import build_jacobian, prepare_problem

    model, params, x = _setup(width, num_points)
    problem = prepare_problem(model, params, x)
    jacobian = build_jacobian(problem)
    jax.block_until_ready(jacobian.gram())
    gram_runs, factor_runs = [], []
    for _ in range(3):
        start = time.perf_counter()
        jacobian = build_jacobian(prepare_problem(model, params, x))
        jax.block_until_ready(jacobian.factors)
        factor_runs.append(time.perf_counter() - start)
        start = time.perf_counter()
        jax.block_until_ready(jacobian.gram())
        gram_runs.append(time.perf_counter() - start)
    _, total, _ = _timed(lambda: fisher_information(model, params, x, method="gram", progress=False), 3)
    return {"gram_s": min(gram_runs), "factors_s": min(factor_runs), "total_s": total}


CHILDREN = {
    "gram": child_gram,
    "dense": child_dense,
    "naive": child_naive,
    "ours_top": child_ours_top,
    "laplax_top": child_laplax_top,
    "laplax_diagonal": child_laplax_diagonal,
    "scaling": child_scaling,
}


# --------------------------------------------------------------------------------------------
# Parent side: run children, compare, print tables.
# --------------------------------------------------------------------------------------------


def run_child(task: str, workdir: str, **arguments) -> dict:
    """Run one measurement in a fresh process and return its result dict."""
    output = os.path.join(workdir, f"{task}-{arguments.get('width')}-{arguments.get('num_points')}.npy")
    payload = json.dumps({"task": task, "output": output, **arguments})
    completed = subprocess.run(
        [sys.executable, __file__, "--child", payload], capture_output=True, text=True, check=False, env=CHILD_ENVIRONMENT
    )
    for line in completed.stdout.splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT "):])
            result["output"] = output
            return result
    raise RuntimeError(f"child {task} {arguments} failed:\n{completed.stderr[-3000:]}")


def relative_difference(values, reference, floor=1e-8):
    """Max relative difference over the reference eigenvalues above floor * max, and their count."""
    count = int(np.sum(reference > floor * reference[0]))
    count = min(count, len(values))
    return float(np.max(np.abs(values[:count] - reference[:count]) / reference[:count])), count


def table(header, rows):
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    lines = [" | ".join(str(cell).ljust(width) for cell, width in zip(header, widths))]
    lines.append("-|-".join("-" * width for width in widths))
    lines += [" | ".join(str(cell).ljust(width) for cell, width in zip(row, widths)) for row in rows]
    print("\n".join(lines) + "\n", flush=True)


def benchmark_dense(workdir, quick, skip_dense):
    width, points = (32, 64) if quick else (128, 256)
    print(f"## 1. gram vs dense eigendecomposition: 1-{width}-{width}-1 ReLU, n = {points}\n", flush=True)
    gram = run_child("gram", workdir, width=width, num_points=points)
    rows = [["gram (NTK duality)", f"{gram['cold_s']:.3f}", f"{gram['warm_s']:.3f}", gram["rank"], "", f"{gram['peak_rss_mb']:.0f}"]]
    if not skip_dense:
        dense = run_child("dense", workdir, width=width, num_points=points)
        values = np.load(dense["output"])
        difference, count = relative_difference(np.load(gram["output"]), values)
        total = dense["form_s"] + dense["eigh_s"]
        rows.append([f"dense (form I {dense['form_s']:.1f} s + scipy eigh {dense['eigh_s']:.1f} s)", f"{total:.1f}", "", "",
                     f"{difference:.1e} over {count}", f"{dense['peak_rss_mb']:.0f}"])
        rows.append(["speed-up dense / gram (warm)", f"{total / gram['warm_s']:.0f}x", "", "", "", ""])
    table(["route", "time cold (s)", "time warm, best of 3 (s)", "rank", "max rel. diff. of eigenvalues", "peak RSS (MB)"], rows)
    print(f"P = {gram['num_params']}\n")


def benchmark_spectrum(workdir, quick):
    width, points = (64, 128) if quick else (512, 1024)
    print(f"## 2. whole nonzero spectrum: 1-{width}-{width}-1 ReLU, n = {points}\n", flush=True)
    gram = run_child("gram", workdir, width=width, num_points=points)
    naive = run_child("naive", workdir, width=width, num_points=points)
    difference, count = relative_difference(np.load(gram["output"]), np.load(naive["output"]))
    table(
        ["route", "time (s)", "peak RSS (MB)"],
        [
            ["gram, cold (first call, JIT compile included)", f"{gram['cold_s']:.2f}", f"{gram['peak_rss_mb']:.0f}"],
            ["gram, warm (best of 3 later calls)", f"{gram['warm_s']:.2f}", ""],
            ["naive: per-example-gradient Jacobian + J J^T + eigh", f"{naive['time_s']:.2f}", f"{naive['peak_rss_mb']:.0f}"],
        ],
    )
    print(f"P = {gram['num_params']}, rank {gram['rank']}, RSS after imports and setup "
          f"{gram['rss_after_setup_mb']:.0f} MB; eigenvalues agree with the naive route to "
          f"{difference:.1e} relative over the {count} above 1e-8 lambda_max\n")


def benchmark_laplax(workdir, quick, count=20):
    width, points = (64, 128) if quick else (512, 1024)
    print(f"## 3. top-{count} eigenvalues and diagonal against laplax: 1-{width}-{width}-1 ReLU, n = {points}\n", flush=True)
    try:
        import laplax  # noqa: F401
    except ImportError:
        print("laplax is not installed: benchmark 3 skipped\n")
        return
    ours = run_child("ours_top", workdir, width=width, num_points=points, count=count)
    reference = np.load(ours["output"] + ".top_gram.npy")
    rows = [
        ["brgnnft gram, num_eigenvalues=20", f"{ours['top_gram_cold_s']:.2f}", f"{ours['top_gram_warm_s']:.2f}", "reference"],
    ]
    lanczos_difference, _ = relative_difference(np.load(ours["output"] + ".top_lanczos.npy"), reference, floor=0)
    rows.append(["brgnnft lanczos (scipy eigsh), k=20", f"{ours['top_lanczos_cold_s']:.2f}", f"{ours['top_lanczos_warm_s']:.2f}", f"{lanczos_difference:.1e}"])
    for iterations in (count, 3 * count):
        laplax_top = run_child("laplax_top", workdir, width=width, num_points=points, count=count, iterations=iterations)
        difference, _ = relative_difference(np.load(laplax_top["output"]), reference, floor=0)
        rows.append([f"laplax lanczos_lowrank, rank={iterations}", f"{laplax_top['cold_s']:.2f}", f"{laplax_top['warm_s']:.2f}", f"{difference:.1e}"])
    table(["top-20 route", "time cold (s)", "time warm, best of 3 (s)", "max rel. error of top 20"], rows)

    big = run_child("laplax_diagonal", workdir, width=width, num_points=points, full=False)
    estimate = big["per_product_s"] * big["num_params"]
    small_width = 16 if quick else 64
    small = run_child("laplax_diagonal", workdir, width=small_width, num_points=points, full=True)
    small_ours = run_child("ours_top", workdir, width=small_width, num_points=points, count=5)
    ours_small_diagonal = np.load(small_ours["output"] + ".diagonal.npy")
    laplax_small_diagonal = np.load(small["output"])
    agreement = float(np.max(np.abs(ours_small_diagonal - laplax_small_diagonal)) / np.max(laplax_small_diagonal))
    table(
        ["diagonal route", "network", "time (s)", "note"],
        [
            ["brgnnft basis='diagonal' (warm)", f"1-{width}-{width}-1", f"{ours['diagonal_warm_s']:.2f}", f"cold {ours['diagonal_cold_s']:.2f} s"],
            ["laplax diagonal(ggn_mv)", f"1-{width}-{width}-1", f"~{estimate:.0f} (estimate)",
             f"P = {big['num_params']} GGN products of {big['per_product_s'] * 1e3:.1f} ms each, not run"],
            ["brgnnft basis='diagonal' (warm)", f"1-{small_width}-{small_width}-1", f"{small_ours['diagonal_warm_s']:.3f}", ""],
            ["laplax diagonal(ggn_mv)", f"1-{small_width}-{small_width}-1", f"{small['diagonal_s']:.2f}",
             f"P = {small['num_params']}; max difference {agreement:.1e} of max entry"],
        ],
    )


def fit_slope(sizes, times):
    return float(np.polyfit(np.log(sizes), np.log(times), 1)[0])


def benchmark_scaling(workdir, quick):
    points_grid = [64, 128, 256] if quick else [256, 512, 1024, 2048, 4096]
    width_grid = [32, 64, 128] if quick else [128, 256, 512, 1024, 2048]
    fixed_width, fixed_points = (64, 128) if quick else (512, 1024)
    print(f"## 4. scaling of gram: n at width {fixed_width}, width at n = {fixed_points} (two hidden layers)\n", flush=True)
    rows = []
    by_points = [run_child("scaling", workdir, width=fixed_width, num_points=points) for points in points_grid]
    by_width = [run_child("scaling", workdir, width=width, num_points=fixed_points) for width in width_grid]
    for points, result in zip(points_grid, by_points):
        rows.append([f"n = {points}", fixed_width, f"{result['factors_s']:.3f}", f"{result['gram_s']:.3f}", f"{result['total_s']:.2f}"])
    for width, result in zip(width_grid, by_width):
        rows.append([f"N = {width}", fixed_points, f"{result['factors_s']:.3f}", f"{result['gram_s']:.3f}", f"{result['total_s']:.2f}"])
    table(["size", "other axis", "factors (s)", "Gram stage (s)", "whole spectrum, best of 3 (s)"], rows)
    gram_by_points = [result["gram_s"] for result in by_points]
    gram_by_width = [result["gram_s"] for result in by_width]
    print(
        f"log-log slope of the Gram stage: {fit_slope(points_grid, gram_by_points):.2f} in n "
        f"({fit_slope(points_grid[-3:], gram_by_points[-3:]):.2f} over the three largest; expected 2), "
        f"{fit_slope(width_grid, gram_by_width):.2f} in N "
        f"({fit_slope(width_grid[-3:], gram_by_width[-3:]):.2f} over the three largest; expected 1). "
        f"Whole spectrum: {fit_slope(points_grid, [r['total_s'] for r in by_points]):.2f} in n "
        f"(eigh adds n^3), {fit_slope(width_grid, [r['total_s'] for r in by_width]):.2f} in N "
        "(the forward pass adds n N^2)\n"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", type=int, choices=[1, 2, 3, 4], help="benchmarks to run (default: all)")
    parser.add_argument("--skip-dense", action="store_true", help="skip the dense eigendecomposition of benchmark 1 (minutes)")
    parser.add_argument("--quick", action="store_true", help="small sizes, to check that the script runs")
    parser.add_argument("--openblas-threads", type=int, help="set OPENBLAS_NUM_THREADS for the measurement processes")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.openblas_threads is not None:
        CHILD_ENVIRONMENT["OPENBLAS_NUM_THREADS"] = str(arguments.openblas_threads)

    if arguments.child:
        payload = json.loads(arguments.child)
        task = CHILDREN[payload.pop("task")]
        print("RESULT " + json.dumps(task(**payload)), flush=True)
        return

    selected = arguments.only or [1, 2, 3, 4]
    with open("/proc/cpuinfo") as cpuinfo:
        model_name = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "unknown")
    threads = CHILD_ENVIRONMENT.get("OPENBLAS_NUM_THREADS", "unset")
    print(f"# bench_fisher: {model_name}, {os.cpu_count()} cores, OPENBLAS_NUM_THREADS={threads}, "
          f"load average {os.getloadavg()[0]:.2f} at start\n")
    with tempfile.TemporaryDirectory() as workdir:
        if 1 in selected:
            benchmark_dense(workdir, arguments.quick, arguments.skip_dense)
        if 2 in selected:
            benchmark_spectrum(workdir, arguments.quick)
        if 3 in selected:
            benchmark_laplax(workdir, arguments.quick)
        if 4 in selected:
            benchmark_scaling(workdir, arguments.quick)
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
