"""The samplers and pruners a study names (`hydra.sweeper.sampler.name`, `pruner.name`)."""

from __future__ import annotations

import inspect
import logging
from typing import Any

import optuna

from ppo_exp.config import ConfigError
from ppo_exp.study.settings import plain

log = logging.getLogger("ppo_exp")

SAMPLERS = {
    "tpe": optuna.samplers.TPESampler,
    "random": optuna.samplers.RandomSampler,
    "gp": optuna.samplers.GPSampler,
    "cmaes": optuna.samplers.CmaEsSampler,
    "qmc": optuna.samplers.QMCSampler,
    "nsga2": optuna.samplers.NSGAIISampler,
    "nsga3": optuna.samplers.NSGAIIISampler,
}
PRUNERS = {
    "median": optuna.pruners.MedianPruner,
    "percentile": optuna.pruners.PercentilePruner,
    "hyperband": optuna.pruners.HyperbandPruner,
    "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
    "threshold": optuna.pruners.ThresholdPruner,
    "wilcoxon": optuna.pruners.WilcoxonPruner,
    "patient": optuna.pruners.PatientPruner,
    "none": optuna.pruners.NopPruner,
}


def build(table: dict[str, type], spec: dict[str, Any], key: str) -> Any:
    """A sampler or pruner from `{name: ..., **arguments}`."""
    spec = dict(plain(spec))
    name = spec.pop("name", None)
    if name not in table:
        raise ConfigError(f"hydra.sweeper.{key}.name", name, " | ".join(table))
    cls = table[name]
    # Hydra merges a command-line `pruner={name:none}` into the study file's pruner, so
    # arguments meant for the file's pruner can remain: keep only what `cls` accepts.
    accepted = inspect.signature(cls).parameters
    if dropped := sorted(set(spec) - set(accepted)):
        log.warning("hydra.sweeper.%s: %s takes no %s; ignored", key, cls.__name__, dropped)
        spec = {k: v for k, v in spec.items() if k in accepted}
    if name == "patient":  # PatientPruner wraps another pruner
        spec["wrapped_pruner"] = build(PRUNERS, spec.pop("wrapped_pruner"), key)
    return cls(**spec)
