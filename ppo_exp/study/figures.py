"""A study's figures, as files that render offline: self-contained HTML and PNG twins.

MLflow's artifact viewer shows HTML in an iframe, and a figure that loads plotly.js
from a CDN stays blank on a machine (or cluster) without internet: every HTML file
here carries plotly.js inline (~4.5 MB each). Every plot also has a PNG twin, which
MLflow shows as an image and which any viewer opens.

- `importance`: the importance ranking of `summary.Ranking` — fANOVA bars with their
  bootstrap intervals, PED-ANOVA as diamonds, bars coloured by the sign of the Spearman
  correlation (W&B's importance panel, as a file);
- `parallel_coordinate`: one line per complete trial, coloured by the objective, axes
  ordered by importance, a log axis for parameters searched on a log scale;
- Optuna's `history`, `slice`, `contour` (the three most important parameters) and,
  for two objectives, `pareto_front`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import optuna.visualization as vis
import plotly.graph_objects as go
from matplotlib.figure import Figure

from ppo_exp.study.summary import Ranking, Summary

POSITIVE, NEGATIVE, UNKNOWN = "#1f77b4", "#d62728", "#7f7f7f"  # sign of Spearman's ρ
CONTOUR_PARAMS = 3  # contour plots of the most important parameters only (n² panels)


def ranked_params(ranking: Ranking) -> list[str]:
    """Parameters, most important first: bootstrap mean, else a point estimate."""
    if not ranking.bootstrap.empty:
        return ranking.bootstrap["param"].tolist()
    for evaluator in ("fanova", "ped_anova"):
        if evaluator in ranking.points:
            return list(ranking.points[evaluator])
    return []


def _importance_rows(ranking: Ranking) -> list[dict]:
    """One row per parameter (least important first, as bars are drawn bottom up)."""
    table = ranking.bootstrap.set_index("param") if not ranking.bootstrap.empty else None
    rho = ranking.rho
    rows = []
    for param in reversed(ranked_params(ranking)):
        point = ranking.points.get("fanova", {}).get(param, 0.0)
        mean = low = high = point
        if table is not None:
            mean, low, high = table.loc[param, ["mean", "ci_low", "ci_high"]]
        sign = rho.get(param, float("nan"))
        rows.append(
            dict(
                param=param,
                mean=float(mean),
                low=float(low),
                high=float(high),
                ped=ranking.points.get("ped_anova", {}).get(param),
                rho=sign,
                color=UNKNOWN if sign != sign else (POSITIVE if sign >= 0 else NEGATIVE),
            )
        )
    return rows


def _importance_title(ranking: Ranking, bootstrapped: bool) -> str:
    what = "fANOVA importance" + (" (bootstrap mean, 95% CI)" if bootstrapped else "")
    return f"{what} for {ranking.metric} ({ranking.direction});<br>colour = sign of Spearman ρ"


def importance_html(ranking: Ranking) -> go.Figure:
    """Importance bars with intervals, PED-ANOVA diamonds and ρ labels (plotly)."""
    rows = _importance_rows(ranking)
    names = [r["param"] for r in rows]
    fig = go.Figure()
    fig.add_bar(
        x=[r["mean"] for r in rows],
        y=names,
        orientation="h",
        marker_color=[r["color"] for r in rows],
        error_x=dict(
            type="data",
            symmetric=False,
            array=[r["high"] - r["mean"] for r in rows],
            arrayminus=[r["mean"] - r["low"] for r in rows],
        ),
        text=[f"ρ={r['rho']:+.2f}" if r["rho"] == r["rho"] else "" for r in rows],
        textposition="inside",
        name="fANOVA",
    )
    if any(r["ped"] is not None for r in rows):
        fig.add_scatter(
            x=[r["ped"] for r in rows],
            y=names,
            mode="markers",
            marker=dict(symbol="diamond", size=10, color="black"),
            name="PED-ANOVA",
        )
    fig.update_layout(
        title=_importance_title(ranking, not ranking.bootstrap.empty),
        xaxis=dict(range=[0, 1], title="importance (sums to 1)"),
        height=160 + 40 * len(rows),
        margin=dict(l=100),
    )
    return fig


def importance_png(ranking: Ranking) -> Figure:
    """The same chart with matplotlib (its PNG twin)."""
    rows = _importance_rows(ranking)
    fig = Figure(figsize=(7, 0.45 * len(rows) + 1.4), layout="constrained")
    ax = fig.subplots()
    names = [r["param"] for r in rows]
    errors = [[r["mean"] - r["low"] for r in rows], [r["high"] - r["mean"] for r in rows]]
    ax.barh(
        names,
        [r["mean"] for r in rows],
        xerr=errors,
        color=[r["color"] for r in rows],
        capsize=3,
        label="fANOVA",
    )
    peds = [(r["ped"], r["param"]) for r in rows if r["ped"] is not None]
    if peds:
        ax.scatter(*zip(*peds, strict=True), marker="D", color="black", zorder=3, label="PED-ANOVA")
    for y, row in enumerate(rows):
        if row["rho"] == row["rho"]:
            ax.text(row["high"] + 0.02, y, f"ρ={row['rho']:+.2f}", va="center", fontsize="small")
    ax.set(xlim=(0, 1), xlabel="importance (sums to 1)")
    title = _importance_title(ranking, not ranking.bootstrap.empty).replace("<br>", "\n")
    ax.set_title(title, fontsize="small")
    ax.legend(loc="lower right", fontsize="small", handles=ax.get_legend_handles_labels()[0][::-1])
    return fig


def _optuna_plots(summary: Summary, ranking: Ranking, index: int) -> dict[str, Callable]:
    """Optuna's plots for one objective: name -> (plotly module or matplotlib module) -> fig."""
    single = len(summary.metrics) == 1
    kwargs: dict = {"target_name": ranking.metric}
    if not single:
        kwargs["target"] = lambda t, i=index: t.values[i]
    order = ranked_params(ranking) or None
    plots = {
        "history": lambda m: m.plot_optimization_history(summary.study, **kwargs),
        "slice": lambda m: m.plot_slice(summary.study, params=order, **kwargs),
        "parallel_coordinate": lambda m: m.plot_parallel_coordinate(
            summary.study, params=order, **kwargs
        ),
    }
    if len(summary.complete) >= 2 and (order is None or len(order) >= 2):
        top = order[:CONTOUR_PARAMS] if order else None
        plots["contour"] = lambda m: m.plot_contour(summary.study, params=top, **kwargs)
    return plots


def write_figures(summary: Summary, folder: Path) -> list[str]:
    """Draw every figure of `summary` into `folder` as NAME.html and NAME.png.

    Args:
        summary: what the report shows.
        folder: an existing directory (logged as the run's `study/` artifacts).

    Returns:
        The figure names written (without extension), importance first.
    """
    import matplotlib

    matplotlib.use("Agg")  # Optuna's matplotlib plots go through pyplot: never a window
    import optuna.visualization.matplotlib as mvis
    from matplotlib import pyplot as plt

    written = []
    for index, ranking in enumerate(summary.rankings):
        if ranked_params(ranking):
            name = f"importance{ranking.file_suffix}"
            _save_html(importance_html(ranking), folder / f"{name}.html")
            importance_png(ranking).savefig(folder / f"{name}.png", dpi=100)
            written.append(name)
        if not summary.complete:
            continue
        for plot_name, plot in _optuna_plots(summary, ranking, index).items():
            name = f"{plot_name}{ranking.file_suffix}"
            _save_html(plot(vis), folder / f"{name}.html")
            axes = plot(mvis)
            first = axes.flat[0] if hasattr(axes, "flat") else axes
            first.figure.savefig(folder / f"{name}.png", dpi=80, bbox_inches="tight")
            plt.close(first.figure)
            written.append(name)
    if len(summary.metrics) == 2 and summary.complete:
        _save_html(
            vis.plot_pareto_front(summary.study, target_names=summary.metrics),
            folder / "pareto_front.html",
        )
        axes = mvis.plot_pareto_front(summary.study, target_names=summary.metrics)
        axes.figure.savefig(folder / "pareto_front.png", dpi=80, bbox_inches="tight")
        plt.close(axes.figure)
        written.append("pareto_front")
    return written


def _save_html(fig: go.Figure, path: Path) -> None:
    # plotly.js inline: the file renders in MLflow's viewer without any network access
    fig.write_html(path, include_plotlyjs=True, full_html=True)
