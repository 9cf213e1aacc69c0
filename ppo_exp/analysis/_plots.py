"""Figures of the analysis tables: matplotlib `Figure` objects, no global state."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from ppo_exp.analysis._select import format_value, hyperparameters, param_column, param_key
from ppo_exp.analysis._stats import _is_numeric, binned_means, is_log_scale


def _grid(count: int, ncols: int, size: tuple[float, float]) -> tuple[Figure, list]:
    """A figure with `count` axes on a grid (spare axes hidden)."""
    ncols = max(1, min(ncols, count))
    nrows = max(1, math.ceil(count / ncols))
    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel().tolist()
    for ax in axes[count:]:
        ax.set_visible(False)
    return fig, axes[:count]


def plot_param_effects(
    observations: pd.DataFrame,
    params: Sequence[str] | None = None,
    *,
    bins: int = 4,
    level: float = 0.95,
    correlations: pd.DataFrame | None = None,
    objective_name: str = "objective",
) -> Figure:
    """Objective against each hyperparameter: raw points, bin means and their CIs.

    Args:
        observations: per-seed rows (see `per_seed`).
        params: the keys; None = `hyperparameters(observations)`.
        bins: bins per parameter (see `binned_means`).
        level: the coverage of the error bars.
        correlations: `rank_correlations`, to quote ρ in the titles.
        objective_name: the y label.

    Returns:
        One panel per parameter.
    """
    params = hyperparameters(observations) if params is None else [param_key(p) for p in params]
    rho = (
        {}
        if correlations is None
        else dict(zip(correlations["param"], correlations["rho"], strict=True))
    )
    fig, axes = _grid(len(params), 3, (4.2, 3.2))
    for ax, key in zip(axes, params, strict=True):
        column = param_column(key)
        data = observations.dropna(subset=[column, "objective"])
        x = data[column].astype(float) if _is_numeric(data[column]) else data[column].astype(str)
        ax.scatter(x, data["objective"], s=14, alpha=0.35, color="tab:gray", label="one seed")
        table = binned_means(data, key, bins=bins, level=level)
        errors = [
            (table["mean"] - table["ci_low"]).fillna(0).clip(lower=0),
            (table["ci_high"] - table["mean"]).fillna(0).clip(lower=0),
        ]
        centers = table["center"] if _is_numeric(data[column]) else table["center"].astype(str)
        ax.errorbar(
            centers,
            table["mean"],
            yerr=errors,
            fmt="o-",
            color="tab:blue",
            capsize=3,
            label=f"bin mean, {level:.0%} CI",
        )
        if _is_numeric(data[column]) and is_log_scale(data[column]):
            ax.set_xscale("log")
            # ticks at 1, 2 and 5 per decade: a study's lr range is often a decade or two
            ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: format_value(v)))
            ax.xaxis.set_minor_formatter(NullFormatter())
        elif pd.api.types.is_integer_dtype(data[column]):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        title = key if pd.isna(rho.get(key, math.nan)) else f"{key}   ρ = {rho[key]:+.2f}"
        ax.set(title=title, xlabel=key, ylabel=objective_name)
    if axes:
        axes[0].legend(fontsize="small")
    return fig


def plot_importance(importance: pd.DataFrame, *, level: float = 0.95) -> Figure:
    """Importance bars, most important on top, with bootstrap CIs as error bars."""
    table = importance.iloc[::-1]
    fig = Figure(figsize=(5.5, 0.45 * len(table) + 1.2), layout="constrained")
    ax = fig.subplots()
    errors = [table["mean"] - table["ci_low"], table["ci_high"] - table["mean"]]
    ax.barh(table["param"], table["mean"], xerr=errors, color="tab:blue", capsize=3)
    ax.set(xlim=(0, 1), xlabel=f"fANOVA importance (bootstrap mean, {level:.0%} CI)")
    return fig


def plot_interaction(
    means: pd.DataFrame, counts: pd.DataFrame | None = None, *, objective_name: str = "objective"
) -> Figure:
    """A heat map of `interaction_table` means, each cell annotated with its mean and count."""
    fig = Figure(
        figsize=(1.3 * len(means.columns) + 2.5, 1.0 * len(means) + 1.5), layout="constrained"
    )
    ax = fig.subplots()
    image = ax.imshow(
        np.ma.masked_invalid(means.to_numpy(dtype=float)),
        cmap="viridis",
        origin="lower",
        aspect="auto",
    )
    ax.set_xticks(range(len(means.columns)), [str(c) for c in means.columns])
    ax.set_yticks(range(len(means.index)), [str(i) for i in means.index])
    ax.set(xlabel=means.columns.name, ylabel=means.index.name)
    for i, j in np.ndindex(means.shape):
        value = means.iat[i, j]
        if pd.isna(value):
            continue
        text = f"{value:.3g}" + (f"\nn={counts.iat[i, j]}" if counts is not None else "")
        ax.text(j, i, text, ha="center", va="center", color="white", fontsize="small")
    fig.colorbar(image, ax=ax, label=f"mean {objective_name}")
    return fig


def plot_learning_curves(
    curves: pd.DataFrame, metrics: Sequence[str] | None = None, *, hue: str = "label"
) -> Figure:
    """One panel per metric, one line per run, coloured by `hue` (line style by seed).

    Args:
        curves: `learning_curves` output.
        metrics: the panels; None = every metric in `curves`.
        hue: the column that names a line's colour (runs of one label share it).

    Returns:
        The figure, with one legend.
    """
    metrics = list(dict.fromkeys(curves["metric"])) if metrics is None else list(metrics)
    hue = hue if hue in curves else "run_id"
    names = list(dict.fromkeys(curves[hue].astype(str)))
    colors = {name: f"C{i % 10}" for i, name in enumerate(names)}
    seeds = sorted(curves["seed"].dropna().unique()) if "seed" in curves else []
    styles = {seed: ("-", "--", ":", "-.")[i % 4] for i, seed in enumerate(seeds)}
    fig, axes = _grid(len(metrics), 3, (4.2, 3.0))
    for ax, metric in zip(axes, metrics, strict=True):
        for _, line in curves[curves["metric"] == metric].groupby("run_id", sort=False):
            name = str(line[hue].iloc[0])
            seed = line["seed"].iloc[0] if "seed" in line else None
            ax.plot(
                line["step"],
                line["value"],
                color=colors[name],
                linestyle=styles.get(seed, "-"),
                marker=".",
                label=name,
            )
        ax.set(title=metric, xlabel="iteration")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    handles = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    if handles:
        fig.legend(
            handles.values(),
            handles.keys(),
            loc="outside lower center",
            ncols=min(3, len(handles)),
            fontsize="small",
        )
    return fig
