"""Study benchmarks that print figures: the core study, and pruning against no pruning.

    python -m ppo_exp.bench_study core --workdir results/core       # studies/core.yaml
    python -m ppo_exp.bench_study pruning --workdir results/pruning --trials 12

`core` runs `python -m ppo_exp.run -m study=core` with one worker, then the default
config under the same per-trial budget and seeds, and compares the two. `pruning` runs
the same study twice (same trials, sampler seed), with the median pruner and without,
and compares best values and PPO iterations spent. The workdir keeps mlflow.db and
optuna.db, so the results can be analysed afterwards (analysis/sensitivity.ipynb).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import optuna
from mlflow.tracking import MlflowClient


def launch(workdir: Path, *args: str) -> float:
    """Run `python -m ppo_exp.run ARGS` in workdir; return its wall time in seconds."""
    workdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{workdir.resolve() / 'mlflow.db'}"}
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "ppo_exp.run", *args],
        cwd=workdir, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def load(workdir: Path, name: str) -> optuna.Study:
    mlflow.set_tracking_uri(f"sqlite:///{workdir.resolve() / 'mlflow.db'}")
    return optuna.load_study(study_name=name, storage=f"sqlite:///{workdir / 'optuna.db'}")


def iterations_spent(study: optuna.Study) -> int:
    """PPO iterations actually run by the study's seed runs (pruned ones stop early)."""
    client = MlflowClient()
    total = 0
    for trial in study.trials:
        trial_run = trial.user_attrs.get("mlflow_run_id")
        if not trial_run:
            continue
        experiment = client.get_run(trial_run).info.experiment_id
        for run in client.search_runs([experiment], f"tags.mlflow.parentRunId = '{trial_run}'"):
            total += len(client.get_metric_history(run.info.run_id, "perf/rollout_s"))
    return total


def final_metric(workdir: Path, run_filter: str, metric: str) -> list[float]:
    runs = mlflow.search_runs(experiment_names=["ppo_exp"], filter_string=run_filter)
    return runs[f"metrics.{metric}"].dropna().tolist()


def core(workdir: Path, overrides: list[str]) -> None:
    wall = launch(workdir, "-m", "study=core", *overrides)
    study = load(workdir, "core")
    states = {s.name: sum(t.state == s for t in study.trials) for s in optuna.trial.TrialState}
    train = sum(t.user_attrs.get("train_seconds", 0.0) for t in study.trials)
    best = study.best_trial
    print(f"core study: {len(study.trials)} trials {states} in {wall / 60:.1f} min wall")
    print(f"  harness overhead (1 - trainer time / wall): {100 * (1 - train / wall):.1f}%")
    print(f"  objective spread: min {min(t.value for t in study.trials if t.value is not None):.3f}"
          f"  max {best.value:.3f}")
    print(f"  best trial {best.number}: eval/score_auc {best.value:.3f}  {best.params}")
    best_reward = final_metric(
        workdir, f"tags.mlflow.parentRunId = '{best.user_attrs['mlflow_run_id']}'",
        "eval/reward_mean",
    )
    base_dir = workdir / "default_config"
    launch(base_dir, "-m", "train=study", "seed=0,1", *overrides)
    mlflow.set_tracking_uri(f"sqlite:///{base_dir.resolve() / 'mlflow.db'}")
    default_reward = final_metric(base_dir, "tags.`ppo_exp.kind` = 'run'", "eval/reward_mean")
    default_auc = final_metric(base_dir, "tags.`ppo_exp.kind` = 'run'", "eval/score_auc")
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    print(f"  best trial  eval/reward_mean {mean(best_reward):.3f} (seeds {best_reward})")
    print(f"  default cfg eval/reward_mean {mean(default_reward):.3f} (seeds {default_reward}),"
          f" eval/score_auc {mean(default_auc):.3f}")


def pruning(workdir: Path, trials: int, overrides: list[str]) -> None:
    results = {}
    for name, pruner in (("no_pruning", "{name:none}"),
                         ("median_pruning", "{name:median,n_startup_trials:4,n_warmup_steps:4}")):
        wall = launch(
            workdir, "-m", "study=core", f"hydra.sweeper.study_name={name}",
            f"hydra.sweeper.n_trials={trials}", "hydra.sweeper.seeds=[0]",
            f"hydra.sweeper.pruner={pruner}", *overrides,
        )
        study = load(workdir, name)
        pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)
        results[name] = (study.best_value, iterations_spent(study), wall, pruned)
        print(f"{name:15s} best {study.best_value:.4f}  iterations {results[name][1]:4d}"
              f"  pruned {pruned:2d}/{trials}  wall {wall / 60:.1f} min")
    (best_off, it_off, wall_off, _), (best_on, it_on, wall_on, _) = results.values()
    print(f"pruned/unpruned: best value {100 * best_on / best_off:.1f}%, "
          f"iterations {100 * it_on / it_off:.1f}%, wall {100 * wall_on / wall_off:.1f}%")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bench", choices=["core", "pruning"])
    parser.add_argument("--workdir", type=Path, required=True, help="keeps mlflow.db, optuna.db")
    parser.add_argument("--trials", type=int, default=12, help="pruning: trials per study")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides")
    args = parser.parse_args()
    if args.bench == "core":
        core(args.workdir, args.overrides)
    else:
        pruning(args.workdir, args.trials, args.overrides)


if __name__ == "__main__":
    main()
