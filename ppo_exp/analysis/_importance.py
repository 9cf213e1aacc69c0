"""Hyperparameter importance (Optuna's fANOVA), with a bootstrap over trials."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import optuna
import pandas as pd
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from ppo_exp.analysis._select import complete, hyperparameters, param_column, param_key
from ppo_exp.analysis._stats import _is_numeric, is_log_scale


def _distributions(
    frame: pd.DataFrame, params: Sequence[str], log_params: Iterable[str] | None
) -> dict[str, BaseDistribution]:
    """Optuna distributions spanning the observed values (constant parameters left out)."""
    found: dict[str, BaseDistribution] = {}
    for key in params:
        values = frame[param_column(key)].dropna()
        if values.astype(str).nunique() < 2:
            continue
        if not _is_numeric(values):
            found[key] = CategoricalDistribution(sorted(values.unique(), key=str))
            continue
        log = is_log_scale(values) if log_params is None else key in set(log_params)
        if pd.api.types.is_integer_dtype(values):
            found[key] = IntDistribution(int(values.min()), int(values.max()), log=log)
        else:
            found[key] = FloatDistribution(float(values.min()), float(values.max()), log=log)
    return found


def _importances(
    frame: pd.DataFrame,
    distributions: dict[str, BaseDistribution],
    evaluator: str,
    direction: str,
    seed: int,
) -> dict[str, float]:
    """One importance estimate: an in-memory study rebuilt from the rows, then evaluated."""
    trials = []
    for _, row in frame.iterrows():
        params = {}
        for key, dist in distributions.items():
            value = row[param_column(key)]
            if pd.isna(value):
                continue
            params[key] = int(value) if isinstance(dist, IntDistribution) else value
            if isinstance(dist, FloatDistribution):
                params[key] = float(value)
        trials.append(
            optuna.trial.create_trial(
                params=params,
                distributions={k: distributions[k] for k in params},
                value=float(row["objective"]),
            )
        )
    study = optuna.create_study(direction=direction)
    study.add_trials(trials)
    chosen = (
        optuna.importance.FanovaImportanceEvaluator(n_trees=32, seed=seed)
        if evaluator == "fanova"
        else optuna.importance.PedAnovaImportanceEvaluator()
    )
    scores = optuna.importance.get_param_importances(
        study, evaluator=chosen, params=list(distributions)
    )
    return {key: float(value) for key, value in scores.items()}


def bootstrap_importance(
    trials: pd.DataFrame,
    params: Sequence[str] | None = None,
    *,
    n_boot: int = 100,
    level: float = 0.95,
    evaluator: str = "fanova",
    direction: str = "maximize",
    log_params: Iterable[str] | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Hyperparameter importance with its uncertainty: a bootstrap over trials.

    Each replicate resamples the complete trials with replacement, rebuilds an Optuna
    study from them and asks Optuna's evaluator for normalised importances (they sum
    to 1), so the spread shows how much the ranking owes to which trials happened to run.

    Args:
        trials: a `load_runs` table of trials (only complete ones are used).
        params: the keys to rank; None = `hyperparameters(trials)`.
        n_boot: bootstrap replicates (fANOVA takes ~0.1 s each).
        level: the coverage of the percentile intervals.
        evaluator: "fanova" (random-forest variance decomposition) or "ped_anova".
        direction: the objective's direction ("maximize" | "minimize"), used by PED-ANOVA.
        log_params: keys searched on a log scale; None = guess with `is_log_scale`.
        seed: seeds the resampling and the forests.

    Returns:
        Columns param, mean, ci_low, ci_high, rank (1 = most important), rank_low and
        rank_high (the interval of its rank over the replicates) and p_first (the share
        of replicates ranking it first), ranked by mean; `attrs["top_k_share"][k]` is the
        share of replicates whose k most important parameters are the table's first k,
        so a ranking "holds" down to the k where that share stays at or above `level`.
        Empty with fewer than three complete trials.
    """
    done = complete(trials)
    params = hyperparameters(done) if params is None else [param_key(p) for p in params]
    columns = ["param", "mean", "ci_low", "ci_high", "rank", "rank_low", "rank_high", "p_first"]
    distributions = _distributions(done, params, log_params)
    if len(done) < 3 or not distributions:
        return pd.DataFrame(columns=columns)
    rng = np.random.default_rng(seed)
    samples = []
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one "study created" line per replicate
    try:
        for replicate in range(n_boot):
            sample = done.iloc[rng.integers(0, len(done), len(done))]
            if sample["objective"].nunique() < 2:
                continue  # nothing to explain in this replicate
            samples.append(
                _importances(sample, distributions, evaluator, direction, seed + replicate)
            )
    finally:
        optuna.logging.set_verbosity(verbosity)
    if not samples:  # the objective never varied: nothing to rank
        return pd.DataFrame(columns=columns)
    scores = pd.DataFrame(samples, columns=list(distributions)).fillna(0.0)
    tail = (1 - level) / 2
    table = pd.DataFrame(
        {
            "param": scores.columns,
            "mean": scores.mean().to_numpy(),
            "ci_low": scores.quantile(tail).to_numpy(),
            "ci_high": scores.quantile(1 - tail).to_numpy(),
        }
    )
    table = table.sort_values("mean", ascending=False, kind="stable").reset_index(drop=True)
    table["rank"] = np.arange(1, len(table) + 1)
    ranks = scores[table["param"]].rank(axis=1, ascending=False, method="min")
    table["rank_low"] = ranks.quantile(tail, interpolation="lower").to_numpy().astype(int)
    table["rank_high"] = ranks.quantile(1 - tail, interpolation="higher").to_numpy().astype(int)
    table["p_first"] = ranks.eq(1).mean().to_numpy()
    table = table[columns]
    table.attrs["top_k_share"] = {
        k: float(ranks.iloc[:, :k].le(k).all(axis=1).mean()) for k in range(1, len(table))
    }
    return table
