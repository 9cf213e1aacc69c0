"""The study report on its MLflow parent run, on synthetic Optuna studies (no training).

The browser test (test_ui.py) checks the same report as a reader sees it in MLflow's UI.
"""

from __future__ import annotations

import math
import random

import mlflow
import optuna
import pytest
from mlflow.tracking import MlflowClient

from ppo_exp.study import report, summary
from ppo_exp.study.description import NOTE_TAG
from ppo_exp.study.runs import storage_url
from ppo_exp.tracking import mask_url, sweep_run_name

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_mask_url_hides_passwords_and_keeps_the_location():
    assert mask_url("postgresql://ppo:s3cret@db.example:5432/studies") == (
        "postgresql://ppo:***@db.example:5432/studies"
    )
    assert mask_url("redis://:pw@127.0.0.1:6379/0") == "redis://:***@127.0.0.1:6379/0"
    assert mask_url("mysql://u@h/db?password=x&charset=utf8") == (
        "mysql://u@h/db?password=***&charset=utf8"
    )
    for unchanged in ("sqlite:////tmp/optuna.db", "journal:/tmp/j.log", "postgresql://u@h/db"):
        assert mask_url(unchanged) == unchanged
    assert mask_url(None) is None


def test_storage_url_is_absolute_and_masked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert storage_url(None) == f"sqlite:///{tmp_path / 'optuna.db'}"
    assert storage_url("journal:j.log") == f"journal:{tmp_path / 'j.log'}"
    assert storage_url("postgresql://a:b@h/db") == "postgresql://a:***@h/db"


def test_sweep_parent_is_named_by_what_it_sweeps():
    assert sweep_run_name(["clip_eps=0.1,0.2", "train=smoke"], "12-00-00") == (
        "sweep clip_eps=0.1,0.2"
    )
    assert sweep_run_name(["lr=1e-4,3e-4", "ppo_epochs=range(1,3)"], "x") == (
        "sweep lr=1e-4,3e-4 ppo_epochs=range(1,3)"
    )
    assert sweep_run_name(["train=smoke"], "12-00-00") == "sweep 12-00-00"


def synthetic_study(n_trials: int, *, seed: int = 0) -> optuna.Study:
    """A study whose objective depends strongly on `lam`, weakly on `lr`, not on `clip_eps`."""
    rng = random.Random(seed)
    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.RandomSampler(seed=seed)
    )

    def objective(trial: optuna.Trial) -> float:
        lam = trial.suggest_float("lam", 0.5, 1.0)
        lr = trial.suggest_float("lr", 1e-5, 1e-3, log=True)
        trial.suggest_float("clip_eps", 0.05, 0.5)
        value = 2 * lam + 0.05 * math.log10(lr) + rng.gauss(0, 0.01)
        trial.set_user_attr("seeds", [0, 1])
        trial.set_user_attr("seed_values", [[value + 0.005], [value - 0.005]])
        return value

    study.optimize(objective, n_trials=n_trials)
    return study


@pytest.mark.slow
def test_report_writes_a_ranked_description_figures_and_metrics_per_trial_count(
    tmp_path, monkeypatch
):
    # set globally too: a tracking URI set in this process by an earlier test wins over
    # the environment (as it does for the report, which uses MLflow's current store)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(summary, "N_BOOT", 10)  # intervals need not be tight here
    client = MlflowClient()
    run_id = client.create_run(client.create_experiment("ppo_exp")).info.run_id
    client.set_tag(run_id, "study.n_trials", "8")
    study = synthetic_study(6)
    report.finish(study, run_id, ["eval/score_auc"])
    report.finish(study, run_id, ["eval/score_auc"])  # same trials: no new points
    more = synthetic_study(8)  # the same 6 trials and 2 more
    report.finish(more, run_id, ["eval/score_auc"])

    steps = [m.step for m in client.get_metric_history(run_id, "importance.lam")]
    assert steps == [6, 8]
    assert [m.value for m in client.get_metric_history(run_id, "trials.complete")] == [6, 8]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    note = run.data.tags[NOTE_TAG]
    # the ranking comes first (MLflow shows ~150 px before "Show more"), lam on top,
    # with its interval and the sign of its correlation
    first_lines = "\n".join(note.splitlines()[:3])
    assert "**1. `lam`**" in first_lines and "95% CI" in first_lines, first_lines
    assert "ρ +" in first_lines
    assert "8 of 8 finished: 8 complete, 0 pruned" in note
    assert "| rank (range) | param |" in note  # the full table, both evaluators
    assert "PED-ANOVA" in note
    assert "get-artifact?path=study%2Fimportance.png" in note

    artifacts = {a.path: a for a in client.list_artifacts(run_id, "study")}
    for name in ("importance", "history", "slice", "parallel_coordinate", "contour"):
        assert f"study/{name}.png" in artifacts, sorted(artifacts)
        local = client.download_artifacts(run_id, f"study/{name}.html", str(tmp_path))
        text = open(local, encoding="utf-8").read()
        assert 'src="https://cdn.plot.ly' not in text, name  # renders offline
        assert "Plotly.newPlot" in text and len(text) > 1_000_000  # plotly.js inline
    assert "study/trials.csv" in artifacts
