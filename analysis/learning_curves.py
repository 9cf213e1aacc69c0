# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Learning curves of a sweep
#
# The training metrics of every run of one `python -m ppo_exp.run -m ...` sweep (e.g.
# `-m clip_eps=0.1,0.2`), overlaid per iteration: one colour per configuration, one line
# style per seed. Render it to a standalone HTML report with
# ```
# python -m ppo_exp.analysis render --sweep latest --tracking-uri sqlite:///mlflow.db \
#     --out analysis/reports/sweep.html
# ```

# %% tags=["parameters"]
tracking_uri = None  # MLflow store; None = $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here
experiment = "ppo_exp"  # MLflow experiment
sweep = "latest"  # the sweep's parent run id, or "latest"
metrics = [
    "rollout/reward_mean",
    "rollout/kl",
    "rollout/entropy",
    "policy/clipfrac",
    "value/explained_var",
    "eval/reward_mean",
]

# %%
# %matplotlib inline
import warnings

import pandas as pd
from IPython.display import display

with warnings.catch_warnings():
    # optuna imports tqdm.auto, which warns in a kernel without ipywidgets: harmless here
    warnings.filterwarnings("ignore", message="IProgress not found")
    from ppo_exp import analysis

pd.set_option("display.max_columns", 40)
pd.set_option("display.width", 200)

# %% [markdown]
# ## The runs

# %%
runs = analysis.load_runs(tracking_uri, experiment=experiment, sweep_run_id=sweep)
runs["label"] = analysis.config_labels(runs)
swept = analysis.hyperparameters(runs)
print(
    f"sweep {runs.attrs['parent_run_id']}: {len(runs)} runs; swept: {', '.join(swept) or 'nothing'}"
)
columns = ["label", "seed", "state", "objective", "run_name", "run_id"]
display(runs[[c for c in columns if c in runs]])

# %% [markdown]
# ## Metrics per iteration

# %%
curves = analysis.learning_curves(tracking_uri, runs, metrics)
display(analysis.plot_learning_curves(curves, metrics))

# %% [markdown]
# ## Final values
# The last logged value of each metric, per run.

# %%
final = (
    curves.sort_values("step")
    .groupby(["label", "seed", "metric"], dropna=False)["value"]
    .last()
    .unstack("metric")
)
display(final[[m for m in metrics if m in final]])
