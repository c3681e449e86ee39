"""Benchmark: wall time and peak memory of the ``brgnnft`` command, end to end, in fresh processes.

Runs, each as a child process in a temporary folder (so the times include start-up, imports and
JIT compilation):

1. ``brgnnft flow`` with its defaults (co2, random features 512, conjugate posterior, 25 cutoffs),
   target under 120 s on a 2-core CPU;
2. ``brgnnft flow --quick``, target under 30 s;
3. ``brgnnft paper`` (100 members, 25 cutoffs), target under 40 s and 1 GB peak memory.

The baseline of (3) is the original experiment code (PyTorch with nngeometry 0.3), measured at
about 82 s per member and 4.1 GB peak memory on a 2-core machine of the same kind, so 100 members
take about 2.3 hours. It cannot be rerun here because PyTorch and nngeometry are not installed;
the table quotes that recorded measurement.

Usage: python benchmarks/bench_flow.py [--skip-default] [--members 100]
"""

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time

ORIGINAL_SECONDS_PER_MEMBER = 82.0
ORIGINAL_PEAK_GB = 4.1


def run_command(arguments: list[str]) -> tuple[float, float, int]:
    """Run ``python -m brgnnft.brg ARGUMENTS`` in a fresh temporary folder.

    Returns the wall time in seconds, the child's peak resident memory in MB and its exit code.
    """
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-m", "brgnnft.brg", *arguments, "--no-progress"],
            cwd=folder,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        stderr = process.stderr.read()
        _, status, usage = os.wait4(process.pid, 0)
        elapsed = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            sys.stderr.write(stderr.decode())
    # ru_maxrss is in kilobytes on Linux.
    return elapsed, usage.ru_maxrss / 1024, process.returncode


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-default", action="store_true", help="skip the default flow (the longest run)")
    parser.add_argument("--members", type=int, default=100, help="members of the paper preset (default 100)")
    args = parser.parse_args()

    runs = []
    if not args.skip_default:
        runs.append(("brgnnft flow", ["flow"], "< 120 s", "-"))
    runs.append(("brgnnft flow --quick", ["flow", "--quick"], "< 30 s", "-"))
    baseline = ORIGINAL_SECONDS_PER_MEMBER * args.members
    runs.append((
        f"brgnnft paper --members {args.members}",
        ["paper", "--members", str(args.members)],
        "< 40 s, < 1 GB",
        f"{baseline:.0f} s, {ORIGINAL_PEAK_GB} GB (recorded)",
    ))

    print(f"CPU: {cpu_name()}, {os.cpu_count()} logical cores; Python {platform.python_version()}")
    header = f"{'command':<32} {'wall s':>8} {'peak MB':>8}  {'target':<16} {'original code':<26} {'speed-up':>9}"
    print(header)
    print("-" * len(header))
    for name, arguments, target, original in runs:
        elapsed, peak_mb, code = run_command(arguments)
        speedup = f"{baseline / elapsed:.0f}x" if name.startswith("brgnnft paper") else "-"
        status = "" if code == 0 else f"  (exit code {code})"
        print(f"{name:<32} {elapsed:>8.1f} {peak_mb:>8.0f}  {target:<16} {original:<26} {speedup:>9}{status}")


if __name__ == "__main__":
    main()
