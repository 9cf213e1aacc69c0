"""Resuming a run from its checkpoint: which checkpoint `resume=` names, whether it may be
resumed with this config (checked before any model loads), and its MLflow run going on.

- `resume=PATH`: a checkpoint folder, or a job dir (its newest checkpoint).
- `resume=auto`: this job dir's newest checkpoint, else a fresh start (a requeued job).

The resumed job continues the checkpoint's MLflow run (same run id): params are logged
once, a budget key changed on resume (say `iterations`) is recorded as a tag, and metrics
go on at the step after the last one the run holds, so no step is logged twice.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from ppo_exp.config import ConfigError, PPOConfig
from ppo_exp.locations import mask_secrets

RUN_ID = "mlflow_run_id"  # the key of the MLflow run id in a checkpoint's meta
ALWAYS_LOGGED = "rollout/reward_mean"  # a metric every iteration logs: its last step is the run's


@dataclass(frozen=True)
class ResumePoint:
    """A checkpoint to continue from."""

    checkpoint: Path  # the checkpoint folder
    iteration: int  # the last iteration it holds
    run_id: str | None  # its MLflow run, continued by the resumed job


def resume_point(cfg: PPOConfig, job_dir: Path | None) -> ResumePoint | None:
    """The checkpoint `cfg.resume` names, checked against `cfg`; None for a fresh start.

    Raises:
        ConfigError: no checkpoint there, or one made with a config that differs in
            anything but the budget keys (the message names the keys that differ).
    """
    if cfg.resume is None:
        return None
    from ppo_exp.ppo import checkpoint  # torch: only once the config itself is accepted

    if cfg.resume == "auto":
        found = checkpoint.latest(job_dir) if job_dir is not None else None
        if found is None:
            return None
    else:
        found = checkpoint.find(Path(cfg.resume))
        if found is None:
            raise ConfigError(
                "resume", cfg.resume,
                "a checkpoint folder (holding checkpoint.json), a job dir holding "
                "checkpoints/iteration_N, auto, or null",
            )
    info = checkpoint.read_info(found)
    current = mask_secrets(dataclasses.asdict(cfg))  # as saved: passwords masked
    if differ := checkpoint.config_differences(info["config"], current):
        details = "; ".join(f"{k}: {old!r} there, {new!r} here" for k, (old, new) in differ.items())
        raise ConfigError(
            "resume", cfg.resume,
            f"a checkpoint made with this config but for {', '.join(checkpoint.BUDGET_KEYS)}; "
            f"{found} differs in {details}",
        )
    return ResumePoint(found, info["iteration"], info["meta"].get(RUN_ID))


def check_run_exists(point: ResumePoint, tracking_uri: str) -> None:
    """Refuse a checkpoint whose MLflow run is not in the tracking store at `tracking_uri`
    (a missing sqlite file is not created to find that out)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from ppo_exp.locations import mask

    refusal = ConfigError(
        "resume", str(point.checkpoint),
        f"a checkpoint whose MLflow run {point.run_id} is in the tracking store "
        f"{mask(tracking_uri)} (set mlflow.tracking_uri to the store it was tracked in)",
    )
    local = tracking_uri.removeprefix("sqlite:///")
    if tracking_uri.startswith("sqlite:///") and not Path(local).is_file():
        raise refusal
    try:
        MlflowClient(tracking_uri).get_run(point.run_id)
    except MlflowException:
        raise refusal from None


def log_params_once(run_id: str, params: dict[str, object]) -> None:
    """Log `params` on a continued run: new keys as params, changed values as tags.

    MLflow refuses to change a param, and a resume may change a budget key: the run keeps
    the value it started with, and the tag `ppo_exp.resume.<key>` records the new one.
    """
    import mlflow
    from mlflow.tracking import MlflowClient

    logged = MlflowClient().get_run(run_id).data.params
    mlflow.log_params({k: v for k, v in params.items() if k not in logged})
    changed = {k: v for k, v in params.items() if k in logged and logged[k] != str(v)}
    mlflow.set_tags({f"ppo_exp.resume.{k}": str(v) for k, v in changed.items()})


def last_logged_step(run_id: str) -> int:
    """The last iteration the run logged metrics for (0 when only step 0, or none)."""
    from mlflow.tracking import MlflowClient

    history = MlflowClient().get_metric_history(run_id, ALWAYS_LOGGED)
    return max((m.step for m in history), default=0)
