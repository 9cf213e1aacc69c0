"""Report on a study, finished or still running: importances, figures and best trial to MLflow.

python -m ppo_exp.study report core
python -m ppo_exp.study report core --storage postgresql://127.0.0.1/test
"""

from __future__ import annotations

import sys

import mlflow
import optuna

from ppo_exp.cli import subcommand_parser
from ppo_exp.study import report, runs
from ppo_exp.study.storage import DEFAULT_STORAGE


def main(argv: list[str] | None = None) -> int:
    parser, cmd = subcommand_parser(
        "python -m ppo_exp.study", __doc__, "report",
        help="log importances and figures on the study's run",
    )
    cmd.add_argument("study_name")
    cmd.add_argument("--storage", default=DEFAULT_STORAGE, help="Optuna storage URL")
    cmd.add_argument("--tracking-uri", help="MLflow tracking URI (default: MLflow's own)")
    args = parser.parse_args(argv)

    if args.tracking_uri:
        mlflow.set_tracking_uri(args.tracking_uri)
    storage = args.storage
    if storage.startswith("journal:"):
        from ppo_exp.study.storage import open_storage

        storage = open_storage(storage, heartbeat_interval=10, grace_period=60)
    try:
        study = optuna.load_study(study_name=args.study_name, storage=storage)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        print(
            f"error: no study {args.study_name!r} in {args.storage}; studies there: {names}",
            file=sys.stderr,
        )
        return 2
    run_id = study.user_attrs.get(runs.PARENT_ATTR)
    if not run_id:
        print(f"error: study {args.study_name!r} has no MLflow parent run", file=sys.stderr)
        return 2
    metrics = study.user_attrs.get("objectives") or ["objective"]
    report.finish(study, run_id, metrics)
    print(f"reported study {args.study_name} to MLflow run {run_id} ({mlflow.get_tracking_uri()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
