"""What a study found, logged on its MLflow parent run (at the end, or on demand).

MLflow's UI has no importance panel, so importances become metrics and figures:
- metrics `importance.<param>` (Optuna's default evaluator, PED-ANOVA) and
  `importance_fanova.<param>`; for a second objective `importance.<param>.<metric>`;
- `best_value` (or `best.<metric>`), the best trial's values as `best.<param>`, and the
  spread of the objective over complete trials (`objective.min/mean/max/std`);
- figures under `study/`: importance bars (PNG), optimisation history, parallel
  coordinates, slice and contour plots (HTML), the Pareto front for two objectives,
  and the trials table `trials.csv`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import matplotlib

matplotlib.use("Agg")  # figures are files: no display needed

import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402
import optuna.visualization as vis  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402
from optuna.trial import FrozenTrial, TrialState  # noqa: E402

log = logging.getLogger("ppo_exp")

Target = Callable[[FrozenTrial], float] | None


def importances(study: optuna.Study, target: Target = None) -> dict[str, dict[str, float]]:
    """Parameter importances by evaluator name ("ped_anova", "fanova"), most important first.

    An evaluator that cannot rank the trials (e.g. fANOVA when every objective value is
    the same) is left out with a warning: a report never fails the study it describes.
    """
    evaluators = {
        "ped_anova": None,  # Optuna's default evaluator
        "fanova": optuna.importance.FanovaImportanceEvaluator(seed=0),
    }
    scores = {}
    for name, evaluator in evaluators.items():
        try:
            found = optuna.importance.get_param_importances(
                study, evaluator=evaluator, target=target
            )
        except (RuntimeError, ValueError) as error:
            log.warning("importance (%s) not computed: %s", name, error)
            continue
        scores[name] = dict(found)
    return scores


def _targets(study: optuna.Study, metrics: list[str]) -> list[tuple[str, Target]]:
    if len(metrics) == 1:
        return [("", None)]
    return [(f".{m}", lambda t, i=i: t.values[i]) for i, m in enumerate(metrics)]


def finish(study: optuna.Study, run_id: str, metrics: list[str]) -> None:
    """Log everything above on the parent run and mark it FINISHED once no trial runs."""
    client = MlflowClient()
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL):
        count = sum(t.state == state for t in trials)
        client.log_metric(run_id, f"trials.{state.name.lower()}", count)
    _log_wall_split(client, run_id, trials)
    if complete:
        _log_results(client, run_id, study, metrics, complete)
    else:
        log.warning("study %s has no complete trial: nothing to rank", study.study_name)
    if not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        client.set_terminated(run_id, status="FINISHED")
    log.info("study %s reported to MLflow run %s", study.study_name, run_id)


def _log_results(client: MlflowClient, run_id: str, study, metrics, complete) -> None:
    """Best trial, importances (metrics and bars), plots and the trials table."""
    _log_best(client, run_id, study, metrics, complete)
    if len(complete) >= 2:
        for suffix, target in _targets(study, metrics):
            scores = importances(study, target)
            for evaluator, by_param in scores.items():
                prefix = "importance" if evaluator == "ped_anova" else "importance_fanova"
                for param, score in by_param.items():
                    client.log_metric(run_id, f"{prefix}.{param}{suffix}", score)
            if scores:
                _log_importance_png(client, run_id, scores, suffix)
    _log_plots(client, run_id, study, metrics, len(complete))
    table = study.trials_dataframe(multi_index=False)
    client.log_text(run_id, table.to_csv(index=False), "study/trials.csv")


def _log_best(client: MlflowClient, run_id: str, study, metrics, complete) -> None:
    values = [t.values[0] for t in complete]
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    for name, value in dict(min=min(values), mean=mean, max=max(values), std=std).items():
        client.log_metric(run_id, f"objective.{name}", value)
    if len(metrics) == 1:
        best = study.best_trial
        client.log_metric(run_id, "best_value", best.value)
        client.set_tag(run_id, "best_trial", str(best.number))
        for key, value in best.params.items():
            client.set_tag(run_id, f"best.{key}", str(value))
            if isinstance(value, (int, float)):
                client.log_metric(run_id, f"best.{key}", float(value))
    else:
        client.set_tag(run_id, "pareto_trials", ",".join(str(t.number) for t in study.best_trials))


def _log_wall_split(client: MlflowClient, run_id: str, trials: list[FrozenTrial]) -> None:
    """How much of the trials' wall time the trainer used: the rest is harness overhead."""
    wall = sum(t.user_attrs.get("wall_seconds", 0.0) for t in trials)
    train = sum(t.user_attrs.get("train_seconds", 0.0) for t in trials)
    if wall > 0:
        client.log_metric(run_id, "perf/trial_wall_s", wall)
        client.log_metric(run_id, "perf/harness_overhead", 1 - train / wall)


def _log_importance_png(client: MlflowClient, run_id: str, scores: dict, suffix: str) -> None:
    fig, axes = plt.subplots(1, len(scores), figsize=(4.5 * len(scores), 3), squeeze=False)
    for ax, (evaluator, values) in zip(axes[0], scores.items(), strict=True):
        names = list(values)[::-1]
        ax.barh(names, [values[n] for n in names], color="tab:blue")
        ax.set_title(f"importance ({evaluator})")
        ax.set_xlim(0, 1)
    fig.tight_layout()
    client.log_figure(run_id, fig, f"study/importance{suffix}.png")
    plt.close(fig)


def _log_plots(client: MlflowClient, run_id: str, study, metrics: list[str], n: int) -> None:
    for suffix, target in _targets(study, metrics):
        name = metrics[0] if not suffix else suffix[1:]
        kwargs = {"target": target, "target_name": name} if target else {"target_name": name}
        plots = {
            "history": vis.plot_optimization_history,
            "slice": vis.plot_slice,
            "parallel_coordinate": vis.plot_parallel_coordinate,
        }
        if n >= 2:
            plots["contour"] = vis.plot_contour
        for plot_name, plot in plots.items():
            client.log_figure(run_id, plot(study, **kwargs), f"study/{plot_name}{suffix}.html")
    if len(metrics) == 2:
        figure = vis.plot_pareto_front(study, target_names=metrics)
        client.log_figure(run_id, figure, "study/pareto_front.html")
