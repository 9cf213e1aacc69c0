"""Hydra instantiates sweepers only from the `hydra_plugins` namespace: this registers ours."""

from ppo_exp.study.sweeper import StudySweeper


class OptunaStudySweeper(StudySweeper):
    """The Optuna study sweeper of ppo_exp (see ppo_exp/study/sweeper.py)."""
