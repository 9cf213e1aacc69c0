"""The parser shared by the package's commands that take a sub-command:
`python -m ppo_exp.study report ...` and `python -m ppo_exp.analysis render ...`."""

from __future__ import annotations

import argparse


def subcommand_parser(
    prog: str, doc: str, command: str, *, help: str
) -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """A parser for `prog COMMAND ...` with one (required) sub-command.

    Args:
        prog: the command as typed, e.g. "python -m ppo_exp.study".
        doc: its description (the module docstring, its examples kept as written).
        command: the sub-command's name, e.g. "report".
        help: one line on what the sub-command does.

    Returns:
        The command's parser (to parse with, and for `parser.error`) and the sub-command's
        (to add the arguments to).
    """
    parser = argparse.ArgumentParser(
        prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    return parser, commands.add_parser(command, help=help)
