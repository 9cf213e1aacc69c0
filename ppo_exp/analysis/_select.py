"""Selecting: hyperparameter names, complete trials, per-seed rows, labelled picks."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ppo_exp.analysis._load import PARAM_PREFIX, SEED_PREFIX


def param_key(name: str) -> str:
    """The config key of a hyperparameter given as `lr` or `params.lr`."""
    return name.removeprefix(PARAM_PREFIX)


def param_column(name: str) -> str:
    """The DataFrame column of a hyperparameter given as `lr` or `params.lr`."""
    return PARAM_PREFIX + param_key(name)


def hyperparameters(frame: pd.DataFrame) -> list[str]:
    """The config keys whose values differ between the rows (what was searched or swept).

    Args:
        frame: a `load_runs` table.

    Returns:
        Keys such as "lr", in column order; constant settings are left out.
    """
    return [
        param_key(c)
        for c in frame
        if c.startswith(PARAM_PREFIX) and frame[c].dropna().astype(str).nunique() > 1
    ]


def complete(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows that finished with an objective value (COMPLETE trials or runs)."""
    return frame[frame["state"].eq("COMPLETE") & frame["objective"].notna()]


def per_seed(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per (trial, seed): the observations behind each trial's mean objective.

    Args:
        trials: a `load_runs` table of trials with `objective.seed_<s>` columns; a table
            without them (e.g. of runs) is returned unchanged.

    Returns:
        The trial columns with `seed` and `objective` (that seed's value) instead of
        the per-seed columns; seeds without a value (not run, pruned) are dropped.
    """
    seed_columns = [c for c in trials if c.startswith(SEED_PREFIX)]
    if not seed_columns:
        return trials
    keep = [c for c in trials if c not in seed_columns and c != "objective"]
    long = trials.drop(columns="objective").melt(
        id_vars=keep, value_vars=seed_columns, var_name="seed", value_name="objective"
    )
    long["seed"] = long["seed"].str.removeprefix(SEED_PREFIX).astype("Int64")
    long = long.dropna(subset=["objective"])
    return long.sort_values(["trial", "seed"], kind="stable").reset_index(drop=True)


def pick_configs(trials: pd.DataFrame, n: int = 1, *, direction: str = "maximize") -> pd.DataFrame:
    """The `n` best and `n` worst complete rows, labelled for plots.

    Args:
        trials: a `load_runs` table.
        n: how many of each.
        direction: "maximize" or "minimize" the objective.

    Returns:
        Rows with a `group` ("best" | "worst") and a `label` (e.g. "best #3: 0.42"),
        best first; a row is never both.
    """
    done = complete(trials).sort_values("objective", ascending=direction == "minimize")
    best = done.head(n).assign(group="best")
    worst = done.drop(best.index).tail(n).iloc[::-1].assign(group="worst")
    picked = pd.concat([best, worst])
    picked["label"] = [
        f"{group} {_name(row)}: {row.objective:.3g}"
        for group, (_, row) in zip(picked["group"], picked.iterrows(), strict=True)
    ]
    return picked


def unfinished(trials: pd.DataFrame) -> pd.DataFrame:
    """The pruned and failed rows, labelled with their state and reason."""
    rows = trials[trials["state"].isin(["PRUNED", "FAIL"])].copy()
    rows["group"] = rows["state"].str.lower()
    reasons = rows["reason"] if "reason" in rows else pd.Series("", index=rows.index)
    rows["label"] = [
        f"{state.lower()} {_name(row)}" + (f": {reason[:60]}" if isinstance(reason, str) else "")
        for state, reason, (_, row) in zip(rows["state"], reasons, rows.iterrows(), strict=True)
    ]
    return rows


def _name(row: pd.Series) -> str:
    """'#3' for trial 3, else the run name."""
    trial = row.get("trial")
    return f"#{trial}" if trial is not None and not pd.isna(trial) else str(row["run_name"])


def config_labels(runs: pd.DataFrame, params: Sequence[str] | None = None) -> pd.Series:
    """A readable label per row from its varied hyperparameters, e.g. 'clip_eps=0.1'.

    The seed is left out: runs of one configuration share a label (and a colour).

    Args:
        runs: a `load_runs` table.
        params: the keys to show; None = `hyperparameters(runs)`.

    Returns:
        One string per row (the run name when nothing varies).
    """
    params = hyperparameters(runs) if params is None else [param_key(p) for p in params]

    def label(row: pd.Series) -> str:
        parts = [f"{key}={format_value(row[param_column(key)])}" for key in params]
        return " ".join(parts) or str(row["run_name"])

    return runs.apply(label, axis=1)


def label_runs(runs: pd.DataFrame, picked: pd.DataFrame) -> pd.DataFrame:
    """The training runs of the picked trials, with the trials' `group` and `label`.

    Args:
        runs: `load_runs(..., study=..., kind="run")`, one row per seed run.
        picked: rows of `pick_configs` or `unfinished` (trials).

    Returns:
        The runs of those trials, in the order of `picked`.
    """
    labels = picked[["trial", "group", "label"]]
    return labels.merge(runs, on="trial", how="inner")


def format_value(value: object) -> str:
    """A hyperparameter value for text: integers as is, floats to 3 significant digits."""
    if isinstance(value, (bool, np.bool_)) or value is None:
        return str(value)
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.3g}"
    return str(value)
