"""Hydra instantiates sweepers only from the `hydra_plugins` namespace: this registers ours.

Hydra imports every plugin module on every launch, even a plain run: this one stays
light, and imports Optuna (ppo_exp/study/sweeper.py) only when a study starts.
"""

from typing import Any

from hydra.plugins.sweeper import Sweeper

import ppo_exp.study.settings  # noqa: F401  stores hydra/sweeper=optuna_study


class OptunaStudySweeper(Sweeper):
    """The Optuna study sweeper of ppo_exp (see ppo_exp/study/sweeper.py)."""

    # The study keeps one MLflow parent run for all its workers: no per-launch sweep parent.
    tracks_its_own_parent_run = True

    def __init__(self, **settings: Any):
        from ppo_exp.checks import closed_keys
        from ppo_exp.study.settings import StudySweeperConf
        from ppo_exp.study.sweeper import StudySweeper

        closed_keys(settings, StudySweeperConf, prefix="hydra.sweeper.")
        self.impl = StudySweeper(**settings)

    def setup(self, **kwargs: Any) -> None:
        self.impl.setup(**kwargs)

    def sweep(self, arguments: list[str]) -> Any:
        return self.impl.sweep(arguments)
