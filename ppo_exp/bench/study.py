"""Study benchmarks that print figures: pruning against no pruning, and best against defaults.

    python -m ppo_exp.bench.study pruning --workdir results --trials 60
    python -m ppo_exp.bench.study confirm --workdir results/pruned --study core --seeds 0,1,2,3,4
    python -m ppo_exp.bench.study throughput --workdir results/throughput --trials 20

`pruning` runs studies/core.yaml twice side by side, one CPU core each, same sampler seed:
as shipped (median pruner; first its own 20 trials, then resumed to --trials) in
WORKDIR/pruned, and with the pruner off in WORKDIR/unpruned. It prints the shipped
20-trial launch's wall time and harness overhead, and for both studies, at 20 trials and
at --trials, the best value and the PPO iterations spent. One worker runs its trials in
order, so the first 20 trials of a longer study are exactly those of a 20-trial study.

`confirm` retrains the study's best params (best of the first 20 trials, and of all) and
the defaults under the study's per-trial budget with more seeds, and prints the held-out
results of each: the study's seeds alone cannot tell a small gain from seed noise.

`throughput` runs studies/core.yaml as shipped twice, one after the other (each needs the
whole machine): one job at a time with `threads` = all the cores, then `hydra.sweeper.n_jobs`
= the cores through joblib with one thread each, --trials trials each (fewer than the
shipped 20 to fit a shorter quiet window: both settings run the same trial count, so the
rates and best values still compare). It prints trials per hour of each and their ratio,
and both studies' best values at the same trial count, with the machine's load.
Each workdir keeps mlflow.db and optuna.db for analysis/sensitivity.ipynb.
"""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

import mlflow
import optuna
from mlflow.tracking import MlflowClient

from ppo_exp.bench import launch, tracking_uri
from ppo_exp.bench.suite import load

SHIPPED_TRIALS = 20  # n_trials of studies/core.yaml
ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # two studies side by side on a 2-core machine
RESULTS = ("eval/reward_mean", "eval/kl", "eval/score", "eval/score_auc", "eval/reward_auc")


def load_study(workdir: Path, name: str) -> optuna.Study:
    mlflow.set_tracking_uri(tracking_uri(workdir))
    return optuna.load_study(study_name=name, storage=f"sqlite:///{workdir / 'optuna.db'}")


def iterations_spent(workdir: Path, trials: list[optuna.trial.FrozenTrial]) -> int:
    """PPO iterations the trials' seed runs actually ran (pruned ones stop early)."""
    client = MlflowClient(tracking_uri(workdir))
    total = 0
    for trial in trials:
        trial_run = trial.user_attrs.get("mlflow_run_id")
        if not trial_run:
            continue
        experiment = client.get_run(trial_run).info.experiment_id
        for run in client.search_runs([experiment], f"tags.mlflow.parentRunId = '{trial_run}'"):
            total += len(client.get_metric_history(run.info.run_id, "perf/rollout_s"))
    return total


def best(trials: list[optuna.trial.FrozenTrial]) -> optuna.trial.FrozenTrial:
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    return max(complete, key=lambda t: t.value)


def pruning(workdir: Path, trials: int, overrides: list[str]) -> None:
    pruned_dir, unpruned_dir = workdir / "pruned", workdir / "unpruned"
    walls: dict[str, float] = {}

    def shipped_then_resumed() -> None:
        walls["shipped"] = launch(pruned_dir, "-m", "study=core", *overrides, env=ONE_THREAD)
        walls["resumed"] = launch(
            pruned_dir, "-m", "study=core", f"hydra.sweeper.n_trials={trials}", *overrides,
            env=ONE_THREAD,
        )

    def unpruned() -> None:
        walls["unpruned"] = launch(
            unpruned_dir, "-m", "study=core", "hydra.sweeper.study_name=core_unpruned",
            "hydra.sweeper.pruner={name:none}", f"hydra.sweeper.n_trials={trials}",
            *overrides, env=ONE_THREAD,
        )

    workers = [threading.Thread(target=shipped_then_resumed), threading.Thread(target=unpruned)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()

    on = load_study(pruned_dir, "core").trials
    train = sum(t.user_attrs["train_seconds"] for t in on[:SHIPPED_TRIALS])
    print(f"studies/core.yaml, {SHIPPED_TRIALS} trials, one worker (one thread): "
          f"{walls['shipped'] / 60:.1f} min wall, harness overhead "
          f"{100 * (1 - train / walls['shipped']):.1f}% (1 - trainer time / wall)")
    off = load_study(unpruned_dir, "core_unpruned").trials
    for name, study_trials, wall in (
        ("pruned", on, walls["shipped"] + walls["resumed"]), ("unpruned", off, walls["unpruned"])
    ):
        train = sum(t.user_attrs["train_seconds"] for t in study_trials)
        print(f"{name} study, {trials} trials: {wall / 60:.1f} min wall, harness overhead "
              f"{100 * (1 - train / wall):.1f}%")
    spent_on = {n: iterations_spent(pruned_dir, on[:n]) for n in (SHIPPED_TRIALS, trials)}
    spent_off = {n: iterations_spent(unpruned_dir, off[:n]) for n in (SHIPPED_TRIALS, trials)}
    for n in (SHIPPED_TRIALS, trials):
        b_on, b_off = best(on[:n]), best(off[:n])
        n_pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in on[:n])
        print(f"{n} trials: best value pruned {b_on.value:.4f} (trial {b_on.number}) vs "
              f"unpruned {b_off.value:.4f} (trial {b_off.number}) = "
              f"{100 * b_on.value / b_off.value:.1f}%; PPO iterations {spent_on[n]} vs "
              f"{spent_off[n]} = {100 * spent_on[n] / spent_off[n]:.1f}%; "
              f"{n_pruned}/{n} trials pruned")


def confirm(workdir: Path, study_name: str, seeds: str, overrides: list[str]) -> None:
    trials = load_study(workdir, study_name).trials
    configs = {"defaults (conf/)": {}}
    for pool in (trials[:SHIPPED_TRIALS], trials):
        trial = best(pool)
        if trial.params not in configs.values():
            configs[f"best of {len(pool)} trials: trial {trial.number}"] = trial.params
    finals = {}
    for i, (label, params) in enumerate(configs.items()):
        rundir = workdir / "confirm" / str(i)
        launch(rundir, "-m", "train=study", f"seed={seeds}",
               *(f"{k}={v}" for k, v in params.items()), *overrides)
        mlflow.set_tracking_uri(tracking_uri(rundir))
        runs = mlflow.search_runs(experiment_names=["ppo_exp"],
                                  filter_string="tags.`ppo_exp.kind` = 'run'")
        finals[label] = runs.set_index("params.seed").sort_index()
        print(f"{label}: {params}  ({len(runs)} seeds)")
        for metric in RESULTS:
            values = finals[label][f"metrics.{metric}"]
            print(f"  {metric:18s} {values.mean():.3f} ± {values.sem():.3f} (s.e.)")
    baseline = finals.pop("defaults (conf/)")
    for label, runs in finals.items():  # same seeds, so compare seed by seed
        for metric in ("eval/reward_mean", "eval/reward_auc", "eval/score_auc"):
            gain = runs[f"metrics.{metric}"] - baseline[f"metrics.{metric}"]
            print(f"{label} - defaults, {metric}: {gain.mean():+.3f} ± {gain.sem():.3f} "
                  f"(s.e. over seeds; per seed {[round(g, 3) for g in gain]})")


def throughput(workdir: Path, trials: int, overrides: list[str]) -> None:
    from ppo_exp.resources import cores

    n = cores()
    setups = {
        f"one job x {n} threads": ["threads=" + str(n)],
        f"n_jobs={n} x 1 thread (joblib)": [
            "hydra/launcher=joblib", f"hydra.sweeper.n_jobs={n}", "threads=1"
        ],
    }
    rundirs = [workdir / f"setup{i}" for i in range(len(setups))]
    for rundir in rundirs:  # a study found there would resume: its rate would be nonsense
        if (rundir / "optuna.db").exists():
            print(f"error: invalid --workdir {workdir}: {rundir} already holds a study; "
                  "name an empty or new folder", file=sys.stderr)
            raise SystemExit(2)
    print(f"machine: {load()}")
    rates, work, studies = {}, {}, {}
    for rundir, (label, setup) in zip(rundirs, setups.items(), strict=True):
        wall = launch(rundir, "-m", "study=core", f"hydra.sweeper.n_trials={trials}", *setup,
                      *overrides)
        studies[label] = load_study(rundir, "core").trials
        rates[label] = len(studies[label]) / wall * 3600
        iterations = iterations_spent(rundir, studies[label])
        work[label] = iterations / wall * 3600
        print(f"{label}: {len(studies[label])} trials in {wall / 60:.1f} min = "
              f"{rates[label]:.1f} trials/hour ({wall / len(studies[label]):.0f} s per trial; "
              f"{iterations} PPO iterations = {work[label]:.0f} per hour; {load()} after)")
    (one, many) = rates
    print(f"throughput ratio ({many}) / ({one}): {rates[many] / rates[one]:.2f}x in trials, "
          f"{work[many] / work[one]:.2f}x in PPO iterations (the two settings train with "
          "different thread counts, so their runs, and which trials the pruner stops, differ)")
    for label, study_trials in studies.items():
        b = best(study_trials)
        print(f"{label}: best value {b.value:.4f} (trial {b.number}) of {len(study_trials)} "
              f"trials, {sum(t.state.name == 'PRUNED' for t in study_trials)} pruned")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bench", choices=["pruning", "confirm", "throughput"])
    parser.add_argument("--workdir", type=Path, required=True, help="keeps mlflow.db, optuna.db")
    parser.add_argument("--trials", type=int, default=60,
                        help="pruning: trials; throughput: trials per setting (20 = the "
                        "shipped budget, about 20 min on 2 quiet cores; 12 about 13 min)")
    parser.add_argument("--study", default="core", help="confirm: the study's name")
    parser.add_argument("--seeds", default="0,1,2,3,4", help="confirm: seeds per config")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides")
    args = parser.parse_intermixed_args()
    if args.bench == "pruning" and args.trials < SHIPPED_TRIALS:
        parser.error(f"--trials {args.trials}: the pruning benchmark needs at least "
                     f"{SHIPPED_TRIALS} (the shipped study's own count)")
    if args.bench == "pruning":
        pruning(args.workdir, args.trials, args.overrides)
    elif args.bench == "throughput":
        throughput(args.workdir, args.trials, args.overrides)
    else:
        confirm(args.workdir, args.study, args.seeds, args.overrides)


if __name__ == "__main__":
    main()
