"""Reward over-optimisation: proxy and gold reward against sqrt(KL), and Gao et al.'s fit.

A run trained on a learned proxy with a gold scorer beside it (`reward.gold`) logs, at
every held-out eval, the proxy (`eval/reward_mean`), the gold (`eval/gold_mean`) and the
KL to the reference (`eval/kl`). Gao et al. 2022 ("Scaling Laws for Reward Model
Overoptimization") model the gold gain over the starting policy as a function of
d = sqrt(KL), with R(0) = 0, in a form that depends on the optimiser:

- RL (PPO, what this project trains): R(d) = d (alpha - beta log d), which peaks at
  d* = exp(alpha / beta - 1) when beta > 0;
- best-of-n: R(d) = d (alpha - beta d), which peaks at d* = alpha / (2 beta).

PPO runs are fitted with the RL form; `form="bon"` fits the other for comparison.
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

_FORM_TEXT = {"rl": "d(α − β log d)", "bon": "d(α − βd)"}
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


GAO_FORMS = ("rl", "bon")  # Gao et al.'s functional forms: RL d(a - b log d), BoN d(a - b d)


def _check_form(form: str) -> None:
    if form not in GAO_FORMS:
        raise ValueError(f"form must be one of {GAO_FORMS}, got {form!r}")


def _overoptimisation_term(d: np.ndarray, form: str) -> np.ndarray:
    """What beta multiplies inside the bracket: log d (RL) or d (best-of-n), 0 at d = 0."""
    _check_form(form)
    if form == "bon":
        return d
    return np.log(d, out=np.zeros_like(d), where=d > 0)  # d log d -> 0 as d -> 0


def gao_curve(
    d: Sequence[float] | np.ndarray, alpha: float, beta: float, *, form: str = "rl"
) -> np.ndarray:
    """Gao et al.'s gold gain at d = sqrt(KL): d (alpha - beta log d) for RL, d (alpha -
    beta d) for best-of-n."""
    d = np.asarray(d, dtype=float)
    return d * (alpha - beta * _overoptimisation_term(d, form))


def fit_gao(d: Sequence[float], gain: Sequence[float], *, form: str = "rl") -> tuple[float, float]:
    """Least-squares fit of one of Gao et al.'s forms, no intercept (gain 0 at d = 0).

    Args:
        d: sqrt(KL) of each point.
        gain: gold gain over the starting policy at each point.
        form: "rl", gain = d (alpha - beta log d) (PPO); "bon", gain = d (alpha - beta d).

    Returns:
        (alpha, beta); NaN for both with fewer than two points at d > 0.
    """
    d, gain = np.asarray(d, dtype=float), np.asarray(gain, dtype=float)
    if (d > 0).sum() < 2:
        return math.nan, math.nan
    design = np.column_stack([d, -d * _overoptimisation_term(d, form)])  # (N, 2)
    (alpha, beta), *_ = np.linalg.lstsq(design, gain, rcond=None)
    return float(alpha), float(beta)


def gao_peak(alpha: float, beta: float, *, form: str = "rl") -> float:
    """d* where the fitted gain peaks; NaN when the curve never turns down.

    RL: d (alpha - beta log d) has zero slope at log d* = alpha / beta - 1, a maximum when
    beta > 0 (inf past float range). Best-of-n: d* = alpha / (2 beta), when both are > 0.
    """
    _check_form(form)
    if not (math.isfinite(alpha) and math.isfinite(beta)) or beta <= 0:
        return math.nan
    if form == "bon":
        return alpha / (2 * beta) if alpha > 0 else math.nan
    exponent = alpha / beta - 1
    return math.exp(exponent) if exponent < 700 else math.inf


def gao_fits(
    curves: pd.DataFrame, runs: pd.DataFrame | None = None, *, form: str = "rl"
) -> pd.DataFrame:
    """Per configuration (`label`): the fitted curve, and where the gold reward peaked.

    Args:
        curves: `gold_proxy_curves` output (the seeds of a configuration are pooled).
        runs: the runs, for their hyperparameter columns (`params.*`); optional.
        form: Gao et al.'s form fitted: "rl" (PPO's, the default) or "bon" (best-of-n).

    Returns:
        One row per label: form, alpha, beta, fit_rmse (root-mean-square residual of the
        fit), kl_peak_fit (d*^2, NaN when the fit does not turn down: `gao_peak`),
        gold_peak (highest mean gold over the
        evals), kl_at_gold_peak (the mean KL there), gold_final, kl_final, proxy_final,
        drop (gold_peak - gold_final: > 0 when the gold turned down while training went
        on), n_runs; then the configuration's `params.*` values.
    """
    rows = []
    for label, group in curves.groupby("label", sort=False):
        alpha, beta = fit_gao(group["d"], group["gold_gain"], form=form)
        residual = group["gold_gain"] - gao_curve(group["d"], alpha, beta, form=form)
        mean = group.groupby("step")[["kl", "gold", "proxy"]].mean()  # over seeds
        peak = mean["gold"].idxmax()
        rows.append(
            {
                "label": label,
                "form": form,
                "alpha": alpha,
                "beta": beta,
                "fit_rmse": float(np.sqrt(np.mean(residual**2))),
                "kl_peak_fit": gao_peak(alpha, beta, form=form) ** 2,
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
        reached = (fitted <= fits.loc[fitted.index, "kl_final"]).sum()
        text.append(
            f"Gao et al.'s {_FORM_TEXT[fits['form'].iloc[0]]} turns down in {len(fitted)} "
            f"of them, at a median KL of {fitted.median():.2f} nats; in {reached} of them "
            "before the KL the run reached (past it, the peak is an extrapolation)."
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
            gain = gao_curve(d, fit["alpha"], fit["beta"], form=fit["form"])
            ax.plot(d, gain, ":", color="k", label=f"fit {_FORM_TEXT[fit['form']]}")
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
