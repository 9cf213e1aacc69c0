"""Optuna studies through the real command: `python -m ppo_exp.run -m study=NAME`.

Every launch runs in a temporary directory (optuna.db, mlflow.db and multirun/ land there)
with tiny trials, and the tests read back what a user would: the Optuna storage and the
MLflow store. Launches are the expensive part, so one study often serves several checks.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import optuna
import pytest
import sqlalchemy
from conftest import FLAKY_REWARD, TINY_RUN
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from optuna.trial import FrozenTrial

from ppo_exp.config import ConfigError
from ppo_exp.study.report import importances
from ppo_exp.study.space import search_space

REPO_STUDIES = Path(__file__).resolve().parents[1] / "studies"

PARAMS = {"gamma", "lam", "clip_eps", "ppo_epochs", "lr"}  # studies/core.yaml
# Tiny trials: a few seconds each. ppo_epochs is searched, so its range is narrowed
# rather than fixed (a fixed value would be overridden by the trial's own).
TINY = [
    *TINY_RUN,
    "hydra.sweeper.params.ppo_epochs={type:int,low:1,high:2}",
    "hydra.sweeper.seeds=[0]",  # one training run per trial unless a test asks for more
]
HEARTBEAT = ["hydra.sweeper.heartbeat_interval=1", "hydra.sweeper.grace_period=3"]
PG_URL = os.environ.get("PPO_EXP_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")

optuna.logging.set_verbosity(optuna.logging.WARNING)


# -- a working directory with its own stores, and the real command -----------------------


@dataclass
class Workdir:
    path: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def mlflow_uri(self) -> str:
        return self.env["MLFLOW_TRACKING_URI"]

    @property
    def optuna_url(self) -> str:
        return f"sqlite:///{self.path / 'optuna.db'}"

    def command(self, *args: str, study: str = "core") -> list[str]:
        return [sys.executable, "-m", "ppo_exp.run", "-m", f"study={study}", *TINY, *args]

    def run(self, *args: str, study: str = "core") -> subprocess.CompletedProcess:
        """One launch of a study, to its end."""
        return self._run(self.command(*args, study=study))

    def start(self, *args: str, name: str, study: str = "core") -> subprocess.Popen:
        """One launch in the background; its output goes to `name`.out / `name`.err."""
        with (
            open(self.path / f"{name}.out", "w") as out,
            open(self.path / f"{name}.err", "w") as err,
        ):
            return subprocess.Popen(
                self.command(*args, study=study),
                cwd=self.path,
                env=self.env,
                stdout=out,
                stderr=err,
            )

    def report(self, *args: str) -> subprocess.CompletedProcess:
        return self._run([sys.executable, "-m", "ppo_exp.study", "report", *args])

    def _run(self, argv: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run(
            argv, cwd=self.path, env=self.env, capture_output=True, text=True, timeout=600
        )

    def stderr(self, name: str, tail: int = 3000) -> str:
        return (self.path / f"{name}.err").read_text()[-tail:]

    def trials(self, study_name: str = "core", storage: str | None = None) -> list[FrozenTrial]:
        study = optuna.load_study(study_name=study_name, storage=storage or self.optuna_url)
        return study.get_trials()

    def client(self) -> MlflowClient:
        return MlflowClient(tracking_uri=self.mlflow_uri)

    def runs(self, kind: str | None = None) -> list[Run]:
        """MLflow runs of the experiment, optionally only one `ppo_exp.kind`."""
        client = self.client()
        experiment = client.get_experiment_by_name("ppo_exp")
        if experiment is None:
            return []
        found = client.search_runs([experiment.experiment_id], max_results=1000)
        return [r for r in found if kind is None or r.data.tags.get("ppo_exp.kind") == kind]

    def sweep_dir(self, study_name: str = "core") -> Path:
        return self.path / "multirun" / f"study_{study_name}"

    def job_dirs(self, study_name: str = "core") -> list[int]:
        """Numbered job directories (not e.g. submitit's .submitit/)."""
        folders = self.sweep_dir(study_name).iterdir()
        return sorted(int(p.name) for p in folders if p.is_dir() and p.name.isdigit())


def workdir(path: Path, mlflow_template: Path | None) -> Workdir:
    """A Workdir in `path`; the MLflow store starts as a copy of the initialised template."""
    path.mkdir(parents=True, exist_ok=True)
    if mlflow_template is not None:
        shutil.copy(mlflow_template, path / "mlflow.db")
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{path / 'mlflow.db'}",
        "TQDM_DISABLE": "1",  # no progress bars in the captured output
        # One thread per worker: tiny models gain nothing from more, and OpenMP threads
        # spinning against other processes on a shared 2-core machine cost 10x in time.
        "OMP_NUM_THREADS": "1",
    }
    return Workdir(path, env)


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory) -> Path:
    """An empty, migrated MLflow sqlite store: copying it saves every launch the migration."""
    path = tmp_path_factory.mktemp("mlflow_template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def wd(tmp_path, mlflow_template, base_model_path) -> Workdir:
    return workdir(tmp_path, mlflow_template)


def write_study(wd: Workdir, name: str, base: str = "core", **sweeper: object) -> None:
    """./studies/NAME.yaml: studies/BASE.yaml with some `hydra.sweeper` settings replaced.

    A dict setting (pruner, objectives) cannot be replaced from the command line (Hydra
    merges `hydra.sweeper.pruner={...}` into the study's dict), so tests derive a study.
    """
    cfg = OmegaConf.load(REPO_STUDIES / f"{base}.yaml")
    cfg.hydra.sweeper.study_name = name
    cfg.hydra.sweeper.enqueue = []
    for key, value in sweeper.items():
        cfg.hydra.sweeper[key] = value
    (wd.path / "studies").mkdir(exist_ok=True)
    OmegaConf.save(cfg, wd.path / "studies" / f"{name}.yaml")


def by_number(trials: list[FrozenTrial]) -> dict[int, FrozenTrial]:
    return {t.number: t for t in trials}


def states(trials: list[FrozenTrial]) -> list[str]:
    return [t.state.name for t in sorted(trials, key=lambda t: t.number)]


def why_not_complete(trials: list[FrozenTrial]) -> dict[int, object]:
    """Each unfinished or failed trial's state and fail reason: an assertion's message."""
    return {t.number: (t.state.name, t.user_attrs.get("fail_reason"), t.system_attrs)
            for t in trials if t.state.name != "COMPLETE"}


def trial_runs_by_number(wd: Workdir) -> dict[int, Run]:
    runs = wd.runs("trial")
    numbers = [int(r.data.tags["ppo_exp.trial_number"]) for r in runs]
    assert len(numbers) == len(set(numbers)), f"duplicate trial runs: {sorted(numbers)}"
    return dict(zip(numbers, runs, strict=True))


def children(runs: list[Run], parent: Run) -> list[Run]:
    return [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]


def files_with_mtimes(folder: Path) -> dict[str, tuple[int, bytes]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes())
        for p in folder.rglob("*")
        if p.is_file()
    }


# -- search spaces (fast) -------------------------------------------------------------------


def test_search_space_rejects_bad_entries_naming_the_key():
    space = search_space({"lr": {"type": "float", "low": 1e-5, "high": 1e-3, "log": True}})
    assert space["lr"] == optuna.distributions.FloatDistribution(1e-5, 1e-3, log=True)
    bad = {
        "model": {"model": {"type": "float", "low": 0, "high": 1}},  # not searchable
        "seed": {"seed": {"type": "int", "low": 0, "high": 3}},  # seeds are hydra.sweeper.seeds
        "lr": {"lr": {"type": "normal", "low": 0, "high": 1}},  # no such type
        "gamma": {"gamma": {"type": "float", "low": 1.0, "high": 0.9}},  # empty range
        "clip_eps": {"clip_eps": {"type": "float", "high": 0.3}},  # no low
    }
    for key, params in bad.items():
        with pytest.raises(ConfigError, match=rf"hydra\.sweeper\.params\.{key}\b"):
            search_space(params)
    with pytest.raises(ConfigError, match=r"hydra\.sweeper\.params="):
        search_space({})


# -- one core study, launched three times: end to end, resume, report ---------------------


@dataclass
class CoreStudy:
    wd: Workdir
    launches: list[subprocess.CompletedProcess]
    trials_after: list[int]  # number of trials after each launch
    dirs_after: list[list[int]]  # job dirs after each launch
    first_files: dict[str, tuple[int, bytes]]  # job dir files after the first launch
    files_after: list[dict[str, tuple[int, bytes]]]  # after the second and third


@pytest.fixture(scope="module")
def core(tmp_path_factory, mlflow_template, base_model_path) -> CoreStudy:
    """studies/core.yaml with 2 seeds: 2 trials, resumed to 3, then relaunched at 3."""
    wd = workdir(tmp_path_factory.mktemp("core"), mlflow_template)
    seeds = "hydra.sweeper.seeds=[0,1]"
    study = CoreStudy(wd, [], [], [], {}, [])
    for n_trials in (2, 3, 3):
        result = wd.run(seeds, f"hydra.sweeper.n_trials={n_trials}")
        assert result.returncode == 0, result.stderr[-3000:]
        study.launches.append(result)
        study.trials_after.append(len(wd.trials()))
        study.dirs_after.append(wd.job_dirs())
        files = files_with_mtimes(wd.sweep_dir())
        if study.first_files:
            study.files_after.append(files)
        else:
            study.first_files = files
    return study


@pytest.mark.slow
def test_study_end_to_end_in_optuna_and_mlflow(core):
    wd = core.wd
    trials = wd.trials()
    assert states(trials) == ["COMPLETE"] * 3
    baseline = OmegaConf.load(REPO_STUDIES / "core.yaml").hydra.sweeper.enqueue[0]
    assert by_number(trials)[0].params == dict(baseline)  # the defaults run first
    for trial in trials:
        assert set(trial.params) == PARAMS
        assert trial.user_attrs["seeds"] == [0, 1]

    all_runs = wd.runs()
    (parent,) = [r for r in all_runs if r.data.tags.get("ppo_exp.kind") == "study"]
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["ppo_exp.study"] == "core"
    metrics = parent.data.metrics
    for param in PARAMS:
        assert math.isfinite(metrics[f"importance.{param}"]), param
        assert math.isfinite(metrics[f"importance_fanova.{param}"]), param
    best = max(trials, key=lambda t: t.value)
    assert metrics["best_value"] == pytest.approx(best.value)
    assert parent.data.tags["best_trial"] == str(best.number)
    values = [t.value for t in trials]
    assert metrics["trial_value.min"] == pytest.approx(min(values))
    assert metrics["trial_value.max"] == pytest.approx(max(values))
    assert metrics["trial_value.std"] == pytest.approx(float(np.std(values)))
    # "objective" names a config key only, never a metric of the parent
    assert not [name for name in metrics if name.startswith("objective")]
    assert metrics["trials.complete"] == 3
    client = wd.client()
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "study")}
    for name in (
        "importance.png",
        "history.html",
        "parallel_coordinate.html",
        "slice.html",
        "contour.html",
        "trials.csv",
        "config.yaml",
    ):
        assert f"study/{name}" in artifacts, sorted(artifacts)

    trial_runs = trial_runs_by_number(wd)
    assert sorted(trial_runs) == [0, 1, 2]
    assert {r.info.run_id for r in children(all_runs, parent)} == {
        r.info.run_id for r in trial_runs.values()
    }
    for number, run in trial_runs.items():
        trial = by_number(trials)[number]
        assert trial.user_attrs["mlflow_run_id"] == run.info.run_id
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["ppo_exp.trial_state"] == "COMPLETE"
        assert set(run.data.params) == PARAMS
        for key, value in trial.params.items():
            assert run.data.params[key] == str(value)
            assert float(run.data.params[key]) == value
        assert run.data.metrics["eval/score_auc"] == pytest.approx(trial.value, rel=1e-12)

        seed_runs = children(all_runs, run)
        assert sorted(r.data.params["seed"] for r in seed_runs) == ["0", "1"]
        finals = {}
        for seed_run in seed_runs:
            assert seed_run.data.tags["ppo_exp.kind"] == "run"
            assert seed_run.info.status == "FINISHED"
            for key, value in trial.params.items():  # the trial's values reached the job
                assert float(seed_run.data.params[key]) == value, key
            finals[seed_run.data.params["seed"]] = seed_run.data.metrics["eval/score_auc"]
        assert trial.value == pytest.approx((finals["0"] + finals["1"]) / 2, rel=1e-12)
        for seed in ("0", "1"):
            assert run.data.metrics[f"eval/score_auc.seed_{seed}"] == pytest.approx(finals[seed])
    assert len(wd.runs("run")) == 6


@pytest.mark.slow
def test_relaunch_resumes_the_study_without_reusing_job_dirs(core):
    assert core.trials_after == [2, 3, 3]  # n_trials is the study's total
    assert core.dirs_after == [[0, 1, 2, 3], list(range(6)), list(range(6))]
    # The first launch's job dirs are untouched by the next ones.
    for later in core.files_after:
        assert {k: later[k] for k in core.first_files} == core.first_files
    assert "0/.hydra/config.yaml" in core.first_files
    # Job dir = trial * n_seeds + seed index, holding that trial's values.
    trials = by_number(core.wd.trials())
    for job in range(6):
        overrides = (core.wd.sweep_dir() / str(job) / ".hydra" / "overrides.yaml").read_text()
        assert f"- seed={job % 2}\n" in overrides
        assert f"- lr={trials[job // 2].params['lr']!r}\n" in overrides
    # The third launch found the study complete: no new trial or MLflow run.
    assert "3/3 trials so far" in core.launches[2].stderr + core.launches[2].stdout
    assert len(core.wd.runs("study")) == 1
    assert len(core.wd.runs("trial")) == 3


@pytest.mark.slow
def test_relaunch_samples_new_values(core):
    values = [tuple(sorted(t.params.items())) for t in core.wd.trials()]
    assert len(set(values)) == len(values), values


@pytest.mark.slow
def test_report_command_relogs_importances_and_names_unknown_studies(core):
    wd = core.wd
    (parent,) = wd.runs("study")
    client = wd.client()
    before = client.get_metric_history(parent.info.run_id, "importance.lr")
    # step = complete trials: one point per report of new trials (2, then 3), and the
    # third launch, which added no trial, added no point
    assert [m.step for m in before] == [2, 3]
    result = wd.report("core")
    assert result.returncode == 0, result.stderr[-3000:]
    assert parent.info.run_id in result.stdout
    after = client.get_metric_history(parent.info.run_id, "importance.lr")
    assert after == before  # the same trials: no second point at step 3
    assert after[-1].value == pytest.approx(parent.data.metrics["importance.lr"])
    tags = client.get_run(parent.info.run_id).data.tags
    assert tags["study.n_trials"] == "3"  # the last launch's target, kept current
    assert "**Study `core`: hyperparameter importance**" in tags["mlflow.note.content"]
    assert client.get_run(parent.info.run_id).info.status == "FINISHED"

    result = wd.report("no_such_study")
    assert result.returncode == 2
    assert "no_such_study" in result.stderr
    assert "core" in result.stderr  # the studies that do exist
    assert "Traceback" not in result.stderr


# -- pruning, workers, dead workers, failures --------------------------------------------


@pytest.mark.slow
def test_pruner_stops_trials_at_their_first_report(wd):
    write_study(wd, "pruned", pruner={"name": "threshold", "lower": 1e9})  # prunes any report
    result = wd.run("iterations=3", "eval_every=1", "hydra.sweeper.n_trials=2", study="pruned")
    assert result.returncode == 0, result.stderr[-3000:]
    trials = wd.trials("pruned")
    assert states(trials) == ["PRUNED", "PRUNED"]
    assert all(t.intermediate_values for t in trials)
    # one info line per pruned trial, not Hydra's "Error executing job" report
    output = result.stdout + result.stderr
    assert "Error executing job" not in output
    assert output.count("PRUNED pruned at iteration 1") == 2
    client = wd.client()
    all_runs = wd.runs()
    for run in trial_runs_by_number(wd).values():
        assert run.data.tags["ppo_exp.trial_state"] == "PRUNED"
        assert run.info.status == "KILLED"
        assert run.info.run_name.endswith("(pruned)")  # reads as pruned, not failed
        assert "pruned at iteration 1" in run.data.tags["ppo_exp.pruned"]
        (seed_run,) = children(all_runs, run)
        assert seed_run.info.status == "KILLED"
        steps = [m.step for m in client.get_metric_history(seed_run.info.run_id, "eval/score")]
        assert steps == [0, 1]  # the eval at iteration 1 pruned it: fewer than 3 iterations
        history = client.get_metric_history(seed_run.info.run_id, "rollout/reward_mean")
        assert len(history) < 3


def postgres_url() -> str:
    """PG_URL, if a PostgreSQL server answers there."""
    url = PG_URL
    try:
        engine = sqlalchemy.create_engine(url, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT 1"))
        engine.dispose()
    except Exception as error:  # no server, no driver: nothing to test against
        pytest.skip(f"PostgreSQL unreachable at {url}: {type(error).__name__}: {error}")
    return url


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_two_workers_share_one_study(wd, backend):
    (wd.path / "mlflow.db").unlink()  # a fresh MLflow store, initialised by the workers
    name, storage = "core", wd.optuna_url
    args = ["hydra.sweeper.n_trials=4", *HEARTBEAT]  # the finished worker polls each second
    if backend == "postgresql":
        storage = postgres_url()
        name = f"test_workers_{uuid.uuid4().hex[:10]}"
        args += [f"hydra.sweeper.storage={storage}", f"hydra.sweeper.study_name={name}"]
    workers = [wd.start(*args, name=f"worker{i}") for i in range(2)]
    try:
        for i, worker in enumerate(workers):
            code, errors = worker.wait(timeout=600), wd.stderr(f"worker{i}", tail=100_000)
            assert code == 0, errors[-3000:]
        trials = wd.trials(name, storage)
        assert sorted(t.number for t in trials) == [0, 1, 2, 3]
        assert states(trials) == ["COMPLETE"] * 4
        assert len(wd.runs("study")) == 1
        trial_runs = trial_runs_by_number(wd)
        assert sorted(trial_runs) == [0, 1, 2, 3]
        assert {t.user_attrs["mlflow_run_id"] for t in trials} == {
            r.info.run_id for r in trial_runs.values()
        }
        seed_runs = wd.runs("run")
        assert len(seed_runs) == 4
        assert {r.data.tags["mlflow.parentRunId"] for r in seed_runs} == {
            r.info.run_id for r in trial_runs.values()
        }
        assert len({r.data.tags["ppo_exp.output_dir"] for r in seed_runs}) == 4
        assert wd.job_dirs(name) == [0, 1, 2, 3]
        values = [tuple(sorted(t.params.items())) for t in trials]
        assert len(set(values)) == 4, values  # each worker samples its own values
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
        if backend == "postgresql":
            with contextlib.suppress(KeyError):  # KeyError: no worker created the study
                optuna.delete_study(study_name=name, storage=storage)


@pytest.mark.slow
def test_a_raising_trial_fails_alone_and_the_study_goes_on(wd):
    (wd.path / "flaky.py").write_text(FLAKY_REWARD)
    result = wd.run("reward=function", "reward.function=flaky:score", "hydra.sweeper.n_trials=2")
    assert result.returncode == 0, result.stderr[-3000:]
    trials = wd.trials()
    assert states(trials) == ["FAIL", "COMPLETE"]
    reason = by_number(trials)[0].user_attrs["fail_reason"]
    assert "RuntimeError: reward server warming up" in reason
    trial_runs = trial_runs_by_number(wd)
    assert trial_runs[0].info.status == "FAILED"
    assert "reward server warming up" in trial_runs[0].data.tags["ppo_exp.error"]
    assert trial_runs[1].info.status == "FINISHED"


@pytest.mark.slow
def test_nan_objectives_fail_trials_until_the_failure_budget_is_spent(wd):
    # The std of one eval sample is NaN. (Not named "nan": `study=nan` would be a float.)
    write_study(wd, "nan_std", objectives={"eval/reward_std": "maximize"})
    nan = ["eval_prompts=1"]
    # Under the budget (default 5), the study goes through all its trials.
    result = wd.run(*nan, "hydra.sweeper.n_trials=2", study="nan_std")
    # ...and, every trial having failed, exits non-zero with its parent run FAILED.
    assert result.returncode == 1, result.stderr[-3000:]
    assert "error: study nan_std: all 2 trials failed" in result.stderr
    (parent,) = wd.runs("study")
    assert parent.info.status == "FAILED"
    trials = wd.trials("nan_std")
    assert states(trials) == ["FAIL", "FAIL"]
    for trial in trials:
        assert "not finite" in trial.user_attrs["fail_reason"]
        assert "eval/reward_std" in trial.user_attrs["fail_reason"]

    # With max_failures=2 the launch stops after the second failure, out of 4 trials.
    result = wd.run(
        *nan,
        "hydra.sweeper.study_name=nan_budget",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.max_failures=2",
        study="nan_std",
    )
    assert result.returncode != 0
    assert "hydra.sweeper.max_failures=2" in result.stderr
    assert states(wd.trials("nan_budget")) == ["FAIL", "FAIL"]


@pytest.mark.slow
def test_two_objective_study_logs_a_pareto_front(wd):
    result = wd.run(
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.sampler={name:nsga2,seed:0,population_size:2}",
        study="tradeoff",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    trials = wd.trials("tradeoff")
    assert states(trials) == ["COMPLETE", "COMPLETE"]
    (parent,) = wd.runs("study")
    assert parent.info.status == "FINISHED"
    assert all(len(t.values) == 2 for t in trials)
    artifacts = {a.path for a in wd.client().list_artifacts(parent.info.run_id, "study")}
    assert "study/pareto_front.html" in artifacts, sorted(artifacts)
    for number, run in trial_runs_by_number(wd).items():
        trial = by_number(trials)[number]
        assert run.data.metrics["eval/reward_mean"] == pytest.approx(trial.values[0])
        assert run.data.metrics["eval/kl"] == pytest.approx(trial.values[1])


def test_importances_skip_an_evaluator_that_cannot_rank_equal_trials():
    # fANOVA raises on zero variance; the report must leave it out rather than fail.
    study = optuna.create_study()
    for lr in (1e-4, 2e-4, 3e-4):
        study.add_trial(
            optuna.trial.create_trial(
                params={"lr": lr},
                distributions={"lr": optuna.distributions.FloatDistribution(1e-5, 1e-3)},
                value=0.5,
            )
        )

    scores = importances(study)
    assert "fanova" not in scores


@pytest.mark.slow
def test_a_refused_sampled_combination_fails_its_trial_not_the_study(wd):
    # Each value alone passes the up-front check (batch_size=6 with num_minibatches=2;
    # num_minibatches=4 with batch_size=8); together they are refused by the job itself.
    write_study(
        wd, "combo",
        params={"batch_size": {"type": "categorical", "choices": [6]},
                "num_minibatches": {"type": "categorical", "choices": [4]},
                "ppo_epochs": {"type": "int", "low": 1, "high": 2}},  # TINY sets its range
        pruner={"name": "none"},
    )
    result = wd.run("hydra.sweeper.n_trials=2", study="combo")
    assert "Traceback" not in result.stderr
    assert result.returncode == 1  # every trial failed: the study says so
    assert "error: study combo: all 2 trials failed" in result.stderr
    trials = wd.trials("combo")
    assert states(trials) == ["FAIL", "FAIL"]  # the study went on after the first
    reason = by_number(trials)[0].user_attrs["fail_reason"]
    assert "num_minibatches=4" in reason and "batch_size=6" in reason
    assert all(run.info.status == "FAILED" for run in trial_runs_by_number(wd).values())
