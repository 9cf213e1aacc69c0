"""Sensitivity analysis of studies and sweeps, read back from MLflow as pandas tables.

The notebooks in `analysis/` are thin: every number they show comes from here.

- `load_runs`: one tidy row per trial of a study (or per run of a sweep), with the
  hyperparameters as typed columns named like the config keys (`params.clip_eps`),
  the objective, the trial state, the seeds and the run ids; `cast_param` types one
  such column;
- selecting rows and names: `complete`, `per_seed` (one row per trial and seed),
  `hyperparameters` (the varied keys), `param_key` / `param_column`, `pick_configs`
  (best and worst), `unfinished` (pruned and failed), `label_runs`, `config_labels`;
- per hyperparameter: `binned_means` (mean objective per value range, with a
  confidence interval over seeds and trials, see `mean_ci`) and `rank_correlations`
  (Spearman); `format_value` writes a value for text;
- `bootstrap_importance`: fANOVA importance resampled over trials, mean and CI;
- `interaction_table`: the objective over a grid of two binned parameters (`has_params`
  says whether both were varied);
- `learning_curves`: metric histories of chosen runs, as a long table (`CURVE_METRICS`
  by default);
- `conclusions`: a few sentences written from the numbers above;
- over-optimisation (runs trained on a learned proxy with `reward.gold`):
  `gold_proxy_curves` (proxy and gold against sqrt(KL)), `fit_gao`, `gao_curve`,
  `gao_peak` and `gao_fits` (Gao et al.'s RL form d(alpha - beta log d), or their
  best-of-n form d(alpha - beta d), per configuration, and where the gold peaked),
  `peak_effects` (which hyperparameters move the peak), `overoptimisation_summary`,
  `plot_overoptimisation`, `format_fits`;
- `plot_*`: matplotlib figures of these tables (`Figure` objects: no global state);
- `execute_notebook` and `render` run a notebook headless with parameters injected by
  papermill; `render` saves it as a standalone HTML report, also as a command:

      python -m ppo_exp.analysis render --study core --tracking-uri sqlite:///mlflow.db \\
          --out analysis/reports/core.html

Example, where `python -m ppo_exp.run -m study=core` ran (its MLflow store is mlflow.db):

    from ppo_exp import analysis

    trials = analysis.load_runs("sqlite:///mlflow.db", study="core")
    objective_name = trials.attrs["objective"]
    done = analysis.complete(trials)
    observations = analysis.per_seed(done)  # one row per (trial, seed)
    print(analysis.rank_correlations(done))
    for key in analysis.hyperparameters(done):
        print(analysis.binned_means(observations, key))
    importance = analysis.bootstrap_importance(trials, n_boot=20)
    print(analysis.conclusions(trials, importance, objective_name=objective_name))
    analysis.plot_param_effects(observations).savefig("effects.png")
"""

from ppo_exp.analysis._conclusions import conclusions
from ppo_exp.analysis._curves import CURVE_METRICS, learning_curves
from ppo_exp.analysis._importance import bootstrap_importance
from ppo_exp.analysis._load import cast_param, load_runs
from ppo_exp.analysis._overopt import (
    fit_gao,
    format_fits,
    gao_curve,
    gao_fits,
    gao_peak,
    gold_proxy_curves,
    overoptimisation_summary,
    peak_effects,
    plot_overoptimisation,
)
from ppo_exp.analysis._plots import (
    plot_importance,
    plot_interaction,
    plot_learning_curves,
    plot_param_effects,
)
from ppo_exp.analysis._render import execute_notebook, render
from ppo_exp.analysis._select import (
    complete,
    config_labels,
    format_value,
    hyperparameters,
    label_runs,
    param_column,
    param_key,
    per_seed,
    pick_configs,
    unfinished,
)
from ppo_exp.analysis._stats import (
    binned_means,
    has_params,
    interaction_table,
    mean_ci,
    rank_correlations,
)

__all__ = [
    "CURVE_METRICS",
    "binned_means",
    "bootstrap_importance",
    "cast_param",
    "complete",
    "conclusions",
    "config_labels",
    "execute_notebook",
    "fit_gao",
    "format_fits",
    "format_value",
    "gao_curve",
    "gao_fits",
    "gao_peak",
    "gold_proxy_curves",
    "has_params",
    "hyperparameters",
    "interaction_table",
    "label_runs",
    "learning_curves",
    "load_runs",
    "mean_ci",
    "overoptimisation_summary",
    "param_column",
    "param_key",
    "peak_effects",
    "per_seed",
    "pick_configs",
    "plot_importance",
    "plot_interaction",
    "plot_learning_curves",
    "plot_overoptimisation",
    "plot_param_effects",
    "rank_correlations",
    "render",
    "unfinished",
]
