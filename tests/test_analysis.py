"""Sensitivity analysis (ppo_exp.analysis) and the notebooks in analysis/.

Fast tests use hand-made tables with known answers and a hand-made MLflow store; the
slow test runs a real tiny study and a real tiny sweep, executes both notebooks on them
headless, and renders an HTML report with the real command.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import FLAKY_REWARD, TINY_RUN
from matplotlib.figure import Figure
from mlflow.tracking import MlflowClient

from ppo_exp import analysis
from ppo_exp.analysis import __main__ as cli

NOTEBOOKS = Path(__file__).resolve().parents[1] / "analysis"


# -- hand-made tables ---------------------------------------------------------------------


def make_trials(n: int = 30, seed: int = 0, noise: float = 0.02) -> pd.DataFrame:
    """Complete trials whose objective (two seeds) depends on lr only: log10(lr) + noise."""
    rng = np.random.default_rng(seed)
    lr = 10 ** rng.uniform(-5, -3, n)
    seeds = np.log10(lr)[:, None] + rng.normal(0, noise, (n, 2))
    return pd.DataFrame(
        {
            "run_id": [f"r{i}" for i in range(n)],
            "run_name": [f"trial {i}" for i in range(n)],
            "kind": "trial",
            "state": "COMPLETE",
            "trial": pd.array(range(n), dtype="Int64"),
            "objective": seeds.mean(axis=1),
            "objective.seed_0": seeds[:, 0],
            "objective.seed_1": seeds[:, 1],
            "params.clip_eps": rng.uniform(0.05, 0.5, n),
            "params.lr": lr,
            "params.ppo_epochs": pd.array(rng.integers(1, 9, n), dtype="Int64"),
        }
    )


def tiny_table() -> pd.DataFrame:
    """Four observations per value pair, small enough to average by hand."""
    return pd.DataFrame(
        {
            "state": "COMPLETE",
            "kind": "trial",
            "objective": [1.0, 3.0, 2.0, 4.0, 10.0, 14.0, 20.0, 30.0],
            "params.x": [1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0],
            "params.k": pd.array([1, 2, 1, 2, 1, 2, 1, 2], dtype="Int64"),
        }
    )


def test_mlflow_param_strings_become_typed_columns():
    floats = analysis.cast_param(pd.Series(["0.1", "1e-05", None]))
    assert floats.dtype == "float64" and floats.iloc[1] == 1e-5 and pd.isna(floats.iloc[2])
    assert analysis.cast_param(pd.Series(["4", "8"])).tolist() == [4, 8]
    assert analysis.cast_param(pd.Series(["4", "8"])).dtype == "Int64"
    assert analysis.cast_param(pd.Series(["4", "0.5"])).dtype == "float64"
    assert analysis.cast_param(pd.Series(["True", "False"])).dtype == "boolean"
    nullable = analysis.cast_param(pd.Series(["None", "0.2"]))
    assert nullable.dtype == "float64" and pd.isna(nullable.iloc[0])
    assert analysis.cast_param(pd.Series(["k1", "k3"])).tolist() == ["k1", "k3"]


def test_names_keep_one_spelling_per_hyperparameter():
    assert analysis.param_column("lr") == analysis.param_column("params.lr") == "params.lr"
    assert analysis.param_key("params.clip_eps") == "clip_eps"
    table = make_trials(5).assign(**{"params.gamma": 1.0})  # constant: not searched
    assert analysis.hyperparameters(table) == ["clip_eps", "lr", "ppo_epochs"]


def test_per_seed_has_one_row_per_trial_and_seed():
    trials = make_trials(3)
    long = analysis.per_seed(trials)
    assert len(long) == 6
    assert long[["trial", "seed"]].astype(int).values.tolist() == [
        [0, 0], [0, 1], [1, 0], [1, 1], [2, 0], [2, 1],
    ]  # fmt: skip
    assert long["objective"].iloc[1] == trials["objective.seed_1"].iloc[0]
    assert not any(c.startswith("objective.seed_") for c in long)


def test_binned_means_and_cis_by_hand():
    table = analysis.binned_means(tiny_table(), "x", bins=2)
    assert table["bin"].tolist() == ["1–2", "3–4"]
    assert table["n"].tolist() == [4, 4]
    assert table["low"].tolist() == [1.0, 3.0] and table["high"].tolist() == [2.0, 4.0]
    # bin 1-2 holds 1, 3, 2, 4: mean 2.5, sd 1.2910, t(0.975, 3) = 3.18245
    half = 3.182446305284263 * 1.2909944487358056 / 2
    assert table["mean"].iloc[0] == pytest.approx(2.5)
    assert table["ci_low"].iloc[0] == pytest.approx(2.5 - half)
    assert table["ci_high"].iloc[0] == pytest.approx(2.5 + half)
    assert table["mean"].iloc[1] == pytest.approx(18.5)


def test_few_distinct_values_get_a_bin_each_and_one_value_has_no_ci():
    table = analysis.binned_means(tiny_table(), "k", bins=4)
    assert table["bin"].tolist() == ["1", "2"]
    assert table["mean"].tolist() == pytest.approx([33 / 4, 51 / 4])
    mean, low, high = analysis.mean_ci([1.0, 3.0])
    assert (mean, low, high) == pytest.approx((2.0, 2.0 - 12.706204736, 2.0 + 12.706204736))
    assert np.isnan(analysis.mean_ci([5.0])[1])


def test_rank_correlation_finds_the_monotone_parameter():
    table = analysis.rank_correlations(make_trials())
    assert table["param"].iloc[0] == "lr"
    assert table["rho"].iloc[0] > 0.95 and table["p_value"].iloc[0] < 1e-6
    assert table.set_index("param").loc["clip_eps", "rho"] == pytest.approx(0, abs=0.4)


def test_bootstrap_importance_ranks_lr_first_with_a_ci_above_the_others():
    importance = analysis.bootstrap_importance(make_trials(), n_boot=30)
    assert importance["param"].tolist()[0] == "lr"
    assert importance["rank"].tolist() == [1, 2, 3]
    top, others = importance.iloc[0], importance.iloc[1:]
    assert top["ci_low"] > others["ci_high"].max()
    assert (importance["ci_low"] <= importance["mean"]).all()
    assert (importance["mean"] <= importance["ci_high"]).all()


def test_bootstrap_importance_ranks_lr_first_in_every_resample():
    importance = analysis.bootstrap_importance(make_trials(), n_boot=30)
    top = importance.iloc[0]
    assert (top["rank_low"], top["rank_high"], top["p_first"]) == (1, 1, 1.0)
    assert (importance["rank_low"].iloc[1:] >= 2).all()
    assert importance["p_first"].sum() == pytest.approx(1.0)
    assert importance.attrs["top_k_share"][1] == 1.0


def test_bootstrap_importance_settles_a_top_pair_whose_order_is_open():
    # Two settings that matter about equally, one that does not: the pair is settled,
    # their order is not.
    trials = make_trials(60, noise=0.0)
    rng = np.random.default_rng(1)
    lr, clip_eps = np.log10(trials["params.lr"]) + 4, rng.uniform(-1, 1, 60)
    trials["params.clip_eps"] = clip_eps
    trials["objective"] = lr**2 + clip_eps**2 + rng.normal(0, 0.01, 60)
    importance = analysis.bootstrap_importance(trials, n_boot=40).set_index("param")
    shares = importance.attrs["top_k_share"]
    assert shares[2] >= 0.95 > shares[1]
    assert importance.loc["ppo_epochs", "rank_low"] == 3
    assert importance.loc[["lr", "clip_eps"], "rank_high"].max() == 2
    assert importance.loc[["lr", "clip_eps"], "rank_low"].min() == 1
    text = analysis.conclusions(trials, importance.reset_index())
    assert "ppo_epochs is the least important" in text  # = the top two are settled
    assert "Which of lr, clip_eps matters most is not settled" in text


def test_bootstrap_importance_needs_a_few_complete_trials():
    trials = make_trials(4)
    trials.loc[1:, "state"] = "PRUNED"
    assert analysis.bootstrap_importance(trials, n_boot=5).empty
    assert analysis.bootstrap_importance(make_trials(5).assign(objective=1.0), n_boot=5).empty


def test_interaction_table_by_hand():
    means = analysis.interaction_table(tiny_table(), ("x", "k"), bins=2)
    assert means.index.name == "x" and means.columns.name == "k"
    assert means.loc["1–2", "1"] == pytest.approx(1.5)  # objectives 1 and 2
    assert means.loc["3–4", "2"] == pytest.approx(22.0)  # objectives 14 and 30
    counts = analysis.interaction_table(tiny_table(), ("x", "k"), bins=2, stat="count")
    assert counts.to_numpy().tolist() == [[2, 2], [2, 2]]
    with pytest.raises(KeyError, match="ppo_epochs"):
        analysis.interaction_table(tiny_table(), ("x", "ppo_epochs"))


def test_best_worst_and_unfinished_trials_are_labelled():
    trials = make_trials(6)
    trials.loc[5, ["state", "objective", "reason"]] = ["PRUNED", np.nan, "pruned at iteration 2"]
    picked = analysis.pick_configs(trials, 1)
    best, worst = trials["objective"].idxmax(), trials["objective"].idxmin()
    assert picked["trial"].tolist() == [best, worst]
    assert picked["label"].iloc[0].startswith(f"best #{best}: ")
    lowest = analysis.pick_configs(trials, 1, direction="minimize")
    assert lowest["trial"].tolist() == [worst, best]
    stopped = analysis.unfinished(trials)
    assert stopped["label"].tolist() == ["pruned #5: pruned at iteration 2"]


def test_conclusions_name_lr_and_its_good_range():
    trials = make_trials()
    importance = analysis.bootstrap_importance(trials, n_boot=20)
    text = analysis.conclusions(trials, importance, objective_name="eval/score_auc")
    assert "30 trials (30 complete)" in text
    assert "Most important: lr" in text and "lr is the most important" in text
    good_range = next(line for line in text.splitlines() if line.startswith("Good range"))
    highest = analysis.format_value(trials["params.lr"].max())
    assert good_range.startswith("Good range of lr: ") and f"–{highest} " in good_range
    assert "lr ρ=+" in text and "higher is better" in text
    assert "Trials differ beyond seed noise" in text


def test_conclusions_say_when_there_is_too_little_to_rank():
    trials = make_trials(2)
    importance = analysis.bootstrap_importance(trials, n_boot=5)
    assert "Too few complete trials (2)" in analysis.conclusions(trials, importance)


def test_plots_are_figures_with_one_panel_per_item():
    trials = make_trials(12)
    observations = analysis.per_seed(trials)
    fig = analysis.plot_param_effects(observations, correlations=analysis.rank_correlations(trials))
    assert isinstance(fig, Figure)
    assert [ax.get_title().split()[0] for ax in fig.axes] == ["clip_eps", "lr", "ppo_epochs"]
    assert fig.axes[1].get_xscale() == "log"
    importance = analysis.bootstrap_importance(trials, n_boot=5)
    assert len(analysis.plot_importance(importance).axes) == 1
    means = analysis.interaction_table(observations, ("clip_eps", "ppo_epochs"))
    assert isinstance(analysis.plot_interaction(means, means), Figure)
    curves = pd.DataFrame(
        {
            "run_id": ["a", "a", "b", "b"],
            "step": [1, 2, 1, 2],
            "metric": "rollout/kl",
            "value": [0.0, 0.1, 0.0, 0.2],
            "label": ["best", "best", "worst", "worst"],
            "seed": [0, 0, 0, 0],
        }
    )
    fig = analysis.plot_learning_curves(curves)
    assert [ax.get_title() for ax in fig.axes] == ["rollout/kl"]
    assert len(fig.axes[0].lines) == 2


# -- a hand-made MLflow store ----------------------------------------------------------------


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory) -> Path:
    """An empty, migrated MLflow sqlite store: copies skip the migration (seconds each)."""
    path = tmp_path_factory.mktemp("analysis_mlflow_template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


def store_from(template: Path, folder: Path) -> str:
    """A fresh store in `folder`, copied from the template; returns its URI."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(template, folder / "mlflow.db")
    return f"sqlite:///{folder / 'mlflow.db'}"


def fake_study(uri: str) -> MlflowClient:
    """The layout the study sweeper writes: a parent, two trials (one pruned), seed runs."""
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("ppo_exp")
    parent = client.create_run(
        experiment, tags={"ppo_exp.kind": "study", "ppo_exp.study": "core"}
    ).info.run_id
    client.log_param(parent, "study.objectives", "{'eval/score_auc': 'maximize'}")
    for number, (state, lr, seed_values) in enumerate(
        [("COMPLETE", "0.0001", [0.2, 0.4]), ("PRUNED", "1e-05", [0.1])]
    ):
        trial = client.create_run(
            experiment,
            run_name=f"trial {number}",
            tags={
                "ppo_exp.kind": "trial",
                "ppo_exp.study": "core",
                "ppo_exp.trial_number": str(number),
                "ppo_exp.trial_state": state,
                "mlflow.parentRunId": parent,
            },
        ).info.run_id
        client.log_param(trial, "lr", lr)
        client.log_param(trial, "ppo_epochs", str(2 + number))
        if state == "COMPLETE":
            client.log_metric(trial, "eval/score_auc", sum(seed_values) / len(seed_values))
        else:
            client.set_tag(trial, "ppo_exp.pruned", "pruned at iteration 1")
        for seed, value in enumerate(seed_values):
            client.log_metric(trial, f"eval/score_auc.seed_{seed}", value)
            run = client.create_run(
                experiment,
                run_name=f"trial {number} seed {seed}",
                tags={"ppo_exp.kind": "run", "mlflow.parentRunId": trial},
            ).info.run_id
            for key, param in {"lr": lr, "ppo_epochs": str(2 + number), "seed": str(seed)}.items():
                client.log_param(run, key, param)
            # seed 1 logs the name used before `objective/` became `rollout/` (old stores)
            kl_name = "objective/kl" if seed == 1 else "rollout/kl"
            for step in (1, 2):
                client.log_metric(run, kl_name, value * step, step=step)
            client.log_metric(run, "eval/score_auc", value)
        client.set_terminated(trial, "FINISHED" if state == "COMPLETE" else "KILLED")
    return client


def test_load_runs_reads_a_study_as_tidy_trials_and_runs(mlflow_template, tmp_path):
    uri = store_from(mlflow_template, tmp_path)
    fake_study(uri)
    trials = analysis.load_runs(uri, study="core")
    assert trials["trial"].tolist() == [0, 1]
    assert trials["state"].tolist() == ["COMPLETE", "PRUNED"]
    assert trials["objective"].iloc[0] == pytest.approx(0.3) and pd.isna(trials["objective"][1])
    assert trials["objective.seed_1"].iloc[0] == pytest.approx(0.4)
    assert trials["n_seeds"].tolist() == [2, 1]
    assert trials["params.lr"].dtype == "float64" and trials["params.ppo_epochs"].dtype == "Int64"
    assert trials["reason"].iloc[1] == "pruned at iteration 1"
    assert trials.attrs["objective"] == "eval/score_auc" and trials.attrs["study"] == "core"
    assert analysis.load_runs(uri, study="latest")["run_id"].tolist() == trials["run_id"].tolist()

    runs = analysis.load_runs(uri, study="core", kind="run")
    assert runs[["trial", "seed"]].astype(int).values.tolist() == [[0, 0], [0, 1], [1, 0]]
    assert "params.seed" not in runs and runs["params.lr"].tolist() == [1e-4, 1e-4, 1e-5]
    picked = analysis.label_runs(runs, analysis.pick_configs(trials, 1))
    curves = analysis.learning_curves(uri, picked, ["rollout/kl"])
    assert curves["step"].tolist() == [1, 2, 1, 2]
    assert curves["value"].tolist() == pytest.approx([0.2, 0.4, 0.4, 0.8])
    assert set(curves["label"]) == {"best #0: 0.3"}

    with pytest.raises(LookupError, match="study 'other'"):
        analysis.load_runs(uri, study="other")
    with pytest.raises(LookupError, match="experiment 'nope'"):
        analysis.load_runs(uri, experiment="nope", study="core")


def test_the_package_docstring_example_runs(mlflow_template, tmp_path, monkeypatch):
    store_from(mlflow_template, tmp_path)
    fake_study(f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)  # the example reads sqlite:///mlflow.db and writes a figure
    example = analysis.__doc__.split("Example")[1].split(":\n", 1)[1]
    exec(textwrap.dedent(example), {})
    assert (tmp_path / "effects.png").stat().st_size > 0


# -- notebooks ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["sensitivity", "learning_curves", "overoptimisation"])
def test_notebooks_are_stored_without_outputs_and_match_their_py_twins(name):
    nbformat = pytest.importorskip("nbformat")
    jupytext = pytest.importorskip("jupytext")
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    assert "parameters" in code[0].metadata.get("tags", [])
    twin = jupytext.read(NOTEBOOKS / f"{name}.py")
    assert [c.source for c in twin.cells] == [c.source for c in notebook.cells]


def test_execute_notebook_injects_parameters_after_the_parameters_cell(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_code_cell("factor = 1\nlabel = 'x'\npair = ('x', 'y')",
                                  metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("print(label, factor * 21, pair[1])"),
    ]
    path = tmp_path / "tiny.ipynb"
    nbformat.write(notebook, path)
    parameters = {"factor": 2, "label": "injected", "pair": ("a", "b")}  # a tuple too
    executed = analysis.execute_notebook(path, parameters, cwd=tmp_path)
    assert executed.cells[1].metadata["tags"] == ["injected-parameters"]
    assert executed.cells[2].outputs[0]["text"] == "injected 42 b\n"


def test_render_command_needs_something_to_render(capsys):
    with pytest.raises(SystemExit):
        cli.main(["render", "--out", "report.html"])
    assert "--study, --sweep or --notebook" in capsys.readouterr().err


def test_render_command_names_the_error_of_a_failing_cell(monkeypatch, capsys):
    papermill = pytest.importorskip("papermill")

    def failing_render(*args, **kwargs):
        raise papermill.PapermillExecutionError(
            0, 1, "load_runs(...)", "LookupError", "no study 'nope'", ["traceback"]
        )

    monkeypatch.setattr(cli, "render", failing_render)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["render", "--study", "nope", "--out", "report.html"])
    assert exit_info.value.code == 1
    assert "sensitivity: a cell raised LookupError: no study 'nope'" in capsys.readouterr().err


# -- a real tiny study and sweep, both notebooks, and the render command ---------------------

TINY = TINY_RUN
STUDY = [
    "study=core",
    "hydra.sweeper.n_trials=6",
    "hydra.sweeper.seeds=[0,1]",
    "hydra.sweeper.params.ppo_epochs={type:int,low:1,high:3}",
    # prune once three trials are complete, from the first report on: some are pruned
    "hydra.sweeper.pruner={name:median,n_startup_trials:3,n_warmup_steps:0}",
    "reward=function",
    "reward.function=flaky:score",
]


def start(argv: list[str], folder: Path, **env: str) -> subprocess.Popen:
    """A command in the background in `folder`, its stderr in `folder`/stderr.log (a file,
    not a pipe, which could fill up while the test waits on something else)."""
    with open(folder / "stderr.log", "w") as err:
        return subprocess.Popen(
            argv, cwd=folder, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=err
        )


def launch(folder: Path, uri: str, *args: str) -> subprocess.Popen:
    """`python -m ppo_exp.run -m <args>` in `folder`, in the background, on one thread."""
    argv = [sys.executable, "-m", "ppo_exp.run", "-m", *TINY, *args]
    return start(argv, folder, MLFLOW_TRACKING_URI=uri, OMP_NUM_THREADS="1", TQDM_DISABLE="1")


def finish(job: subprocess.Popen, folder: Path) -> None:
    """Wait for a background command; fail with the end of its stderr if it failed."""
    job.wait(timeout=600)
    assert job.returncode == 0, (folder / "stderr.log").read_text()[-3000:]


def outputs(notebook) -> tuple[list[str], str]:
    """The MIME types of every display output, and all the text printed or shown."""
    kinds, text = [], []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            kinds.extend(output.get("data", {}))
            text.append(output.get("text", "") + output.get("data", {}).get("text/html", ""))
    return kinds, "\n".join(text)


def cell_after(notebook, heading: str):
    """The code cell that follows the markdown cell starting with `heading`."""
    index = next(i for i, c in enumerate(notebook.cells) if c.source.startswith(heading))
    return notebook.cells[index + 1]


@pytest.mark.slow
def test_notebooks_and_report_on_a_real_study_and_sweep(mlflow_template, tmp_path, base_model_path):
    pytest.importorskip("nbclient")
    study_dir, sweep_dir = tmp_path / "study", tmp_path / "sweep"
    study_uri = store_from(mlflow_template, study_dir)
    sweep_uri = store_from(mlflow_template, sweep_dir)
    (study_dir / "flaky.py").write_text(FLAKY_REWARD)
    study_job = launch(study_dir, study_uri, *STUDY)
    sweep_job = launch(sweep_dir, sweep_uri, "clip_eps=0.1,0.2")
    finish(sweep_job, sweep_dir)

    # The sweep ends first: its notebook runs while the study goes on (two cores).
    curves = analysis.execute_notebook(
        "learning_curves", {"tracking_uri": sweep_uri, "sweep": "latest"}, cwd=tmp_path
    )
    kinds, text = outputs(curves)
    assert kinds.count("image/png") == 1
    assert "2 runs; swept: clip_eps" in text
    assert "clip_eps=0.1" in text and "clip_eps=0.2" in text
    final = cell_after(curves, "## Final values").outputs[0].data["text/html"]
    assert "rollout/reward_mean" in final and "value/explained_var" in final

    # The report command renders the study while this process runs its notebook too.
    finish(study_job, study_dir)
    report = tmp_path / "reports" / "core.html"
    render = start(
        [sys.executable, "-m", "ppo_exp.analysis", "render", "--study", "core",
         "--tracking-uri", study_uri, "--out", str(report), "-p", "n_boot=10"],
        tmp_path,
    )  # fmt: skip

    # this study's complete trials happen to share one ppo_epochs: pair clip_eps with lr
    parameters = {
        "tracking_uri": study_uri,
        "study": "core",
        "n_boot": 10,
        "pair": ("clip_eps", "lr"),
    }
    sensitivity = analysis.execute_notebook("sensitivity", parameters, cwd=tmp_path)
    kinds, text = outputs(sensitivity)
    trials = analysis.load_runs(study_uri, study="core")
    n_complete = (trials["state"] == "COMPLETE").sum()
    assert n_complete >= 3 and "FAIL" in set(trials["state"])  # what the settings above make
    # effects, importance, interaction, best/worst curves, and curves of pruned trials
    # (the failed trial stopped at its first reward call: it has no curve to show)
    assert kinds.count("image/png") == 4 + ("PRUNED" in set(trials["state"]))
    assert "params.clip_eps" in text and "params.ppo_epochs" in text
    assert "reward server warming up" in text
    conclusion = cell_after(sensitivity, "## Conclusion").outputs[0].text
    assert conclusion.startswith(f"6 trials ({n_complete} complete")
    assert "Most important: " in conclusion and "Good range of " in conclusion

    finish(render, tmp_path)
    html = report.read_text()
    assert html.count("data:image/png;base64") >= 4
    assert "Most important: " in html and "Sensitivity analysis of a study" in html
