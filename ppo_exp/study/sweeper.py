"""A Hydra sweeper that runs an Optuna study: `python -m ppo_exp.run -m study=core`.

Each trial asks Optuna for values of the searched config keys, runs the complete PPO
trainer once per seed as an ordinary Hydra job (in-process, numbered and stored like
any multirun job), reports the objective at every eval so a pruner can stop it, and
tells Optuna the mean over seeds. Every worker started with the same command (on one
machine, or on many sharing a PostgreSQL storage) works on the same study; relaunching
resumes it, with `n_trials` as the total.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import optuna
from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra.core.utils import JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from ppo_exp.config import ConfigError
from ppo_exp.study import context, report, runs
from ppo_exp.study.space import as_override, search_space
from ppo_exp.study.storage import Heartbeat, budget_lock, fail_stale_trials, open_storage
from ppo_exp.tracking import PARENT_RUN_ENV

log = logging.getLogger("ppo_exp")
# We drive heartbeats ourselves around ask/tell (Study.optimize cannot run Hydra jobs),
# so Optuna's notes that heartbeats are experimental and meant for optimize() are noise.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")

SAMPLERS = {
    "tpe": optuna.samplers.TPESampler,
    "random": optuna.samplers.RandomSampler,
    "gp": optuna.samplers.GPSampler,
    "cmaes": optuna.samplers.CmaEsSampler,
    "qmc": optuna.samplers.QMCSampler,
    "nsga2": optuna.samplers.NSGAIISampler,
    "nsga3": optuna.samplers.NSGAIIISampler,
}
PRUNERS = {
    "median": optuna.pruners.MedianPruner,
    "percentile": optuna.pruners.PercentilePruner,
    "hyperband": optuna.pruners.HyperbandPruner,
    "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
    "threshold": optuna.pruners.ThresholdPruner,
    "wilcoxon": optuna.pruners.WilcoxonPruner,
    "patient": optuna.pruners.PatientPruner,
    "none": optuna.pruners.NopPruner,
}


DEFAULT_OBJECTIVES = {"eval/score_auc": "maximize"}


@dataclass
class StudySweeperConf:
    """`hydra.sweeper` settings of a study (set them in studies/NAME.yaml)."""

    _target_: str = "hydra_plugins.ppo_exp_sweeper.OptunaStudySweeper"
    study_name: str = "study"  # Optuna study name, also the MLflow parent run's name
    storage: str | None = None  # null = sqlite:///optuna.db; postgresql://...; journal:FILE
    n_trials: int = 20  # total trials of the study, over all launches and workers
    seeds: list[int] = field(default_factory=lambda: [0])  # one training run per seed
    # metric -> maximize | minimize (two = a Pareto front); empty = DEFAULT_OBJECTIVES.
    # (Empty by default because Hydra merges a study file's mapping into this default.)
    objectives: dict[str, str] = field(default_factory=dict)
    sampler: dict[str, Any] = field(default_factory=lambda: {"name": "tpe", "seed": 0})
    pruner: dict[str, Any] = field(default_factory=lambda: {"name": "median"})
    params: dict[str, Any] = field(default_factory=dict)  # key -> {type, low, high, log...}
    enqueue: list[dict[str, Any]] = field(default_factory=list)  # trials to run first, e.g.
    # the default values as a baseline: the study then shows whether anything beats them
    max_failures: int = 5  # stop launching trials once this many have FAILed
    heartbeat_interval: int = 10  # seconds between a running trial's heartbeats
    grace_period: int = 60  # a RUNNING trial silent this long is failed (its worker died)


ConfigStore.instance().store(group="hydra/sweeper", name="optuna_study", node=StudySweeperConf)


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def _build(table: dict[str, type], spec: dict[str, Any], key: str) -> Any:
    """A sampler or pruner from `{name: ..., **arguments}`."""
    spec = dict(_plain(spec))
    name = spec.pop("name", None)
    if name not in table:
        raise ConfigError(f"hydra.sweeper.{key}.name", name, " | ".join(table))
    cls = table[name]
    # Hydra merges a command-line `pruner={name:none}` into the study file's pruner, so
    # arguments meant for the file's pruner can remain: keep only what `cls` accepts.
    accepted = inspect.signature(cls).parameters
    if dropped := sorted(set(spec) - set(accepted)):
        log.warning("hydra.sweeper.%s: %s takes no %s; ignored", key, cls.__name__, dropped)
        spec = {k: v for k, v in spec.items() if k in accepted}
    if name == "patient":  # PatientPruner wraps another pruner
        spec["wrapped_pruner"] = _build(PRUNERS, spec.pop("wrapped_pruner"), key)
    return cls(**spec)


class StudySweeper(Sweeper):
    """Hydra sweeper running an Optuna study (Hydra's name for it: hydra_plugins/)."""

    # The study keeps one MLflow parent run for all its workers: no per-launch sweep parent.
    tracks_its_own_parent_run = True

    def __init__(self, **settings: Any):
        self.s = StudySweeperConf(**{k: _plain(v) for k, v in settings.items()})
        self.s.objectives = self.s.objectives or dict(DEFAULT_OBJECTIVES)
        self.launcher = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    # -- the study ----------------------------------------------------------------------

    def sweep(self, arguments: list[str]) -> list[optuna.trial.FrozenTrial]:
        s = self.s
        space = search_space(_plain(s.params))
        directions = list(s.objectives.values())
        for direction in directions:
            if direction not in ("maximize", "minimize"):
                raise ConfigError("hydra.sweeper.objectives", direction, "maximize | minimize")
        self.validate_batch_is_legal([arguments])
        # Workers starting together on a new storage would race to create its tables,
        # the study and the parent run: one at a time.
        with budget_lock(s.storage, s.study_name):
            self.storage = open_storage(
                s.storage,
                heartbeat_interval=s.heartbeat_interval,
                grace_period=s.grace_period,
                stale_trial_callback=runs.fail_dead_trial_runs,
            )
            study = optuna.create_study(
                study_name=s.study_name,
                storage=self.storage,
                pruner=_build(PRUNERS, s.pruner, "pruner"),
                directions=directions,
                load_if_exists=True,
            )
            study.set_metric_names(list(s.objectives))  # optuna-dashboard's axis labels
            self.parent_run_id = runs.study_parent_run(study, self.config, s)
            if not study.get_trials(deepcopy=False):  # a new study: queue its baselines
                for params in s.enqueue:
                    study.enqueue_trial(params)
        log.info(
            "study %s: %d/%d trials so far, storage %s",
            s.study_name,
            len(study.trials),
            s.n_trials,
            s.storage or "sqlite:///optuna.db",
        )
        try:
            self._run_trials(study, space, arguments)
        except BaseException as error:
            runs.end_parent_run(self.parent_run_id, failed=f"{type(error).__name__}: {error}")
            raise
        self._wait_for_other_workers(study)
        with budget_lock(s.storage, s.study_name):  # workers finishing together: one report
            report.finish(study, self.parent_run_id, list(s.objectives))
        return study.trials

    def _run_trials(self, study: optuna.Study, space: dict, arguments: list[str]) -> None:
        """Ask, run and tell trials until the study has `n_trials` of them."""
        s = self.s
        while True:
            started = time.perf_counter()
            with budget_lock(s.storage, s.study_name):
                fail_stale_trials(study, self.storage)
                trials = study.get_trials(deepcopy=False)
                waiting = any(t.state == TrialState.WAITING for t in trials)
                if len(trials) >= s.n_trials and not waiting:
                    return
                # Seeded by the trial count, not once per launch: a relaunch or a second
                # worker must not replay the first trials' values, and one worker stays
                # reproducible.
                study.sampler = self._sampler(len(trials))
                trial = study.ask(space)
            self._run_trial(study, trial, arguments, started)
            failed = len(study.get_trials(deepcopy=False, states=(TrialState.FAIL,)))
            if failed >= s.max_failures:
                raise RuntimeError(
                    f"study {s.study_name}: {failed} trials failed, the failure budget "
                    f"hydra.sweeper.max_failures={s.max_failures} is spent; see each trial's "
                    "fail_reason (optuna) or ppo_exp.error tag (MLflow)"
                )

    def _sampler(self, n_trials_so_far: int) -> optuna.samplers.BaseSampler:
        spec = dict(_plain(self.s.sampler))
        # QMC's scrambling must stay fixed for its sequence to stay low-discrepancy.
        if spec.get("seed") is not None and spec.get("name") != "qmc":
            spec["seed"] = spec["seed"] + n_trials_so_far
        return _build(SAMPLERS, spec, "sampler")

    def _wait_for_other_workers(self, study: optuna.Study) -> None:
        """The last trials may still run in other workers: wait, failing any that died."""
        while study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            fail_stale_trials(study, self.storage)
            time.sleep(min(5, self.s.heartbeat_interval))

    # -- one trial: every seed, then tell Optuna and MLflow --------------------------------

    def _run_trial(
        self, study: optuna.Study, trial: optuna.Trial, arguments: list[str], started: float
    ) -> None:
        s, metrics = self.s, list(self.s.objectives)
        run_id = runs.start_trial_run(self.parent_run_id, trial, s.study_name)
        trial.set_user_attr(runs.TRIAL_RUN_ATTR, run_id)  # lets a stale-trial callback find it
        overrides = [*arguments, *(as_override(k, v) for k, v in trial.params.items())]
        per_seed: list[list[float]] = []
        state, reason, train_seconds, offset = TrialState.COMPLETE, None, 0.0, 0
        with Heartbeat(self.storage, trial._trial_id, s.heartbeat_interval):
            for k, seed in enumerate(s.seeds):
                active = context.ActiveTrial(
                    trial, metrics, step_offset=offset, prune=len(metrics) == 1
                )
                job = self._launch(
                    active,
                    [*overrides, f"seed={seed}", f"objective={metrics[0]}"],
                    run_id,
                    job_num=trial.number * len(s.seeds) + k,
                )
                train_seconds += active.train_seconds
                state, reason = _outcome(job, active, metrics, seed)
                if state != TrialState.COMPLETE:
                    break
                per_seed.append([active.final[m] for m in metrics])
                offset += int(job.cfg.iterations) + 1

        values = [sum(col) / len(col) for col in zip(*per_seed, strict=True)] if per_seed else []
        trial.set_user_attr("seeds", list(s.seeds[: len(per_seed)]))
        trial.set_user_attr("seed_values", per_seed)
        trial.set_user_attr("train_seconds", train_seconds)
        trial.set_user_attr("wall_seconds", time.perf_counter() - started)
        if reason:
            trial.set_user_attr("fail_reason", reason)
        if state == TrialState.COMPLETE:
            study.tell(trial, values if len(values) > 1 else values[0])
        else:
            study.tell(trial, state=state)
        log.info("trial %d %s %s", trial.number, state.name, reason or values)
        runs.end_trial_run(run_id, state, metrics, values, per_seed, s.seeds, reason)

    def _launch(
        self, active: context.ActiveTrial, overrides: list[str], run_id: str, job_num: int
    ) -> Any:
        """Run one training job in-process, as a child of the trial's MLflow run."""
        context.activate(active)
        os.environ[PARENT_RUN_ENV] = run_id
        try:
            (job,) = self.launcher.launch([overrides], initial_job_idx=job_num)
        finally:
            context.activate(None)
            os.environ.pop(PARENT_RUN_ENV, None)
        return job


def _outcome(
    job: Any, active: context.ActiveTrial, metrics: list[str], seed: int
) -> tuple[TrialState, str | None]:
    """COMPLETE, PRUNED or FAIL (with the reason) for one finished seed job."""
    # What the job raised. Not `job.return_value`: it would print Hydra's "Error executing
    # job" line, which reads like a failure for a pruned trial (logged as one info line).
    error = job._return_value if job.status != JobStatus.COMPLETED else None
    if isinstance(error, optuna.TrialPruned):
        return TrialState.PRUNED, str(error)
    if error is not None:  # the trainer raised: this trial fails, the study goes on
        return TrialState.FAIL, f"seed {seed}: {type(error).__name__}: {error}"
    for name in metrics:
        value = active.final.get(name, math.nan)
        if not math.isfinite(value):
            return TrialState.FAIL, f"seed {seed}: objective {name}={value} is not finite"
    return TrialState.COMPLETE, None
