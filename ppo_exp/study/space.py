"""Declarative search spaces: a YAML mapping of config key -> distribution.

    params:
      lr: {type: float, low: 1.0e-5, high: 1.0e-3, log: true}
      ppo_epochs: {type: int, low: 1, high: 8}
      kl_estimator: {type: categorical, choices: [k1, k3]}

Each key is a top-level config key, and it is also the Optuna parameter name, so the
value Optuna suggests is exactly the value the run config receives.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from ppo_exp.config import ConfigError, PPOConfig

NOT_SEARCHABLE = {"model", "data", "reward", "mlflow", "optuna", "threads", "seed", "compile"}
SEARCHABLE = {f.name for f in fields(PPOConfig)} - NOT_SEARCHABLE


def distribution(key: str, spec: Mapping) -> BaseDistribution:
    """One parameter's Optuna distribution from its YAML spec (raises `ConfigError`)."""
    where = f"hydra.sweeper.params.{key}"
    if key not in SEARCHABLE:
        raise ConfigError(where, key, "a top-level config key: " + ", ".join(sorted(SEARCHABLE)))
    kind = spec.get("type")
    try:
        if kind == "float":
            return FloatDistribution(
                float(spec["low"]),
                float(spec["high"]),
                log=bool(spec.get("log", False)),
                step=spec.get("step"),
            )
        if kind == "int":
            return IntDistribution(
                int(spec["low"]),
                int(spec["high"]),
                log=bool(spec.get("log", False)),
                step=int(spec.get("step", 1)),
            )
        if kind == "categorical":
            return CategoricalDistribution(list(spec["choices"]))
    except (KeyError, ValueError, TypeError) as error:
        raise ConfigError(where, dict(spec), f"a valid {kind} range ({error})") from None
    raise ConfigError(f"{where}.type", kind, "float | int | categorical")


def search_space(params: Mapping[str, Mapping]) -> dict[str, BaseDistribution]:
    """The whole space, keyed by config key (raises `ConfigError` on the first bad entry)."""
    if not params:
        raise ConfigError("hydra.sweeper.params", params, "at least one parameter to search")
    return {key: distribution(key, spec) for key, spec in params.items()}


def as_override(key: str, value: object) -> str:
    """A Hydra command-line override that sets `key` to exactly `value`."""
    return f"{key}={value!r}" if isinstance(value, float) else f"{key}={value}"
