"""How long ``mltidy --help`` takes next to ``python -c 'import typer'`` (the floor of any
Typer CLI), measured in pairs.

Each round runs both, in an order that alternates between rounds, so that load from other
processes falls on both alike; the report gives each one's median and the median of the
per-round ratios. ``mltidy scan --help`` (a command's own help: its module is imported) is
measured the same way.

Bytecode is cached: the programs run without ``PYTHONDONTWRITEBYTECODE``, and a warm-up run of
each writes the cache of whatever it imports (an installed package has one already; a source
tree given by ``PYTHONPATH`` would otherwise be compiled again by every run).

Run: python bench/help_startup.py [ROUNDS] (``--help`` for the options). The ``mltidy`` it runs
is the console script next to this Python; ``PYTHONPATH`` chooses which source it imports.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

MLTIDY = str(Path(sys.executable).with_name("mltidy"))
TYPER = [sys.executable, "-c", "import typer"]
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def wall(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(
        command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV
    )
    return time.perf_counter() - started


def paired(rounds: int, command: list[str]) -> tuple[list[float], list[float]]:
    floor: list[float] = []
    measured: list[float] = []
    for index in range(rounds):
        if index % 2:
            measured.append(wall(command))
            floor.append(wall(TYPER))
        else:
            floor.append(wall(TYPER))
            measured.append(wall(command))
    return floor, measured


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time `mltidy --help` and `mltidy scan --help` next to "
        "`python -c 'import typer'`, in pairs whose order alternates.",
    )
    parser.add_argument(
        "rounds", nargs="?", type=int, default=20, help="paired rounds per command (default 20)"
    )
    parser.add_argument("--root-only", action="store_true", help="measure `mltidy --help` only")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("rounds must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rounds: int = args.rounds
    for command in (TYPER, [MLTIDY, "--help"], [MLTIDY, "scan", "--help"]):
        wall(command)  # warm the file cache and write the bytecode
    print(f"{rounds} paired rounds, wall-clock seconds (median, min-max)")
    commands = [[MLTIDY, "--help"]]
    if not args.root_only:
        commands.append([MLTIDY, "scan", "--help"])
    for command in commands:
        floor, measured = paired(rounds, command)
        ratios = [m / f for m, f in zip(measured, floor, strict=True)]
        shown = " ".join(["mltidy", *command[1:]])
        print(
            f"  import typer      {statistics.median(floor):.3f} "
            f"({min(floor):.3f}-{max(floor):.3f})\n"
            f"  {shown:<16} {statistics.median(measured):.3f} "
            f"({min(measured):.3f}-{max(measured):.3f})\n"
            f"  ratio            {statistics.median(ratios):.2f} "
            f"(median of per-round ratios; {min(ratios):.2f}-{max(ratios):.2f})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
