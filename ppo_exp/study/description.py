"""Parent runs' Descriptions (`mlflow.note.content`): a study's report, a sweep's table.

MLflow shows a run's Description at the top of its Overview, so a reader who opens the
study's parent run sees, without another click: the trials so far, the best trial,
the importance ranking with intervals and what part of it holds, and the figures.
It is written from a `Summary` and rewritten at every report.
"""

from __future__ import annotations

import math
from urllib.parse import quote

from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from ppo_exp.study.figures import ranked_params
from ppo_exp.study.summary import LEVEL, Ranking, Summary

NOTE_TAG = "mlflow.note.content"  # MLflow's run Description (Markdown)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table (cells must not contain `|`)."""
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def artifact_url(run_id: str, path: str) -> str:
    """A link to one of the run's artifacts, served by the MLflow server that shows it.

    Relative, so that it also works behind a proxy or a `--static-prefix`.
    """
    return f"get-artifact?path={quote(path, safe='')}&run_uuid={run_id}"


def _number(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def _sign(correlations, param: str, direction: str) -> str:
    """Spearman's ρ, and which way is better where it is significant (p < 0.05)."""
    if correlations is None or param not in correlations.index:
        return "–"
    rho, p_value = correlations.loc[param, ["rho", "p_value"]]
    if math.isnan(rho):
        return "–"
    if p_value >= 0.05:
        return f"{rho:+.2f} (p={p_value:.2g})"
    better = "higher" if (rho > 0) == (direction == "maximize") else "lower"
    return f"{rho:+.2f} (p={p_value:.2g}, {better} is better)"


def _ranking_table(ranking: Ranking) -> str:
    boot = ranking.bootstrap.set_index("param") if not ranking.bootstrap.empty else None
    correlations = ranking.correlations.set_index("param") if ranking.rho else None
    ped = ranking.points.get("ped_anova", {})
    fanova = ranking.points.get("fanova", {})
    rows = []
    for rank, param in enumerate(ranked_params(ranking), start=1):
        if boot is not None:
            row = boot.loc[param]
            interval = f"{row['mean']:.2f} ({row['ci_low']:.2f}–{row['ci_high']:.2f})"
            ranks = f"{rank} ({int(row['rank_low'])}–{int(row['rank_high'])})"
            first = f"{row['p_first']:.0%}"
        else:
            interval, ranks, first = _number(fanova.get(param)), str(rank), "–"
        rows.append(
            [
                ranks,
                f"`{param}`",
                interval,
                first,
                _number(ped.get(param)),
                _sign(correlations, param, ranking.direction),
            ]
        )
    header = [
        "rank (range)",
        "param",
        f"fANOVA ({LEVEL:.0%} CI)" if boot is not None else "fANOVA",
        "ranked first",
        "PED-ANOVA",
        "Spearman ρ",
    ]
    return markdown_table(header, rows)


def _best(summary: Summary) -> str:
    complete = summary.complete
    if not complete:
        return "**Best:** no complete trial yet."
    if len(summary.metrics) > 1:
        numbers = ", ".join(str(t.number) for t in summary.study.best_trials)
        return f"**Pareto-optimal trials:** {numbers} (see `study/pareto_front.html`)."
    best = summary.study.best_trial
    values = ", ".join(
        f"`{k}`={v:.4g}" if isinstance(v, float) else f"`{k}`={v}" for k, v in best.params.items()
    )
    return f"**Best:** trial {best.number}, {summary.metrics[0]} = {best.value:.4g}, with {values}."


def _ranking_line(ranking: Ranking) -> str:
    """The ranking in one line: `1. lam 0.48 (0.08–0.80, first in 74%, ρ +) · 2. ...`."""
    params = ranked_params(ranking)
    if not params:
        return f"`{ranking.metric}`: too few complete trials to rank the parameters yet."
    boot = ranking.bootstrap.set_index("param") if not ranking.bootstrap.empty else None
    fanova = ranking.points.get("fanova") or ranking.points.get("ped_anova", {})
    parts = []
    for rank, param in enumerate(params, start=1):
        if boot is not None:
            row = boot.loc[param]
            detail = f"{row['mean']:.2f} ({row['ci_low']:.2f}–{row['ci_high']:.2f}"
            detail += f", first in {row['p_first']:.0%}"
        else:
            detail = f"{fanova.get(param, math.nan):.2f} (no interval yet"
        sign = ranking.rho.get(param, math.nan)
        detail += "" if math.isnan(sign) else f", ρ {'+' if sign >= 0 else '−'}"
        parts.append(f"**{rank}. `{param}`** {detail})")
    what = f"fANOVA, {LEVEL:.0%} CI" if boot is not None else "fANOVA"
    return f"`{ranking.metric}` ({what}): " + " · ".join(parts)


def study_description(summary: Summary, run_id: str, figures: list[str], n_trials: str) -> str:
    """The parent run's Description in Markdown.

    Args:
        summary: the numbers of this report.
        run_id: the parent run (its artifacts are linked).
        figures: the figure names written under `study/` (NAME.html and NAME.png).
        n_trials: the study's target trial count, as tagged on the run ("?" if unknown).
    """
    study, counts = summary.study, summary.counts
    finished = sum(
        counts[s.name.lower()] for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    )
    directions = ", ".join(
        f"`{m}` ({r.direction})" for m, r in zip(summary.metrics, summary.rankings, strict=True)
    )
    # MLflow shows the first ~150 px of a Description and hides the rest behind "Show
    # more": the ranking goes first, one line per objective, then the details.
    lines = [f"**Study `{study.study_name}`: hyperparameter importance**", ""]
    lines += [_ranking_line(ranking) + "  " for ranking in summary.rankings]
    lines += [
        "",
        f"**Trials:** {finished} of {n_trials} finished: {counts['complete']} complete, "
        f"{counts['pruned']} pruned (stopped early by the pruner: MLflow status KILLED), "
        f"{counts['fail']} failed"
        + (f"; {counts['running']} running" if counts["running"] else "")
        + f". **Objective:** {directions}.",
        "",
        _best(summary),
    ]
    for ranking in summary.rankings:
        name = f"importance{ranking.file_suffix}"
        lines += ["", f"#### Importance ranking for `{ranking.metric}`", ""]
        if not ranked_params(ranking):
            lines.append("Too few complete trials to rank the hyperparameters yet.")
            continue
        lines += [_ranking_table(ranking), ""]
        if not ranking.bootstrap.empty:
            lines.append(
                f"fANOVA on {LEVEL:.0%} bootstrap intervals over the complete trials; "
                "*rank (range)* is the rank's interval over the resamples. "
                "PED-ANOVA is Optuna's default evaluator, on all complete trials."
            )
        else:
            lines.append("No intervals yet: the bootstrap needs at least 5 complete trials.")
        lines += ["", "**What holds and what is open:**", ""]
        # the conclusions without their first (trial counts) and "Best" lines: said above
        findings = ranking.conclusions.splitlines()[1:]
        lines += [f"- {line}" for line in findings if line and not line.startswith("Best ")]
        if name in figures:
            lines += ["", f"![importance chart]({artifact_url(run_id, f'study/{name}.png')})"]
    lines += ["", "#### Figures (Artifacts → study/)", ""]
    lines += [
        f"- [`study/{name}.html`]({artifact_url(run_id, f'study/{name}.html')}) "
        f"(PNG: `study/{name}.png`)"
        for name in figures
    ]
    lines.append("- `study/trials.csv`: every trial, its state, values and params")
    return "\n".join(lines)


def sweep_description(run_id: str, objective: str) -> str:
    """A sweep parent's Description: what was swept, the best run and a table of runs.

    Args:
        run_id: the sweep's parent run; its children are the sweep's jobs.
        objective: the metric the runs report as their objective (`objective` key).
    """
    client = MlflowClient()
    parent = client.get_run(run_id)
    children = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{run_id}'",
        max_results=1000,
    )
    keys = sorted({k for r in children for k in r.data.params})
    swept = [k for k in keys if len({r.data.params.get(k) for r in children}) > 1]

    def value(run: Run) -> float:
        return run.data.metrics.get(objective, math.nan)

    ranked = sorted(children, key=lambda r: (math.isnan(value(r)), -value(r)))
    what = parent.info.run_name.removeprefix("sweep ")
    lines = [f"**Sweep `{what}`**: {len(children)} runs, objective `{objective}`.", ""]
    if ranked and not math.isnan(value(ranked[0])):
        best = ranked[0]
        setting = ", ".join(f"`{k}`={best.data.params.get(k)}" for k in swept)
        lines += [
            f"**Highest:** {best.info.run_name}, {objective} = {value(best):.4g}"
            + (f", with {setting}." if setting else "."),
            "",
        ]
    rows = [
        [
            r.info.run_name,
            *(str(r.data.params.get(k, "–")) for k in swept),
            _number(value(r), 4),
            r.info.status,
        ]
        for r in ranked
    ]
    lines.append(markdown_table(["run", *(f"`{k}`" for k in swept), objective, "status"], rows))
    return "\n".join(lines)
