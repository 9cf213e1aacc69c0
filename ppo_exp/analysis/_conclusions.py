"""Conclusions: a few sentences on what a study found, written from the numbers."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from ppo_exp.analysis._load import SEED_PREFIX
from ppo_exp.analysis._select import (
    _name,
    complete,
    format_value,
    hyperparameters,
    param_column,
    per_seed,
    pick_configs,
)
from ppo_exp.analysis._stats import binned_means, rank_correlations


def conclusions(
    trials: pd.DataFrame,
    importance: pd.DataFrame,
    *,
    objective_name: str = "objective",
    direction: str = "maximize",
    bins: int = 4,
    level: float = 0.95,
) -> str:
    """A few sentences on what the study found, written from the numbers.

    Args:
        trials: a `load_runs` table of trials (or runs).
        importance: `bootstrap_importance` of the same table.
        objective_name: how to call the objective in the text.
        direction: "maximize" or "minimize".
        bins: bins of the good-range sentence (as in `binned_means`).
        level: the coverage quoted for intervals.

    Returns:
        Plain text, one finding per line.
    """
    done = complete(trials)
    lines = [_summary(trials, done, objective_name, direction)]
    if len(done) < 3 or importance.empty:
        lines.append(f"Too few complete trials ({len(done)}) to rank hyperparameters yet.")
        return "\n".join(lines)
    lines.append(_ranking(importance, level))
    top = importance.iloc[0]["param"]
    lines.append(_good_range(per_seed(done), top, objective_name, direction, bins))
    lines.append(_correlations(done, objective_name, direction))
    if noise := _seed_noise(done):
        lines.append(noise)
    lines.append(_best(done, objective_name, direction))
    weak = importance[importance["ci_high"] < 0.1]["param"].tolist()
    if weak:
        lines.append(
            f"Little effect ({level:.0%} CI of the importance below 0.1): {', '.join(weak)}; "
            "any value in the searched range will do."
        )
    return "\n".join(lines)


def _summary(trials: pd.DataFrame, done: pd.DataFrame, objective_name: str, direction: str) -> str:
    counts = trials["state"].value_counts()
    parts = [f"{counts.get(s, 0)} {s.lower()}" for s in ("PRUNED", "FAIL") if counts.get(s, 0)]
    what = "trials" if trials["kind"].eq("trial").all() else "runs"
    detail = f"{len(done)} complete" + "".join(f", {p}" for p in parts)
    return f"{len(trials)} {what} ({detail}), objective {objective_name} ({direction})."


def _ranking(importance: pd.DataFrame, level: float) -> str:
    """The importance ranking, and which part of it holds over the bootstrap resamples."""

    def described(row: pd.Series) -> str:
        return (
            f"{row['param']} (fANOVA importance {row['mean']:.2f}, {level:.0%} CI "
            f"{row['ci_low']:.2f}–{row['ci_high']:.2f}, first in {row['p_first']:.0%} of "
            "resamples)"
        )

    text = f"Most important: {described(importance.iloc[0])}"
    if len(importance) == 1:
        return text + "."
    text += f", then {described(importance.iloc[1])}."
    names = importance["param"].tolist()
    shares = importance.attrs.get("top_k_share", {})
    settled = [k for k, share in shares.items() if share >= level]
    parts = []
    for k in settled:
        if k == 1:
            parts.append(f"{names[0]} is the most important")
        elif k == len(names) - 1:
            parts.append(f"{names[-1]} is the least important")
        else:
            parts.append(f"{', '.join(names[:k])} are the {k} most important")
    # The fewest leading parameters known to include the most important one.
    leaders = settled[0] if settled else None
    if 1 not in settled:
        first = importance["p_first"].cumsum().to_numpy() >= level - 1e-9
        k = int(np.argmax(first)) + 1
        if first[k - 1] and k < len(names) and k not in settled:
            parts.insert(0, f"the most important is one of {', '.join(names[:k])}")
            leaders = k
    if not parts:
        return text + (
            f" No part of this ranking holds in {level:.0%} of the resamples yet "
            "(more trials would narrow it)."
        )
    text += f" In at least {level:.0%} of the resamples: " + "; ".join(parts) + "."
    if leaders and leaders > 1:
        text += (
            f" Which of {', '.join(names[:leaders])} matters most is not settled "
            "(more trials would narrow it)."
        )
    return text


def _good_range(
    observations: pd.DataFrame, key: str, objective_name: str, direction: str, bins: int
) -> str:
    table = binned_means(observations, key, bins=bins)
    best = table["mean"].idxmax() if direction == "maximize" else table["mean"].idxmin()
    worst = table["mean"].idxmin() if direction == "maximize" else table["mean"].idxmax()
    good, bad = table.loc[best], table.loc[worst]
    ci = f", CI {good['ci_low']:.3g}–{good['ci_high']:.3g}" if not pd.isna(good["ci_low"]) else ""
    return (
        f"Good range of {key}: {good['bin']} (mean {objective_name} {good['mean']:.3g}{ci}, "
        f"n={good['n']}), against {bad['mean']:.3g} for {bad['bin']}."
    )


def _correlations(done: pd.DataFrame, objective_name: str, direction: str) -> str:
    table = rank_correlations(done).dropna(subset=["rho"])
    if table.empty:
        return "No rank correlation could be computed."
    parts = []
    for _, row in table.iterrows():
        text = f"{row['param']} ρ={row['rho']:+.2f}"
        if row["p_value"] < 0.05:
            better = (row["rho"] > 0) == (direction == "maximize")
            text += f" (p={row['p_value']:.2g}: {'higher' if better else 'lower'} is better)"
        parts.append(text)
    return f"Spearman rank correlation with {objective_name}: " + ", ".join(parts) + "."


def _seed_noise(done: pd.DataFrame) -> str | None:
    """Whether trials differ beyond seed noise: a one-way ANOVA of the seeds over trials."""
    seed_columns = [c for c in done if c.startswith(SEED_PREFIX)]
    groups = [row.dropna().to_numpy() for _, row in done[seed_columns].iterrows()]
    groups = [g for g in groups if len(g) >= 2]
    if len(groups) < 2:
        return None
    p_value = float(stats.f_oneway(*groups).pvalue)
    within = float(np.mean([g.std(ddof=1) for g in groups]))
    if p_value < 0.05:
        return f"Trials differ beyond seed noise (one-way ANOVA over seeds, p={p_value:.2g})."
    return (
        f"Trials cannot be told apart from seed noise (one-way ANOVA over seeds, "
        f"p={p_value:.2g}; seed-to-seed std {within:.3g}): read the ranges above as hints, "
        "and add seeds or longer runs to confirm them."
    )


def _best(done: pd.DataFrame, objective_name: str, direction: str) -> str:
    best = pick_configs(done, 1, direction=direction).iloc[0]
    values = ", ".join(f"{k}={format_value(best[param_column(k)])}" for k in hyperparameters(done))
    return f"Best {_name(best)}: {objective_name}={best['objective']:.3g} with {values}."
