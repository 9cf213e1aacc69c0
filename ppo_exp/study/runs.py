"""A study's MLflow runs: one parent per study (shared by all its workers), one child per
trial, and under each trial the training runs of its seeds.

    study parent   ppo_exp.kind=study  importance.<param> metrics, figures, trials.csv
      └ trial      ppo_exp.kind=trial  params = the trial's values; objective(s), per seed
          └ run    ppo_exp.kind=run    one per seed: the full metric history
"""

from __future__ import annotations

import math
from typing import Any

import optuna
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf
from optuna.trial import FrozenTrial, TrialState

from ppo_exp.locations import mask_secrets
from ppo_exp.study.storage import absolute_url
from ppo_exp.tracking import configure, context_tags, mask_url

PARENT_ATTR = "mlflow_parent_run_id"  # where the study remembers its parent run
TRIAL_RUN_ATTR = "mlflow_run_id"  # where a trial remembers its MLflow run
MLFLOW_STATUS = {
    TrialState.COMPLETE: "FINISHED",
    TrialState.PRUNED: "KILLED",
    TrialState.FAIL: "FAILED",
}


def study_parent_run(study: optuna.Study, config: DictConfig, settings: Any) -> str:
    """The study's parent run id: created by the first worker, reopened by later ones.

    Call under `budget_lock`, so that workers starting together create only one.
    """
    experiment_id = configure(config.mlflow)
    client = MlflowClient()
    run_id = study.user_attrs.get(PARENT_ATTR)
    if run_id:
        try:
            client.update_run(run_id, status="RUNNING")
            if "ppo_exp.error" in client.get_run(run_id).data.tags:  # why it last ended
                client.delete_tag(run_id, "ppo_exp.error")
            tag_launch(run_id, settings)
            return run_id
        except MlflowException:
            pass  # the study outlived its tracking store: start a new parent there
    tags = {"ppo_exp.kind": "study", "ppo_exp.study": study.study_name}
    # MLflow's own context tags (user, source, git commit), as `mlflow.start_run` adds
    run = client.create_run(
        experiment_id, run_name=f"study {study.study_name}", tags=context_tags(tags)
    )
    run_id = run.info.run_id
    for key in ("seeds", "objectives", "sampler", "pruner"):
        client.log_param(run_id, f"study.{key}", str(getattr(settings, key)))
    client.log_param(run_id, "study.storage", storage_url(settings.storage))
    tag_launch(run_id, settings)
    config_dict = mask_secrets(OmegaConf.to_container(config, resolve=False))
    client.log_dict(run_id, config_dict, "study/config.yaml")
    study.set_user_attr(PARENT_ATTR, run_id)
    study.set_user_attr("objectives", list(settings.objectives))
    return run_id


def tag_launch(run_id: str, settings: Any) -> None:
    """Settings a relaunch may change, as tags (params cannot change): `study.n_trials`."""
    MlflowClient().set_tag(run_id, "study.n_trials", str(settings.n_trials))


def storage_url(url: str | None) -> str:
    """Where the study really is: an absolute path for files, credentials masked."""
    return mask_url(absolute_url(url))


def start_trial_run(
    parent_run_id: str, trial: optuna.Trial, study_name: str, *, retried_from: int | None = None
) -> str:
    """A child run of the study for one trial, with the trial's values as params.

    A retry of trial N (study/retry.py) is tagged `ppo_exp.retried_from=N`.
    """
    client = MlflowClient()
    parent = client.get_run(parent_run_id)
    tags = {
        "mlflow.parentRunId": parent_run_id,
        "ppo_exp.kind": "trial",
        "ppo_exp.study": study_name,
        "ppo_exp.trial_number": str(trial.number),
    }
    if retried_from is not None:
        tags["ppo_exp.retried_from"] = str(retried_from)
    run = client.create_run(
        parent.info.experiment_id,
        run_name=f"trial {trial.number}" if retried_from is None
        else f"trial {trial.number} (retry of {retried_from})",
        tags=tags,
    )
    for key, value in trial.params.items():
        client.log_param(run.info.run_id, key, value)
    return run.info.run_id


def end_trial_run(
    run_id: str,
    state: TrialState,
    metrics: list[str],
    values: list[float],
    per_seed: list[list[float]],
    seeds: list[int],
    reason: str | None,
) -> None:
    """Record the trial's outcome: objective(s), one value per seed, and its state."""
    client = MlflowClient()
    for name, value in zip(metrics, values, strict=False):
        client.log_metric(run_id, name, value)
    for seed, seed_values in zip(seeds, per_seed, strict=False):
        for name, value in zip(metrics, seed_values, strict=True):
            if math.isfinite(value):
                client.log_metric(run_id, f"{name}.seed_{seed}", value)
    client.set_tag(run_id, "ppo_exp.trial_state", state.name)
    if state == TrialState.PRUNED:  # KILLED in MLflow: the name says it was the pruner
        client.update_run(run_id, name=f"{client.get_run(run_id).info.run_name} (pruned)")
    if reason:
        client.set_tag(
            run_id, "ppo_exp.error" if state == TrialState.FAIL else "ppo_exp.pruned", reason[:5000]
        )
    client.set_terminated(run_id, status=MLFLOW_STATUS[state])


def fail_dead_trial_runs(study: optuna.Study, trial: FrozenTrial) -> None:
    """Optuna failed `trial` because its worker died: fail its MLflow runs too."""
    if run_id := trial.user_attrs.get(TRIAL_RUN_ATTR):
        reason = "worker stopped sending heartbeats (killed?); trial failed by another worker"
        close_trial_runs(run_id, "FAILED", reason)


def close_trial_runs(run_id: str, status: str, reason: str) -> None:
    """End a trial's run and its job runs still RUNNING with `status`, tagged `reason`."""
    client = MlflowClient()
    children = client.search_runs(
        [client.get_run(run_id).info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{run_id}' and attributes.status = 'RUNNING'",
    )
    for run in [client.get_run(run_id), *children]:
        client.set_tag(run.info.run_id, "ppo_exp.error", reason)
        client.set_tag(run.info.run_id, "ppo_exp.trial_state", "FAIL")
        client.set_terminated(run.info.run_id, status=status)


def end_parent_run(run_id: str, *, failed: str | None = None, killed: str | None = None) -> None:
    """End the study's parent run: FINISHED, FAILED with the reason, or KILLED (a signal
    stopped this worker; the next launch or another worker reopens it)."""
    client = MlflowClient()
    if failed or killed:
        client.set_tag(run_id, "ppo_exp.error", (failed or killed)[:5000])
    client.set_terminated(run_id, status="FAILED" if failed else "KILLED" if killed else "FINISHED")
