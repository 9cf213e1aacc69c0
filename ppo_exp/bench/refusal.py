"""How long a bad config takes to be refused, and what it imports first.

    python -m ppo_exp.bench.refusal              # `python -m ppo_exp.run gamma=1.5`, 7 runs
    python -m ppo_exp.bench.refusal --runs 11 -- -m gamma=0.9,1.5   # other overrides

Each run is a fresh interpreter in an empty temporary directory (as a user's first
command), so the figure is wall seconds from start to exit status 2. Run it on a quiet
machine: the target is a median of at most 1.5 s. Printed with it: the same for
`python -c "import hydra"` (the floor no refusal can beat), and the heavy packages the
refusal imported, from `-X importtime` (a list that does not depend on load).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time

HEAVY = ("torch", "transformers", "mlflow", "optuna", "pandas", "matplotlib", "sqlalchemy")


def wall_seconds(argv: list[str], cwd: str, *, expect: int) -> float:
    started = time.perf_counter()
    result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != expect:
        sys.exit(f"{' '.join(argv)}: exit status {result.returncode}, not {expect}\n"
                 f"{result.stderr[-2000:]}")
    return seconds


def heavy_imports(argv: list[str], cwd: str) -> list[str]:
    """The HEAVY top-level packages `argv` (a python command) imports."""
    result = subprocess.run(
        [argv[0], "-X", "importtime", *argv[1:]], cwd=cwd, capture_output=True, text=True
    )
    names = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in result.stderr.splitlines()}
    return sorted(names & set(HEAVY))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("overrides", nargs="*", default=["gamma=1.5"])
    args = parser.parse_args(argv)
    command = [sys.executable, "-m", "ppo_exp.run", *args.overrides]
    floor = [sys.executable, "-c", "import hydra"]
    with tempfile.TemporaryDirectory() as cwd:
        wall_seconds(command, cwd, expect=2)  # warm the file cache once
        refusals = [wall_seconds(command, cwd, expect=2) for _ in range(args.runs)]
        floors = [wall_seconds(floor, cwd, expect=0) for _ in range(args.runs)]
        heavy = heavy_imports(command, cwd)
    print(f"refusal  {' '.join(args.overrides)}: median {statistics.median(refusals):.2f} s "
          f"(min {min(refusals):.2f}, max {max(refusals):.2f}, {args.runs} runs; target <= 1.5)")
    print(f"floor    import hydra: median {statistics.median(floors):.2f} s")
    print(f"heavy packages imported before refusing: {', '.join(heavy) or 'none'}")


if __name__ == "__main__":
    main()
