"""The default run, cold and warm, through the real command (`run` mode of the bench).

    python -m ppo_exp.bench run              # cold (fresh model cache) and warm default runs
    python -m ppo_exp.bench run --warm-only  # only the warm run
    python -m ppo_exp.bench run -- iterations=20 clip_eps=0.1   # extra overrides for the run

Each run is the real command, `python -m ppo_exp.run`, in a scratch directory with its
own MLflow store; the figures come from that store.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from ppo_exp.bench import launch, tracking_uri


def timed_run(workdir: Path, cache: Path | None, overrides: list[str]) -> float:
    """Run the default job once; return its wall time in seconds."""
    env = {"PPO_EXP_CACHE": str(cache)} if cache is not None else None
    return launch(workdir, "hydra.run.dir=outputs/bench", *overrides, env=env)


def summary(workdir: Path) -> dict[str, float]:
    """Base and final held-out reward, KL and per-iteration timings of the run in workdir."""
    mlflow.set_tracking_uri(tracking_uri(workdir))
    (run,) = mlflow.search_runs(experiment_names=["ppo_exp"], output_format="list")
    client = MlflowClient()

    def history(name: str) -> list[float]:
        return [m.value for m in client.get_metric_history(run.info.run_id, name)]

    rewards = history("eval/reward_mean")
    return {
        "iterations": len(history("perf/rollout_s")),
        "eval_reward_base": rewards[0],
        "eval_reward_final": rewards[-1],
        "eval_reward_gain": rewards[-1] - rewards[0],
        "eval_kl_final": history("eval/kl")[-1],
        "train_kl_max": max(history("rollout/kl")),
        "rollout_s_mean": sum(history("perf/rollout_s")) / len(history("perf/rollout_s")),
        "update_s_mean": sum(history("perf/update_s")) / len(history("perf/update_s")),
    }


def samples(workdir: Path, n: int = 5) -> list[str]:
    """The first rows of the run's last sample-generations table."""
    mlflow.set_tracking_uri(tracking_uri(workdir))
    client = MlflowClient()
    (run,) = mlflow.search_runs(experiment_names=["ppo_exp"], output_format="list")
    tables = sorted(a.path for a in client.list_artifacts(run.info.run_id, "samples"))
    table = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/{tables[-1]}")
    rows = [dict(zip(table["columns"], row, strict=True)) for row in table["data"][:n]]
    return [f"{r['prompt']} |{r['response']}  ({r['score']:+.2f})" for r in rows]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ppo_exp.bench run",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--warm-only", action="store_true", help="skip the cold-cache run")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for the runs")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        if not args.warm_only:
            cold = scratch / "cold"
            cold.mkdir()
            seconds = timed_run(cold, scratch / "cache", args.overrides)
            print(f"cold run (builds the base model): {seconds:6.1f} s wall")
        warm = scratch / "warm"
        warm.mkdir()
        cache = None if args.warm_only else scratch / "cache"
        if args.warm_only:
            from ppo_exp.task.base_model import tiny_model_path

            tiny_model_path()  # make sure the user cache is warm before timing
        seconds = timed_run(warm, cache, args.overrides)
        print(f"warm run:                         {seconds:6.1f} s wall")
        for key, value in summary(warm).items():
            print(f"  {key:20s} {value:8.3f}")
        print("  samples (last table):")
        for line in samples(warm):
            print(f"    {line}")
