"""What a study found, as numbers: computed once per report, then logged, drawn and written.

`summarise` reads the Optuna study (not MLflow, which may lag behind a running study)
and reuses `ppo_exp.analysis` for the statistics, so that the parent run's Description,
its figures and the sensitivity notebook agree:
- Optuna's two importance evaluators on all complete trials (PED-ANOVA, Optuna's
  default, and fANOVA), as point estimates;
- fANOVA resampled over trials (`analysis.bootstrap_importance`): intervals, rank
  intervals and what part of the ranking holds;
- Spearman rank correlations (`analysis.rank_correlations`): the sign of each effect;
- `analysis.conclusions`: the sentences of the notebook's conclusion.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import optuna
import pandas as pd
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from ppo_exp import analysis
from ppo_exp.analysis._load import PARAM_PREFIX, SEED_PREFIX

log = logging.getLogger("ppo_exp")

Target = Callable[[FrozenTrial], float] | None
EVALUATORS = ("ped_anova", "fanova")  # metric prefixes: importance., importance_fanova.
N_BOOT = 50  # bootstrap replicates per report (fANOVA: ~0.1-0.2 s each)
MIN_BOOTSTRAP_TRIALS = 5  # fewer complete trials: point estimates only (resampling 3 is moot)
LEVEL = 0.95  # coverage of every interval


@dataclass
class Ranking:
    """The importance of the searched parameters for one objective."""

    metric: str  # the objective's name
    suffix: str  # "" for a single objective, ".<metric>" otherwise (metric names)
    direction: str  # maximize | minimize
    points: dict[str, dict[str, float]] = field(default_factory=dict)  # evaluator -> param
    bootstrap: pd.DataFrame = field(default_factory=pd.DataFrame)  # bootstrap_importance
    correlations: pd.DataFrame = field(default_factory=pd.DataFrame)  # rank_correlations
    conclusions: str = ""  # analysis.conclusions, one finding per line

    @property
    def file_suffix(self) -> str:
        """`suffix` as part of a figure's file name (metric names hold '/')."""
        return self.suffix.replace("/", "_")

    @property
    def rho(self) -> dict[str, float]:
        """Spearman's ρ of each parameter with the objective (NaN where undefined)."""
        if self.correlations.empty:
            return {}
        return dict(zip(self.correlations["param"], self.correlations["rho"], strict=True))


@dataclass
class Summary:
    """Everything a report shows, for one moment of a study."""

    study: optuna.Study
    metrics: list[str]
    trials: list[FrozenTrial]
    counts: dict[str, int]  # complete | pruned | fail | running | waiting
    rankings: list[Ranking]

    @property
    def complete(self) -> list[FrozenTrial]:
        return [t for t in self.trials if t.state == TrialState.COMPLETE]

    @property
    def log_params(self) -> set[str]:
        """The parameters searched on a log scale (drawn on log axes)."""
        found = set()
        for trial in self.trials:
            for key, dist in trial.distributions.items():
                if isinstance(dist, (FloatDistribution, IntDistribution)) and dist.log:
                    found.add(key)
        return found


def trials_table(study: optuna.Study, metrics: list[str], index: int = 0) -> pd.DataFrame:
    """The study's trials as an `analysis.load_runs` table, for objective number `index`.

    Args:
        study: the Optuna study (finished or running).
        metrics: the objectives' names, in the study's order.
        index: which objective goes in the `objective` column (and the per-seed ones).

    Returns:
        One row per finished trial: run_id, run_name, kind, state, trial, objective,
        objective.seed_<s>, reason, then `params.<key>` typed as MLflow's would be.
    """
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.state in (TrialState.RUNNING, TrialState.WAITING):
            continue
        row = {
            "run_id": t.user_attrs.get("mlflow_run_id", str(t.number)),
            "run_name": f"trial {t.number}",
            "kind": "trial",
            "state": t.state.name,
            "trial": t.number,
            "objective": t.values[index] if t.values else float("nan"),
            "reason": t.user_attrs.get("fail_reason"),
        }
        seeds = t.user_attrs.get("seeds", [])
        for seed, values in zip(seeds, t.user_attrs.get("seed_values", []), strict=False):
            row[f"{SEED_PREFIX}{seed}"] = values[index]
        for key, value in t.params.items():
            row[PARAM_PREFIX + key] = str(value)  # typed below, exactly as from MLflow
        rows.append(row)
    frame = pd.DataFrame(rows)
    for column in [c for c in frame if c.startswith(PARAM_PREFIX)]:
        frame[column] = analysis.cast_param(frame[column])
    frame.attrs.update(objective=metrics[index], kind="trial", study=study.study_name)
    return frame


def point_importances(study: optuna.Study, target: Target = None) -> dict[str, dict[str, float]]:
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


def summarise(study: optuna.Study, metrics: list[str], *, n_boot: int | None = None) -> Summary:
    """The numbers of a report: trial counts and, per objective, the importance ranking.

    Args:
        study: the Optuna study.
        metrics: the objectives' names, in the study's order.
        n_boot: bootstrap replicates of the fANOVA importance; None = `N_BOOT`.
    """
    n_boot = N_BOOT if n_boot is None else n_boot
    trials = study.get_trials(deepcopy=False)
    counts = {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}
    summary = Summary(study, metrics, trials, counts, [])
    n_complete = counts["complete"]
    for index, metric in enumerate(metrics):
        single = len(metrics) == 1
        direction = study.directions[index].name.lower()
        ranking = Ranking(metric, "" if single else f".{metric}", direction)
        target = None if single else (lambda t, i=index: t.values[i])
        if n_complete >= 2:
            ranking.points = point_importances(study, target)
        table = trials_table(study, metrics, index)
        if n_complete >= 1:
            ranking.bootstrap = analysis.bootstrap_importance(
                table,
                n_boot=n_boot if n_complete >= MIN_BOOTSTRAP_TRIALS else 0,
                level=LEVEL,
                direction=direction,
                log_params=summary.log_params,
            )
            ranking.correlations = analysis.rank_correlations(analysis.complete(table))
            ranking.conclusions = analysis.conclusions(
                table, ranking.bootstrap, objective_name=metric, direction=direction, level=LEVEL
            )
        summary.rankings.append(ranking)
    return summary
