"""Statistics per hyperparameter: bins, means with CIs, rank correlations, interactions."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from ppo_exp.analysis._select import format_value, hyperparameters, param_column, param_key

DEFAULT_PAIR = ("clip_eps", "ppo_epochs")


def is_log_scale(values: pd.Series) -> bool:
    """Whether a numeric hyperparameter spans orders of magnitude (like lr): plot it on a log axis.

    Args:
        values: the observed values.

    Returns:
        True if every value is positive and the largest is at least 20 times the smallest.
    """
    numbers = pd.to_numeric(values, errors="coerce").dropna()
    return bool(len(numbers)) and numbers.min() > 0 and numbers.max() / numbers.min() >= 20


def _is_numeric(values: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)


def bin_values(values: pd.Series, bins: int = 4) -> pd.Series:
    """The bin of each value, as an ordered categorical labelled by the range it holds.

    Numbers with more distinct values than `bins` fall into `bins` quantile bins (equal
    counts, so every bin gets a CI; quantiles also respect a log scale); otherwise, and
    for categories, every distinct value is its own bin.

    Args:
        values: one hyperparameter column.
        bins: the most bins wanted.

    Returns:
        Labels such as "0.05–0.12" (the smallest and largest value in the bin) or "4",
        ordered by value, aligned with `values`.
    """
    present = values.dropna()
    if not _is_numeric(values) or present.nunique() <= bins:
        order = sorted(present.unique(), key=lambda v: (str(type(v)), v))
        labels = {v: format_value(v) for v in order}
        return pd.Series(
            pd.Categorical(values.map(labels), categories=list(labels.values()), ordered=True),
            index=values.index,
        )
    codes = pd.qcut(values.astype(float), bins, labels=False, duplicates="drop")
    spans = values.groupby(codes).agg(["min", "max"])
    names = {
        code: format_value(low) if low == high else f"{format_value(low)}–{format_value(high)}"
        for code, (low, high) in spans.iterrows()
    }
    return pd.Series(
        pd.Categorical(codes.map(names), categories=list(names.values()), ordered=True),
        index=values.index,
    )


def mean_ci(values: Iterable[float], level: float = 0.95) -> tuple[float, float, float]:
    """The mean and its Student-t confidence interval.

    Args:
        values: independent observations.
        level: the interval's coverage.

    Returns:
        (mean, low, high); the bounds are NaN for fewer than two values.
    """
    data = np.asarray([v for v in values if not pd.isna(v)], dtype=float)
    if len(data) == 0:
        return math.nan, math.nan, math.nan
    mean = float(data.mean())
    if len(data) < 2:
        return mean, math.nan, math.nan
    half = stats.t.ppf(0.5 + level / 2, len(data) - 1) * data.std(ddof=1) / math.sqrt(len(data))
    return mean, mean - half, mean + half


def binned_means(
    observations: pd.DataFrame, param: str, *, bins: int = 4, level: float = 0.95
) -> pd.DataFrame:
    """Mean objective per value range of one hyperparameter, with confidence intervals.

    Args:
        observations: rows with `objective` and the parameter column; pass `per_seed`
            of complete trials so that each seed counts as one observation.
        param: the hyperparameter ("lr" or "params.lr").
        bins: the most bins wanted (see `bin_values`).
        level: the coverage of the intervals.

    Returns:
        One row per bin, in value order: bin (label), low, high, center (mean value in
        the bin; the label for categories), n, mean, ci_low, ci_high.
    """
    column = param_column(param)
    data = observations.dropna(subset=[column, "objective"])
    binned = bin_values(data[column], bins)
    rows = []
    for label, group in data.groupby(binned, observed=True, sort=True):
        mean, low, high = mean_ci(group["objective"], level)
        values = group[column]
        numeric = _is_numeric(values)
        rows.append(
            {
                "bin": label,
                "low": values.min() if numeric else label,
                "high": values.max() if numeric else label,
                "center": float(values.mean()) if numeric else label,
                "n": len(group),
                "mean": mean,
                "ci_low": low,
                "ci_high": high,
            }
        )
    return pd.DataFrame(
        rows, columns=["bin", "low", "high", "center", "n", "mean", "ci_low", "ci_high"]
    )


def rank_correlations(frame: pd.DataFrame, params: Sequence[str] | None = None) -> pd.DataFrame:
    """Spearman rank correlation of each numeric hyperparameter with the objective.

    Args:
        frame: rows with `objective` (use complete trials: one value per configuration).
        params: the keys; None = `hyperparameters(frame)`.

    Returns:
        Columns param, rho, p_value, n, strongest |rho| first; NaN where a parameter is
        categorical, constant, or has fewer than three values.
    """
    params = hyperparameters(frame) if params is None else [param_key(p) for p in params]
    rows = []
    for key in params:
        data = frame[[param_column(key), "objective"]].dropna()
        x = data[param_column(key)]
        rho = p_value = math.nan
        if (
            _is_numeric(x)
            and len(data) >= 3
            and x.nunique() > 1
            and data["objective"].nunique() > 1
        ):
            rho, p_value = stats.spearmanr(x.astype(float), data["objective"])
        rows.append({"param": key, "rho": float(rho), "p_value": float(p_value), "n": len(data)})
    table = pd.DataFrame(rows, columns=["param", "rho", "p_value", "n"])
    order = table["rho"].abs().sort_values(ascending=False, na_position="last").index
    return table.loc[order].reset_index(drop=True)


# -- interactions ----------------------------------------------------------------------


def interaction_table(
    observations: pd.DataFrame,
    pair: Sequence[str] = DEFAULT_PAIR,
    *,
    bins: int = 3,
    stat: str = "mean",
) -> pd.DataFrame:
    """The objective over a grid of two binned hyperparameters (heat-map data).

    Args:
        observations: rows with `objective` and both parameter columns.
        pair: (row parameter, column parameter), as keys or columns.
        bins: the most bins per parameter.
        stat: "mean", "count" or "std" of the objective in each cell.

    Returns:
        A table indexed by the first parameter's bins, with the second's as columns
        (both named after their key); empty cells are NaN (0 for "count").

    Raises:
        KeyError: a parameter of the pair is not a column.
    """
    rows_key, cols_key = (param_key(p) for p in pair)
    missing = [k for k in (rows_key, cols_key) if param_column(k) not in observations]
    if missing:
        raise KeyError(f"no hyperparameter column for {', '.join(missing)}")
    data = observations.dropna(subset=[param_column(rows_key), param_column(cols_key), "objective"])
    grid = data.assign(
        **{
            rows_key: bin_values(data[param_column(rows_key)], bins),
            cols_key: bin_values(data[param_column(cols_key)], bins),
        }
    )
    table = grid.pivot_table(
        index=rows_key, columns=cols_key, values="objective", aggfunc=stat, observed=False
    )
    return table.fillna(0).astype(int) if stat == "count" else table


def has_params(frame: pd.DataFrame, keys: Iterable[str]) -> bool:
    """Whether every key is a varied hyperparameter of the table."""
    varied = set(hyperparameters(frame))
    return all(param_key(k) in varied for k in keys)
