"""Reward over-optimisation: proxy and gold reward against sqrt(KL), and Gao et al.'s fit.

A run trained on a learned proxy with a gold scorer beside it (`reward.gold`) logs, at
every held-out eval, the proxy (`eval/reward_mean`), the gold (`eval/gold_mean`) and the
KL to the reference (`eval/kl`). Gao et al. 2022 ("Scaling Laws for Reward Model
Overoptimization") model the gold gain over the starting policy as d(alpha - beta d),
d = sqrt(KL): it rises, peaks at d* = alpha / (2 beta) and falls when beta > 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ppo_exp.analysis._curves import metric_histories
from ppo_exp.analysis._plots import _grid
from ppo_exp.analysis._select import config_labels, format_value, hyperparameters
from ppo_exp.analysis._stats import rank_correlations

OVEROPT_METRICS = {"eval/kl": "kl", "eval/reward_mean": "proxy", "eval/gold_mean": "gold"}


def gold_proxy_curves(tracking_uri: str | None, runs: pd.DataFrame) -> pd.DataFrame:
    """The held-out proxy and gold rewards of each run at each eval, with d = sqrt(KL).

    Args:
        tracking_uri: MLflow store (None = MLflow's default).
        runs: training-run rows (`load_runs(..., kind="run")` or a sweep's runs); a
            `label` column names the configuration (else `config_labels` is used).

    Returns:
        One row per (run, eval step): run_id, label, seed, step, kl, d, proxy, gold,
        proxy_gain and gold_gain (minus the run's step-0 value: the base policy). Runs
        that logged no gold are left out.
    """
    histories = metric_histories(tracking_uri, runs["run_id"], list(OVEROPT_METRICS))
    columns = ["run_id", "label", "seed", "step", "kl", "d", "proxy", "gold"]
    if histories.empty:
        return pd.DataFrame(columns=[*columns, "proxy_gain", "gold_gain"])
    wide = histories.pivot_table(index=["run_id", "step"], columns="metric", values="value")
    wide = wide.rename(columns=OVEROPT_METRICS).reset_index().dropna(subset=["gold", "kl"])
    wide["d"] = np.sqrt(wide["kl"].clip(lower=0))
    labels = runs["label"] if "label" in runs else config_labels(runs)
    info = runs.assign(label=labels.astype(str))[["run_id", "label"]]
    info["seed"] = runs["seed"] if "seed" in runs else np.nan
    curves = wide.merge(info, on="run_id", how="left").sort_values(["run_id", "step"])
    for name in ("proxy", "gold"):
        start = curves.groupby("run_id")[name].transform("first")
        curves[f"{name}_gain"] = curves[name] - start
    return curves[[*columns, "proxy_gain", "gold_gain"]].reset_index(drop=True)


def fit_gao(d: Sequence[float], gain: Sequence[float]) -> tuple[float, float]:
    """Least-squares fit of gain = d (alpha - beta d), no intercept (gain 0 at d = 0).

    Args:
        d: sqrt(KL) of each point.
        gain: gold gain over the starting policy at each point.

    Returns:
        (alpha, beta); NaN for both with fewer than two points at d > 0.
    """
    d, gain = np.asarray(d, dtype=float), np.asarray(gain, dtype=float)
    if (d > 0).sum() < 2:
        return math.nan, math.nan
    design = np.column_stack([d, -(d**2)])  # (N, 2)
    (alpha, beta), *_ = np.linalg.lstsq(design, gain, rcond=None)
    return float(alpha), float(beta)


def gao_fits(curves: pd.DataFrame, runs: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per configuration (`label`): the fitted curve, and where the gold reward peaked.

    Args:
        curves: `gold_proxy_curves` output (the seeds of a configuration are pooled).
        runs: the runs, for their hyperparameter columns (`params.*`); optional.

    Returns:
        One row per label: alpha, beta, kl_peak_fit (d*^2, NaN when the fit has no
        interior peak: beta <= 0 or alpha <= 0), gold_peak (highest mean gold over the
        evals), kl_at_gold_peak (the mean KL there), gold_final, kl_final, proxy_final,
        drop (gold_peak - gold_final: > 0 when the gold turned down while training went
        on), n_runs; then the configuration's `params.*` values.
    """
    rows = []
    for label, group in curves.groupby("label", sort=False):
        alpha, beta = fit_gao(group["d"], group["gold_gain"])
        mean = group.groupby("step")[["kl", "gold", "proxy"]].mean()  # over seeds
        peak = mean["gold"].idxmax()
        has_peak = beta > 0 and alpha > 0
        rows.append(
            {
                "label": label,
                "alpha": alpha,
                "beta": beta,
                "kl_peak_fit": (alpha / (2 * beta)) ** 2 if has_peak else math.nan,
                "gold_peak": mean.loc[peak, "gold"],
                "kl_at_gold_peak": mean.loc[peak, "kl"],
                "gold_final": mean["gold"].iloc[-1],
                "kl_final": mean["kl"].iloc[-1],
                "proxy_final": mean["proxy"].iloc[-1],
                "drop": mean.loc[peak, "gold"] - mean["gold"].iloc[-1],
                "n_runs": group["run_id"].nunique(),
            }
        )
    fits = pd.DataFrame(rows)
    if runs is not None and len(fits):
        labels = runs["label"] if "label" in runs else config_labels(runs)
        params = [c for c in runs if c.startswith("params.")]
        first = runs.assign(label=labels.astype(str)).groupby("label")[params].first()
        fits = fits.merge(first, left_on="label", right_index=True, how="left")
    return fits


def peak_effects(fits: pd.DataFrame, params: Sequence[str] | None = None) -> pd.DataFrame:
    """Which hyperparameters move the gold peak: Spearman rho of each against the peak.

    Args:
        fits: `gao_fits` output with `params.*` columns (one row per configuration).
        params: the keys; None = the ones that vary.

    Returns:
        Columns target (gold_peak | kl_at_gold_peak | drop), param, rho, p_value, n.
    """
    params = hyperparameters(fits) if params is None else list(params)
    tables = []
    for target in ("gold_peak", "kl_at_gold_peak", "drop"):
        table = rank_correlations(fits.assign(objective=fits[target]), params)
        tables.append(table.assign(target=target))
    columns = ["target", "param", "rho", "p_value", "n"]
    return (
        pd.concat(tables, ignore_index=True)[columns] if tables else pd.DataFrame(columns=columns)
    )


def overoptimisation_summary(
    fits: pd.DataFrame, effects: pd.DataFrame, *, alpha: float = 0.05
) -> str:
    """A few sentences from the numbers: did the gold turn down, where, and what moves it."""
    if fits.empty:
        return (
            "No run logged eval/gold_mean: train with reward.gold set (+reward@reward.gold=vader)."
        )
    turned = fits[fits["drop"] > 0]
    text = [
        f"{len(fits)} configurations; the gold reward peaked before the last eval in "
        f"{len(turned)} of them (median drop {fits['drop'].median():.3f}).",
        f"Median KL at the gold peak: {fits['kl_at_gold_peak'].median():.2f} nats "
        f"(final KL {fits['kl_final'].median():.2f}).",
    ]
    fitted = fits["kl_peak_fit"].dropna()
    if len(fitted):
        text.append(
            f"The fit d(alpha - beta d) has an interior peak in {len(fitted)} of them, "
            f"at a median KL of {fitted.median():.2f} nats."
        )
    significant = effects[(effects["p_value"] < alpha) & (effects["target"] != "drop")]
    for row in significant.itertuples():
        way = "raises" if row.rho > 0 else "lowers"
        what = "the peak gold reward" if row.target == "gold_peak" else "the KL at the gold peak"
        text.append(f"`{row.param}` {way} {what} (rho {row.rho:+.2f}, p {row.p_value:.2g}).")
    if significant.empty:
        text.append(f"No hyperparameter moves the gold peak at p < {alpha}.")
    return " ".join(text)


def plot_overoptimisation(
    curves: pd.DataFrame, fits: pd.DataFrame, *, max_panels: int = 12
) -> Figure:
    """Proxy and gold gain against sqrt(KL), one panel per configuration, with the fit.

    Args:
        curves: `gold_proxy_curves` output.
        fits: `gao_fits` output (its first `max_panels` labels are drawn).
        max_panels: cap on the panels.

    Returns:
        The figure.
    """
    labels = list(fits["label"])[:max_panels]
    fig, axes = _grid(max(1, len(labels)), 4, (3.6, 2.8))
    for ax, label in zip(axes, labels, strict=False):
        group = curves[curves["label"] == label]
        for _, run in group.groupby("run_id", sort=False):
            ax.plot(run["d"], run["proxy_gain"], "--", color="C0", marker=".", label="proxy")
            ax.plot(run["d"], run["gold_gain"], "-", color="C3", marker=".", label="gold")
        fit = fits.set_index("label").loc[label]
        if np.isfinite(fit["alpha"]):
            d = np.linspace(0, max(group["d"].max(), 1e-6), 50)
            ax.plot(d, d * (fit["alpha"] - fit["beta"] * d), ":", color="k", label="fit d(α−βd)")
        ax.axhline(0, color="0.8", lw=0.8)
        ax.set(title=label[:60], xlabel="√KL (√nats)", ylabel="gain over the base policy")
        ax.title.set_fontsize("small")
    handles = dict(zip(*reversed(axes[0].get_legend_handles_labels()), strict=True))
    if handles:
        fig.legend(handles.values(), handles.keys(), loc="outside lower center", ncols=3)
    return fig


def format_fits(fits: pd.DataFrame) -> pd.DataFrame:
    """The fits table with rounded numbers, for display."""
    return fits.map(lambda v: format_value(v) if isinstance(v, float) else v)
