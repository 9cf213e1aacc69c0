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
# # Reward over-optimisation
#
# Runs trained on a learned reward model (the proxy) with a gold scorer measured beside
# it (`reward=learned reward.path=RM +reward@reward.gold=vader`): the held-out proxy and
# gold rewards against d = √KL to the reference, per configuration, with Gao et al.'s
# (2022) fit of the gold gain for RL, d(α − β log d), which peaks at d* = exp(α/β − 1)
# when β > 0 (their best-of-n form, d(α − βd), is `form="bon"`). For a sweep
# (`-m kl_coef=0.01,0.1 ...`) or a study (`-m study=overoptimisation`). Render it with
# ```
# python -m ppo_exp.analysis render --notebook overoptimisation \
#     --tracking-uri sqlite:///mlflow.db --out overoptimisation.html -p study='"overoptimisation"'
# ```

# %% tags=["parameters"]
tracking_uri = None  # MLflow store; None = $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here
experiment = "ppo_exp"  # MLflow experiment
study = None  # a study name (its training runs are read), or None for a sweep
sweep = "latest"  # the sweep's parent run id, or "latest" (when study is None)
max_panels = 12  # configurations drawn

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
if study is not None:
    runs = analysis.load_runs(tracking_uri, experiment=experiment, study=study, kind="run")
else:
    runs = analysis.load_runs(tracking_uri, experiment=experiment, sweep_run_id=sweep)
runs = runs[runs["state"] != "RUNNING"]
runs["label"] = analysis.config_labels(runs)
curves = analysis.gold_proxy_curves(tracking_uri, runs)
print(f"{len(runs)} runs, {curves['run_id'].nunique()} with a gold curve")
display(curves.groupby("label")[["d", "proxy_gain", "gold_gain"]].agg(["min", "max"]))

# %% [markdown]
# ## Proxy and gold against √KL

# %%
fits = analysis.gao_fits(curves, runs)
display(analysis.plot_overoptimisation(curves, fits, max_panels=max_panels))

# %% [markdown]
# ## Fits and gold peaks, per configuration
# `kl_peak_fit` is the KL at the fitted peak (NaN: the fit does not turn down; it may lie
# beyond the KL the run reached), `fit_rmse` the fit's root-mean-square residual;
# `gold_peak` and `kl_at_gold_peak` are the observed best held-out gold and its KL;
# `drop` is how far the gold fell from that peak by the end of the run.

# %%
columns = ["label", "alpha", "beta", "fit_rmse", "kl_peak_fit", "gold_peak"]
columns += ["kl_at_gold_peak", "gold_final", "proxy_final", "kl_final", "drop", "n_runs"]
display(analysis.format_fits(fits.sort_values("gold_peak", ascending=False)[columns]))

# %% [markdown]
# Which of Gao et al.'s forms draws these curves better: the RL one (above) or their
# best-of-n one, d(α − βd), by the median root-mean-square residual over configurations.

# %%
bon = analysis.gao_fits(curves, form="bon")
print(
    f"median fit_rmse: RL form {fits['fit_rmse'].median():.4f}, "
    f"best-of-n form {bon['fit_rmse'].median():.4f} "
    f"(the RL form fits better in {(fits['fit_rmse'] < bon['fit_rmse']).sum()} "
    f"of {len(fits)} configurations)"
)

# %% [markdown]
# ## Which hyperparameters move the gold peak
# Spearman's ρ of each varied hyperparameter against the peak gold reward, the KL at
# which it was reached, and the drop after it (one point per configuration).

# %%
effects = analysis.peak_effects(fits)
display(effects)

# %% [markdown]
# ## Conclusion

# %%
print(analysis.overoptimisation_summary(fits, effects))
