"""MLflow tracking: one run per training job, grouped under a parent run per sweep.

Layout in MLflow (tags say what each run is):
    sweep parent   ppo_exp.kind=sweep   one per `-m` multirun
      └ job run    ppo_exp.kind=run     params = flat hyperparameters, metrics per iteration
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

import mlflow
import optuna
import pandas as pd
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from hydra.utils import get_class
from mlflow.tracking import MlflowClient
from mlflow.tracking.context.databricks_cluster_context import DatabricksClusterRunContext
from mlflow.tracking.context.databricks_command_context import DatabricksCommandRunContext
from mlflow.tracking.context.databricks_job_context import DatabricksJobRunContext
from mlflow.tracking.context.databricks_notebook_context import DatabricksNotebookRunContext
from mlflow.tracking.context.databricks_repo_context import DatabricksRepoRunContext
from mlflow.tracking.context.jupyter_notebook_context import JupyterNotebookRunContext
from mlflow.tracking.context.registry import resolve_tags
from mlflow.utils.databricks_utils import is_in_databricks_runtime
from omegaconf import DictConfig, OmegaConf

from ppo_exp.config import MlflowConfig, PPOConfig, mlflow_params
from ppo_exp.lifecycle import Heartbeat, Stopped, close_stale_runs
from ppo_exp.locations import mask, mask_secrets
from ppo_exp.resume import ResumePoint, last_logged_step, log_params_once

log = logging.getLogger("ppo_exp")

SECRET_QUERY_KEYS = ("password", "passwd", "token", "secret", "key", "sslpassword")


class MlflowTracker:
    """Sends the trainer's metrics and sample tables to the active MLflow run.

    `logged_through`: the last step the run already holds (a resumed run replays the
    iterations after its checkpoint that its killed process had logged): not sent again.
    """

    def __init__(self, logged_through: int = -1):
        self.logged_through = logged_through

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if step > self.logged_through:
            mlflow.log_metrics(metrics, step=step)

    def log_samples(self, samples: pd.DataFrame, step: int) -> None:
        if step > self.logged_through:
            mlflow.log_table(samples, artifact_file=f"samples/step_{step:04d}.json")


def configure(cfg: MlflowConfig | DictConfig) -> str:
    """Point MLflow at the configured store and experiment; return the experiment id."""
    if cfg.tracking_uri:
        mlflow.set_tracking_uri(cfg.tracking_uri)
    return mlflow.set_experiment(cfg.experiment).experiment_id


def mask_url(url: str | None) -> str | None:
    """`url` with its credentials masked, to log or print a storage or tracking URL.

    The password of `scheme://user:password@host/...` and the values of query keys such
    as `password` or `token` become `***`; anything else (paths, `journal:FILE`, hosts,
    user names) is kept, so the URL still says where the data is.

    Args:
        url: any URL or path; None passes through.

    Returns:
        The masked URL.
    """
    if not url or "://" not in url:
        return url
    parts = urlsplit(url)
    masked = url  # edited in place: urlunsplit would rewrite `sqlite:////abs` paths
    userinfo, at, host = parts.netloc.rpartition("@")
    if at and ":" in userinfo:
        user = userinfo.split(":", 1)[0]
        masked = masked.replace(parts.netloc, f"{user}:***@{host}", 1)
    if parts.query:
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        hidden = [(k, "***" if k.lower() in SECRET_QUERY_KEYS else v) for k, v in pairs]
        if hidden != pairs:
            masked = masked.replace(parts.query, urlencode(hidden, safe="*/:"), 1)
    return masked


def job_overrides() -> list[str]:
    """The command-line overrides of this Hydra job (empty outside Hydra)."""
    if not HydraConfig.initialized():
        return []
    return list(HydraConfig.get().overrides.task)


def run_name(overrides: list[str]) -> str:
    """A readable run name: the overrides, prefixed with the job number in a sweep."""
    name = ",".join(overrides) or "default"
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        name = f"#{HydraConfig.get().job.num} {name}"
    return name


def sweep_parent_run_id(experiment_id: str) -> str | None:
    """The parent run of the `-m` sweep this job belongs to (None outside a sweep).

    Found by its sweep directory, which every job's Hydra config carries: a job finds it
    wherever it runs (in-process, a joblib worker, a SLURM or Ray job).
    """
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    sweep_dir = str(HydraConfig.get().sweep.dir).replace("'", "\\'")
    found = MlflowClient().search_runs(
        [experiment_id],
        filter_string=f"tags.`ppo_exp.kind` = 'sweep' and tags.`ppo_exp.sweep_dir` = '{sweep_dir}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return found[0].info.run_id if found else None


@contextlib.contextmanager
def start_run(
    cfg: PPOConfig,
    resolved: DictConfig,
    *,
    name: str | None = None,
    parent_run_id: str | None = None,
    kind: str = "run",
    params: dict[str, object] | None = None,
    resume: ResumePoint | None = None,
) -> Iterator[MlflowTracker]:
    """Open the job's MLflow run with its params, tags and config, and close it.

    The run is a child of `parent_run_id` (a study's trial run), else of its sweep's
    parent run, if any. `kind` is the tag `ppo_exp.kind` ("run" for PPO training,
    "reward_model" for `python -m ppo_exp.reward_model`); `params` replaces the PPO
    hyperparameters as the logged params (any config with an `mlflow` section may then
    be passed as `cfg`). `resume` continues the checkpoint's run instead of a new one
    (ppo_exp/resume.py), under this job's parent (a retried trial's run). A job that
    raises leaves its run FAILED, with the error in the tag `ppo_exp.error` and the
    traceback in the artifact `error.txt`.
    """
    experiment_id = configure(cfg.mlflow)
    close_stale_runs(experiment_id)  # runs left RUNNING by a killed process
    overrides = [mask(o) for o in job_overrides()]  # no password reaches a name or a tag
    all_tags = {"ppo_exp.kind": kind, "ppo_exp.overrides": " ".join(overrides)}
    if HydraConfig.initialized():
        all_tags["ppo_exp.output_dir"] = HydraConfig.get().runtime.output_dir
    if parent := parent_run_id or sweep_parent_run_id(experiment_id):
        all_tags["mlflow.parentRunId"] = parent
    continued = resume is not None and resume.run_id is not None
    if resume is not None:
        all_tags["ppo_exp.resumed_from"] = f"{resume.checkpoint} (iteration {resume.iteration})"
    if continued:  # its run was found in this store by `resume.check_run_exists`
        opened = mlflow.start_run(run_id=resume.run_id, run_name=name, tags=all_tags)
    else:
        created = MlflowClient().create_run(
            experiment_id, run_name=name or run_name(overrides), tags=context_tags(all_tags)
        )
        opened = mlflow.start_run(run_id=created.info.run_id)
    with opened as run, Heartbeat(run.info.run_id):
        logged = mask_secrets(mlflow_params(cfg) if params is None else params)
        if not continued:
            mlflow.log_params(logged)
        else:
            log_params_once(run.info.run_id, logged)
        mlflow.log_dict(
            mask_secrets(OmegaConf.to_container(resolved, resolve=True)), "config.yaml"
        )
        log.info(
            "MLflow run %s (%s) in %s",
            run.info.run_name,
            run.info.run_id,
            mask(mlflow.get_tracking_uri()),
        )
        try:
            yield MlflowTracker(last_logged_step(run.info.run_id) if continued else -1)
        except optuna.TrialPruned as pruned:
            # MLflow has no "pruned" status: KILLED (stopped early) plus a name and a tag
            # that say why, so that it does not read as a failure.
            mlflow.set_tags(
                {
                    "ppo_exp.trial_state": "PRUNED",
                    "ppo_exp.pruned": str(pruned),
                    "mlflow.runName": f"{run.info.run_name} (pruned)",
                }
            )
            mlflow.end_run(status="KILLED")
            raise
        except (KeyboardInterrupt, Stopped) as stop:  # Ctrl-C, SIGTERM: KILLED, not FAILED
            signame = "SIGINT" if isinstance(stop, KeyboardInterrupt) else str(stop)
            mlflow.set_tag("ppo_exp.error", f"stopped by {signame}")
            mlflow.end_run(status="KILLED")
            raise
        except BaseException as error:
            mlflow.set_tag("ppo_exp.error", f"{type(error).__name__}: {error}"[:5000])
            mlflow.log_text(traceback.format_exc(), "error.txt")
            raise


def context_tags(tags: dict[str, str]) -> dict[str, str]:
    """`tags` and the context tags `mlflow.start_run` adds (user, source, git commit,
    notebook, Databricks job...).

    The checks that cannot succeed here are skipped: Jupyter's outside IPython (not
    imported: no notebook kernel is running), Databricks' outside its runtime (no
    `DATABRICKS_RUNTIME_VERSION`). Each would import IPython to look for a kernel and
    find none: 18 MB of a run's memory and 0.2 s.
    """
    ignore = []
    if "IPython" not in sys.modules:
        ignore.append(JupyterNotebookRunContext)
    if not is_in_databricks_runtime():
        ignore += [DatabricksNotebookRunContext, DatabricksJobRunContext,
                   DatabricksClusterRunContext, DatabricksCommandRunContext,
                   DatabricksRepoRunContext]
    return resolve_tags(tags, ignore=ignore)


def sweep_run_name(overrides: list[str], fallback: str) -> str:
    """A sweep parent's name from what it sweeps: `sweep clip_eps=0.1,0.2 lr=1e-4,3e-4`.

    Args:
        overrides: the multirun's command-line overrides.
        fallback: the name's tail when no override sweeps (e.g. the sweep directory).
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception:  # Hydra already accepted them; a name never stops a sweep
        parsed = []
    swept = [o.input_line for o in parsed if o.is_sweep_override()]
    name = f"sweep {' '.join(swept) or fallback}"
    return name if len(name) <= 250 else name[:249] + "…"  # MLflow caps names at 250


class SweepParentRun(Callback):
    """Hydra callback: one parent MLflow run groups the jobs of a `-m` multirun.

    Jobs find it by the sweep directory (`sweep_parent_run_id`). A job that fails tags
    the parent with its number, overrides and error, from wherever it runs. When the
    sweep ends, or stops because a job failed or it was interrupted (an exit handler),
    any job run still RUNNING is marked FAILED (its process is gone: a parallel launcher
    stopped it), the finished jobs' runs are kept as they are, and the parent ends
    FINISHED when every job succeeded, FAILED otherwise, naming the failed jobs.
    Studies keep their own parent run, shared by all their workers.
    """

    def __init__(self) -> None:
        self.run_id: str | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: object) -> None:
        if getattr(get_class(config.hydra.sweeper._target_), "tracks_its_own_parent_run", False):
            return  # a study keeps its own parent run, shared by all its workers
        experiment_id = configure(config.mlflow)
        sweep_dir = config.hydra.sweep.dir
        tags = {"ppo_exp.kind": "sweep", "ppo_exp.sweep_dir": str(sweep_dir)}
        overrides = [mask(o) for o in config.hydra.overrides.task]
        name = sweep_run_name(overrides, Path(sweep_dir).name)
        run = MlflowClient().create_run(experiment_id, run_name=name, tags=context_tags(tags))
        self.run_id = run.info.run_id
        atexit.register(self._end, "FAILED")

    def on_job_end(self, config: DictConfig, job_return: object, **kwargs: object) -> None:
        """Runs in the job's own process (a parallel launcher ships this callback there)."""
        if self.run_id is None or getattr(job_return, "status", None) != JobStatus.FAILED:
            return
        error = job_return._return_value  # noqa: SLF001 (`return_value` re-raises it)
        overrides = mask(" ".join(getattr(job_return, "overrides", None) or []))
        configure(config.mlflow)  # this process may not have tracked anything yet
        MlflowClient().set_tag(
            self.run_id,
            f"ppo_exp.failed_job.{config.hydra.job.num}",
            f"{overrides}: {type(error).__name__}: {error}"[:5000],
        )

    def on_multirun_end(self, config: DictConfig, **kwargs: object) -> None:
        if self.run_id is not None:
            from ppo_exp.study.description import NOTE_TAG, sweep_description

            note = sweep_description(self.run_id, str(config.get("objective", "")))
            MlflowClient().set_tag(self.run_id, NOTE_TAG, note)
        self._end("FINISHED")

    def _end(self, status: str) -> None:
        if self.run_id is None:
            return
        run_id, self.run_id = self.run_id, None
        client = MlflowClient()
        parent = client.get_run(run_id)
        jobs = client.search_runs(
            [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run_id}'"
        )
        # job number -> what went wrong; from the jobs' own reports, then their runs
        failed = {
            key.removeprefix("ppo_exp.failed_job."): value
            for key, value in parent.data.tags.items()
            if key.startswith("ppo_exp.failed_job.")
        }
        for job in jobs:
            number = (job.info.run_name or "").split(" ")[0].removeprefix("#")
            if job.info.status == "FAILED":
                failed.setdefault(number, job.data.tags.get("ppo_exp.error", "failed"))
        reason = "the sweep stopped before this job ended (its process was stopped)"
        if failed:
            reason += f"; failed: job {', '.join(sorted(failed))}"
        for job in jobs:
            if job.info.status == "RUNNING":
                number = (job.info.run_name or "").split(" ")[0].removeprefix("#")
                failed[number] = reason
                client.set_tag(job.info.run_id, "ppo_exp.error", reason)
                client.set_terminated(job.info.run_id, status="FAILED")
        client.set_tag(run_id, "ppo_exp.failed_jobs", str(len(failed)))
        if failed:
            summary = "; ".join(f"job {job}: {error}" for job, error in sorted(failed.items()))
            client.set_tag(run_id, "ppo_exp.error", summary[:5000])
        client.set_terminated(run_id, status="FAILED" if failed else status)

