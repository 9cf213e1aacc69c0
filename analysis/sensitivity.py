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
# # Sensitivity analysis of a study
#
# Which PPO hyperparameters move the study's objective, in which range, and how sure we
# can be. Every number comes from `ppo_exp.analysis`; this notebook only lays them out.
#
# Render it to a standalone HTML report (from where the study ran) with
# ```
# python -m ppo_exp.analysis render --study core --tracking-uri sqlite:///mlflow.db \
#     --out analysis/reports/core.html
# ```

# %% tags=["parameters"]
tracking_uri = None  # MLflow store; None = $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here
experiment = "ppo_exp"  # MLflow experiment
study = "latest"  # a study name (as in studies/NAME.yaml), or "latest"
objective = None  # a metric of the trials; None = the study's (first) objective
pair = ("clip_eps", "ppo_epochs")  # the two hyperparameters of the interaction heat map
bins = 4  # value ranges per hyperparameter
n_boot = 100  # bootstrap replicates of the importance
level = 0.95  # coverage of every confidence interval

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
# ## The trials
# One row per trial: state, objective (the mean over seeds), each seed's value, and the
# searched hyperparameters under their config keys (`params.<key>`).

# %%
trials = analysis.load_runs(tracking_uri, experiment=experiment, study=study, objective=objective)
objective_name, direction = trials.attrs["objective"], trials.attrs["direction"]
done = analysis.complete(trials)
observations = analysis.per_seed(done)  # one row per (trial, seed): the raw points
params = analysis.hyperparameters(done)
print(
    f"study {trials.attrs['study']}: {len(trials)} trials, {len(done)} complete; "
    f"objective {objective_name} ({direction}); searched: {', '.join(params)}"
)
display(trials)

# %% [markdown]
# ## Objective against each hyperparameter
# Grey points are single seeds of complete trials; blue points are the mean of each value
# range, with its confidence interval over seeds and trials. ρ is Spearman's rank
# correlation between the hyperparameter and the trials' mean objective.

# %%
correlations = analysis.rank_correlations(done, params)
display(correlations)

# %%
display(
    analysis.plot_param_effects(
        observations,
        params,
        bins=bins,
        level=level,
        correlations=correlations,
        objective_name=objective_name,
    )
)

# %%
binned = pd.concat(
    {key: analysis.binned_means(observations, key, bins=bins, level=level) for key in params},
    names=["param", "row"],
)
display(binned)

# %% [markdown]
# ## Importance, with its uncertainty
# fANOVA importances (normalised to sum to 1) on bootstrap resamples of the complete
# trials: bars are the mean over resamples, whiskers the percentile interval.
# `rank_low`–`rank_high` is the interval of each parameter's rank over the resamples and
# `p_first` the share of resamples ranking it first; a ranking holds down to the depth
# whose top set stays the same in at least `level` of the resamples (`top_k_share`).

# %%
importance = analysis.bootstrap_importance(
    trials, params, n_boot=n_boot, level=level, direction=direction
)
display(importance)
print("share of resamples with the same top k:", importance.attrs.get("top_k_share"))
if not importance.empty:
    display(analysis.plot_importance(importance, level=level))

# %% [markdown]
# ## Interaction of two hyperparameters
# Mean objective over a grid of value ranges (n = observations in the cell).

# %%
if analysis.has_params(observations, pair):
    means = analysis.interaction_table(observations, pair, bins=3)
    counts = analysis.interaction_table(observations, pair, bins=3, stat="count")
    display(means)
    display(analysis.plot_interaction(means, counts, objective_name=objective_name))
else:
    print(f"{' × '.join(pair)}: not both varied among complete trials; try two of {params}")

# %% [markdown]
# ## Learning curves of the best and worst configurations
# Every seed run of the best and of the worst complete trial (line style = seed).

# %%
runs = analysis.load_runs(tracking_uri, experiment=experiment, study=study, kind="run")
curve_metrics = [*analysis.CURVE_METRICS, "eval/reward_mean"]
picked = analysis.pick_configs(trials, 1, direction=direction)
curves = analysis.learning_curves(tracking_uri, analysis.label_runs(runs, picked), curve_metrics)
if curves.empty:
    print("no complete trial to show")
else:
    display(analysis.plot_learning_curves(curves, curve_metrics))

# %% [markdown]
# ## Pruned and failed trials
# Where they stopped, and why.

# %%
stopped = analysis.unfinished(trials)
if stopped.empty:
    print("No pruned or failed trial.")
else:
    display(stopped[["trial", "state", "reason", *(f"params.{k}" for k in params)]])
    stopped_curves = analysis.learning_curves(
        tracking_uri, analysis.label_runs(runs, stopped), curve_metrics
    )
    if not stopped_curves.empty:
        display(analysis.plot_learning_curves(stopped_curves, curve_metrics))

# %% [markdown]
# ## Conclusion

# %%
print(
    analysis.conclusions(
        trials,
        importance,
        objective_name=objective_name,
        direction=direction,
        bins=bins,
        level=level,
    )
)
