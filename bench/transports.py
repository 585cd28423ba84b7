"""The streaming transports beside the naive designs they replace, in one run.

Usage: ``python -m bench.transports [--size-mib 1024] [--runs 1]``

Runs :mod:`bench.ws_naive` (freight's WebSocket upload against one-chunk-then-"next") and
:mod:`bench.tcp_baselines` (freight's TCP upload and download against a 1 KiB read/write
loop and a plain sendfile → recv_into pair) back to back, each target interleaved with its
baselines, and prints both tables: throughput and server CPU seconds per GiB.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

from bench.measure import page_reporting_paused


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=1)
    options = parser.parse_args()
    size, runs = str(options.size_mib), str(options.runs)
    with page_reporting_paused() as reporting:
        print(f"free page reporting: {reporting} (see bench/measure.py)", flush=True)
        for command in (
            ["bench.ws_naive", "--size-mib", size, "--repeat", runs],
            ["bench.tcp_baselines", "--size-mib", size, "--runs", runs],
        ):
            print(f"== python -m {' '.join(command)}", flush=True)
            subprocess.run([sys.executable, "-m", *command], check=True)


if __name__ == "__main__":
    main()
