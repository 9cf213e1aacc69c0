"""What a launch checks and cleans before any job runs, beyond one config's own checks.

- `check_run`: a composed run config validated whole (`config.validate`, `preflight`,
  `model_checks`): what `python -m ppo_exp.run` refuses, before any model loads.
- `check_sweep_jobs`: every job of a plain `-m` sweep composed and checked before the
  first one launches, so `-m gamma=0.9,1.5` is refused in one line and leaves nothing.
- `remove_run_dir`: a refused run's new Hydra output folder (its `.hydra/` and empty log
  file) removed, with the dated folders above it that it leaves empty.
- `mask_secrets_in_log_records`: passwords in URLs masked in every log line of this
  process, Hydra's own "Launching jobs" / "#0 : overrides" lines included.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from omegaconf import DictConfig, open_dict

from ppo_exp.config import PPOConfig, preflight, to_config
from ppo_exp.locations import mask

BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


def check_run(cfg: DictConfig) -> PPOConfig:
    """The validated run config of `cfg` (raises `ConfigError`; loads no weights)."""
    ppo_cfg = to_config(cfg)
    preflight(ppo_cfg)
    # Model and data: positions, devices, LoRA targets (imports torch, loads no weights).
    from ppo_exp import model_checks

    model_checks.check(ppo_cfg)
    return ppo_cfg


def sweep_jobs(config: DictConfig) -> list[list[str]]:
    """The override lists of every job Hydra's basic sweeper will launch for `config`."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = config.hydra.sweeper.get("params") or {}
    arguments = [f"{key}={value}" for key, value in params.items()]
    arguments += list(config.hydra.overrides.task)
    parsed = OverridesParser.create().parse_overrides(arguments)
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def check_sweep_jobs(config: DictConfig) -> None:
    """Compose and check every job of a plain `-m` sweep (raises `ConfigError`).

    Other sweepers (the study sweeper) check their own jobs.
    """
    if config.hydra.sweeper.get("_target_") != BASIC_SWEEPER:
        return
    from hydra.core.global_hydra import GlobalHydra

    loader = GlobalHydra.instance().config_loader()
    for overrides in sweep_jobs(config):
        job = loader.load_sweep_config(config, overrides)
        with open_dict(job):
            del job["hydra"]  # as a job's task function sees its config
        check_run(job)


def remove_run_dir(hydra_cfg: DictConfig) -> None:
    """Remove the output folder Hydra made for a run that was then refused, and the empty
    folders above it up to the working directory (`outputs/DATE/TIME` of a plain run).

    Only a folder that holds nothing but what Hydra wrote for this launch (`.hydra/` and
    an empty log file) is removed: a `hydra.run.dir` that held files before (a run to
    resume, the user's own) is left as it is.
    """
    output_dir = Path(hydra_cfg.runtime.output_dir)
    log_file = output_dir / f"{hydra_cfg.job.name}.log"
    hydras = {str(hydra_cfg.output_subdir), log_file.name}
    if not output_dir.is_dir() or any(p.name not in hydras for p in output_dir.iterdir()):
        return
    if log_file.exists() and log_file.stat().st_size > 0:
        return  # an earlier run's log: this folder is not new
    shutil.rmtree(output_dir)
    cwd, folder = Path.cwd().resolve(), output_dir.resolve().parent
    while folder != cwd and cwd in folder.parents and not any(folder.iterdir()):
        folder.rmdir()
        folder = folder.parent


def mask_secrets_in_log_records() -> None:
    """Mask `scheme://user:password@` in every log record of this process from now on.

    Hydra's launchers log each job's overrides (`#0 : optuna.storage=postgresql://...`)
    before the job runs, from loggers we do not own; a record factory reaches them all.
    Installing it twice keeps one.
    """
    factory = logging.getLogRecordFactory()
    if getattr(factory, "masks_secrets", False):
        return

    def masked_record(*args: object, **kwargs: object) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a bad format string: logging reports it itself
            return record
        if (masked := mask(message)) != message:
            record.msg, record.args = masked, ()
        return record

    masked_record.masks_secrets = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(masked_record)

