"""The settings of a study (`hydra.sweeper` in studies/NAME.yaml).

Optuna-free, so that a plain run registers them without importing Optuna (a bad config
is refused in about a second); the sampler and pruner classes are in algorithms.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf


@dataclass
class StudySweeperConf:
    """`hydra.sweeper` settings of a study (set them in studies/NAME.yaml)."""

    _target_: str = "hydra_plugins.ppo_exp_sweeper.OptunaStudySweeper"
    study_name: str = "study"  # Optuna study name, also the MLflow parent run's name
    storage: str | None = None  # null = sqlite:///optuna.db; postgresql://...; journal:FILE
    n_trials: int = 20  # total trials of the study, over all launches and workers
    seeds: list[int] = field(default_factory=lambda: [0])  # one training run per seed
    # metric -> maximize | minimize (two = a Pareto front); every study file names its own.
    # (No default: Hydra would merge a study file's mapping into it.)
    objectives: dict[str, str] = field(default_factory=dict)
    sampler: dict[str, Any] = field(default_factory=lambda: {"name": "tpe", "seed": 0})
    pruner: dict[str, Any] = field(default_factory=lambda: {"name": "median"})
    params: dict[str, Any] = field(default_factory=dict)  # key -> {type, low, high, log...}
    enqueue: list[dict[str, Any]] = field(default_factory=list)  # trials to run first, e.g.
    # the default values as a baseline: the study then shows whether anything beats them
    max_failures: int = 5  # stop launching trials once this many have FAILed
    retry_failed: int = 0  # run a trial whose worker died (killed, or stopped by a signal)
    # again, up to N times, resuming its checkpoints (study/retry.py); 0 = never
    heartbeat_interval: int = 10  # seconds between a running trial's heartbeats
    grace_period: int = 60  # a RUNNING trial silent this long is failed (its worker died)
    # Trials in flight at once, fed through the configured launcher (hydra/launcher=joblib,
    # submitit_local, submitit_slurm): a finished trial frees its slot at once. The
    # basic launcher runs jobs in this process, one at a time: n_jobs must be 1 there.
    n_jobs: int = 1
    # With a parallel launcher, a trial's seeds run one after another in its slot, as
    # in-process: a pruned seed ends its trial before the next seed starts. true: they run
    # as parallel jobs too (trials in flight x seeds at once), for more workers than
    # trials in flight; a pruned seed then stops its siblings at their next iteration.
    parallel_seeds: bool = False


ConfigStore.instance().store(group="hydra/sweeper", name="optuna_study", node=StudySweeperConf)


def plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
