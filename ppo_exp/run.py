"""The Hydra app: `python -m ppo_exp.run [overrides]` trains once; `-m` sweeps.

python -m ppo_exp.run                        # one run on the embedded offline task
python -m ppo_exp.run train=smoke            # the same in seconds
python -m ppo_exp.run -m clip_eps=0.1,0.2    # two runs under one MLflow parent run
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ppo_exp.checks import refuse
from ppo_exp.config import ConfigError, PPOConfig
from ppo_exp.launch_checks import check_run, remove_run_dir
from ppo_exp.lifecycle import Stopped, stop_on_signals
from ppo_exp.locations import effective_tracking_uri
from ppo_exp.ppo.guards import TrainingFault
from ppo_exp.resources import pinned_threads_override
from ppo_exp.resume import RUN_ID, ResumePoint, check_run_exists, resume_point
from ppo_exp.study import register_studies

# Only what validation needs is imported at the top: MLflow, Optuna, torch, pandas and
# matplotlib load after the config is accepted, so a bad one is refused in about a second.
log = logging.getLogger("ppo_exp")
register_studies()  # studies/*.yaml become the `study` config group


def job_dir() -> Path | None:
    """This Hydra job's output folder, where its checkpoints go (None outside Hydra)."""
    return Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else None


def validated(cfg: DictConfig) -> tuple[PPOConfig, ResumePoint | None]:
    """Validate the composed config and what it names, and the checkpoint `resume` names;
    a bad value exits with one line and leaves no new output folder."""
    try:
        ppo_cfg = check_run(cfg)
        resume = resume_point(ppo_cfg, job_dir())
        if resume is not None and resume.run_id is not None:  # its MLflow run goes on
            check_run_exists(resume, effective_tracking_uri(ppo_cfg.mlflow.tracking_uri))
        return ppo_cfg, resume
    except ConfigError as error:
        if OmegaConf.select(cfg, "optuna.study"):
            raise  # a study's sampled values: this trial fails with the reason, not the study
        if HydraConfig.initialized():
            remove_run_dir(HydraConfig.get())
        raise refuse(error, PPOConfig) from None


def train_and_track(cfg: DictConfig) -> tuple[dict[str, float], float]:
    """Validate `cfg`, train with MLflow tracking; return the final metrics and the
    seconds spent in the trainer (the rest of a job's time is the harness's)."""
    ppo_cfg, resume = validated(cfg)
    # Imported here so a bad config fails fast, before torch and transformers load.
    import mlflow

    from ppo_exp import tracking
    from ppo_exp.resources import apply_gpu, apply_threads, keep_freed_memory

    threads = apply_threads(ppo_cfg.threads)  # before any tensor work
    kept = keep_freed_memory()  # each phase reuses the pages the last one freed
    gpu = apply_gpu()  # a GPU of its own when jobs run side by side on several GPUs
    trial = ppo_cfg.optuna  # set when an Optuna study launched this job
    name = f"trial {trial.trial} seed {ppo_cfg.seed}" if trial.study else None
    with (
        stop_on_signals(),  # SIGTERM unwinds the job like Ctrl-C: its run ends KILLED
        tracking.start_run(
            ppo_cfg, cfg, name=name, parent_run_id=trial.parent_run_id, resume=resume
        ) as tracker,
    ):
        mlflow.set_tag("ppo_exp.threads", threads)  # as torch reports it
        mlflow.set_tag("ppo_exp.keep_freed_memory", str(kept).lower())
        mlflow.set_tags(hardware_tags(ppo_cfg))
        if gpu is not None:
            mlflow.set_tag("ppo_exp.gpu", gpu)
        trackers: list = [tracker]
        if trial.study:
            from ppo_exp.study import job

            trackers.append(job.reporter(trial, ppo_cfg.iterations, job_dir=job_dir()))
        started = time.perf_counter()
        # torch and transformers load with the trainer: its startup, not the harness's
        from transformers.utils import logging as hf_logging

        from ppo_exp.ppo.trainer import train

        hf_logging.disable_progress_bar()  # one progress bar, ours: none per weight load

        metrics = train(
            ppo_cfg, trackers, job_dir=job_dir(), resume=resume and resume.checkpoint,
            meta={RUN_ID: mlflow.active_run().info.run_id},  # a resume continues this run
        )
        seconds = time.perf_counter() - started
        if ppo_cfg.mlflow.log_model:
            log_final_policy(job_dir())
        return metrics, seconds


def log_final_policy(folder: Path) -> None:
    """The final checkpoint's `policy/` (weights or LoRA adapters, and the tokenizer) as the
    run's artifact `policy/`: `AutoModelForCausalLM.from_pretrained` loads it as it is."""
    import mlflow

    from ppo_exp.ppo import checkpoint

    mlflow.log_artifacts(str(checkpoint.latest(folder) / "policy"), "policy")


def hardware_tags(cfg) -> dict[str, str]:
    """`model.device` and `model.dtype` as resolved on this machine ("auto" made concrete)."""
    from ppo_exp.ppo.hardware import resolve_device, resolve_dtype

    device = resolve_device(cfg.model.device)
    dtype = resolve_dtype(cfg.model.dtype, device)
    return {"ppo_exp.device": str(device), "ppo_exp.dtype": str(dtype).removeprefix("torch.")}


def objective_of(metrics: dict[str, float], name: str) -> float:
    """Pick the metric that sweepers optimise, with a clear error if it was never logged."""
    if name not in metrics:
        raise ConfigError("objective", name, "a logged metric: " + ", ".join(sorted(metrics)))
    return metrics[name]


@hydra.main(config_path="pkg://ppo_exp.conf", config_name="config", version_base=None)
def main(cfg: DictConfig) -> float | dict:
    metrics, train_seconds = train_and_track(cfg)
    if cfg.optuna.study:  # a study job returns its objective(s) to the study sweeper
        from ppo_exp.study import job

        return job.result(metrics, cfg.optuna, train_seconds)
    value = objective_of(metrics, cfg.objective)
    log.info("objective %s = %.4f", cfg.objective, value)
    return value


def cli() -> None:
    """`python -m ppo_exp.run`: Hydra's errors in composing the config become one line."""
    # Hydra prints its own multi-line report of a bad override and exits 1; asked for
    # the full error instead, it raises, and we say it in one line with exit status 2.
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    sys.argv += pinned_threads_override(os.environ, sys.argv)  # jobs see the shell's
    try:
        main()
    except (HydraException, OmegaConfBaseException, ConfigError) as error:
        raise refuse(error, PPOConfig) from None
    except TrainingFault as fault:  # recorded in the MLflow run; one line here
        print(f"error: {fault}", file=sys.stderr)
        raise SystemExit(1) from None
    except (KeyboardInterrupt, Stopped) as stop:  # the MLflow run ended KILLED
        signum = getattr(stop, "signum", signal.SIGINT)
        print(f"error: stopped by {signal.Signals(signum).name}", file=sys.stderr)
        raise SystemExit(128 + signum) from None


if __name__ == "__main__":
    cli()
