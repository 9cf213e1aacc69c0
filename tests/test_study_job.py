"""The job side of a study trial: reports to Optuna, pruning, and a trial's other seeds."""

from __future__ import annotations

import optuna
import pytest

from ppo_exp.config import TrialConfig
from ppo_exp.study import job

OBJECTIVE = "eval/score"


def seed_reporter(url: str, trial: optuna.Trial, seed_index: int, pruner) -> job.PruningReporter:
    node = TrialConfig(
        study="s", storage=url, trial=trial.number, trial_id=trial._trial_id,
        seed_index=seed_index, objectives=[OBJECTIVE],
    )
    return job.PruningReporter(
        job.open_trial(node, pruner), OBJECTIVE, seed_index=seed_index,
        step_offset=seed_index * 11, siblings=True,
    )


@pytest.fixture
def study(tmp_path):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    return url, optuna.create_study(study_name="s", storage=url, direction="maximize")


def test_a_pruned_seed_stops_the_seeds_running_beside_it(study):
    url, s = study
    trial = s.ask()
    prunes = optuna.pruners.ThresholdPruner(lower=1.0)  # prunes any value below 1
    seed_0 = seed_reporter(url, trial, 0, prunes)
    seed_1 = seed_reporter(url, trial, 1, optuna.pruners.NopPruner())
    seed_1.log_metrics({OBJECTIVE: 0.5}, step=1)  # its own pruner never prunes
    with pytest.raises(optuna.TrialPruned, match="pruned at iteration 1: eval/score=0.5"):
        seed_0.log_metrics({OBJECTIVE: 0.5}, step=1)
    # the next iteration of the other seed stops, even one without an eval
    with pytest.raises(optuna.TrialPruned, match="iteration 2: seed index 0 of this trial"):
        seed_1.log_metrics({"rollout/kl": 0.1}, step=2)
    assert s.trials[0].intermediate_values == {1: 0.5, 12: 0.5}  # both seeds' reports


def test_only_a_seed_of_the_same_trial_stops_a_seed(study):
    url, s = study
    pruned, retry = s.ask(), s.ask()
    # a retried trial starts with its original's user attrs, the pruned mark included
    retry.set_user_attr(job.PRUNED_SEED_ATTR, {"trial": pruned.number, "seed_index": 0})
    seed_1 = seed_reporter(url, retry, 1, optuna.pruners.NopPruner())
    seed_1.log_metrics({OBJECTIVE: 0.5}, step=1)
    seed_1.log_metrics({OBJECTIVE: 0.6}, step=2)
    assert s.trials[1].intermediate_values == {12: 0.5, 13: 0.6}
    # and a seed is never stopped by its own mark (it raised TrialPruned itself)
    retry.set_user_attr(job.PRUNED_SEED_ATTR, {"trial": retry.number, "seed_index": 1})
    seed_1.log_metrics({OBJECTIVE: 0.7}, step=3)
