"""Hydra callbacks, named in conf/config.yaml. Hydra builds them on every launch, even
for a config that is about to be refused, so they import MLflow only when they act."""

from __future__ import annotations

from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class SweepParentRun(Callback):
    """One MLflow parent run per `-m` multirun (see `ppo_exp.tracking.SweepParentRun`)."""

    def __init__(self) -> None:
        self.impl: Callback | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from ppo_exp import launch_checks
        from ppo_exp.checks import refuse
        from ppo_exp.config import ConfigError, PPOConfig

        launch_checks.mask_secrets_in_log_records()  # Hydra logs each job's overrides
        try:  # every job of a plain sweep, before the first starts (Hydra would only warn)
            launch_checks.check_sweep_jobs(config)
        except ConfigError as error:
            raise refuse(error, PPOConfig) from None
        from ppo_exp.tracking import SweepParentRun as Impl

        self.impl = Impl()
        self.impl.on_multirun_start(config, **kwargs)

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        if self.impl is not None:
            self.impl.on_job_end(config, job_return, **kwargs)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.impl is not None:
            self.impl.on_multirun_end(config, **kwargs)


class MaskSecretsInJobFiles(Callback):
    """URL passwords masked in the files Hydra writes for a job and a sweep, and in this
    process's log lines (a job in a process of its own too): `ppo_exp.job_files`."""

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        from ppo_exp import job_files, launch_checks

        launch_checks.mask_secrets_in_log_records()
        job_files.mask_job_files(config)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from ppo_exp import job_files

        if (record := job_files.sweep_record(config)) is not None:
            job_files.mask_file(record)
