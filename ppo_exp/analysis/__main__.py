"""Execute an analysis notebook with parameters and save it as a standalone HTML report.

python -m ppo_exp.analysis render --study core --tracking-uri sqlite:///mlflow.db \\
    --out analysis/reports/core.html
python -m ppo_exp.analysis render --sweep latest --out analysis/reports/sweep.html
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Sequence
from typing import Any

from ppo_exp.analysis._render import render
from ppo_exp.cli import subcommand_parser


def _literal(text: str) -> Any:
    """A command-line value as a Python literal when it is one, else as a string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m ppo_exp.analysis render ...`: execute a notebook into an HTML report."""
    parser, cmd = subcommand_parser(
        "python -m ppo_exp.analysis", __doc__, "render",
        help="execute a notebook and save it as standalone HTML",
    )
    cmd.add_argument("--study", help="study name (or 'latest'): renders analysis/sensitivity.ipynb")
    cmd.add_argument("--sweep", help="sweep parent run id (or 'latest'): renders learning_curves")
    cmd.add_argument("--tracking-uri", help="MLflow store; default: $MLFLOW_TRACKING_URI")
    cmd.add_argument("--experiment", default="ppo_exp", help="MLflow experiment (ppo_exp)")
    cmd.add_argument("--notebook", help="notebook name in analysis/ or path (default from above)")
    cmd.add_argument("--out", required=True, help="HTML file to write")
    cmd.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="another notebook parameter (a Python literal or a string)",
    )
    cmd.add_argument("--no-input", action="store_true", help="hide the code cells")
    args = parser.parse_args(argv)
    if not (args.study or args.sweep or args.notebook):
        parser.error("render needs --study, --sweep or --notebook")
    notebook = args.notebook or ("sensitivity" if args.study else "learning_curves")
    parameters: dict[str, Any] = {"tracking_uri": args.tracking_uri, "experiment": args.experiment}
    if args.study:
        parameters["study"] = args.study
    if args.sweep:
        parameters["sweep"] = args.sweep
    for item in args.param:
        key, _, value = item.partition("=")
        parameters[key] = _literal(value)
    from papermill import PapermillExecutionError

    try:
        out = render(notebook, args.out, parameters, exclude_input=args.no_input)
    except PapermillExecutionError as error:  # the cell's traceback is long and coloured: name it
        parser.exit(1, f"{notebook}: a cell raised {error.ename}: {error.evalue}\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
