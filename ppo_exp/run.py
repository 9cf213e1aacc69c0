"""The Hydra app: `python -m ppo_exp.run [overrides]` trains once; `-m` sweeps.

python -m ppo_exp.run                        # one run on the embedded offline task
python -m ppo_exp.run train=smoke            # the same in seconds
python -m ppo_exp.run -m clip_eps=0.1,0.2    # two runs under one MLflow parent run
"""

from __future__ import annotations

import logging
import sys
import time

import hydra
from omegaconf import DictConfig

from ppo_exp.config import ConfigError, PPOConfig, to_config
from ppo_exp.study import register_studies

log = logging.getLogger("ppo_exp")
register_studies()  # studies/*.yaml become the `study` config group


def validated(cfg: DictConfig) -> PPOConfig:
    """Validate the composed config; a bad value exits with one line naming it."""
    try:
        return to_config(cfg)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def train_and_track(cfg: DictConfig) -> dict[str, float]:
    """Validate `cfg`, train with MLflow tracking, and return the final metrics."""
    ppo_cfg = validated(cfg)
    # Imported here so a bad config fails fast, before torch and transformers load.
    from ppo_exp import tracking
    from ppo_exp.study import context

    trial = context.active()  # set when an Optuna study launched this job
    name = f"trial {trial.trial.number} seed {ppo_cfg.seed}" if trial else None
    with tracking.start_run(ppo_cfg, cfg, name=name) as tracker:
        started = time.perf_counter()
        try:
            # torch and transformers load with the trainer: its startup, not the harness's
            from transformers.utils import logging as hf_logging

            from ppo_exp.ppo.trainer import train

            hf_logging.disable_progress_bar()  # one progress bar, ours: none per weight load

            return train(ppo_cfg, [tracker, *([context.reporter()] if trial else [])])
        finally:
            if trial:
                trial.train_seconds += time.perf_counter() - started


def objective_of(metrics: dict[str, float], name: str) -> float:
    """Pick the metric that sweepers optimise, with a clear error if it was never logged."""
    if name not in metrics:
        raise ConfigError("objective", name, "a logged metric: " + ", ".join(sorted(metrics)))
    return metrics[name]


@hydra.main(config_path="pkg://ppo_exp.conf", config_name="config", version_base=None)
def main(cfg: DictConfig) -> float:
    metrics = train_and_track(cfg)
    value = objective_of(metrics, cfg.objective)
    log.info("objective %s = %.4f", cfg.objective, value)
    return value


if __name__ == "__main__":
    main()
