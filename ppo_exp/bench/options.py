"""Command-line options every benchmark takes for the size of its runs."""

from __future__ import annotations

import argparse


def add_run_size(
    parser: argparse.ArgumentParser, *, iterations: int, batch_size: int, max_new_tokens: int
) -> None:
    """--iterations, --batch-size and --max-new-tokens, with this benchmark's defaults."""
    parser.add_argument("--iterations", type=int, default=iterations, help="PPO iterations")
    parser.add_argument("--batch-size", type=int, default=batch_size, help="responses each")
    parser.add_argument("--max-new-tokens", type=int, default=max_new_tokens,
                        help="response length cap")
