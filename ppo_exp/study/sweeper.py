"""A Hydra sweeper that runs an Optuna study: `python -m ppo_exp.run -m study=core`.

Each trial asks Optuna for values of the searched config keys and runs the complete PPO
trainer once per seed as ordinary Hydra jobs, through the configured Hydra launcher
(in-process by default; joblib, submitit/SLURM or Ray for parallel jobs). Each job is
told its trial by an `optuna` config node and reports its objective to the storage
itself, so a pruner can stop it (ppo_exp/study/job.py); the sweeper tells Optuna the
mean over seeds. `hydra.sweeper.n_jobs` trials run at once, each in its own slot: a
finished trial frees its slot at once. Every worker started with the same command (on
one machine, or on many sharing a PostgreSQL storage) works on the same study;
relaunching resumes it, with `n_trials` as the total.
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import optuna
from hydra._internal.core_plugins.basic_launcher import BasicLauncher
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from ppo_exp.checks import refuse
from ppo_exp.config import ConfigError, PPOConfig
from ppo_exp.lifecycle import Stopped, stop_on_signals, stopped_by
from ppo_exp.locations import mask
from ppo_exp.ppo.guards import TrainingFault
from ppo_exp.study import job_processes, launchers, report, retry, runs
from ppo_exp.study.algorithms import PRUNERS, SAMPLERS, build
from ppo_exp.study.checks import validate_study
from ppo_exp.study.in_flight import TrialsInFlight
from ppo_exp.study.settings import StudySweeperConf, plain
from ppo_exp.study.space import search_space
from ppo_exp.study.storage import (
    Heartbeat,
    budget_lock,
    fail_stale_trials,
    open_storage,
)
from ppo_exp.study.trial import launch, seed_jobs, tell

log = logging.getLogger("ppo_exp")


class StudySweeper(Sweeper):
    """Hydra sweeper running an Optuna study (Hydra's name for it: hydra_plugins/)."""

    # The study keeps one MLflow parent run for all its workers: no per-launch sweep parent.
    tracks_its_own_parent_run = True

    def __init__(self, **settings: Any):
        self.settings = StudySweeperConf(**{k: plain(v) for k, v in settings.items()})
        self.launcher = None
        self.stop = threading.Event()  # set when a slot fails: the others ask no more
        self.in_flight = TrialsInFlight()  # what a signal fails at once

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    # -- the study ----------------------------------------------------------------------

    def sweep(self, arguments: list[str]) -> list[optuna.trial.FrozenTrial]:
        with warnings.catch_warnings():
            # We drive heartbeats ourselves around ask/tell (Study.optimize cannot run Hydra
            # jobs), so Optuna's notes that heartbeats are experimental and meant for
            # optimize() are noise.
            warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
            warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be")
            return self._sweep(arguments)

    def _sweep(self, arguments: list[str]) -> list[optuna.trial.FrozenTrial]:
        settings = self.settings
        # The whole study is checked before any storage or tracking store is touched:
        # a refused study leaves no study row and no parent run behind.
        run_config = OmegaConf.masked_copy(self.config, [k for k in self.config if k != "hydra"])
        try:
            validate_study(settings, run_config, samplers=SAMPLERS, pruners=PRUNERS)
            space = search_space(plain(settings.params))
            self._check_n_jobs()
        except ConfigError as error:
            raise refuse(error, PPOConfig) from None
        self.validate_batch_is_legal([arguments])
        # Workers starting together on a new storage would race to create its tables,
        # the study and the parent run: one at a time.
        with budget_lock(settings.storage, settings.study_name):
            self.storage = open_storage(
                settings.storage,
                heartbeat_interval=settings.heartbeat_interval,
                grace_period=settings.grace_period,
                stale_trial_callback=retry.on_dead_worker(settings.retry_failed),
            )
            study = self._load_study(create=True)
            study.set_metric_names(list(settings.objectives))  # optuna-dashboard's axis labels
            self.parent_run_id = runs.study_parent_run(study, self.config, settings)
            if not study.get_trials(deepcopy=False):  # a new study: queue its baselines
                for params in settings.enqueue:
                    study.enqueue_trial(params)
        log.info(
            "study %s: %d/%d trials so far, storage %s, %d in flight at once",
            settings.study_name,
            len(study.trials),
            settings.n_trials,
            mask(settings.storage or "sqlite:///optuna.db"),
            settings.n_jobs,
        )
        try:
            # SIGTERM (a cluster preempting this worker) unwinds like Ctrl-C does
            with stop_on_signals():
                self._run_slots(space, arguments)
        except (KeyboardInterrupt, Stopped) as stop:
            reason = f"stopped by {stopped_by(stop)}"
            self.stop.set()
            self.in_flight.abandon(reason, retry_failed=settings.retry_failed)
            runs.end_parent_run(self.parent_run_id, killed=reason)
            job_processes.stop_jobs()  # jobs in processes of their own end theirs KILLED
            raise
        except BaseException as error:
            runs.end_parent_run(self.parent_run_id, failed=f"{type(error).__name__}: {error}")
            raise
        self._wait_for_other_workers(study)
        trials = study.get_trials(deepcopy=False)
        if trials and all(t.state == TrialState.FAIL for t in trials):
            reason = f"study {settings.study_name}: all {len(trials)} trials failed; see each " \
                "trial's fail_reason (optuna) or ppo_exp.error tag (MLflow)"
            runs.end_parent_run(self.parent_run_id, failed=reason)
            raise TrainingFault(reason)
        # workers finishing together: one report
        with budget_lock(settings.storage, settings.study_name):
            report.finish(study, self.parent_run_id, list(settings.objectives))
        return study.trials

    def _check_n_jobs(self) -> None:
        n_jobs = self.settings.n_jobs
        if not isinstance(n_jobs, int) or n_jobs < 1:
            raise ConfigError("hydra.sweeper.n_jobs", n_jobs, "an integer >= 1")
        if n_jobs > 1 and isinstance(self.launcher, BasicLauncher):
            raise ConfigError(
                "hydra.sweeper.n_jobs",
                n_jobs,
                "1 with the basic launcher, which runs jobs in this process; for parallel "
                "trials add hydra/launcher=joblib (or submitit_local, submitit_slurm, ray)",
            )

    def _load_study(self, *, create: bool = False) -> optuna.Study:
        """The study, as a Study object of its own (each slot samples with its own sampler)."""
        settings = self.settings
        open_study = optuna.create_study if create else optuna.load_study
        kwargs = {"directions": list(settings.objectives.values()), "load_if_exists": True}
        return open_study(
            study_name=settings.study_name,
            storage=self.storage,
            pruner=build(PRUNERS, settings.pruner, "pruner"),
            **(kwargs if create else {}),
        )

    def _run_slots(self, space: dict, arguments: list[str]) -> None:
        """Run `n_jobs` slots, each running trials one after another, until the budget."""
        if self.settings.n_jobs == 1:  # in this thread: Ctrl-C reaches the running job directly
            self._slot(space, arguments)
            return
        launchers.start(self.launcher)  # a cluster the slots would race to start (Ray)
        pool = ThreadPoolExecutor(self.settings.n_jobs, thread_name_prefix="trial-slot")
        slots = [pool.submit(self._slot, space, arguments) for _ in range(self.settings.n_jobs)]
        try:
            for slot in slots:  # the first error, once every slot has stopped
                slot.exception()
        finally:  # a signal: fail the running trials now, not after their jobs end
            pool.shutdown(wait=False, cancel_futures=True)
        for slot in slots:
            slot.result()

    def _slot(self, space: dict, arguments: list[str]) -> None:
        """Ask, run and tell trials until the study has `n_trials` of them."""
        settings = self.settings
        study = self._load_study()
        try:
            while not self.stop.is_set():
                started = time.perf_counter()
                trial = self._ask(study, space)
                if trial is None:
                    return
                self._run_trial(study, trial, arguments, started)
                failed = len(study.get_trials(deepcopy=False, states=(TrialState.FAIL,)))
                if failed >= settings.max_failures:
                    raise RuntimeError(
                        f"study {settings.study_name}: {failed} trials failed, the failure budget "
                        f"hydra.sweeper.max_failures={settings.max_failures} is spent; see each "
                        "trial's fail_reason (optuna) or ppo_exp.error tag (MLflow)"
                    )
        except BaseException:
            self.stop.set()
            raise

    def _ask(self, study: optuna.Study, space: dict) -> optuna.Trial | None:
        """The next trial, or None once the study has `n_trials` (counted over all workers)."""
        settings = self.settings
        with budget_lock(settings.storage, settings.study_name):
            fail_stale_trials(study, self.storage)
            trials = study.get_trials(deepcopy=False)
            waiting = any(t.state == TrialState.WAITING for t in trials)  # queued, or retries
            if retry.counted(trials) >= settings.n_trials and not waiting:
                return None
            # Seeded by the trial count, not once per launch: a relaunch or a second
            # worker must not replay the first trials' values, and one worker stays
            # reproducible.
            study.sampler = self._sampler(len(trials))
            return study.ask(space)

    def _sampler(self, n_trials_so_far: int) -> optuna.samplers.BaseSampler:
        spec = dict(plain(self.settings.sampler))
        # QMC's scrambling must stay fixed for its sequence to stay low-discrepancy.
        if spec.get("seed") is not None and spec.get("name") != "qmc":
            spec["seed"] = spec["seed"] + n_trials_so_far
        return build(SAMPLERS, spec, "sampler")

    def _wait_for_other_workers(self, study: optuna.Study) -> None:
        """The last trials may still run in other workers: wait, failing any that died."""
        while study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            fail_stale_trials(study, self.storage)
            time.sleep(min(5, self.settings.heartbeat_interval))

    # -- one trial: every seed, then tell Optuna and MLflow --------------------------------

    def _run_trial(
        self, study: optuna.Study, trial: optuna.Trial, arguments: list[str], started: float
    ) -> None:
        settings = self.settings
        frozen = study._storage.get_trial(trial._trial_id)  # noqa: SLF001 (its system attrs)
        run_id = runs.start_trial_run(
            self.parent_run_id, trial, settings.study_name, retried_from=retry.retried_from(frozen)
        )
        trial.set_user_attr(runs.TRIAL_RUN_ATTR, run_id)  # lets a stale-trial callback find it
        self.in_flight.start(study, trial, run_id)
        # a retry goes on from its checkpoint: one resume override per seed
        resumes = [retry.resume_overrides(frozen, k) for k in range(len(settings.seeds))]
        jobs = seed_jobs(arguments, trial, run_id, settings, extra=resumes)
        with Heartbeat(self.storage, trial._trial_id, settings.heartbeat_interval):
            try:
                outcomes = launch(
                    self.launcher, jobs, settings.seeds,
                    first_job=trial.number * len(settings.seeds),
                    parallel_seeds=settings.parallel_seeds,
                )
            except Exception as error:  # the launcher lost its jobs (a worker was killed)
                # The trial stays RUNNING and stops beating: once its grace period is
                # over, this or any worker fails it (and its runs) like a dead worker's.
                log.error("trial %d lost its jobs: %r", trial.number, error)
                self.in_flight.finish(trial)
                return
        if not self.in_flight.finish(trial):
            return  # a signal stopped this worker and failed the trial meanwhile
        tell(study, trial, outcomes, run_id, settings, started=started)
